"""Off the capture path: encode a frame to JPEG with EXIF, write it atomically, catalog it.

With RAW capture (``capture.raw``) the camera has already written the frame's DNG to a staging
name (`skylapse.capture.storage.staging_path`); the writer adds the same EXIF to it
(`skylapse.exif.with_exif_tiff`) and writes it as ``frame_000123.dng`` beside the JPEG, listed
as the row's companion (``extra["companions"]``, with its SHA-256 and size). Without the JPEG
(``capture.jpeg: false``) the DNG is the frame's own file. A DNG that cannot be read is logged
and the JPEG written alone; the staging file is removed once the frame is written or dropped.

The capture loop must reach every exposure on time, so nothing slow happens on it: each frame
goes as a :class:`WriteJob` to a :class:`FrameWriter`, a single worker thread behind a bounded
queue. The thread encodes (``cv2.imencode``, which releases the GIL) and adds EXIF without
re-encoding (:mod:`skylapse.exif`). The queue is bounded twice, in frames (``maxsize``) and in
the bytes of their pixels (``max_bytes``), because frames differ by an order of magnitude (a
1080p uint16 frame is 12 MB, a 12 MP 8-bit one 36 MB): a frame waits while the frames ahead of
it hold ``max_bytes`` with it, unless nothing is ahead of it. When the queue is full the loop
waits (back-pressure, counted as ``writer_waits``), which only happens if the disk is far slower
than the capture interval.

File and catalog row are written as one unit: the files to temporary names (fsync), the row
inserted as ``writing``, the files renamed into place (companions first), the row marked
``pending``. A failure
before the rename removes the temporary file (and the row), so a frame is either in the buffer
with its row or not at all; a failure after it leaves a complete file under a ``writing`` row,
which the writer marks at its next frame and the start-up reconcile
(:mod:`skylapse.capture.reconcile`) settles otherwise. Catalog calls that meet a lock
(``database is locked``) are retried with a growing pause (``LOCK_RETRIES``).

When a write fails for lack of space (``ENOSPC`` on the file, ``SQLITE_FULL`` on the catalog),
the writer runs the storage manager's emergency cleanup and retries once. A frame that still
cannot be written is dropped, logged and counted; the loop carries on.

API
---
``encode_jpeg(pixels, quality=92) -> memoryview``  RGB sRGB frame (uint8/uint16) -> 8-bit JPEG.
``frame_exif(record, camera_model, skylapse) -> bytes``   the EXIF block for a frame.
``WriteJob(pixels, record, camera_model, skylapse, dng=None, jpeg=True)``
``FrameWriter(root, catalog, storage=None, quality=92, maxsize=8, max_bytes=64 MB,
on_written=None, write_hook=None)``: ``await submit(job) -> asyncio.Future[FrameRecord | None]``,
``await drain()``, ``close()``, ``stats()``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skylapse.capture.cameras.base import swap_red_blue
from skylapse.capture.storage import StorageManager, commit_temp, write_temp
from skylapse.catalog.capture import WRITING, Companion, FrameCatalog, FrameRecord
from skylapse.exif import exif_bytes, with_exif_jpeg, with_exif_tiff
from skylapse.log import get_logger

log = get_logger(__name__)

#: Catalog calls meeting a lock are tried this many times, pausing 50 ms, 100 ms, 200 ms...
LOCK_RETRIES = 6


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


#: Called after each frame: a frame's work frees tens of MB in blocks of 1..10 MB (analysis
#: buffers, JPEG buffers) across the threads' malloc arenas, which glibc keeps mapped (its mmap
#: threshold adapts upwards as such blocks are freed); returning them keeps the service's
#: resident set flat between frames (README: footprint).
_MALLOC_TRIM = _glibc_malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc; a no-op elsewhere)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def is_disk_full(exc: BaseException) -> bool:
    """A file write out of space or quota, or SQLite's ``database or disk is full``."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    )


def is_locked(exc: BaseException) -> bool:
    """SQLite's ``database is locked`` / ``database table is locked`` (busy after the timeout)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and code is not None
        and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )


def retry_locked(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, retried while SQLite says the database is locked (``LOCK_RETRIES``)."""
    for attempt in range(LOCK_RETRIES):
        try:
            return call(*args)
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or attempt == LOCK_RETRIES - 1:
                raise
            log.warning("catalog locked: retrying", call=call.__name__, attempt=attempt + 1)
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _imencode(bgr: np.ndarray, quality: int) -> memoryview:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.reshape(-1).data.toreadonly()


