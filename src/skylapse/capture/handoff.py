"""A shot's frames handed from the capture loop to the writer, and their fate reported back.

:meth:`Handoff.submit` turns each frame of a shot into a write job (its catalog row and EXIF
record from `skylapse.capture.shot`, with the station's temperatures and air from
`skylapse.capture.sensors`) and queues it on the :class:`~skylapse.capture.writer.FrameWriter`,
which encodes and stores it in its own thread. The session's summary counts each frame handed
over (``files``) and, as its write completes, stored (``written``, logged as "frame stored" and
emitted as :class:`~skylapse.capture.events.FrameWritten`) or lost (``failed``). The last shot's
analysed copy (at most ``ANALYSIS_WIDTH`` px wide) is kept as the live preview
(:attr:`Handoff.last_frame`); the full frame is not.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from skylapse.capture.analysis import FrameAnalysis
from skylapse.capture.cameras.base import Frame
from skylapse.capture.events import CaptureEvent, FrameWritten
from skylapse.capture.sensors import Bme280, read_environment
from skylapse.capture.session import SessionSummary
from skylapse.capture.shot import Shot, frame_exif_fields, frame_record
from skylapse.capture.writer import FrameWriter, WriteJob
from skylapse.catalog.capture import FrameRecord
from skylapse.log import get_logger

#: the capture service's lines, under its logger name wherever they are written
log = get_logger("skylapse.capture.service")


class Handoff:
    """From shots to the writer (module docstring); ``emit`` publishes the service's events."""

    def __init__(self, writer: FrameWriter, emit: Callable[[CaptureEvent], None]) -> None:
        self.writer = writer
        self._emit = emit
        self._bme280 = Bme280()  # read only if fitted; the driver loads lazily
        self.last_frame: Frame | None = None

    async def submit(
        self,
        summary: SessionSummary,
        frames: list[Frame],
        shot: Shot,
        analyses: list[FrameAnalysis],
        *,
        jpeg: bool,
        jobs: list[WriteJob] | None = None,
    ) -> list[asyncio.Future[FrameRecord | None]]:
        """Hand a shot's analysed frames to the writer (``jpeg``: ``capture.jpeg``); futures of
        their written records (None: the write failed, the job's ``error`` says why).
        ``jobs``, if given, collects the write jobs in the same order."""
        bracketed = len(frames) > 1
        environment = await asyncio.to_thread(read_environment, self._bme280)
        futures = []
        for i, (frame, analysis) in enumerate(zip(frames, analyses, strict=True)):
            md = frame.metadata
            record = frame_record(shot, i, bracketed, md, analysis, environment)
            exif = frame_exif_fields(shot, i, bracketed, md, analysis)
            job = WriteJob(frame.pixels, record, md.camera, exif, dng=md.dng_path, jpeg=jpeg)
            if jobs is not None:
                jobs.append(job)
            fut = await self.writer.submit(job)
            summary.files += 1
            summary.note_exposure(md.exposure_time_s, md.analogue_gain)
            fut.add_done_callback(functools.partial(self._written, summary))
            futures.append(fut)
        self.last_frame = Frame(analyses[-1].reduced, frames[-1].metadata)
        return futures

    def _written(self, summary: SessionSummary, fut: asyncio.Future) -> None:
        record = None if fut.cancelled() or fut.exception() else fut.result()
        if record is None:
            summary.failed += 1
            return
        summary.written += 1
        log.info(
            "frame stored",
            frame_id=record.extra.get("frame_id"),
            session_id=summary.session_id,
            path=record.path,
            latency_ms=None if record.latency_ms is None else round(record.latency_ms, 2),
            quality=record.quality_score,
        )
        self._emit(FrameWritten(summary.session_id, record))
