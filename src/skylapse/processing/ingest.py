"""Ingest: frames arriving in the inbox become verified, catalogued frames of a sequence.

The capture side (`skylapse.transfer.queue`) commits every batch it sends by renaming its
manifest to ``<inbox>/<station>/.manifests/<batch>.sha256``. Ingest only reads committed
manifests, so it never sees a half-sent batch. For every frame listed it:

1. checks the SHA-256 recorded at capture and that the file decodes;
2. moves it into the working store (``<store>/<station>/<path>``), the same file system, so the
   move is a rename;
3. records it in the processing catalog, in the sequence of its (station, camera, session),
   with the phase it was taken in, both read from the frame's own EXIF (`skylapse.exif`).

A frame that fails a check is moved to ``<quarantine>/<station>/<path>`` with a ``.reason``
file beside it and a catalog row, never dropped. A checksum failure is also appended to
``<inbox>/<station>/.resend``, which the capture side reads back after its next batch and
queues those frames again. Ingest is idempotent: a crash half-way through a manifest is finished
by the next scan, and a frame already recorded is not recorded twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from skylapse.catalog import ProcessingCatalog
from skylapse.exif import read_skylapse_metadata
from skylapse.log import get_logger
from skylapse.processing import sources
from skylapse.transfer.queue import MANIFEST_DIR, RESEND_FILE

log = get_logger(__name__)


@dataclass
class IngestReport:
    """What one scan of the inbox did."""

    ingested: int = 0
    already_ingested: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (station/path, reason)
    manifests: int = 0
    sequences_touched: set[int] = field(default_factory=set)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Ingestor:
    """Scans an inbox of committed batches into the working store and the catalog."""

    def __init__(
        self,
        inbox: str | Path,
        store: str | Path,
        quarantine: str | Path,
        catalog: ProcessingCatalog,
    ):
        self.inbox = Path(inbox)
        self.store = Path(store)
        self.quarantine_root = Path(quarantine)
        self.catalog = catalog
        for folder in (self.inbox, self.store, self.quarantine_root):
            folder.mkdir(parents=True, exist_ok=True)

    def scan(self) -> IngestReport:
        """Ingest every committed manifest found in the inbox, oldest first."""
        report = IngestReport()
        for station_dir in sorted(p for p in self.inbox.iterdir() if p.is_dir()):
            manifests = sorted((station_dir / MANIFEST_DIR).glob("*.sha256"))
            for manifest in manifests:
                self._ingest_manifest(station_dir.name, station_dir, manifest, report)
                report.manifests += 1
        return report

    def _ingest_manifest(
        self, station: str, station_dir: Path, manifest: Path, report: IngestReport
    ) -> None:
        for line in manifest.read_text().splitlines():
            if not line.strip():
                continue
            expected, _, rel = line.partition("  ")
            self._ingest_frame(station, station_dir, rel, expected, report)
        done = manifest.with_name(manifest.name + ".done")
        os.replace(manifest, done)

    def _ingest_frame(
        self, station: str, station_dir: Path, rel: str, expected: str, report: IngestReport
    ) -> None:
        now = datetime.now(UTC)
        src = station_dir / rel
        if self.catalog.is_ingested(station, rel):
            report.already_ingested += 1
            if src.exists():  # a re-send of a frame we already hold
                src.unlink()
            return
        if not _inside(src, station_dir) or not src.is_file():
            self._quarantine(
                station,
                station_dir,
                rel,
                "listed in the manifest but missing",
                report,
                now,
                resend=True,
            )
            return
        actual = sha256_of(src)
        if actual != expected:
            self._quarantine(
                station,
                station_dir,
                rel,
                f"checksum mismatch: expected {expected}, got {actual}",
                report,
                now,
                resend=True,
            )
            return
        try:
            sources.read_frame(src)
            found = sources.discover_frames(src).frames
        except (sources.FrameReadError, OSError, ValueError) as exc:
            self._quarantine(station, station_dir, rel, f"does not decode: {exc}", report, now)
            return
        info = found[0] if found else None
        meta = read_skylapse_metadata(src)
        captured = _capture_time(meta, info, src)
        dest = self.store / station / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        sequence_id = self.catalog.record_ingested(
            station=station,
            path=rel,
            store_path=str(dest.relative_to(self.store)),
            sha256=actual,
            size_bytes=dest.stat().st_size,
            captured_at=captured,
            camera=str(meta.get("camera") or (info and info.fmt) or "unknown"),
            session_id=str(meta.get("session_id") or captured.date().isoformat()),
            phase=meta.get("phase"),
            metadata=meta,
            now=now,
        )
        report.ingested += 1
        report.sequences_touched.add(sequence_id)

    def _quarantine(
        self,
        station: str,
        station_dir: Path,
        rel: str,
        reason: str,
        report: IngestReport,
        now: datetime,
        *,
        resend: bool = False,
    ) -> None:
        src = station_dir / rel
        dest = self.quarantine_root / station / rel
        if _inside(src, station_dir) and src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
            dest.with_name(dest.name + ".reason").write_text(reason + "\n")
        self.catalog.record_quarantine(station, rel, str(dest), reason, now)
        if resend:
            with open(station_dir / RESEND_FILE, "a") as f:
                f.write(rel + "\n")
        report.quarantined.append((f"{station}/{rel}", reason))
        log.warning("frame quarantined", station=station, path=rel, reason=reason)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` stays inside ``root`` (a manifest must not point elsewhere)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _capture_time(meta: dict, info: sources.FrameInfo | None, path: Path) -> datetime:
    if meta.get("captured_at"):
        try:
            return datetime.fromisoformat(meta["captured_at"])
        except ValueError:
            pass
    if info is not None and info.captured_at is not None:
        return info.captured_at
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
