"""The demo's stages, each through the code the real services run: capture with transfer and
ingest following it (`receive`), render (`render`) and archive (`archive`) on the job queue.

Each stage shows a progress row on the `StageBoard` and records its wall and CPU time there;
a stage that fails raises `DemoError` saying what happened and where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from skylapse.capture.cameras import CameraConfig, CameraFactory, Location
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.events import FrameWritten
from skylapse.capture.service import CATALOG_NAME, CaptureService
from skylapse.capture.session import SessionSpec, SessionSummary
from skylapse.catalog import Catalog, FrameRecord, JobRow
from skylapse.config import SkylapseConfig
from skylapse.demo.options import STATION, DemoError, DemoOptions, DemoPaths, session_start
from skylapse.demo.progress import Follower, StageBoard, Update, cpu_seconds
from skylapse.log import get_logger
from skylapse.processing.ingest import Ingestor, IngestReport
from skylapse.processing.jobs import JobService, RenderJobOptions
from skylapse.transfer.local_sshd import running_sshd
from skylapse.transfer.queue import TransferSettings, TransferStats, TransferWorker

log = get_logger(__name__)


@dataclass
class Received:
    """What capture, transfer and ingest produced; `receive` has checked that every frame
    captured was transferred, verified and ingested into one sequence."""

    summary: SessionSummary
    catalog: Catalog  # the station's
    records: list[FrameRecord]
    transfer: TransferStats
    batches_during_capture: int
    ingest: IngestReport
    sequence_id: int


def receive(
    cfg: SkylapseConfig,
    options: DemoOptions,
    board: StageBoard,
    jobs: JobService,
    paths: DemoPaths,
) -> Received:
    """Stages 1-3: capture the session while the transfer and ingest loops follow it, then
    check that nothing was lost on the way."""
    pipeline = _Pipeline(options, board, jobs, paths)
    summary = pipeline.run(cfg)
    total = summary.written
    records = pipeline.catalog.frames()
    verified = sum(r.transfer_state == "verified" for r in records)
    if verified != total or len(records) != total:
        raise DemoError(
            f"only {verified} of {total} frames were transferred and verified; see {paths.log}"
        )
    report = pipeline.report
    if report.quarantined or report.ingested != total:
        raise DemoError(
            f"{len(report.quarantined)} frames quarantined at ingest: {report.quarantined[:3]}"
        )
    (sequence,) = [s for s in jobs.catalog.sequences() if s.station == STATION]
    return Received(
        summary=summary,
        catalog=pipeline.catalog,
        records=records,
        transfer=pipeline.worker_stats,
        batches_during_capture=pipeline.early_batches,
        ingest=report,
        sequence_id=sequence.id,
    )


class _Pipeline:
    """Capture the session while the station's transfer loop sends what is written (rsync over
    the private sshd) and the processing side's ingest loop takes in what is committed, as the
    two services do; each loop ends once the stage before it has ended and it found nothing
    more. Stage times: capture (the loops run alongside), then how long transfer and ingest
    still took after the stage before them ended."""

    def __init__(
        self, options: DemoOptions, board: StageBoard, jobs: JobService, paths: DemoPaths
    ) -> None:
        self.options = options
        self.board = board
        self.paths = paths
        self.catalog = Catalog(paths.buffer / CATALOG_NAME)
        self.ingestor = Ingestor(
            paths.inbox, jobs.store, paths.inbox.parent / "quarantine", jobs.catalog
        )
        self.report = IngestReport()
        self.capture_done = threading.Event()
        self.early_batches = 0
        self.worker_stats = TransferStats()
        self.capture_update = board.task("capture", options.minutes * 60.0)
        self.transfer_update = board.task("transfer", 1)
        self.ingest_update = board.task("ingest", 1)

    def ingest_step(self) -> int:
        scanned = self.ingestor.scan()
        self.report.ingested += scanned.ingested
        self.report.already_ingested += scanned.already_ingested
        self.report.quarantined += scanned.quarantined
        self.report.manifests += scanned.manifests
        return scanned.ingested + len(scanned.quarantined)

    def transfer_step(self, worker: TransferWorker) -> int:
        if self.capture_done.is_set():  # the rest, retrying failures for up to a minute
            return worker.drain(deadline_s=60.0)
        try:  # one batch every few seconds, as the station's loop (`TransferWorker.run`)
            return worker.send_batch()
        except Exception as exc:  # the next poll or the final drain tries again
            log.warning("transfer batch failed", error=str(exc))
            return 0

    def tick(self) -> None:
        written = self.catalog.count_frames()
        st = self.worker_stats
        self.transfer_update(
            st.frames_sent,
            f"{st.frames_sent} of {written} frames, {st.batches_verified} batches verified",
            total=max(written, 1),
        )
        self.ingest_update(
            self.report.ingested,
            f"{self.report.ingested} frames, {len(self.report.quarantined)} quarantined",
            total=max(written, 1),
        )

    def run(self, cfg: SkylapseConfig) -> SessionSummary:
        with running_sshd(self.paths.ssh_dir) as sshd:
            # JPEGs hardly compress, and over loopback compressing only costs CPU
            worker = TransferWorker(
                self.catalog,
                self.paths.buffer,
                sshd.target(self.paths.inbox),
                STATION,
                TransferSettings(batch_size=250, compress=False),
            )
            self.worker_stats = worker.stats
            step = functools.partial(self.transfer_step, worker)
            transfer = Follower("transfer", step, self.capture_done, poll_s=4.0)
            ingest = Follower("ingest", self.ingest_step, transfer.done, poll_s=1.0)
            transfer.start()
            ingest.start()
            t0, cpu0 = time.perf_counter(), cpu_seconds()
            try:
                summary = asyncio.run(
                    _capture(cfg, self.options, self.paths.buffer, self.capture_update, self.tick)
                )
            except BaseException:
                worker.stop()
                raise
            finally:
                self.capture_done.set()
                t_captured, cpu_captured = time.perf_counter(), cpu_seconds()
                self.early_batches = worker.stats.batches_verified
                self.capture_update(completed=self.options.minutes * 60.0)
                for follower in (transfer, ingest):
                    while follower.is_alive():
                        follower.join(0.1)
                        self.tick()
                self.tick()
            for follower in (transfer, ingest):
                if follower.error is not None:
                    raise DemoError(
                        f"{follower.name.removeprefix('demo-')} failed: {follower.error}"
                    ) from follower.error
        self.board.record("capture", t_captured - t0, cpu_captured - cpu0)
        self.board.record(
            "transfer",
            max(0.0, transfer.finished_at - t_captured),
            max(0.0, transfer.finished_cpu - cpu_captured),
        )
        self.board.record(
            "ingest",
            max(0.0, ingest.finished_at - transfer.finished_at),
            max(0.0, ingest.finished_cpu - transfer.finished_cpu),
        )
        return summary


class RenderProgress:
    """The job service's ``on_progress`` (called from the consumer's thread): the render
    stage's progress row once that stage has begun, nothing before."""

    def __init__(self) -> None:
        self.update: Update | None = None

    def __call__(self, job_id: str, fraction: float) -> None:
        if self.update is not None:
            self.update(fraction, f"job {job_id}")


