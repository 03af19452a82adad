"""The frame catalog: one SQLite database (WAL) that knows every frame the station has taken.

A frame's row is inserted as ``writing`` before its file is renamed into place and marked
``pending`` after (see `skylapse.capture.writer`), so file and row are one unit: a ``writing`` row
is not a frame yet (no listing, count, transfer or cleanup sees it) and the start-up reconcile
(`skylapse.capture.reconcile`) settles any a crash left. The same table is the transfer queue:
``transfer_state`` moves ``pending -> sent -> verified``, and only verified frames may be
deleted by retention or by emergency cleanup before untransferred ones. A frame
whose bytes no longer match its SHA-256, or whose path cannot travel, is ``quarantined``: moved
aside by the transfer (`skylapse.transfer.queue`), never sent again and never deleted by retention.

SQLite in WAL mode lets the capture loop write while the API and the transfer worker read; each
thread uses its own connection (`Catalog` opens one per thread).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

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
    extra: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    transfer_state: str = "pending"
    transfer_attempts: int = 0
    transferred_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times in ISO 8601 with microseconds, bracket as an object."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, datetime):
                value = value.isoformat(timespec="microseconds")
            out[key] = value
        out["bracket"] = (
            {"set": self.bracket_set, "index": self.bracket_index, "ev_offset": self.ev_offset}
            if self.bracket_set is not None
            else None
        )
        return out


_DATETIME_FIELDS = {"captured_at", "scheduled_at", "transferred_at", "deleted_at"}
_COLUMNS = [f.name for f in fields(FrameRecord) if f.name != "id"]


def _to_row(record: FrameRecord) -> list[Any]:
    row = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat(timespec="microseconds")
        elif name == "white_balance" and value is not None:
            value = json.dumps(list(value))
        elif name == "extra":
            value = json.dumps(value) if value else None
        row.append(value)
    return row


def _from_row(row: sqlite3.Row) -> FrameRecord:
    values = dict(row)
    for name in _DATETIME_FIELDS:
        if values.get(name):
            values[name] = datetime.fromisoformat(values[name])
    if values.get("white_balance"):
        values["white_balance"] = tuple(json.loads(values["white_balance"]))
    values["extra"] = json.loads(values["extra"]) if values.get("extra") else {}
    return FrameRecord(**values)


class SqliteStore:
    """A SQLite database in WAL mode with one connection per thread.

    WAL lets one writer and many readers work at once (the capture loop writes while the API
    and the transfer worker read); a connection per thread is what sqlite3 wants.
    """

    schema = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connect().executescript(self.schema)

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
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
        record.id = cur.lastrowid
        return record.id

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
        """The path of every row, deleted or being written included."""
        return {path for (path,) in self._connect().execute("SELECT path FROM frames")}

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
        where, args = [], []
        if since is not None:
            where.append("captured_at >= ?")
            args.append(since.isoformat(timespec="microseconds"))
        if until is not None:
            where.append("captured_at < ?")
            args.append(until.isoformat(timespec="microseconds"))
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
        return self._connect().execute(sql, args).fetchone()[0]

    def pending_transfer(
        self, limit: int = 100, suspect_after: int | None = None
    ) -> list[FrameRecord]:
        """The transfer queue: frames not yet verified by the receiver, oldest first.

        With ``suspect_after``, frames sent that many times or more without being verified come
        after all others, those tried least first (so one that never arrives cannot hold the
        queue's head).
        """
        order = "captured_at, id"
        args: list[Any] = [limit]
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
        ``extra["quarantine"]`` keeps the original path, the reason and the time."""
        with self.transaction() as db:
            row = db.execute("SELECT path, extra FROM frames WHERE id = ?", (frame_id,)).fetchone()
            if row is None:
                raise KeyError(f"no frame {frame_id}")
            extra = json.loads(row["extra"]) if row["extra"] else {}
            extra["quarantine"] = {
                "original_path": row["path"],
                "reason": reason,
                "at": when.isoformat(timespec="microseconds"),
            }
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
        stamp = when.isoformat(timespec="microseconds") if when else None
        with self.transaction() as db:
            db.executemany(
                "UPDATE frames SET transfer_state = ?,"
                " transferred_at = COALESCE(?, transferred_at),"
                " transfer_attempts = transfer_attempts + (? = 'sent') WHERE id = ?",
                [(state, stamp if state == "verified" else None, state, i) for i in frame_ids],
            )

    def requeue_paths(self, paths: Sequence[str]) -> int:
        """Put frames back in the transfer queue (the receiver asked for them again)."""
        with self.transaction() as db:
            cur = db.executemany(
                "UPDATE frames SET transfer_state = 'pending', transferred_at = NULL,"
                " transfer_attempts = transfer_attempts + 1"
                f" WHERE path = ? AND {_LIVE}",
                [(p,) for p in paths],
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
                (when.isoformat(timespec="microseconds"), reason, frame_id),
            )

    # --- sessions -------------------------------------------------------------------------

    def open_session(
        self, session_id: str, started_at: datetime, camera: str, settings: dict[str, Any]
    ) -> None:
        """Record a session; its id follows the name rule (`skylapse.names`), else ValueError."""
        check_name(session_id, "session_id")
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO sessions (id, started_at, camera, settings)"
                " VALUES (?, ?, ?, ?)",
                (
                    session_id,
                    started_at.isoformat(timespec="microseconds"),
                    camera,
                    json.dumps(settings, default=str),
                ),
            )

    def close_session(self, session_id: str, ended_at: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sessions SET ended_at = ? WHERE id = ?",
                (ended_at.isoformat(timespec="microseconds"), session_id),
            )

    def sessions(self) -> list[dict[str, Any]]:
        rows = self._connect().execute("SELECT * FROM sessions ORDER BY started_at")
        return [dict(r) for r in rows]


