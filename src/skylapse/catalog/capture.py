"""The station's frame catalog: one SQLite database (WAL) that knows every frame taken.

A frame's row is inserted as ``writing`` before its file is renamed into place and marked
``pending`` after (see `skylapse.capture.writer`), so file and row are one unit: a ``writing`` row
is not a frame yet (no listing, count, transfer or cleanup sees it) and the start-up reconcile
(`skylapse.capture.reconcile`) settles any a crash left. The same table is the transfer queue:
``transfer_state`` moves ``pending -> sent -> verified``, and only verified frames may be
deleted by retention or by emergency cleanup before untransferred ones. A frame
whose bytes no longer match its SHA-256, or whose path cannot travel, is ``quarantined``: moved
aside by the transfer (`skylapse.transfer.queue`), never sent again and never deleted by retention.

A frame can have companion files (the DNG kept beside its JPEG, ``capture.raw``), listed in
``extra["companions"]`` with their own SHA-256 and size (:class:`Companion`): they are sent,
verified, quarantined and deleted with their frame, one row for the shot.

SQLite in WAL mode lets the capture loop write while the API and the transfer worker read; each
thread uses its own connection (`skylapse.catalog.sqlite.SqliteStore`).

Rows come back as dataclasses: :class:`FrameRecord` (mutable: the writer fills in the hash,
size and id of a record it builds) and :class:`SessionRow` (frozen). :class:`FrameCatalog` and
:class:`TransferCatalog` are the parts of :class:`Catalog` the capture side and the transfer
worker use, so tests can hand them fakes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Protocol

from skylapse.catalog.sqlite import (
    JsonObject,
    SqliteStore,
    iso_time,
    load_object,
    parse_time,
)
from skylapse.names import check_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id               INTEGER PRIMARY KEY,
    path             TEXT NOT NULL UNIQUE,
    session_id       TEXT,
    scheduled_at     TEXT,
    captured_at      TEXT NOT NULL,
    exposure_time_s  REAL,
    analogue_gain    REAL,
    iso              REAL,
    aperture         REAL,
    lens_position    REAL,
    white_balance    TEXT,
    sensor_temp_c    REAL,
    bracket_set      INTEGER,
    bracket_index    INTEGER,
    ev_offset        REAL,
    exposure_error_ev REAL,
    focus_score      REAL,
    quality_score    REAL,
    latency_ms       REAL,
    phase            TEXT,
    strategy         TEXT,
    sha256           TEXT NOT NULL,
    size_bytes       INTEGER NOT NULL,
    extra            TEXT,
    transfer_state   TEXT NOT NULL DEFAULT 'pending',
    transfer_attempts INTEGER NOT NULL DEFAULT 0,
    transferred_at   TEXT,
    deleted_at       TEXT,
    deleted_reason   TEXT
);
CREATE INDEX IF NOT EXISTS frames_captured ON frames(captured_at);
CREATE INDEX IF NOT EXISTS frames_transfer ON frames(transfer_state, deleted_at);
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    camera      TEXT,
    settings    TEXT
);
"""

TRANSFER_STATES = ("pending", "sent", "verified", "quarantined")
#: A row whose file is not yet in place (see the module docstring).
WRITING = "writing"
#: Rows that are frames in the buffer: not deleted, not still being written.
_LIVE = f"deleted_at IS NULL AND transfer_state != '{WRITING}'"


@dataclass(frozen=True)
class Quarantine:
    """Why and when a frame was moved aside, and where it was (``extra["quarantine"]``)."""

    original_path: str
    reason: str
    at: datetime

    def to_json(self) -> JsonObject:
        return {"original_path": self.original_path, "reason": self.reason, "at": iso_time(self.at)}


@dataclass(frozen=True)
class Companion:
    """A file kept with a frame (``extra["companions"]``), relative to the buffer like it."""

    path: str
    sha256: str
    size_bytes: int

    def to_json(self) -> JsonObject:
        return {"path": self.path, "sha256": self.sha256, "size_bytes": self.size_bytes}