def render(
    board: StageBoard,
    jobs: JobService,
    sequence_id: int,
    options: DemoOptions,
    progress: RenderProgress,
    stack: contextlib.ExitStack,
) -> JobRow:
    """Stage 4: close the sequence and render it as a job on the queue, run by a consumer
    thread this starts; the consumer stays for the archive job and stops when ``stack``
    closes. Returns the finished job."""
    with board.stage("render", 1.0) as update:
        progress.update = update
        jobs.catalog.close_sequence(sequence_id, dt.datetime.now(dt.UTC))
        render_options = RenderJobOptions(
            formats=["h265", "h264"],
            size=options.size,
            brackets="auto",
            preset=options.preset,
        )
        render_id = jobs.submit_render(sequence_id, render_options)
        consumer = jobs.start_consumer(workers=1)  # Ctrl-C stays ours
        stack.callback(consumer.stop, graceful=True)
        return wait_for_job(lambda: jobs.catalog.job(render_id))


def archive(
    board: StageBoard, jobs: JobService, render_id: str, paths: DemoPaths
) -> tuple[JobRow, Path]:
    """Stage 5: wait for the archive job the finished render queued; returns that job and the
    timelapse's folder in the archive."""
    with board.stage("archive", 1.0) as update:
        update(0, "waiting for the archive job")
        archive_job = wait_for_job(lambda: _archive_job_for(jobs, render_id))
    timelapse = jobs.catalog.timelapse_for_job(render_id)
    if timelapse is None:
        raise DemoError(f"the render {render_id} was not archived; see {paths.log}")
    return archive_job, paths.data_dir / "archive" / timelapse.path


def _archive_job_for(jobs: JobService, render_id: str) -> JobRow | None:
    for job in jobs.catalog.jobs(limit=20):
        if job.kind == "archive" and job.params.get("job_id") == render_id:
            return job
    return None


def wait_for_job(lookup: Callable[[], JobRow | None], timeout_s: float = 1800.0) -> JobRow:
    """The job ``lookup`` finds once it finished; DemoError when it failed or took too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = lookup()
        if job is not None and job.finished:
            if job.state != "done":
                raise DemoError(f"the {job.kind} job {job.id} {job.state}: {job.error}")
            return job
        time.sleep(0.05)
    raise DemoError(f"no job finished within {timeout_s:.0f} s")


async def _capture(
    cfg: SkylapseConfig,
    options: DemoOptions,
    buffer: Path,
    update: Update,
    tick: Callable[[], None] = lambda: None,
) -> SessionSummary:
    """The session on the simulated camera and clock, through `CaptureService` (its frames,
    EXIF and catalog rows in ``buffer``); ``tick`` runs between progress updates."""
    loc = cfg.location
    start = session_start(loc, options.day, options.minutes)
    clock = SimulatedClock(start)
    camera = CameraFactory.create(
        "simulated",
        clock=clock,
        seed=options.seed,
        location=Location(loc.latitude, loc.longitude, loc.elevation_m),
    )
    service = CaptureService(
        camera,
        buffer=buffer,
        config=cfg,
        clock=clock,
        camera_config=CameraConfig(resolution=options.resolution),
    )
    events = service.subscribe(maxsize=4096)
    duration = options.minutes * 60.0
    tz = ZoneInfo(loc.timezone)
    written, phase = 0, ""
    try:
        await service.open()
        spec = SessionSpec(
            session_id=f"{options.day:%Y%m%d}-sunset", duration_s=duration, day=options.day
        )
        session = asyncio.create_task(service.run_session(spec))
        while not session.done():
            await asyncio.wait({session}, timeout=0.1)
            while not events.empty():
                event = events.get_nowait()
                if isinstance(event, FrameWritten):
                    written += 1
                    phase = event.record.phase or phase
            elapsed = (clock.now() - start).total_seconds()
            update(
                min(elapsed, duration),
                f"{clock.now().astimezone(tz):%H:%M} {phase.replace('_', ' ')}, {written} frames",
            )
            tick()
        return session.result()
    finally:
        await service.close()
