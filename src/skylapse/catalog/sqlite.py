"""The SQLite store both catalogs are built on, and the conventions their rows share.

A store is one database file in WAL mode with one connection per thread: WAL lets one writer and
many readers work at once (the capture loop writes while the API and the transfer worker read),
and a connection per thread is what sqlite3 wants. Times are stored as ISO 8601 text with
microseconds (:func:`iso_time`) and read back with :func:`parse_time`; JSON columns hold
:data:`JsonObject` values.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeAlias

#: A value JSON can carry (what the catalogs' JSON columns hold).
JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"


def iso_time(when: datetime | None) -> str | None:
    """How a time is stored and shown: ISO 8601 with microseconds (None stays None)."""
    return when.isoformat(timespec="microseconds") if when is not None else None


def parse_time(text: str | None) -> datetime | None:
    """A stored time back as a datetime (None or empty: None)."""
    return datetime.fromisoformat(text) if text else None


def load_object(text: str | None) -> JsonObject:
    """A JSON object column (NULL or empty: ``{}``); anything else than an object is an error."""
    value = json.loads(text) if text else {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


class SqliteStore:
    """A SQLite database in WAL mode with one connection per thread (module docstring).

    Subclasses set ``schema`` (run at open; ``CREATE ... IF NOT EXISTS`` statements).
    """

    schema = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connect().executescript(self.schema)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode; the frame files
            # themselves are fsynced before their row is written.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
