"""The rows the processing catalog (`skylapse.catalog.processing`) returns, as frozen dataclasses.

Conventions shared by every row: times are ``datetime`` (stored as ISO 8601 text with
microseconds, `skylapse.catalog.sqlite.iso_time`, and shown that way by ``to_json``), with the
time zone they were recorded with (the services record UTC; a frame's capture time is what its
metadata said); sizes are bytes; ids are the SQLite row ids, except a job's, which is the
12-hex-digit text `skylapse.processing.jobs.JobService.submit` gives it. JSON columns come back
parsed (:data:`~skylapse.catalog.sqlite.JsonObject`). Each ``from_row`` reads one
``sqlite3.Row`` of its table.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypedDict, cast, get_args

from skylapse.catalog.sqlite import JsonObject, iso_time, load_object, parse_time

#: A job's state (the API's ``JobState``): ``queued -> running -> done | failed | cancelled``.
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
#: The states a job does not leave by itself (a failed or cancelled one may be retried).
FINISHED_JOB_STATES: tuple[JobState, ...] = ("done", "failed", "cancelled")


def _time(row: sqlite3.Row, key: str) -> datetime:
    """A NOT NULL time column (the error names the row by its first column, its key)."""
    when = parse_time(row[key])
    if when is None:
        raise ValueError(f"catalog row {row[0]!r}: no {key}")
    return when


@dataclass(frozen=True)
class SequenceRow:
    """The frames of one capture session of one camera at one station.

    ``first_at``/``last_at``: the earliest and latest capture time of its frames (None while
    none had one); ``frames``: how many were ingested; ``phases``: the capture phases seen, in
    the order they first arrived; ``closed_at``: when its frames stopped coming and its render
    was queued (None: still open).
    """

    id: int
    station: str
    camera: str
    session_id: str
    first_at: datetime | None
    last_at: datetime | None
    frames: int
    phases: tuple[str, ...]
    closed_at: datetime | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SequenceRow:
        phases = json.loads(row["phases"])
        return cls(
            id=row["id"],
            station=row["station"],
            camera=row["camera"],
            session_id=row["session_id"],
            first_at=parse_time(row["first_at"]),
            last_at=parse_time(row["last_at"]),
            frames=row["frames"],
            phases=tuple(str(p) for p in phases),
            closed_at=parse_time(row["closed_at"]),
        )

    def to_json(self) -> JsonObject:
        """The API's ``SequenceOut`` body: times as ISO text, phases as a list."""
        return {
            "id": self.id,
            "station": self.station,
            "camera": self.camera,
            "session_id": self.session_id,
            "first_at": iso_time(self.first_at),
            "last_at": iso_time(self.last_at),
            "frames": self.frames,
            "phases": list(self.phases),
            "closed_at": iso_time(self.closed_at),
        }


