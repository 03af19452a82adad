"""The processing host's catalog: ingested frames, their sequences, quarantine, jobs and the
archived timelapses, in one SQLite database (`skylapse.catalog.sqlite.SqliteStore`).

A frame is recorded once per (station, path) (`skylapse.processing.ingest`); the frames of one
capture session of one camera at one station make a sequence, created on first sight and closed
when its frames stop coming. Jobs (`skylapse.processing.jobs`) move
``queued -> running -> done | failed | cancelled``; archived timelapses
(`skylapse.processing.archive`) are kept per render job. When retention
(`skylapse.processing.retention`) deletes a sequence's frames from the store, a
``frame_deletions`` row says when and why; the ``ingested`` rows stay, so a frame sent again
is still known and not ingested twice.

Every query returns frozen dataclass rows (`skylapse.catalog.processing_rows`: their fields'
units and conventions are documented there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Unpack

from skylapse.catalog.processing_rows import (
    JOB_STATES,
    ArchivedFile,
    ArchivedRender,
    FrameDeletion,
    IngestedFrame,
    JobChanges,
    JobRow,
    JobState,
    QuarantinedFrame,
    SequenceRow,
    StoredSequenceRow,
    TimelapseRow,
)
from skylapse.catalog.sqlite import JsonObject, SqliteStore, iso_time, parse_time

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
CREATE TABLE IF NOT EXISTS frame_deletions (
    sequence_id INTEGER PRIMARY KEY REFERENCES sequences(id),
    deleted_at  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    frames      INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL
);
"""

