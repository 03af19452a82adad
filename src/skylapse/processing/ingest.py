"""Ingest: frames arriving in the inbox become verified, catalogued frames of a sequence.

The capture side (`skylapse.transfer.queue`) commits every batch it sends by renaming its
manifest to ``<inbox>/<station>/.manifests/<batch>.sha256``. Ingest only reads committed
manifests, so it never sees a half-sent batch. For every frame listed it:

1. checks the SHA-256 recorded at capture, that the header's width x height stays within the
   pixel limit (``processing.max_frame_pixels``; checked before any decoding, so a
   decompression bomb costs nothing) and that the file decodes;
2. moves it into the working store (``<store>/<station>/<path>``), the same file system, so the
   move is a rename;
3. records it in the processing catalog, in the sequence of its (station, camera, session),
   with the phase it was taken in, both read from the frame's own EXIF (`skylapse.exif`), and
   logs ``frame ingested`` with the frame's id from that record (``frame_id``, given by the
   capture loop: `skylapse.capture.shot`) and the batch (``batch``, the manifest's name) it
   came in.

A frame that fails a check is moved to ``<quarantine>/<station>/<path>`` with a ``.reason``
file beside it and a catalog row, never dropped. A checksum failure or a missing frame is also
appended to ``<inbox>/<station>/.resend``, which the capture side reads back after its next
batch and queues those frames again. Ingest is idempotent: a crash half-way through a manifest is
finished by the next scan, and a frame already recorded is not recorded twice.

A station's folder is written by the station, so nothing in it is trusted:

* Every check of a frame is guarded: whatever a crafted file makes a decoder or the EXIF reader
  raise quarantines that frame with the error as its reason, and the scan goes on.
* A manifest that is not UTF-8 text of ``<sha256>  <path>`` lines (or is over 16 MiB, or a
  symbolic link) is moved to ``<quarantine>/<station>/.manifests/`` with its reason, unread; its
  frames stay in the inbox. Any other error while ingesting a manifest leaves it in place for
  the next scan and is listed in ``IngestReport.failed``; the other manifests and stations go on.
* Symbolic links are never followed: a station folder, ``.manifests`` folder or ``.resend`` file
  that is a link is refused (left alone, listed in ``IngestReport.refused``); a frame path must
  be relative, without ``..``, and every component of it a real folder or, last, a regular file
  (checked with ``lstat``; files are opened with ``O_NOFOLLOW``), else the frame is quarantined.
  After the move into the store, the stored file must still be the one that was hashed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from skylapse.catalog import ProcessingCatalog
from skylapse.config import DEFAULT_MAX_FRAME_PIXELS
from skylapse.exif import read_skylapse_metadata
from skylapse.log import get_logger
from skylapse.processing import sources
from skylapse.transfer.manifest import MANIFEST_DIR, RESEND_FILE

log = get_logger(__name__)

MANIFEST_SUFFIX = ".sha256"
MAX_MANIFEST_BYTES = 16 << 20  # a full batch (10,000 frames) lists about 2 MB
_MANIFEST_LINE = re.compile(r"([0-9a-f]{64})  (.+)")
_MISSING = "listed in the manifest but missing"
# Never follow a symbolic link in the last component; never wait on a FIFO.
_SAFE_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# The text fields of the Skylapse record that ingest uses (None or absent is fine).
_RECORD_TEXT_FIELDS = ("captured_at", "camera", "session_id", "phase")


class Rejected(Exception):
    """A frame or manifest that fails a check: ``reason`` goes into its quarantine record, and
    ``resend`` asks the capture side to send the frame again."""

    def __init__(self, reason: str, *, resend: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resend = resend


@dataclass
class IngestReport:
    """What one scan of the inbox did."""

    ingested: int = 0
    already_ingested: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (station/path, reason)
    manifests: int = 0
    sequences_touched: set[int] = field(default_factory=set)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (station[/name], reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (station/manifest, error)


@dataclass(frozen=True)
class _Checked:
    """A frame that passed every check, with what the catalog records of it."""

    sha256: str
    identity: os.stat_result
    captured_at: datetime
    meta: dict[str, Any]
    camera: str
    session_id: str
    phase: str | None


def align_pillow_pixel_limit(max_pixels: int) -> None:
    """Set Pillow's own decompression-bomb guard to ingest's pixel limit, so that the process
    has one limit: ``PIL.Image.MAX_IMAGE_PIXELS`` warns above it (and refuses twice it) wherever
    Pillow opens an image. Process-wide, so the service shells call it at start-up with the
    configured ``processing.max_frame_pixels``; an :class:`Ingestor` leaves it alone."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def sha256_of(path: Path, chunk: int = 1 << 20) -> tuple[str, os.stat_result]:
    """SHA-256 of a regular file opened without following a symbolic link, and the file's
    ``fstat`` (its identity) as it was hashed. Raises :class:`Rejected` for a link or a
    non-regular file."""
    digest = hashlib.sha256()
    fd = _open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        identity = os.fstat(f.fileno())
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest(), identity