def encode_jpeg(pixels: np.ndarray, quality: int = 92) -> memoryview:
    """An RGB sRGB frame (uint8, or uint16 over 0..65535) as baseline 8-bit JPEG bytes.

    The bytes are a read-only view of the encoder's own buffer, not a copy of it: a 12 MP JPEG
    is several MB, and :func:`skylapse.exif.with_exif_jpeg` copies it once more anyway.

    libjpeg takes OpenCV's BGR order, and no full-size copy is made for it (36 MB at 12 MP):
    16 bits are narrowed by ``cv2.convertScaleAbs`` (round(v / 257), saturating: the same
    values as ``srgb.to_uint8`` at a fraction of the cost) into a new array, reordered in place;
    an 8-bit frame is reordered in place and back before returning (:func:`swap_red_blue`), so
    no other thread may read it meanwhile (the service hands a frame to the writer once it is
    analysed, and keeps only the reduced copy). A read-only 8-bit frame is copied instead.
    """
    if pixels.dtype == np.uint16:
        eight = cv2.convertScaleAbs(pixels, alpha=1.0 / 257.0)
    elif pixels.dtype == np.uint8:
        eight = pixels
    else:
        raise TypeError(f"expected a uint8 or uint16 frame, got {pixels.dtype}")
    if eight.ndim != 3:
        return _imencode(eight, quality)
    if eight is not pixels:
        return _imencode(swap_red_blue(eight), quality)
    if not eight.flags.writeable:
        return _imencode(cv2.cvtColor(eight, cv2.COLOR_RGB2BGR), quality)
    swap_red_blue(eight)
    try:
        return _imencode(eight, quality)
    finally:
        swap_red_blue(eight)


def frame_exif(record: FrameRecord, camera_model: str, skylapse: dict[str, Any]) -> bytes:
    """Standard tags (time with sub-seconds, exposure, ISO, f-number, model) + Skylapse's dict."""
    return exif_bytes(
        record.captured_at,
        exposure_time_s=record.exposure_time_s,
        iso=record.iso,
        f_number=record.aperture,
        model=camera_model,
        skylapse=skylapse,
    )


@dataclass
class WriteJob:
    """One frame to persist. ``record.path`` (the JPEG's) is relative to the buffer root; sha256
    and size are filled in by the writer. ``dng`` is the DNG the camera staged for the frame;
    ``jpeg`` False keeps only that DNG (then ``record.path`` with ``.dng`` is the frame). The
    writer reorders ``pixels`` in place while it encodes them (:func:`encode_jpeg`): do not read
    them once submitted."""

    pixels: np.ndarray
    record: FrameRecord
    camera_model: str
    skylapse: dict[str, Any] = field(default_factory=dict)
    dng: Path | None = None
    jpeg: bool = True
    error: str | None = None  # set by the writer when the frame could not be stored: why