@dataclass
class FrameRecord:
    """Everything recorded about one frame: its file, how it was taken and what became of it."""

    path: str
    captured_at: datetime
    sha256: str
    size_bytes: int
    session_id: str | None = None
    scheduled_at: datetime | None = None
    exposure_time_s: float | None = None
    analogue_gain: float | None = None
    iso: float | None = None
    aperture: float | None = None
    lens_position: float | None = None
    white_balance: tuple[float, float] | None = None
    sensor_temp_c: float | None = None
    bracket_set: int | None = None
    bracket_index: int | None = None
    ev_offset: float | None = None
    exposure_error_ev: float | None = None
    focus_score: float | None = None
    quality_score: float | None = None
    latency_ms: float | None = None
    phase: str | None = None
    strategy: str | None = None
    extra: JsonObject = field(default_factory=dict)
    id: int | None = None
    transfer_state: str = "pending"
    transfer_attempts: int = 0
    transferred_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted_reason: str | None = None

    @property
    def stored_id(self) -> int:
        """The row id of a record read from or added to the catalog (ValueError if neither)."""
        if self.id is None:
            raise ValueError(f"frame {self.path!r} is not in the catalog")
        return self.id

    @property
    def quarantine(self) -> Quarantine | None:
        """The quarantine note (:meth:`Catalog.quarantine_frame`), if the frame was moved aside."""
        note = self.extra.get("quarantine")
        if not isinstance(note, dict):
            return None
        original, reason, at = note.get("original_path"), note.get("reason"), note.get("at")
        if not (isinstance(original, str) and isinstance(reason, str) and isinstance(at, str)):
            raise ValueError(f"frame {self.id}: malformed extra.quarantine {note!r}")
        return Quarantine(original, reason, datetime.fromisoformat(at))

    @property
    def companions(self) -> list[Companion]:
        """The files kept with this frame (``extra["companions"]``), in the order written."""
        return _companions(self.path, self.extra)

    @property
    def files(self) -> list[tuple[str, str]]:
        """(path, SHA-256) of the frame's file and then its companions'."""
        return [(self.path, self.sha256)] + [(c.path, c.sha256) for c in self.companions]

    @property
    def total_bytes(self) -> int:
        """The size of the frame's file and its companions together."""
        return self.size_bytes + sum(c.size_bytes for c in self.companions)

    def to_json(self) -> JsonObject:
        """A JSON-ready dict: times in ISO 8601 with microseconds, bracket as an object."""
        out: JsonObject = {}
        for key, value in asdict(self).items():
            if isinstance(value, datetime):
                value = iso_time(value)
            out[key] = value
        out["bracket"] = (
            {"set": self.bracket_set, "index": self.bracket_index, "ev_offset": self.ev_offset}
            if self.bracket_set is not None
            else None
        )
        return out


_DATETIME_FIELDS = ("captured_at", "scheduled_at", "transferred_at", "deleted_at")
_COLUMNS = [f.name for f in fields(FrameRecord) if f.name != "id"]
_SqlValue = str | int | float | None


def _to_row(record: FrameRecord) -> list[_SqlValue]:
    row: list[_SqlValue] = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = iso_time(value)
        elif name == "white_balance" and value is not None:
            value = json.dumps(list(value))
        elif name == "extra":
            value = json.dumps(value) if value else None
        row.append(value)
    return row


def _from_row(row: sqlite3.Row) -> FrameRecord:
    values = dict(row)
    for name in _DATETIME_FIELDS:
        values[name] = parse_time(values[name])
    if values["white_balance"]:
        red, blue = json.loads(values["white_balance"])
        values["white_balance"] = (red, blue)
    values["extra"] = load_object(values["extra"])
    return FrameRecord(**values)