PROCESSING_SCHEMA = """
CREATE TABLE IF NOT EXISTS sequences (
    id          INTEGER PRIMARY KEY,
    station     TEXT NOT NULL,
    camera      TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    first_at    TEXT,
    last_at     TEXT,
    frames      INTEGER NOT NULL DEFAULT 0,
    phases      TEXT NOT NULL DEFAULT '[]',
    closed_at   TEXT,
    UNIQUE (station, camera, session_id)
);
CREATE TABLE IF NOT EXISTS ingested (
    id          INTEGER PRIMARY KEY,
    station     TEXT NOT NULL,
    path        TEXT NOT NULL,
    store_path  TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    captured_at TEXT,
    phase       TEXT,
    sequence_id INTEGER REFERENCES sequences(id),
    metadata    TEXT,
    ingested_at TEXT NOT NULL,
    UNIQUE (station, path)
);
CREATE INDEX IF NOT EXISTS ingested_sequence ON ingested(sequence_id, captured_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id              INTEGER PRIMARY KEY,
    station         TEXT NOT NULL,
    path            TEXT NOT NULL,
    quarantine_path TEXT NOT NULL,
    reason          TEXT NOT NULL,
    at              TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    params         TEXT NOT NULL,
    state          TEXT NOT NULL,
    error          TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    progress       REAL NOT NULL DEFAULT 0,
    result         TEXT,
    correlation_id TEXT,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
CREATE TABLE IF NOT EXISTS timelapses (
    id              INTEGER PRIMARY KEY,
    job_id          TEXT NOT NULL UNIQUE,
    sequence_id     INTEGER,
    path            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    files           TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    backed_up_at    TEXT,
    backup_location TEXT,
    backup_sha256   TEXT,
    backup_etags    TEXT,
    deleted_at      TEXT,
    deleted_reason  TEXT
);
CREATE INDEX IF NOT EXISTS timelapses_created ON timelapses(deleted_at, created_at);
"""

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="microseconds") if dt else None


