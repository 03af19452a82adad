"""The capture station's local buffer: durable frame files, retention and emergency cleanup.

Frames are written atomically (temporary file, fsync, rename, fsync of the folder) and only then
entered in the catalog, so a crash leaves at worst a stray temporary file, which `recover`
removes, and never a catalog row pointing at half a frame.

Space is kept in two ways:

* **Retention**: frames the processing host has *verified* are kept for a while (48 h by
  default) and then deleted.
* **Emergency cleanup**: when the disk is fuller than the watermark (80 % by default), frames are
  deleted oldest first, verified ones before any that has not reached the processing host, until
  usage is back under the watermark by a margin. Capture must never stop because the disk filled
  up, so untransferred frames go too when nothing else is left, and every deletion is logged and
  counted.
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

from skylapse.catalog import Catalog
from skylapse.log import get_logger

log = get_logger(__name__)

TMP_MARK = ".tmp-"


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` so that it is either absent or complete; returns its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
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
    """Keeps the frame buffer within its retention and its disk watermark."""

    def __init__(
        self,
        root: str | Path,
        catalog: Catalog,
        *,
        retention: timedelta = timedelta(hours=48),
        watermark_pct: float = 80.0,
        margin_pct: float = 5.0,
        disk_usage: Callable[[Path], DiskUsage] | None = None,
    ):
        if not 0 < watermark_pct <= 100:
            raise ValueError("watermark_pct must be in (0, 100]")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog = catalog
        self.retention = retention
        self.watermark_pct = watermark_pct
        self.margin_pct = margin_pct
        self._disk_usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))
        self.deleted_total = {"retention": 0, "emergency": 0, "emergency_untransferred": 0}

    def utilization_pct(self) -> float:
        usage = self._disk_usage(self.root)
        return 100.0 * usage.used / usage.total if usage.total else 0.0

    def recover(self) -> list[Path]:
        """Remove temporary files a crash left behind (they were never in the catalog)."""
        stray = [p for p in self.root.rglob(f".*{TMP_MARK}*") if p.is_file()]
        for p in stray:
            p.unlink(missing_ok=True)
            log.warning("removed half-written file", path=str(p))
        return stray

    def enforce(self, now: datetime | None = None) -> CleanupReport:
        """Apply retention, then emergency cleanup if the disk is past the watermark."""
        now = now or datetime.now(UTC)
        report = CleanupReport(utilization_before_pct=self.utilization_pct())
        cutoff = now - self.retention
        for record in self.catalog.deletion_candidates():
            if record.transfer_state != "verified":
                break  # candidates list verified frames first
            if record.transferred_at and _aware(record.transferred_at) <= cutoff:
                report.freed_bytes += self._delete(record, now, "retention")
                report.retention_deleted += 1
                report.deleted_paths.append(record.path)

        if self.utilization_pct() > self.watermark_pct:
            goal = self.watermark_pct - self.margin_pct
            for record in self.catalog.deletion_candidates():
                if self.utilization_pct() <= goal:
                    break
                untransferred = record.transfer_state != "verified"
                reason = "emergency (untransferred)" if untransferred else "emergency"
                report.freed_bytes += self._delete(record, now, reason)
                report.emergency_deleted += 1
                report.emergency_untransferred += untransferred
                report.deleted_paths.append(record.path)
        report.utilization_after_pct = self.utilization_pct()
        return report

    def _delete(self, record, now: datetime, reason: str) -> int:
        path = self.root / record.path
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        self.catalog.mark_deleted(record.id, now, reason)
        key = "retention" if reason == "retention" else "emergency"
        self.deleted_total[key] += 1
        if reason == "emergency (untransferred)":
            self.deleted_total["emergency_untransferred"] += 1
            log.error("deleted an untransferred frame to keep capturing", path=record.path)
        else:
            log.info("deleted frame", path=record.path, reason=reason)
        return size


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