class Ingestor:
    """Scans an inbox of committed batches into the working store and the catalog.

    ``max_pixels`` is the largest width x height a frame's header may claim (default
    :data:`skylapse.config.DEFAULT_MAX_FRAME_PIXELS`, the largest supported sensor x 1.5).
    """

    def __init__(
        self,
        inbox: str | Path,
        store: str | Path,
        quarantine: str | Path,
        catalog: ProcessingCatalog,
        *,
        max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    ):
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self.inbox = Path(inbox)
        self.store = Path(store)
        self.quarantine_root = Path(quarantine)
        self.catalog = catalog
        self.max_pixels = max_pixels
        for folder in (self.inbox, self.store, self.quarantine_root):
            folder.mkdir(parents=True, exist_ok=True)

    def scan(self) -> IngestReport:
        """Ingest every committed manifest found in the inbox, oldest first."""
        report = IngestReport()
        for entry in sorted(os.scandir(self.inbox), key=lambda e: e.name):
            if entry.is_symlink():
                _refuse(report, entry.name, "the station folder is a symbolic link; not followed")
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            station, station_dir = entry.name, Path(entry.path)
            for manifest in self._manifests(station, station_dir, report):
                try:
                    self._ingest_manifest(station, station_dir, manifest, report)
                except Exception as exc:  # one manifest must not stop the rest; retried next scan
                    error = f"{type(exc).__name__}: {exc}"
                    report.failed.append((f"{station}/{MANIFEST_DIR}/{manifest.name}", error))
                    log.error(
                        "manifest failed", station=station, manifest=manifest.name, error=error
                    )
                    continue
                report.manifests += 1
        return report

    def _manifests(self, station: str, station_dir: Path, report: IngestReport) -> list[Path]:
        """The committed manifests of a station, by name (their names start with the time)."""
        folder = station_dir / MANIFEST_DIR
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(mode):
            what = "a symbolic link; not followed" if stat.S_ISLNK(mode) else "not a folder"
            _refuse(report, f"{station}/{MANIFEST_DIR}", f"{MANIFEST_DIR} is {what}")
            return []
        names = (e.name for e in os.scandir(folder))
        return [folder / n for n in sorted(names) if n.endswith(MANIFEST_SUFFIX) and n[0] != "."]

    def _ingest_manifest(
        self, station: str, station_dir: Path, manifest: Path, report: IngestReport
    ) -> None:
        try:
            entries = _read_manifest(manifest)
        except Rejected as exc:
            self._quarantine_manifest(station, manifest, exc.reason, report)
            return
        batch = manifest.name.removesuffix(MANIFEST_SUFFIX)
        for expected, rel in entries:
            self._ingest_frame(station, station_dir, rel, expected, report, batch)
        log.info("batch ingested", station=station, batch=batch, frames=len(entries))
        done = manifest.with_name(manifest.name + ".done")
        os.replace(manifest, done)

    def _ingest_frame(
        self,
        station: str,
        station_dir: Path,
        rel: str,
        expected: str,
        report: IngestReport,
        batch: str = "",
    ) -> None:
        now = datetime.now(UTC)
        if self.catalog.is_ingested(station, rel):
            report.already_ingested += 1
            # a re-send of a frame we already hold; gone, a link or outside: not ours to delete
            with contextlib.suppress(Rejected):
                os.unlink(_confined(station_dir, rel)[0])
            return
        try:
            src, found = _confined(station_dir, rel)
            checked = self._check(src, expected)
            if not _same_file(found, checked.identity):
                raise Rejected("replaced while being checked")
        except Rejected as exc:
            self._quarantine(station, station_dir, rel, exc.reason, report, now, resend=exc.resend)
            return
        except Exception as exc:  # a crafted file can make any decoder raise anything
            reason = f"cannot be checked: {type(exc).__name__}: {exc}"
            self._quarantine(station, station_dir, rel, reason, report, now)
            return
        dest = self.store / station / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        if not _same_file(os.lstat(dest), checked.identity):
            reason = "replaced between its checks and the move into the store"
            self._quarantine(station, station_dir, rel, reason, report, now, held=dest)
            return
        sequence_id = self.catalog.record_ingested(
            station=station,
            path=rel,
            store_path=str(dest.relative_to(self.store)),
            sha256=checked.sha256,
            size_bytes=checked.identity.st_size,
            captured_at=checked.captured_at,
            camera=checked.camera,
            session_id=checked.session_id,
            phase=checked.phase,
            metadata=checked.meta,
            now=now,
        )
        report.ingested += 1
        report.sequences_touched.add(sequence_id)
        log.info(
            "frame ingested",
            frame_id=checked.meta.get("frame_id"),
            station=station,
            path=rel,
            batch=batch,
            sequence=sequence_id,
        )

    def _check(self, src: Path, expected: str) -> _Checked:
        """Checksum, header size, decoding and the Skylapse record; raises :class:`Rejected`."""
        actual, identity = sha256_of(src)
        if actual != expected:
            raise Rejected(f"checksum mismatch: expected {expected}, got {actual}", resend=True)
        info = self._header(src)
        try:
            sources.read_frame(src, keep_8bit=True)  # only whether it decodes; pixels dropped
        except (sources.FrameReadError, OSError, ValueError) as exc:
            raise Rejected(f"does not decode: {exc}") from None
        meta = read_skylapse_metadata(src)
        _check_record(meta)
        captured = _capture_time(meta, info, identity.st_mtime)
        return _Checked(
            sha256=actual,
            identity=identity,
            captured_at=captured,
            meta=meta,
            camera=meta.get("camera") or info.fmt,
            session_id=meta.get("session_id") or captured.date().isoformat(),
            phase=meta.get("phase"),
        )

    def _header(self, src: Path) -> sources.FrameInfo:
        """The frame's header, refused if it claims more than ``max_pixels`` pixels."""
        over = f"more than the limit of {self.max_pixels:,} (processing.max_frame_pixels)"
        try:
            info = sources.probe_frame(src)
        except sources.FrameTooLargeError as exc:
            raise Rejected(f"image header claims {over}, not decoded: {exc.reason}") from None
        except sources.FrameReadError as exc:
            raise Rejected(f"does not decode: {exc}") from None
        pixels = info.width * info.height
        if pixels > self.max_pixels:
            claim = f"{info.width}x{info.height} = {pixels:,} pixels"
            raise Rejected(f"image header claims {claim}, {over}; not decoded")
        return info

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
        held: Path | None = None,
    ) -> None:
        """Set a frame aside with its reason: ``held`` (a file already taken out of the inbox),
        else the frame in the station's folder if it is a regular file there (a link, or a path
        leaving the folder, is not moved)."""
        dest = self.quarantine_root / station / rel
        src = held
        if src is None:
            try:
                src = _confined(station_dir, rel)[0]
            except Rejected:
                src = None
        if src is not None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
            dest.with_name(dest.name + ".reason").write_text(reason + "\n")
        self.catalog.record_quarantine(station, rel, str(dest), reason, now)
        if resend:
            self._ask_resend(station, station_dir, rel, report)
        report.quarantined.append((f"{station}/{rel}", reason))
        log.warning("frame quarantined", station=station, path=rel, reason=reason)

    def _quarantine_manifest(
        self, station: str, manifest: Path, reason: str, report: IngestReport
    ) -> None:
        """Move a manifest that cannot be read (a link is moved as the link) out of the inbox."""
        rel = f"{MANIFEST_DIR}/{manifest.name}"
        dest = self.quarantine_root / station / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(manifest, dest)
        dest.with_name(dest.name + ".reason").write_text(reason + "\n")
        self.catalog.record_quarantine(station, rel, str(dest), reason, datetime.now(UTC))
        report.quarantined.append((f"{station}/{rel}", reason))
        log.warning("manifest quarantined", station=station, manifest=manifest.name, reason=reason)

    def _ask_resend(self, station: str, station_dir: Path, rel: str, report: IngestReport) -> None:
        """Append ``rel`` to the station's re-send list, a regular file (never a link's target)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = _open_regular(station_dir / RESEND_FILE, flags)
        except Rejected as exc:
            _refuse(report, f"{station}/{RESEND_FILE}", f"{exc.reason}; {rel} not asked again")
            return
        with os.fdopen(fd, "a") as f:
            f.write(rel + "\n")


def _refuse(report: IngestReport, where: str, reason: str) -> None:
    report.refused.append((where, reason))
    log.warning("refused", where=where, reason=reason)


def _open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link, a FIFO or any other non-regular file."""
    try:
        fd = os.open(path, flags | _SAFE_OPEN, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Rejected(f"{path.name} is a symbolic link; not followed") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise Rejected(f"{path.name} is not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Rejected(f"{path.name} is not a regular file")
    return fd


def _read_manifest(path: Path) -> list[tuple[str, str]]:
    """The (sha256, path) lines of a manifest; raises :class:`Rejected` naming what is wrong."""
    with os.fdopen(_open_regular(path, os.O_RDONLY), "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise Rejected(f"manifest is larger than {MAX_MANIFEST_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"manifest is not UTF-8 text: {exc}") from None
    entries = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        match = _MANIFEST_LINE.fullmatch(line)
        if match is None:
            raise Rejected(f"manifest line {number} is not '<sha256>  <path>': {line[:80]!r}")
        entries.append((match[1], match[2]))
    return entries


def _confined(station_dir: Path, rel: str) -> tuple[Path, os.stat_result]:
    """``station_dir / rel`` and its ``lstat``, if ``rel`` is a relative path without ``..``
    whose every component is a real folder and whose last is a regular file; no link is
    followed. Raises :class:`Rejected` (asking a re-send if the frame is simply missing)."""
    parts = rel.split("/")
    if rel.startswith("/") or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise Rejected(f"path {rel!r} leaves the station's folder")
    path = station_dir
    for depth, part in enumerate(parts, 1):
        path = path / part
        try:
            found = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise Rejected(_MISSING, resend=True) from None
        if stat.S_ISLNK(found.st_mode):
            raise Rejected(f"{'/'.join(parts[:depth])} is a symbolic link; not followed")
    if not stat.S_ISREG(found.st_mode):
        raise Rejected("not a regular file")
    return path, found


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and stat.S_ISREG(a.st_mode)


def _check_record(meta: Any) -> None:
    """The Skylapse record must be a mapping whose fields ingest uses are text (or absent)."""
    if not isinstance(meta, dict):
        raise Rejected(f"EXIF Skylapse record is a {type(meta).__name__}, not a mapping")
    for key in _RECORD_TEXT_FIELDS:
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            shown = repr(value)[:60]
            raise Rejected(
                f"EXIF Skylapse record: {key} is a {type(value).__name__} ({shown}), not a string"
            )


def _capture_time(meta: dict[str, Any], info: sources.FrameInfo, mtime: float) -> datetime:
    """The record's ``captured_at``, else the EXIF capture time, else the file's mtime."""
    if meta.get("captured_at"):
        try:
            return datetime.fromisoformat(meta["captured_at"])
        except ValueError:
            pass
    if info.captured_at is not None:
        return info.captured_at
    return datetime.fromtimestamp(mtime, UTC)