_JOB_FIELDS = frozenset(JobChanges.__annotations__)


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
        metadata: JsonObject,
        now: datetime,
    ) -> int:
        """Add a verified frame to its sequence (created on first sight); returns the sequence id.

        Idempotent: a frame already recorded for (station, path) is left as it is.
        """
        at = iso_time(captured_at)
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
                    iso_time(now),
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
        return int(seq["id"])

    def record_quarantine(
        self, station: str, path: str, quarantine_path: str, reason: str, now: datetime
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO quarantine (station, path, quarantine_path, reason, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (station, path, quarantine_path, reason, iso_time(now)),
            )

    def quarantined(self) -> list[QuarantinedFrame]:
        rows = self._connect().execute("SELECT * FROM quarantine ORDER BY id")
        return [QuarantinedFrame.from_row(r) for r in rows]

    def sequences(self) -> list[SequenceRow]:
        """Every sequence, oldest first capture first."""
        rows = self._connect().execute("SELECT * FROM sequences ORDER BY first_at, id")
        return [SequenceRow.from_row(r) for r in rows]

    def sequence(self, sequence_id: int) -> SequenceRow | None:
        row = (
            self._connect()
            .execute("SELECT * FROM sequences WHERE id = ?", (sequence_id,))
            .fetchone()
        )
        return SequenceRow.from_row(row) if row else None

    def last_ingested_at(self, sequence_id: int) -> datetime | None:
        """When the newest frame of a sequence arrived (not when it was captured)."""
        row = (
            self._connect()
            .execute("SELECT MAX(ingested_at) FROM ingested WHERE sequence_id = ?", (sequence_id,))
            .fetchone()
        )
        return parse_time(row[0]) if row else None

    def close_sequence(self, sequence_id: int, when: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sequences SET closed_at = ? WHERE id = ?", (iso_time(when), sequence_id)
            )

    def sequence_frames(self, sequence_id: int, phase: str | None = None) -> list[IngestedFrame]:
        """The stored frames of a sequence in capture order (optionally one phase only)."""
        sql = "SELECT * FROM ingested WHERE sequence_id = ?"
        args: list[int | str] = [sequence_id]
        if phase is not None:
            sql += " AND phase = ?"
            args.append(phase)
        sql += " ORDER BY captured_at, path"
        return [IngestedFrame.from_row(r) for r in self._connect().execute(sql, args)]

    def ingested_after(self, after_id: int, limit: int = 1000) -> list[IngestedFrame]:
        """Frames ingested after row ``after_id``, in ingest order (the API's metrics follow
        new frames this way)."""
        rows = self._connect().execute(
            "SELECT * FROM ingested WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [IngestedFrame.from_row(r) for r in rows]

    def last_ingested_id(self) -> int:
        """The newest ingested row's id (0 when nothing was ingested)."""
        row = self._connect().execute("SELECT MAX(id) FROM ingested").fetchone()
        return int(row[0] or 0)

    # --- jobs -----------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        kind: str,
        params: JsonObject,
        now: datetime,
        correlation_id: str | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, params, state, created_at, correlation_id)"
                " VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, kind, json.dumps(params, default=str), iso_time(now), correlation_id),
            )

    def update_job(self, job_id: str, **changes: Unpack[JobChanges]) -> None:
        """Set the given fields of a job (`JobChanges`); times are stored as ISO text, the
        result as JSON. Unknown fields or states are refused (ValueError)."""
        if "state" in changes and changes["state"] not in JOB_STATES:
            raise ValueError(f"unknown job state {changes['state']!r}")
        unknown = set(changes) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"cannot update job fields {sorted(unknown)}")
        values = {
            k: (iso_time(v) if isinstance(v, datetime) else json.dumps(v) if k == "result" else v)
            for k, v in changes.items()
        }
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*values.values(), job_id])

    def job(self, job_id: str) -> JobRow | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRow.from_row(row) if row else None

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[JobRow]:
        """Jobs (optionally in one state), newest first."""
        sql, args = "SELECT * FROM jobs", list[int | str]()
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [JobRow.from_row(r) for r in self._connect().execute(sql, args)]

    def queue_depth(self) -> int:
        """Jobs waiting or running: the ``processing_queue_depth`` metric."""
        row = (
            self._connect()
            .execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
            .fetchone()
        )
        return int(row[0])

    # --- store retention (skylapse.processing.retention) ----------------------------------

    def stored_sequences(self) -> list[StoredSequenceRow]:
        """Sequences whose frames are still in the store, oldest capture first, with their
        frames' total ``size_bytes`` and ``last_ingested_at`` (when the newest one arrived)."""
        rows = self._connect().execute(
            "SELECT s.id, s.station, s.session_id, s.first_at, s.frames,"
            " COALESCE(SUM(i.size_bytes), 0) AS size_bytes, MAX(i.ingested_at) AS last_ingested_at"
            " FROM sequences s LEFT JOIN ingested i ON i.sequence_id = s.id"
            " WHERE s.id NOT IN (SELECT sequence_id FROM frame_deletions)"
            " GROUP BY s.id ORDER BY s.first_at, s.id"
        )
        return [
            StoredSequenceRow(
                id=r["id"],
                station=r["station"],
                session_id=r["session_id"],
                first_at=parse_time(r["first_at"]),
                frames=r["frames"],
                size_bytes=r["size_bytes"],
                last_ingested_at=parse_time(r["last_ingested_at"]),
            )
            for r in rows
        ]

    def archived_renders(self) -> list[ArchivedRender]:
        """Done whole-sequence renders (no phase) that were archived, oldest archive first."""
        rows = self._connect().execute(
            "SELECT json_extract(j.params, '$.sequence_id') AS sequence_id,"
            " j.started_at AS render_started_at, t.created_at AS archived_at"
            " FROM jobs j JOIN timelapses t ON t.job_id = j.id"
            " WHERE j.kind = 'render' AND j.state = 'done'"
            " AND json_extract(j.params, '$.phase') IS NULL"
            " AND json_extract(j.params, '$.sequence_id') IS NOT NULL ORDER BY t.created_at"
        )
        return [
            ArchivedRender(
                sequence_id=r["sequence_id"],
                render_started_at=parse_time(r["render_started_at"]),
                archived_at=datetime.fromisoformat(r["archived_at"]),
            )
            for r in rows
        ]

    def sequences_in_use(self) -> set[int]:
        """Sequences a queued or running job reads: a render of it, or an archive of its render
        (which may copy its frames)."""
        rows = self._connect().execute(
            "SELECT COALESCE(json_extract(j.params, '$.sequence_id'),"
            " json_extract(r.params, '$.sequence_id')) AS sequence_id"
            " FROM jobs j LEFT JOIN jobs r ON r.id = json_extract(j.params, '$.job_id')"
            " WHERE j.state IN ('queued', 'running')"
        )
        return {r["sequence_id"] for r in rows if r["sequence_id"] is not None}

    def record_frames_deleted(
        self, sequence_id: int, when: datetime, reason: str, frames: int, size_bytes: int
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO frame_deletions"
                " (sequence_id, deleted_at, reason, frames, size_bytes) VALUES (?, ?, ?, ?, ?)",
                (sequence_id, iso_time(when), reason, frames, size_bytes),
            )

    def frames_deleted(self, sequence_id: int) -> FrameDeletion | None:
        """When and why retention deleted a sequence's frames (None: they are in the store)."""
        row = (
            self._connect()
            .execute("SELECT * FROM frame_deletions WHERE sequence_id = ?", (sequence_id,))
            .fetchone()
        )
        return FrameDeletion.from_row(row) if row else None

    def stored_bytes(self) -> int:
        """Bytes of the frames still in the store (the ``store_bytes`` metric)."""
        row = (
            self._connect()
            .execute(
                "SELECT COALESCE(SUM(size_bytes), 0) FROM ingested"
                " WHERE sequence_id NOT IN (SELECT sequence_id FROM frame_deletions)"
            )
            .fetchone()
        )
        return int(row[0])

    # --- archived timelapses (skylapse.processing.archive) ---------------------------------

    def add_timelapse(
        self,
        *,
        job_id: str,
        sequence_id: int | None,
        path: str,
        files: Sequence[ArchivedFile],
        created_at: datetime,
    ) -> int:
        """Record an archived timelapse (idempotent per render job); returns its id."""
        size = sum(f.size for f in files)
        listing = json.dumps([f.to_json() for f in files])
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO timelapses (job_id, sequence_id, path, created_at, files,"
                " size_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, sequence_id, path, iso_time(created_at), listing, size),
            )
            row = db.execute("SELECT id FROM timelapses WHERE job_id = ?", (job_id,)).fetchone()
        return int(row["id"])

    def timelapse(self, timelapse_id: int) -> TimelapseRow | None:
        row = (
            self._connect()
            .execute("SELECT * FROM timelapses WHERE id = ?", (timelapse_id,))
            .fetchone()
        )
        return TimelapseRow.from_row(row) if row else None

    def timelapse_for_job(self, job_id: str) -> TimelapseRow | None:
        row = (
            self._connect()
            .execute("SELECT * FROM timelapses WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return TimelapseRow.from_row(row) if row else None

    def timelapses(
        self, *, include_deleted: bool = False, backed_up: bool | None = None
    ) -> list[TimelapseRow]:
        """Archived timelapses, oldest first (the order retention deletes them in)."""
        where = [] if include_deleted else ["deleted_at IS NULL"]
        if backed_up is not None:
            where.append("backed_up_at IS NOT NULL" if backed_up else "backed_up_at IS NULL")
        sql = "SELECT * FROM timelapses"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        return [TimelapseRow.from_row(r) for r in self._connect().execute(sql)]

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
                (iso_time(when), location, sha256, json.dumps(etags), timelapse_id),
            )

    def mark_timelapse_deleted(self, timelapse_id: int, when: datetime, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE timelapses SET deleted_at = ?, deleted_reason = ? WHERE id = ?",
                (iso_time(when), reason, timelapse_id),
            )
