"""The archive: long-term store of finished timelapses, with retention and working-folder cleanup.

A finished render writes into ``<data>/timelapses/<sequence>-<job>/``. Archiving moves that folder
(and optionally copies of the sequence's source frames) into ``<archive>/<sequence>-<job>/`` and
records it, with the size and SHA-256 of every file, in the processing catalog's ``timelapses``
table. The move is atomic as seen from the archive: everything is assembled in
``<archive>/.staging/`` and renamed into place in one step, so a crash leaves either no archived
folder or a complete one (a re-run picks up where it stopped).

Retention deletes the oldest timelapses first, by age and by the archive's total size, but never
one that is not backed up (see `skylapse.processing.backup`): a timelapse exists only locally
until the backup has verified its checksum.

Settings come from :class:`ArchiveConfig` (a config section, or ``SKYLAPSE_ARCHIVE_*`` variables
via :meth:`ArchiveConfig.from_env` for containers).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from skylapse.catalog import ArchivedFile, JobRow, ProcessingCatalog, TimelapseRow
from skylapse.config import ArchiveConfig as ArchiveConfig  # its settings, re-exported
from skylapse.log import get_logger

log = get_logger(__name__)

_HASH_CHUNK = 4 << 20


@dataclass
class RetentionReport:
    deleted: list[int] = field(default_factory=list)
    kept_not_backed_up: list[int] = field(default_factory=list)
    total_bytes: int = 0  # of the live timelapses after retention


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_or_copy(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst``; across file systems copy instead. True when it was renamed."""
    try:
        os.rename(src, dst)
        return True
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    shutil.copytree(src, dst, symlinks=False)
    return False


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # frames are immutable in the store: a hard link costs nothing
    except OSError:
        shutil.copy2(src, dst)


