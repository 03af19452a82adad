"""The start-up reconcile of the frame buffer against its catalog: nothing captured is lost.

The writer makes a frame's file and row one unit (temporary file, row ``writing``, rename, mark;
see :mod:`skylapse.capture.writer`). A crash, a full disk or a locked catalog can still stop it
half-way; :func:`reconcile_buffer` runs once when the capture service opens, before anything
writes, and settles what was left, in this order:

1. **Temporary files** (``.<name>.tmp-<pid>``): one holding a complete Skylapse frame whose
   final name is free is renamed into place (it was cut off between fsync and rename); any other
   is partial and removed. Only partial files are ever removed.
2. **Rows still ``writing``**: if the file is in place with the row's checksum the row is marked
   ``pending``; otherwise the row goes (the frame never made it, or its file is re-cataloged in
   step 3).
3. **Frame files without a row** (``*.jpg``, and ``*.dng`` that no row lists as a companion):
   a complete Skylapse frame (JPEG end marker or a TIFF structure, Skylapse's EXIF) is cataloged
   from its EXIF, the way the writer would have (:func:`record_from_file`); any other file is
   left where it is and reported. A DNG whose JPEG row was lost so becomes a frame of its own.

A camera's staged DNG (`skylapse.capture.storage.staging_path`) has no Skylapse EXIF yet, so
step 1 removes one a crash left; its JPEG, if written, is kept.

A step that fails for one file (the disk or the catalog still full...) is logged and counted in
``errors``, and the rest carries on: what it could not settle stays as it is for the next start,
and the service still opens.

API
---
``record_from_file(root, rel) -> FrameRecord | None``     pure but for reading the file.
``reconcile_buffer(root, catalog) -> ReconcileReport``
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from PIL import UnidentifiedImageError

from skylapse.capture.storage import TMP_MARK, commit_temp
from skylapse.catalog.capture import FrameCatalog, FrameRecord
from skylapse.exif import read_frame_exif
from skylapse.log import get_logger

log = get_logger(__name__)

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_TIFF_STARTS = (b"II*\x00", b"MM\x00*")
#: Skylapse EXIF fields (see the capture service) kept in ``extra``, as the writer's row has them.
_EXTRA_KEYS = ("frame_number", "wanted_ev", "achieved_ev", "sun_elevation_deg", "sky", "camera")


@dataclass
class ReconcileReport:
    """What :func:`reconcile_buffer` did; paths are relative to the buffer."""

    recovered_temps: list[str] = field(default_factory=list)  # renamed into place
    removed_temps: list[str] = field(default_factory=list)  # partial: deleted
    marked: list[str] = field(default_factory=list)  # "writing" rows whose file was there
    forgotten: list[str] = field(default_factory=list)  # "writing" rows without their file
    recataloged: list[str] = field(default_factory=list)  # files given a row from their EXIF
    foreign: list[str] = field(default_factory=list)  # files that are not Skylapse frames
    errors: list[str] = field(default_factory=list)  # could not be settled now: left as they are

    def changed(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


def _read_frame(path: Path) -> tuple[bytes, dict[str, Any]] | None:
    """The bytes and EXIF of a complete Skylapse JPEG or DNG frame at ``path`` (whatever its
    name)."""
    try:
        data = path.read_bytes()
        jpeg = data.startswith(_JPEG_START) and data.endswith(_JPEG_END)
        if not (jpeg or data[:4] in _TIFF_STARTS):
            return None
        tags = read_frame_exif(path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, struct.error):
        return None
    if not tags["skylapse"] or tags["captured_at"] is None:
        return None
    return data, tags


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def record_from_file(root: Path, rel: str) -> FrameRecord | None:
    """A catalog row for the frame file ``root / rel`` built from its EXIF (standard tags and
    Skylapse's own record), or None when it is not a complete Skylapse frame."""
    found = _read_frame(root / rel)
    if found is None:
        return None
    data, tags = found
    sk = tags["skylapse"]
    captured = tags["captured_at"]
    bracket = sk.get("bracket") if isinstance(sk.get("bracket"), dict) else {}
    return FrameRecord(
        path=rel,
        captured_at=captured if captured.tzinfo else captured.replace(tzinfo=UTC),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        session_id=sk.get("session_id"),
        scheduled_at=_time(sk.get("scheduled_at")),
        exposure_time_s=tags["exposure_time_s"],
        iso=tags["iso"],
        aperture=tags["f_number"],
        lens_position=sk.get("lens_position"),
        bracket_set=bracket.get("set"),
        bracket_index=bracket.get("index"),
        ev_offset=bracket.get("ev_offset"),
        exposure_error_ev=sk.get("exposure_error_ev"),
        focus_score=sk.get("focus_score"),
        quality_score=sk.get("quality_score"),
        latency_ms=sk.get("latency_ms"),
        phase=sk.get("phase"),
        strategy=sk.get("strategy"),
        extra={**{k: sk[k] for k in _EXTRA_KEYS if k in sk}, "recataloged": True},
    )


def _settle(report: ReconcileReport, rel: str, step: Callable[[], str | None]) -> None:
    """Run one file's step; it returns the report list to note ``rel`` in (or None)."""
    try:
        outcome = step()
    except (OSError, sqlite3.Error) as exc:
        report.errors.append(rel)
        log.error("could not reconcile: left for the next start", path=rel, error=str(exc))
        return
    if outcome is not None:
        getattr(report, outcome).append(rel)
        log.warning(f"reconcile: {outcome.replace('_', ' ')}", path=rel)


def _settle_temp(tmp: Path) -> str:
    final = tmp.with_name(tmp.name[1 : tmp.name.rindex(TMP_MARK)])
    if not final.exists() and _read_frame(tmp) is not None:
        commit_temp(tmp, final)  # complete: it was cut off between fsync and rename
        return "recovered_temps"
    tmp.unlink(missing_ok=True)
    return "removed_temps"


def _settle_writing_row(root: Path, catalog: FrameCatalog, record: FrameRecord) -> str:
    path = root / record.path
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256:
        catalog.mark_written(record.stored_id)
        return "marked"
    catalog.forget_unwritten(record.stored_id)
    return "forgotten"


def _settle_file(root: Path, catalog: FrameCatalog, rel: str) -> str:
    record = record_from_file(root, rel)
    if record is None:
        return "foreign"
    catalog.add_frame(record)
    return "recataloged"


def reconcile_buffer(root: str | Path, catalog: FrameCatalog) -> ReconcileReport:
    """Settle the buffer against the catalog (module docstring); run before anything writes."""
    root = Path(root)
    report = ReconcileReport()
    for tmp in sorted(p for p in root.rglob(f".*{TMP_MARK}*") if p.is_file()):
        _settle(report, tmp.relative_to(root).as_posix(), partial(_settle_temp, tmp))
    for record in catalog.unwritten():
        _settle(report, record.path, partial(_settle_writing_row, root, catalog, record))
    known = catalog.all_paths()
    for path in sorted([*root.rglob("*.jpg"), *root.rglob("*.dng")]):
        rel = path.relative_to(root).as_posix()
        if rel not in known and path.is_file():
            _settle(report, rel, partial(_settle_file, root, catalog, rel))
    return report