class ProcessingCatalog(SqliteStore):
    """The processing host's catalog: ingested frames, their sequences, quarantine and jobs."""

    schema = PROCESSING_SCHEMA

    # --- ingest ---------------------------------------------------------------------------

    def is_ingested(self, station: str, path: str) -> bool:
        row = (
            self._connect()
            .execute("SELECT 1 FROM ingested WHERE station = ? AND path = ?", (station, path))
            .fetchone()
        )
        return row is not None

    def record_ingested(
        self,
        *,
        station: str,
        path: str,
        store_path: str,
        sha256: str,
        size_bytes: int,
        captured_at: datetime | None,
        camera: str,
        session_id: str,
        phase: str | None,
        metadata: dict[str, Any],
        now: datetime,
    ) -> int:
        """Add a verified frame to its sequence (created on first sight); returns the sequence id.

        Idempotent: a frame already recorded for (station, path) is left as it is.
        """
        at = _iso(captured_at)
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO sequences (station, camera, session_id) VALUES (?, ?, ?)",
                (station, camera, session_id),
            )
            seq = db.execute(
                "SELECT id, phases FROM sequences"
                " WHERE station = ? AND camera = ? AND session_id = ?",
                (station, camera, session_id),
            ).fetchone()
            cur = db.execute(
                "INSERT OR IGNORE INTO ingested (station, path, store_path, sha256, size_bytes,"
                " captured_at, phase, sequence_id, metadata, ingested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    station,
                    path,
                    store_path,
                    sha256,
                    size_bytes,
                    at,
                    phase,
                    seq["id"],
                    json.dumps(metadata, default=str),
                    _iso(now),
                ),
            )
            if cur.rowcount:
                phases = json.loads(seq["phases"])
                if phase and phase not in phases:
                    phases.append(phase)
                db.execute(
                    "UPDATE sequences SET frames = frames + 1, phases = ?,"
                    " first_at = MIN(COALESCE(first_at, ?), ?),"
                    " last_at = MAX(COALESCE(last_at, ?), ?) WHERE id = ?",
                    (json.dumps(phases), at, at, at, at, seq["id"]),
                )
        return seq["id"]

    def record_quarantine(
        self, station: str, path: str, quarantine_path: str, reason: str, now: datetime
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO quarantine (station, path, quarantine_path, reason, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (station, path, quarantine_path, reason, _iso(now)),
            )

    def quarantined(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._connect().execute("SELECT * FROM quarantine ORDER BY id")]

    def sequences(self) -> list[dict[str, Any]]:
        rows = self._connect().execute("SELECT * FROM sequences ORDER BY first_at, id")
        return [{**dict(r), "phases": json.loads(r["phases"])} for r in rows]

    def sequence(self, sequence_id: int) -> dict[str, Any] | None:
        row = (
            self._connect()
            .execute("SELECT * FROM sequences WHERE id = ?", (sequence_id,))
            .fetchone()
        )
        return {**dict(row), "phases": json.loads(row["phases"])} if row else None

    def last_ingested_at(self, sequence_id: int) -> datetime | None:
        """When the newest frame of a sequence arrived (not when it was captured)."""
        row = (
            self._connect()
            .execute("SELECT MAX(ingested_at) FROM ingested WHERE sequence_id = ?", (sequence_id,))
            .fetchone()
        )
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def close_sequence(self, sequence_id: int, when: datetime) -> None:
        with self.transaction() as db:
            db.execute("UPDATE sequences SET closed_at = ? WHERE id = ?", (_iso(when), sequence_id))

    def sequence_frames(self, sequence_id: int, phase: str | None = None) -> list[dict[str, Any]]:
        """The stored frames of a sequence in capture order (optionally one phase only)."""
        sql, args = "SELECT * FROM ingested WHERE sequence_id = ?", [sequence_id]
        if phase is not None:
            sql += " AND phase = ?"
            args.append(phase)
        sql += " ORDER BY captured_at, path"
        return [dict(r) for r in self._connect().execute(sql, args)]

    def ingested_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Frames ingested after row ``after_id``, in ingest order, with their metadata parsed
        (the API's metrics follow new frames this way)."""
        rows = self._connect().execute(
            "SELECT * FROM ingested WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        out = []
        for r in rows:
            row = dict(r)
            row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
            out.append(row)
        return out

    def last_ingested_id(self) -> int:
        """The newest ingested row's id (0 when nothing was ingested)."""
        row = self._connect().execute("SELECT MAX(id) FROM ingested").fetchone()
        return row[0] or 0

    # --- jobs -----------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        kind: str,
        params: dict[str, Any],
        now: datetime,
        correlation_id: str | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, params, state, created_at, correlation_id)"
                " VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, kind, json.dumps(params, default=str), _iso(now), correlation_id),
            )

    def update_job(self, job_id: str, **changes: Any) -> None:
        if "state" in changes and changes["state"] not in JOB_STATES:
            raise ValueError(f"unknown job state {changes['state']!r}")
        allowed = {"state", "error", "attempts", "progress", "result", "started_at", "finished_at"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot update job fields {sorted(unknown)}")
        values = {
            k: (_iso(v) if isinstance(v, datetime) else json.dumps(v) if k == "result" else v)
            for k, v in changes.items()
        }
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*values.values(), job_id])

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_dict(row) if row else None

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM jobs", []
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [_job_dict(r) for r in self._connect().execute(sql, args)]

    def queue_depth(self) -> int:
        """Jobs waiting or running: the ``processing_queue_depth`` metric."""
        return (
            self._connect()
            .execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
            .fetchone()[0]
        )

    # --- archived timelapses (skylapse.processing.archive) ---------------------------------

    def add_timelapse(
        self,
        *,
        job_id: str,
        sequence_id: int | None,
        path: str,
        files: list[dict[str, Any]],
        created_at: datetime,
    ) -> int:
        """Record an archived timelapse (idempotent per render job); returns its id."""
        size = sum(int(f["size"]) for f in files)
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO timelapses (job_id, sequence_id, path, created_at, files,"
                " size_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, sequence_id, path, _iso(created_at), json.dumps(files), size),
            )
            row = db.execute("SELECT id FROM timelapses WHERE job_id = ?", (job_id,)).fetchone()
        return row["id"]

    def timelapse(self, timelapse_id: int) -> dict[str, Any] | None:
        row = (
            self._connect()
            .execute("SELECT * FROM timelapses WHERE id = ?", (timelapse_id,))
            .fetchone()
        )
        return _timelapse_dict(row) if row else None

    def timelapse_for_job(self, job_id: str) -> dict[str, Any] | None:
        row = (
            self._connect()
            .execute("SELECT * FROM timelapses WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return _timelapse_dict(row) if row else None

    def timelapses(
        self, *, include_deleted: bool = False, backed_up: bool | None = None
    ) -> list[dict[str, Any]]:
        """Archived timelapses, oldest first (the order retention deletes them in)."""
        where = [] if include_deleted else ["deleted_at IS NULL"]
        if backed_up is not None:
            where.append("backed_up_at IS NOT NULL" if backed_up else "backed_up_at IS NULL")
        sql = "SELECT * FROM timelapses"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        return [_timelapse_dict(r) for r in self._connect().execute(sql)]

    def mark_timelapse_backed_up(
        self,
        timelapse_id: int,
        when: datetime,
        location: str,
        sha256: str,
        etags: dict[str, str],
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE timelapses SET backed_up_at = ?, backup_location = ?, backup_sha256 = ?,"
                " backup_etags = ? WHERE id = ?",
                (_iso(when), location, sha256, json.dumps(etags), timelapse_id),
            )

    def mark_timelapse_deleted(self, timelapse_id: int, when: datetime, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE timelapses SET deleted_at = ?, deleted_reason = ? WHERE id = ?",
                (_iso(when), reason, timelapse_id),
            )


def _job_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(out["params"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out


def _timelapse_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["files"] = json.loads(out["files"])
    out["backup_etags"] = json.loads(out["backup_etags"]) if out["backup_etags"] else None
    for key in ("created_at", "backed_up_at", "deleted_at"):
        out[key] = datetime.fromisoformat(out[key]) if out[key] else None
    return out