class Archive:
    """The archive folder and its rows in the processing catalog."""

    def __init__(
        self,
        data_dir: str | Path,
        catalog: ProcessingCatalog | None = None,
        root: str | Path | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.catalog = catalog or ProcessingCatalog(self.data_dir / "processing.db")
        self.root = Path(root) if root is not None else self.data_dir / "archive"
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging = self.root / ".staging"
        self.trash = self.root / ".trash"

    def path_of(self, timelapse: TimelapseRow) -> Path:
        """The timelapse's folder in the archive."""
        return self.root / timelapse.path

    # -- archiving ---------------------------------------------------------------------------

    def _render_folder(self, job: JobRow) -> Path:
        """The one folder a render job wrote its outputs into."""
        outputs = job.outputs
        folders = {Path(p).parts[:2] for p in outputs}
        if len(folders) != 1:
            raise ValueError(f"job {job.id}: expected outputs in one folder, got {outputs}")
        return self.data_dir.joinpath(*folders.pop())

    def archive_job_outputs(
        self, job_id: str, *, include_frames: bool = False, now: datetime | None = None
    ) -> TimelapseRow:
        """Move a finished render's outputs (and optionally its source frames) into the archive.

        Idempotent: archiving a job twice returns the first record; a run that crashed midway
        is completed from where it stopped. Returns the catalog row.
        """
        existing = self.catalog.timelapse_for_job(job_id)
        if existing is not None:
            return existing
        job = self.catalog.job(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.kind != "render" or job.state != "done":
            raise ValueError(
                f"job {job_id} is a {job.state} {job.kind} job, only finished renders are archived"
            )
        src = self._render_folder(job)
        name = src.name
        dest = self.root / name
        staging = self.staging / name
        if not dest.exists():
            self.staging.mkdir(parents=True, exist_ok=True)
            renamed = False
            if src.exists():
                shutil.rmtree(staging, ignore_errors=True)  # a copy a crash left half-done
                renamed = _move_or_copy(src, staging)
            elif not staging.exists():
                raise FileNotFoundError(f"job {job_id}: its outputs {src} are gone")
            if include_frames:
                self._add_frames(staging / "frames", job)
            _fsync_tree(staging)
            os.rename(staging, dest)  # the atomic step: the archive sees all or nothing
            _fsync_dir(self.root)
            if not renamed:
                shutil.rmtree(src, ignore_errors=True)
        files = [
            ArchivedFile(str(p.relative_to(dest)), p.stat().st_size, sha256_file(p))
            for p in sorted(dest.rglob("*"))
            if p.is_file()
        ]
        tid = self.catalog.add_timelapse(
            job_id=job_id,
            sequence_id=job.sequence_id,
            path=name,
            files=files,
            created_at=now or datetime.now(UTC),
        )
        record = self.catalog.timelapse(tid)
        if record is None:  # the row was inserted just above
            raise RuntimeError(f"timelapse {tid} of job {job_id} is missing from the catalog")
        log.info(
            "timelapse archived",
            job=job_id,
            timelapse=tid,
            files=len(files),
            bytes=record.size_bytes,
        )
        return record

    def _add_frames(self, folder: Path, job: JobRow) -> None:
        if job.sequence_id is None:
            raise ValueError(f"job {job.id}: no sequence_id in its parameters {job.params}")
        store = self.data_dir / "store"
        folder.mkdir(parents=True, exist_ok=True)
        frames = self.catalog.sequence_frames(job.sequence_id, job.phase)
        for i, frame in enumerate(frames):
            src = store / frame.store_path
            dst = folder / f"{i:06d}-{src.name}"
            if not dst.exists():
                _link_or_copy(src, dst)

    # -- retention ---------------------------------------------------------------------------

    def enforce_retention(
        self,
        max_age: timedelta | None = None,
        max_total_bytes: int | None = None,
        now: datetime | None = None,
    ) -> RetentionReport:
        """Delete the oldest timelapses first, until none is older than ``max_age`` and the live
        ones add up to at most ``max_total_bytes``; a timelapse not backed up is never deleted,
        even when that leaves the archive over its limits."""
        now = now or datetime.now(UTC)
        live = self.catalog.timelapses()
        total = sum(t.size_bytes for t in live)
        report = RetentionReport()
        for t in live:  # oldest first
            too_old = max_age is not None and now - t.created_at > max_age
            too_big = max_total_bytes is not None and total > max_total_bytes
            if not (too_old or too_big):
                continue
            if t.backed_up_at is None:
                report.kept_not_backed_up.append(t.id)
                continue
            self._delete(t, now, "age" if too_old else "size")
            total -= t.size_bytes
            report.deleted.append(t.id)
        report.total_bytes = total
        if report.deleted or report.kept_not_backed_up:
            log.info(
                "archive retention",
                deleted=report.deleted,
                kept_not_backed_up=report.kept_not_backed_up,
                total_bytes=total,
            )
        return report

    def _delete(self, timelapse: TimelapseRow, now: datetime, reason: str) -> None:
        folder = self.path_of(timelapse)
        self.trash.mkdir(parents=True, exist_ok=True)
        doomed = self.trash / f"{timelapse.id}-{folder.name}"
        if folder.exists():
            os.rename(folder, doomed)  # gone from the archive in one step
        self.catalog.mark_timelapse_deleted(timelapse.id, now, reason)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- cleanup -----------------------------------------------------------------------------

    def cleanup_working(self, working: str | Path | None = None) -> list[str]:
        """Remove the working folders of finished (or unknown) jobs, and leftover trash.

        Working folders belong to running jobs; once a job is done, failed or cancelled its
        folder is garbage (a worker killed mid-render leaves one behind).
        """
        working = Path(working) if working is not None else self.data_dir / "working"
        removed = []
        if working.is_dir():
            for entry in sorted(working.iterdir()):
                job = self.catalog.job(entry.name)
                if job is None or job.finished:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(entry.name)
        if self.trash.is_dir():
            shutil.rmtree(self.trash, ignore_errors=True)
        if removed:
            log.info("working folders removed", jobs=removed)
        return removed