class FrameWriter:
    """A worker thread that encodes, writes and catalogs frames (see module docstring)."""

    def __init__(
        self,
        root: str | Path,
        catalog: FrameCatalog,
        *,
        storage: StorageManager | None = None,
        quality: int = 92,
        maxsize: int = 8,
        max_bytes: int = 64 * 2**20,
        on_written: Callable[[FrameRecord], None] | None = None,
        write_hook: Callable[[WriteJob], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.catalog = catalog
        self.storage = storage
        self.quality = quality
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.on_written = on_written
        self._write_hook = write_hook  # test seam: runs in the writer thread before each write
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-writer")
        self._room: asyncio.Event | None = None  # set when a frame leaves the queue
        self._queued_bytes = 0  # pixels of the frames queued or being written
        self._pending: set[asyncio.Future] = set()
        self._lock = threading.Lock()
        self._unmarked: list[int] = []  # rows whose file is in place but still "writing"
        self.written = 0
        self.failed = 0
        self.last_error: str | None = None  # why the last dropped frame could not be written
        self.waits = 0
        self.max_depth = 0
        self.write_ms: deque[float] = deque(maxlen=1000)  # recent frames only

    @property
    def depth(self) -> int:
        """Frames queued or being written."""
        return len(self._pending)

    def _has_room(self, nbytes: int) -> bool:
        if not self._pending:
            return True  # a frame larger than max_bytes still goes, alone
        return len(self._pending) < self.maxsize and self._queued_bytes + nbytes <= self.max_bytes

    async def submit(self, job: WriteJob) -> asyncio.Future:
        """Queue a frame; returns a future for its catalog record (None if it was dropped).

        Waits only while the frames already queued leave no room for it: ``maxsize`` of them,
        or ``max_bytes`` of pixels with this one (back-pressure)."""
        nbytes = job.pixels.nbytes
        if not self._has_room(nbytes):
            self.waits += 1
            if self.waits == 1 or self.waits % 100 == 0:  # logged, not flooded
                log.warning(
                    "writer queue full: capture waits",
                    depth=self.depth,
                    queued_mb=round(self._queued_bytes / 2**20, 1),
                    waits=self.waits,
                )
            if self._room is None:
                self._room = asyncio.Event()
            while not self._has_room(nbytes):
                self._room.clear()
                await self._room.wait()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, self._write, job)
        self._pending.add(fut)
        self._queued_bytes += nbytes
        self.max_depth = max(self.max_depth, len(self._pending))

        def done(f: asyncio.Future) -> None:
            self._pending.discard(f)
            self._queued_bytes -= nbytes
            if self._room is not None:
                self._room.set()

        fut.add_done_callback(done)
        return fut

    async def drain(self) -> None:
        """Wait until every queued frame is written (or dropped)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def close(self) -> None:
        """Finish queued work and stop the thread (call after :meth:`drain`)."""
        self._executor.shutdown(wait=True)

    def stats(self) -> dict[str, Any]:
        times = np.array(self.write_ms) if self.write_ms else np.zeros(1)
        return {
            "written": self.written,
            "failed": self.failed,
            "queue_depth": self.depth,
            "max_queue_depth": self.max_depth,
            "writer_waits": self.waits,
            "write_ms_p50": float(np.percentile(times, 50)),
            "write_ms_max": float(times.max()),
        }

    # -- the worker thread -----------------------------------------------------------------
    def _encode(self, job: WriteJob) -> list[tuple[str, bytes]]:
        """The frame's files as (path relative to the root, bytes), the frame's own first: the
        JPEG unless ``job.jpeg`` is False, then the DNG, both with the frame's EXIF."""
        exif = frame_exif(job.record, job.camera_model, job.skylapse)
        files = []
        if job.jpeg:
            jpeg = with_exif_jpeg(encode_jpeg(job.pixels, self.quality), exif)
            files.append((job.record.path, jpeg))
        if job.dng is not None:
            try:
                dng = with_exif_tiff(job.dng.read_bytes(), exif)
            except (OSError, ValueError) as exc:
                if not files:
                    raise
                log.error("the frame's DNG is lost: writing its JPEG alone",
                          path=job.record.path, error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            else:
                files.append((str(Path(job.record.path).with_suffix(".dng")), dng))
        if not files:
            raise ValueError("capture.jpeg is false and the camera gave no DNG: nothing to write")
        return files

    def _persist(self, job: WriteJob, files: list[tuple[str, bytes]]) -> FrameRecord:
        """Temporary files, row ``writing``, renames, mark (module docstring); on a failure before
        the renames nothing of the frame is left, neither file nor row."""
        (main, data), rest = files[0], files[1:]
        extra = dict(job.record.extra)
        if rest:
            companions = [Companion(p, hashlib.sha256(d).hexdigest(), len(d)) for p, d in rest]
            extra["companions"] = [c.to_json() for c in companions]
        sha = hashlib.sha256(data).hexdigest()
        record = replace(
            job.record, path=main, sha256=sha, size_bytes=len(data), transfer_state=WRITING,
            extra=extra,
        )  # fmt: skip
        temps: list[tuple[Path, Path]] = []
        try:
            for rel, blob in reversed(files):  # companions first, the frame's own file last
                temps.append((write_temp(self.root / rel, blob), self.root / rel))
            frame_id: int = retry_locked(self.catalog.add_frame, record)  # sets record.id
            try:
                for tmp, path in temps:
                    commit_temp(tmp, path)
            except BaseException:
                self._forget(frame_id, record.path)
                raise
        except BaseException:
            for tmp, _ in temps:
                tmp.unlink(missing_ok=True)
            raise
        self._unmarked.append(frame_id)
        self._mark_written()
        if frame_id not in self._unmarked:
            record.transfer_state = "pending"
        return record

    def _forget(self, frame_id: int, path: str) -> None:
        try:
            retry_locked(self.catalog.forget_unwritten, frame_id)
        except sqlite3.Error as exc:  # the reconcile at start removes the row
            log.error("could not remove the row of a failed write", path=path, error=str(exc))

    def _mark_written(self) -> None:
        """Mark the rows whose files are in place; those that fail wait for the next frame (or
        the reconcile at start): the file is complete, nothing is lost."""
        while self._unmarked:
            frame_id = self._unmarked[0]
            try:
                retry_locked(self.catalog.mark_written, frame_id)
            except sqlite3.Error as exc:
                log.error(
                    "frame written but not yet queued for transfer",
                    frame_id=frame_id,
                    waiting=len(self._unmarked),
                    error=str(exc),
                )
                return
            self._unmarked.pop(0)

    def _write(self, job: WriteJob) -> FrameRecord | None:
        t0 = time.perf_counter()
        try:
            if self._write_hook is not None:
                self._write_hook(job)
            data = self._encode(job)
            try:
                record = self._persist(job, data)
            except (OSError, sqlite3.Error) as exc:
                if not is_disk_full(exc) or self.storage is None:
                    raise
                log.error(
                    "disk full while writing a frame: emergency cleanup", path=job.record.path
                )
                self.storage.enforce()
                record = self._persist(job, data)
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.failed += 1
                self.last_error = job.error
            log.error("frame dropped: could not be written", path=job.record.path, error=job.error)
            return None
        finally:
            if job.dng is not None:
                job.dng.unlink(missing_ok=True)
        with self._lock:
            self.written += 1
            self.write_ms.append((time.perf_counter() - t0) * 1e3)
        if self.on_written is not None:
            self.on_written(record)
        release_free_memory()
        return record
