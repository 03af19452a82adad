"""`skylapse demo`: the whole system on one machine, with nothing configured.

An evening at a station in the Chamonix valley (45.92 N, 6.87 E, 1035 m) on 11 October 2025,
through the same code a real station and processing host run, in this order:

1. **capture** - :class:`~skylapse.capture.service.CaptureService` on the simulated camera and a
   :class:`~skylapse.capture.clock.SimulatedClock`: 90 minutes around sunset (50 before, 40
   after), sessions by the plan: the phase intervals of the default configuration (scaled, see
   below), autofocus, exposure ramping, HDR brackets (-2/0/+2 EV) in golden hour. Frames go to
   the local buffer with their EXIF and catalog rows.
2. **transfer** - :class:`~skylapse.transfer.queue.TransferWorker`: rsync over SSH to a private
   sshd on 127.0.0.1 that the demo starts with its own keys (`skylapse.transfer.local_sshd`),
   every batch checksum-verified on the receiver and committed. Like the station's transfer
   loop it runs during the capture, a batch every few seconds, and drains the rest at the end.
3. **ingest** - :class:`~skylapse.processing.ingest.Ingestor`: the committed batches into the
   processing store and catalog, as one sequence; it too follows the transfer as it goes.
4. **render** - a render job on the job queue (huey, SQLite in the output folder) run by an
   in-process consumer thread: H.265 Main10 1080p, an H.264 preview, a keogram and a contact
   sheet, brackets fused from their EXIF exposures (``--brackets auto``).
5. **archive** - the archive job that a finished render queues.
6. **measure** - the outputs decoded and checked; flicker estimated (see
   :func:`flicker_estimate_ev`).

Cost. On 2 cores the budget is two minutes for everything. The big costs are the simulated
camera with the capture's per-frame analysis (~0.1 CPU-s per frame at 960x540, barely less than
at 1280x720; 3 frames per golden-hour shot), the bracket fusion (~1.8x cheaper at 960x540 than
at 1280x720) and x265 at 1080p (~0.2 CPU-s per frame at preset veryfast). The demo therefore
captures at 960x540 and scales 2x to 1080p in the render's stabilizing warp (one resample it
does anyway; softer than a native 1080p capture), encodes at preset veryfast, and takes frames
at 2.8x the plan's intervals (28 s in golden hour instead of 10 s): about 155 shots, 400 files,
6.5 seconds of video at 24 fps, ~120 CPU-s in all. ``resolution``, ``frames_scale`` and
``minutes`` shrink it for tests.

API
---
``DemoOptions``, ``DemoResult``, ``DemoError``;
``run_demo(options, console) -> DemoResult``, ``print_demo_summary(result, console)``,
``serve_demo(result, console)`` (the APIs and dashboard until Ctrl-C);
pure: ``demo_config(options)``, ``session_start(location, day, minutes)``,
``flicker_estimate_ev(log2_luminance)``, ``exposure_range(records)``.

Modules: ``options`` (what it is told, where it happens, its output folder), ``progress`` (the
progress rows and their times, the loops that follow a stage, the log file), ``stages``
(capture with transfer and ingest, render, archive), ``report`` (the measurements, the result
and its summary), ``serve`` (``--serve``).
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console

from skylapse.demo.options import (
    DEMO_DAY,
    DEMO_LOCATION,
    DemoError,
    DemoOptions,
    DemoPaths,
    check_programs,
    demo_config,
    prepare_out,
    session_start,
)
from skylapse.demo.progress import StageBoard, cpu_seconds, logs_to
from skylapse.demo.report import (
    DemoResult,
    ExposureRange,
    VideoInfo,
    exposure_range,
    flicker_estimate_ev,
    measure,
    print_demo_summary,
    reference_frames,
)
from skylapse.demo.serve import serve_demo
from skylapse.demo.stages import RenderProgress, archive, receive, render
from skylapse.processing.archive import ArchiveConfig
from skylapse.processing.backup import BackupConfig
from skylapse.processing.jobs import JobService


def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    """Run every stage (module docstring); raises DemoError with what to do when one fails."""
    t_start, cpu0 = time.perf_counter(), cpu_seconds()
    paths = DemoPaths(options.out.resolve())
    check_programs()
    prepare_out(paths.out)
    board = StageBoard(console)
    progress = RenderProgress()
    with contextlib.ExitStack() as stack:
        stack.enter_context(logs_to(paths.log))
        stack.enter_context(board.progress)
        jobs = JobService(
            paths.data_dir,
            queue_url="",
            retries=0,
            on_progress=progress,
            archive=ArchiveConfig(after_render=True),
            backup=BackupConfig(),
        )
        # 1-3. capture, with the transfer and ingest loops following it
        received = receive(demo_config(options, paths.buffer), options, board, jobs, paths)
        # 4. render (a job on the queue, run by an in-process consumer until the stack closes)
        render_job = render(board, jobs, received.sequence_id, options, progress, stack)
        # 5. archive (queued by the finished render)
        archive_job, archive_dir = archive(board, jobs, render_job.id, paths)
        # 6. measure
        measured = measure(board, archive_dir, paths.buffer, received.records)
    result = DemoResult.of_stages(
        options, paths, received, (render_job, archive_job), archive_dir, measured, board
    )
    result.wall_s = time.perf_counter() - t_start
    result.cpu_s = cpu_seconds() - cpu0
    return result


__all__ = [
    "DEMO_DAY",
    "DEMO_LOCATION",
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "ExposureRange",
    "VideoInfo",
    "demo_config",
    "exposure_range",
    "flicker_estimate_ev",
    "prepare_out",
    "print_demo_summary",
    "reference_frames",
    "run_demo",
    "serve_demo",
    "session_start",
]