def _companions(owner: str, extra: JsonObject) -> list[Companion]:
    """``extra["companions"]`` of the frame at ``owner`` (ValueError naming it if malformed)."""
    listed = extra.get("companions")
    if listed is None:
        return []
    out = []
    for item in listed if isinstance(listed, list) else [listed]:
        fields = item if isinstance(item, dict) else {}
        path, sha, size = fields.get("path"), fields.get("sha256"), fields.get("size_bytes")
        if not (isinstance(path, str) and isinstance(sha, str) and isinstance(size, int)):
            raise ValueError(f"frame {owner!r}: malformed extra.companions {listed!r}")
        out.append(Companion(path, sha, size))
    return out


@dataclass(frozen=True)
class SessionRow:
    """A capture session as recorded: ``settings`` is what it was opened with."""

    id: str
    started_at: datetime
    ended_at: datetime | None
    camera: str | None
    settings: JsonObject

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SessionRow:
        started = parse_time(row["started_at"])
        if started is None:
            raise ValueError(f"session {row['id']!r} has no start time")
        return cls(
            id=row["id"],
            started_at=started,
            ended_at=parse_time(row["ended_at"]),
            camera=row["camera"],
            settings=load_object(row["settings"]),
        )

    def to_json(self) -> JsonObject:
        """The row as ``GET /sessions`` shows it (``settings`` as the stored JSON text)."""
        return {
            "id": self.id,
            "started_at": iso_time(self.started_at),
            "ended_at": iso_time(self.ended_at),
            "camera": self.camera,
            "settings": json.dumps(self.settings),
        }


