"""The capture station's local buffer: durable frame files, retention and emergency cleanup.

A frame's file and its catalog row are written as one unit (see `skylapse.capture.writer`): the
file goes to a temporary name (`write_temp`, fsync), its row is inserted as ``writing``, the file
is renamed into place (`commit_temp`, fsync of the folder) and the row marked ``pending``. A
failed write removes its temporary file; whatever a crash leaves behind is settled at start by
`skylapse.capture.reconcile`.

Space is kept in two ways:

* **Retention**: frames the processing host has *verified* are kept for a while (48 h by
  default) and then deleted.
* **Emergency cleanup**: when the disk is fuller than the watermark (80 % by default, 50..98 in
  the config), verified frames are deleted oldest first until usage is back under the watermark
  by a margin. Untransferred frames are deleted (oldest first) only when that is not enough and
  only while the station's own frames are what fills the disk: if the rest of the disk alone is
  above the goal, deleting them would not help, so they are kept. Frames captured within the
  last ``keep_untransferred`` (12 h by default) are never deleted. Before anything untransferred
  is deleted, and whenever untransferred frames are kept at risk, ``untransferred_alert`` says
  why and ``on_alert`` is called (the API raises the ``untransferred_frames_at_risk`` alert from
  it), so the alert goes out first. Every deletion is logged and counted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from skylapse.catalog.capture import FrameCatalog, FrameRecord
from skylapse.log import get_logger

log = get_logger(__name__)

TMP_MARK = ".tmp-"


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (``.<name>.tmp-<pid>``)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def staging_path(path: Path) -> Path:
    """Where the camera writes a file that becomes ``path`` once the writer has added the frame's
    EXIF (``.<name>.camera.tmp-<pid>``); like any temporary name, the start-up reconcile
    removes one a crash left behind."""
    return path.with_name(f".{path.name}.camera{TMP_MARK}{os.getpid()}")


def write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` beside ``path`` under its temporary name and fsync it; returns that name.

    On failure (a full disk...) the temporary file is removed before the error is raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit_temp(tmp: Path, path: Path) -> None:
    """Rename a temporary file into place and make the rename durable (fsync of the folder)."""
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` so that it is either absent or complete; returns its SHA-256."""
    tmp = write_temp(path, data)
    try:
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


@dataclass
class CleanupReport:
    """What one pass of `StorageManager.enforce` deleted, and why."""

    retention_deleted: int = 0
    emergency_deleted: int = 0
    emergency_untransferred: int = 0
    freed_bytes: int = 0
    utilization_before_pct: float = 0.0
    utilization_after_pct: float = 0.0
    deleted_paths: list[str] = field(default_factory=list)