@dataclass(frozen=True)
class IngestedFrame:
    """A verified frame in the store (`skylapse.processing.ingest`).

    ``path``: where it was on the station (relative to its buffer), unique per station;
    ``store_path``: where it is now, relative to the store; ``metadata``: what the station
    sent with it (its frame id, exposure, latency, quality ...); ``ingested_at``: when it arrived.
    """

    id: int
    station: str
    path: str
    store_path: str
    sha256: str
    size_bytes: int
    captured_at: datetime | None
    phase: str | None
    sequence_id: int | None
    metadata: JsonObject
    ingested_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> IngestedFrame:
        return cls(
            id=row["id"],
            station=row["station"],
            path=row["path"],
            store_path=row["store_path"],
            sha256=row["sha256"],
            size_bytes=row["size_bytes"],
            captured_at=parse_time(row["captured_at"]),
            phase=row["phase"],
            sequence_id=row["sequence_id"],
            metadata=load_object(row["metadata"]),
            ingested_at=_time(row, "ingested_at"),
        )

    @property
    def frame_id(self) -> str | None:
        """The capture loop's id of the frame (`skylapse.capture.shot`), when it sent one."""
        value = self.metadata.get("frame_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class QuarantinedFrame:
    """A frame ingest refused: ``path`` on the station, moved to ``quarantine_path``, and why."""

    id: int
    station: str
    path: str
    quarantine_path: str
    reason: str
    at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> QuarantinedFrame:
        return cls(
            id=row["id"],
            station=row["station"],
            path=row["path"],
            quarantine_path=row["quarantine_path"],
            reason=row["reason"],
            at=_time(row, "at"),
        )


class JobChanges(TypedDict, total=False):
    """What `ProcessingCatalog.update_job` may change (``None`` clears a nullable field)."""

    state: JobState
    error: str | None
    attempts: int
    progress: float
    result: JsonObject | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobRow:
    """A job (`skylapse.processing.jobs`): its kind and parameters, where it is and what it gave.

    ``progress``: the fraction done, 0 to 1; ``attempts``: how often a worker started it;
    ``error``: the last failure (``Type: message``); ``result``: what a done job returned;
    ``correlation_id``: the request that queued it (logs carry it).
    """

    id: str
    kind: str
    params: JsonObject
    state: JobState
    error: str | None
    attempts: int
    progress: float
    result: JsonObject | None
    correlation_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRow:
        state = row["state"]
        if state not in JOB_STATES:
            raise ValueError(f"job {row['id']}: unknown state {state!r}")
        return cls(
            id=row["id"],
            kind=row["kind"],
            params=load_object(row["params"]),
            state=cast(JobState, state),
            error=row["error"],
            attempts=row["attempts"],
            progress=float(row["progress"]),
            result=load_object(row["result"]) if row["result"] else None,
            correlation_id=row["correlation_id"],
            created_at=_time(row, "created_at"),
            started_at=parse_time(row["started_at"]),
            finished_at=parse_time(row["finished_at"]),
        )

    @property
    def sequence_id(self) -> int | None:
        """The sequence a render job renders (``params["sequence_id"]``)."""
        value = self.params.get("sequence_id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def phase(self) -> str | None:
        """The one phase a render job renders (``params["phase"]``; None: all of them)."""
        value = self.params.get("phase")
        return value if isinstance(value, str) else None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES

    @property
    def outputs(self) -> list[str]:
        """A finished job's output files, relative to the data folder (``result["outputs"]``)."""
        outputs = (self.result or {}).get("outputs")
        return [str(p) for p in outputs] if isinstance(outputs, list) else []

    def to_json(self) -> JsonObject:
        """The API's ``JobOut`` body (and the WebSocket's job events): the sequence and phase
        lifted out of the parameters, times as ISO text."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": self.progress,
            "attempts": self.attempts,
            "error": self.error,
            "sequence_id": self.sequence_id,
            "phase": self.phase,
            "params": self.params,
            "result": self.result,
            "correlation_id": self.correlation_id,
            "created_at": iso_time(self.created_at),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
        }


@dataclass(frozen=True)
class ArchivedFile:
    """One file of an archived timelapse: ``path`` relative to its folder, ``size`` in bytes and
    its SHA-256 (hex) when it was archived."""

    path: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, entry: JsonObject) -> ArchivedFile:
        path, size, sha = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not (isinstance(path, str) and isinstance(size, int) and isinstance(sha, str)):
            raise ValueError(f"malformed archived file entry {entry!r}")
        return cls(path, size, sha)

    def to_json(self) -> JsonObject:
        """As stored in the ``files`` column and listed in the backup's manifest."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class TimelapseRow:
    """An archived timelapse (`skylapse.processing.archive`): the outputs of render ``job_id``
    in ``path`` (a folder of the archive), ``size_bytes`` its files together.

    Backed up (`skylapse.processing.backup`) when ``backed_up_at`` is set: to
    ``backup_location`` with a manifest of SHA-256 ``backup_sha256`` and the objects' ETags by
    file; deleted by retention when ``deleted_at`` is set, with ``deleted_reason``.
    """

    id: int
    job_id: str
    sequence_id: int | None
    path: str
    created_at: datetime
    files: tuple[ArchivedFile, ...]
    size_bytes: int
    backed_up_at: datetime | None
    backup_location: str | None
    backup_sha256: str | None
    backup_etags: dict[str, str] | None
    deleted_at: datetime | None
    deleted_reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TimelapseRow:
        files = json.loads(row["files"])
        etags = load_object(row["backup_etags"]) if row["backup_etags"] else None
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            sequence_id=row["sequence_id"],
            path=row["path"],
            created_at=_time(row, "created_at"),
            files=tuple(ArchivedFile.from_json(f) for f in files),
            size_bytes=row["size_bytes"],
            backed_up_at=parse_time(row["backed_up_at"]),
            backup_location=row["backup_location"],
            backup_sha256=row["backup_sha256"],
            backup_etags={k: str(v) for k, v in etags.items()} if etags is not None else None,
            deleted_at=parse_time(row["deleted_at"]),
            deleted_reason=row["deleted_reason"],
        )


@dataclass(frozen=True)
class FrameDeletion:
    """Store retention (`skylapse.processing.retention`) deleted the ``frames`` frames
    (``size_bytes`` together) of a sequence at ``deleted_at``, for ``reason`` (``age`` or
    ``watermark``)."""

    sequence_id: int
    deleted_at: datetime
    reason: str
    frames: int
    size_bytes: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> FrameDeletion:
        return cls(
            sequence_id=row["sequence_id"],
            deleted_at=_time(row, "deleted_at"),
            reason=row["reason"],
            frames=row["frames"],
            size_bytes=row["size_bytes"],
        )


@dataclass(frozen=True)
class StoredSequenceRow:
    """A sequence whose frames are still in the store: its ``frames`` and their total
    ``size_bytes``, its first capture time and when its newest frame arrived."""

    id: int
    station: str
    session_id: str
    first_at: datetime | None
    frames: int
    size_bytes: int
    last_ingested_at: datetime | None

    @property
    def name(self) -> str:
        """``station/session``, how logs and reports name it."""
        return f"{self.station}/{self.session_id}"


@dataclass(frozen=True)
class ArchivedRender:
    """A done whole-sequence render (no phase) that was archived: when it started (None if
    never recorded) and when its timelapse was archived."""

    sequence_id: int
    render_started_at: datetime | None
    archived_at: datetime