class FrameCatalog(Protocol):
    """What the capture side (service, writer, storage, reconcile, API) asks of a catalog."""

    def add_frame(self, record: FrameRecord) -> int: ...
    def mark_written(self, frame_id: int) -> None: ...
    def forget_unwritten(self, frame_id: int) -> None: ...
    def unwritten(self) -> list[FrameRecord]: ...
    def all_paths(self) -> set[str]: ...
    def session_paths(self, session_id: str) -> list[str]: ...
    def get_frame(self, frame_id: int) -> FrameRecord | None: ...
    def frames(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[FrameRecord]: ...
    def count_frames(self, *, transfer_state: str | None = None) -> int: ...
    def deletion_candidates(self) -> list[FrameRecord]: ...
    def mark_deleted(self, frame_id: int, when: datetime, reason: str) -> None: ...
    def open_session(
        self, session_id: str, started_at: datetime, camera: str, settings: JsonObject
    ) -> None: ...
    def close_session(self, session_id: str, ended_at: datetime) -> None: ...
    def session(self, session_id: str) -> SessionRow | None: ...
    def sessions(self) -> list[SessionRow]: ...


class TransferCatalog(Protocol):
    """What the transfer worker (`skylapse.transfer.queue`) asks of a catalog."""

    def count_frames(self, *, transfer_state: str | None = None) -> int: ...
    def pending_transfer(
        self, limit: int = 100, suspect_after: int | None = None
    ) -> list[FrameRecord]: ...
    def set_transfer_state(
        self, frame_ids: Sequence[int], state: str, when: datetime | None = None
    ) -> None: ...
    def requeue_paths(self, paths: Sequence[str]) -> int: ...
    def quarantine_frame(
        self, frame_id: int, new_path: str, reason: str, when: datetime
    ) -> None: ...
    def quarantined_frames(self) -> list[FrameRecord]: ...
    def mark_deleted(self, frame_id: int, when: datetime, reason: str) -> None: ...


class Catalog(SqliteStore):
    """The capture station's catalog (frames and sessions), safe to share across threads."""

    schema = SCHEMA

    # --- frames ---------------------------------------------------------------------------

    def add_frame(self, record: FrameRecord) -> int:
        """Insert a durable frame; returns its id."""
        placeholders = ",".join("?" for _ in _COLUMNS)
        with self.transaction() as db:
            cur = db.execute(
                f"INSERT INTO frames ({','.join(_COLUMNS)}) VALUES ({placeholders})",
                _to_row(record),
            )
        if cur.lastrowid is None:  # pragma: no cover - an INSERT always sets it
            raise sqlite3.DatabaseError(f"no row id for {record.path}")
        record.id = cur.lastrowid
        return cur.lastrowid

    def mark_written(self, frame_id: int) -> None:
        """A ``writing`` row's file is in place: the frame joins the buffer (and the queue)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE frames SET transfer_state = 'pending' WHERE id = ? AND transfer_state = ?",
                (frame_id, WRITING),
            )

    def forget_unwritten(self, frame_id: int) -> None:
        """Remove a ``writing`` row whose file never made it into place."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM frames WHERE id = ? AND transfer_state = ?", (frame_id, WRITING)
            )

    def unwritten(self) -> list[FrameRecord]:
        """The ``writing`` rows (a crash or a failure cut their write short)."""
        rows = self._connect().execute(
            "SELECT * FROM frames WHERE transfer_state = ? ORDER BY id", (WRITING,)
        )
        return [_from_row(r) for r in rows]

    def all_paths(self) -> set[str]:
        """The path of every row and of its companion files, deleted or being written
        included."""
        paths = set()
        for path, extra in self._connect().execute("SELECT path, extra FROM frames"):
            paths.add(path)
            if extra and "companions" in extra:
                paths.update(c.path for c in _companions(path, load_object(extra)))
        return paths

    def session_paths(self, session_id: str) -> list[str]:
        """The path of every row of a session, deleted or being written included."""
        rows = self._connect().execute(
            "SELECT path FROM frames WHERE session_id = ?", (session_id,)
        )
        return [path for (path,) in rows]

    def get_frame(self, frame_id: int) -> FrameRecord | None:
        row = self._connect().execute("SELECT * FROM frames WHERE id = ?", (frame_id,)).fetchone()
        return _from_row(row) if row else None

    def frame_by_path(self, path: str) -> FrameRecord | None:
        row = self._connect().execute("SELECT * FROM frames WHERE path = ?", (path,)).fetchone()
        return _from_row(row) if row else None

    def frames(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[FrameRecord]:
        """Frames in capture order, optionally within [since, until)."""
        where: list[str] = []
        args: list[_SqlValue] = []
        if since is not None:
            where.append("captured_at >= ?")
            args.append(iso_time(since))
        if until is not None:
            where.append("captured_at < ?")
            args.append(iso_time(until))
        if not include_deleted:
            where.append(_LIVE)
        sql = "SELECT * FROM frames"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY captured_at, id LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        return [_from_row(r) for r in self._connect().execute(sql, args)]

    def count_frames(self, *, transfer_state: str | None = None) -> int:
        sql, args = f"SELECT COUNT(*) FROM frames WHERE {_LIVE}", []
        if transfer_state is not None:
            sql += " AND transfer_state = ?"
            args.append(transfer_state)
        count: int = self._connect().execute(sql, args).fetchone()[0]
        return count

    def pending_transfer(
        self, limit: int = 100, suspect_after: int | None = None
    ) -> list[FrameRecord]:
        """The transfer queue: frames not yet verified by the receiver, oldest first.

        With ``suspect_after``, frames sent that many times or more without being verified come
        after all others, those tried least first (so one that never arrives cannot hold the
        queue's head).
        """
        order = "captured_at, id"
        args: list[int] = [limit]
        if suspect_after is not None:
            order = "MAX(transfer_attempts, ?), " + order
            args.insert(0, suspect_after - 1)
        rows = self._connect().execute(
            "SELECT * FROM frames WHERE transfer_state IN ('pending', 'sent')"
            f" AND deleted_at IS NULL ORDER BY {order} LIMIT ?",
            args,
        )
        return [_from_row(r) for r in rows]

    def quarantine_frame(self, frame_id: int, new_path: str, reason: str, when: datetime) -> None:
        """Record that a frame was moved aside to ``new_path`` (relative to the buffer), and why;
        ``extra["quarantine"]`` keeps the original path, the reason and the time. When
        ``new_path`` is the old one under a folder, the companions' paths get that folder too
        (they were moved with the frame)."""
        with self.transaction() as db:
            row = db.execute("SELECT path, extra FROM frames WHERE id = ?", (frame_id,)).fetchone()
            if row is None:
                raise KeyError(f"no frame {frame_id}")
            extra = load_object(row["extra"])
            extra["quarantine"] = Quarantine(row["path"], reason, when).to_json()
            old: str = row["path"]
            if extra.get("companions") and new_path != old and new_path.endswith("/" + old):
                folder = new_path[: -len(old)]
                extra["companions"] = [
                    replace(c, path=folder + c.path).to_json() for c in _companions(old, extra)
                ]
            db.execute(
                "UPDATE frames SET transfer_state = 'quarantined', path = ?, extra = ?"
                " WHERE id = ?",
                (new_path, json.dumps(extra), frame_id),
            )

    def quarantined_frames(self) -> list[FrameRecord]:
        """Live quarantined frames, oldest first."""
        rows = self._connect().execute(
            "SELECT * FROM frames WHERE transfer_state = 'quarantined' AND deleted_at IS NULL"
            " ORDER BY captured_at, id"
        )
        return [_from_row(r) for r in rows]

    def set_transfer_state(
        self, frame_ids: Sequence[int], state: str, when: datetime | None = None
    ) -> None:
        if state not in TRANSFER_STATES:
            raise ValueError(f"unknown transfer state {state!r}")
        stamp = iso_time(when)
        with self.transaction() as db:
            db.executemany(
                "UPDATE frames SET transfer_state = ?,"
                " transferred_at = COALESCE(?, transferred_at),"
                " transfer_attempts = transfer_attempts + (? = 'sent') WHERE id = ?",
                [(state, stamp if state == "verified" else None, state, i) for i in frame_ids],
            )

    def requeue_paths(self, paths: Sequence[str]) -> int:
        """Put frames back in the transfer queue (the receiver asked for them again); a
        companion's path puts back its frame."""
        with self.transaction() as db:
            cur = db.executemany(
                "UPDATE frames SET transfer_state = 'pending', transferred_at = NULL,"
                " transfer_attempts = transfer_attempts + 1"
                f" WHERE {_LIVE} AND (path = ? OR EXISTS (SELECT 1 FROM"
                " json_each(frames.extra, '$.companions') WHERE value ->> 'path' = ?))",
                [(p, p) for p in paths],
            )
        return cur.rowcount

    def deletion_candidates(self) -> list[FrameRecord]:
        """Live frames in the order emergency cleanup deletes them: verified first, then oldest.
        Quarantined frames are never among them."""
        rows = self._connect().execute(
            f"SELECT * FROM frames WHERE {_LIVE} AND transfer_state != 'quarantined' "
            "ORDER BY transfer_state != 'verified', captured_at, id"
        )
        return [_from_row(r) for r in rows]

    def mark_deleted(self, frame_id: int, when: datetime, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE frames SET deleted_at = ?, deleted_reason = ? WHERE id = ?",
                (iso_time(when), reason, frame_id),
            )

    # --- sessions -------------------------------------------------------------------------

    def open_session(
        self, session_id: str, started_at: datetime, camera: str, settings: JsonObject
    ) -> None:
        """Record a session; its id follows the name rule (`skylapse.names`), else ValueError."""
        check_name(session_id, "session_id")
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO sessions (id, started_at, camera, settings)"
                " VALUES (?, ?, ?, ?)",
                (
                    session_id,
                    iso_time(started_at),
                    camera,
                    json.dumps(settings, default=str),
                ),
            )

    def close_session(self, session_id: str, ended_at: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sessions SET ended_at = ? WHERE id = ?",
                (iso_time(ended_at), session_id),
            )

    def session(self, session_id: str) -> SessionRow | None:
        row = (
            self._connect().execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        )
        return SessionRow.from_row(row) if row else None

    def sessions(self) -> list[SessionRow]:
        """Every session, oldest first."""
        rows = self._connect().execute("SELECT * FROM sessions ORDER BY started_at")
        return [SessionRow.from_row(r) for r in rows]