class StorageManager:
    """Keeps the frame buffer within its retention and its disk watermark (module docstring).

    ``untransferred_alert`` is None while no untransferred frame is at risk, else what is
    happening to them; ``on_alert`` (settable) is called each time it is set, before any
    untransferred frame is deleted.
    """

    def __init__(
        self,
        root: str | Path,
        catalog: FrameCatalog,
        *,
        retention: timedelta = timedelta(hours=48),
        watermark_pct: float = 80.0,
        margin_pct: float = 5.0,
        keep_untransferred: timedelta = timedelta(hours=12),
        disk_usage: Callable[[Path], DiskUsage] | None = None,
        on_alert: Callable[[], None] | None = None,
    ):
        if not 0 < watermark_pct <= 100:
            raise ValueError("watermark_pct must be in (0, 100]")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog = catalog
        self.retention = retention
        self.watermark_pct = watermark_pct
        self.margin_pct = margin_pct
        self.keep_untransferred = keep_untransferred
        self._disk_usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))
        self.on_alert = on_alert
        self.untransferred_alert: str | None = None
        self.deleted_total = {"retention": 0, "emergency": 0, "emergency_untransferred": 0}

    def usage(self) -> DiskUsage:
        """The file system holding the buffer: total, used and free bytes."""
        return self._disk_usage(self.root)

    def utilization_pct(self) -> float:
        usage = self.usage()
        return 100.0 * usage.used / usage.total if usage.total else 0.0

    def enforce(self, now: datetime | None = None) -> CleanupReport:
        """Apply retention, then emergency cleanup if the disk is past the watermark."""
        now = now or datetime.now(UTC)
        report = CleanupReport(utilization_before_pct=self.utilization_pct())
        cutoff = now - self.retention
        live = []
        for record in self.catalog.deletion_candidates():
            verified = record.transfer_state == "verified"
            if verified and record.transferred_at and _aware(record.transferred_at) <= cutoff:
                self._delete(record, now, "retention", report)
            else:
                live.append(record)
        if self.utilization_pct() > self.watermark_pct:
            self._emergency(live, now, report)
        else:
            self.untransferred_alert = None
        report.utilization_after_pct = self.utilization_pct()
        return report

    def _emergency(self, live: list[FrameRecord], now: datetime, report: CleanupReport) -> None:
        """Verified frames first; then untransferred ones, if that helps and past the floor."""
        goal = self.watermark_pct - self.margin_pct
        untransferred = [r for r in live if r.transfer_state != "verified"]
        for record in live:
            if self.utilization_pct() <= goal:
                break
            if record.transfer_state == "verified":
                self._delete(record, now, "emergency", report)
        if self.utilization_pct() <= goal or not untransferred:
            self.untransferred_alert = None
            return
        own = sum(r.total_bytes for r in untransferred)
        floor = now - self.keep_untransferred
        eligible = [r for r in untransferred if _aware(r.captured_at) < floor]
        keep_h = f"{self.keep_untransferred.total_seconds() / 3600:g} h"
        if self._others_pct(own) > goal:
            self._alert(
                f"disk {self.utilization_pct():.1f} % full, {self._others_pct(own):.1f} % of it "
                f"not this station's frames: {len(untransferred)} untransferred frames kept "
                "(deleting them would not free the disk)"
            )
            return
        if not eligible:
            self._alert(
                f"disk {self.utilization_pct():.1f} % full of untransferred frames, all from the "
                f"last {keep_h}: kept; capture stops when the disk is full"
            )
            return
        self._alert(
            f"disk {self.utilization_pct():.1f} % full: deleting untransferred frames older "
            f"than {keep_h}, oldest first, down to {goal:g} %"
        )
        for record in eligible:
            if self.utilization_pct() <= goal or self._others_pct(own) > goal:
                break
            own -= record.total_bytes
            self._delete(record, now, "emergency (untransferred)", report)
        if self.utilization_pct() > goal:
            self._alert(
                f"disk {self.utilization_pct():.1f} % full after deleting "
                f"{report.emergency_untransferred} untransferred frames; the rest are kept "
                f"(from the last {keep_h}, or not what fills the disk)"
            )

    def _others_pct(self, own_bytes: int) -> float:
        """Share of the disk used by anything but the station's remaining frames."""
        usage = self._disk_usage(self.root)
        return 100.0 * (usage.used - own_bytes) / usage.total if usage.total else 0.0

    def _alert(self, detail: str) -> None:
        self.untransferred_alert = detail
        log.error("untransferred frames at risk", detail=detail)
        if self.on_alert is not None:
            try:
                self.on_alert()
            except Exception as exc:  # an alert that cannot be sent must not stop the cleanup
                log.error("raising the storage alert failed", error=repr(exc))

    def _delete(
        self, record: FrameRecord, now: datetime, reason: str, report: CleanupReport
    ) -> None:
        size = 0
        for rel in [record.path, *(c.path for c in record.companions)]:
            path = self.root / rel
            size += path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
        self.catalog.mark_deleted(record.stored_id, now, reason)
        key = "retention" if reason == "retention" else "emergency"
        self.deleted_total[key] += 1
        untransferred = reason == "emergency (untransferred)"
        if untransferred:
            self.deleted_total["emergency_untransferred"] += 1
            log.error("deleted an untransferred frame to keep capturing", path=record.path)
        else:
            log.info("deleted frame", path=record.path, reason=reason)
        report.freed_bytes += size
        report.deleted_paths.append(record.path)
        if reason == "retention":
            report.retention_deleted += 1
        else:
            report.emergency_deleted += 1
            report.emergency_untransferred += untransferred


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
