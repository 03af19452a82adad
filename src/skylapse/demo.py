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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import resource
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import av
import cv2
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from skylapse.capture.sun import sun_events
from skylapse.catalog import FrameRecord
from skylapse.config import LocationConfig, SkylapseConfig, default_config
from skylapse.log import get_logger
from skylapse.processing import measure

log = get_logger(__name__)

#: Where and when the demo evening happens: the Chamonix valley floor, an autumn sunset.
DEMO_LOCATION = LocationConfig(
    latitude=45.92, longitude=6.87, elevation_m=1035.0, timezone="Europe/Paris"
)
DEMO_DAY = dt.date(2025, 10, 11)
#: Share of the session before sunset (50 of 90 minutes: day, golden hour, blue hour, twilight).
BEFORE_SUNSET = 5 / 9
#: The demo's frame intervals against the default plan's (see the module docstring).
INTERVAL_SCALE = 2.8
STATION = "chamonix-demo"
MARKER = ".skylapse-demo"
#: Folders of the output folder the demo owns (and clears on the next run).
OWNED = ("capture", "ssh", "processing")
#: Width at which the outputs are decoded for measuring (the central region's mean is all
#: that is measured, which a reduced decode keeps).
MEASURE_WIDTH = 480


class DemoError(RuntimeError):
    """The demo cannot run or a stage failed; the message says what to do."""


@dataclass(frozen=True)
class DemoOptions:
    """What `skylapse demo` can be told; the defaults are the real demo."""

    out: Path = Path("demo-output")
    resolution: tuple[int, int] = (960, 540)  # the simulated camera's frames
    size: str = "1080p"  # the videos
    minutes: float = 90.0
    frames_scale: float = 1.0  # 0.5: half the frames (intervals twice as long)
    preset: str = "veryfast"  # x264's default for previews; x265 about 2x faster than medium
    seed: int = 7
    day: dt.date = DEMO_DAY


@dataclass(frozen=True)
class ExposureRange:
    """The exposures a session used, from the capture catalog."""

    ev100: tuple[float, float]  # photographic EV at ISO 100: bright scene = high EV
    exposure_s: tuple[float, float]
    gain: tuple[float, float]


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    codec: str
    profile: str | None
    pix_fmt: str | None
    size: tuple[int, int]
    tag: str
    frames: int
    seconds: float


@dataclass
class DemoResult:
    """Everything the demo did, for the summary, `--serve` and the tests."""

    options: DemoOptions
    out: Path
    session_id: str
    capture_buffer: Path
    capture_catalog: Path
    shots: int
    files_captured: int
    bracket_sets: int
    phases: list[str]
    exposure: ExposureRange
    frames_verified: int
    bytes_sent: int
    batches: int
    batches_during_capture: int
    inbox: Path
    ssh_dir: Path
    ingested: int
    quarantined: int
    data_dir: Path
    sequence_id: int
    render_job: dict[str, Any]
    archive_job: dict[str, Any]
    archive_dir: Path
    archived_files: list[Path]
    videos: dict[str, VideoInfo]
    flicker_in_ev: float
    flicker_out_ev: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    log_path: Path | None = None

    @property
    def render_stage_seconds(self) -> dict[str, float]:
        return dict((self.render_job.get("result") or {}).get("stage_seconds") or {})


# ------------------------------------------------------------------------------------------
# Pure pieces
# ------------------------------------------------------------------------------------------


def demo_config(options: DemoOptions, buffer: Path | None = None) -> SkylapseConfig:
    """The default configuration at the demo's location, offline (no weather service), with
    every phase's interval scaled by ``INTERVAL_SCALE / frames_scale``."""
    if options.frames_scale <= 0:
        raise ValueError("frames_scale must be positive")
    cfg = default_config()
    scale = INTERVAL_SCALE / options.frames_scale
    phases = [
        p.model_copy(update={"interval_s": p.interval_s * scale}) for p in cfg.schedule.phases
    ]
    capture = (
        cfg.capture if buffer is None else cfg.capture.model_copy(update={"buffer_dir": buffer})
    )
    return cfg.model_copy(
        update={
            "location": DEMO_LOCATION,
            "schedule": cfg.schedule.model_copy(update={"phases": phases}),
            "weather": cfg.weather.model_copy(update={"enabled": False}),
            "capture": capture,
        }
    )


def session_start(location: LocationConfig, day: dt.date, minutes: float) -> dt.datetime:
    """When a ``minutes``-long session that holds the day's sunset begins (UTC): it spends
    ``BEFORE_SUNSET`` of its length before the sunset."""
    sunset = sun_events(location, day).sunset
    if sunset is None:
        raise DemoError(
            f"the sun does not set at {location.latitude},{location.longitude} on {day}"
        )
    return (sunset - dt.timedelta(minutes=minutes * BEFORE_SUNSET)).astimezone(dt.UTC)


def flicker_estimate_ev(log2_luminance: Sequence[float] | np.ndarray) -> float:
    """Frame-to-frame flicker of a brightness series (EV) without a ground truth.

    A sunset's real brightness changes slowly, so its second differences
    ``L[k+1] - 2 L[k] + L[k-1]`` are close to zero, while white flicker of standard deviation
    ``s`` gives second differences of standard deviation ``sqrt(6) s``. The estimate is therefore
    ``std(second differences) / sqrt(6)``: exact for white flicker on a linear trend, and an
    upper bound when the scene itself changes quickly (clouds, the sun going behind a ridge).
    The variate-difference method (Tintner, "The Variate Difference Method", 1940).
    """
    values = np.asarray(log2_luminance, dtype=np.float64)
    if values.size < 3:
        return float("nan")
    return float(np.diff(values, n=2).std() / math.sqrt(6.0))


def exposure_range(records: Sequence[FrameRecord]) -> ExposureRange:
    """EV100, exposure time and gain ranges of the frames (all bracket frames included).

    EV100 = log2(N^2 / t) - log2(gain): the exposure value a light meter at ISO 100 would give
    for the settings (gain 1 = ISO 100)."""
    rows = [
        (r.exposure_time_s, r.analogue_gain or 1.0, r.aperture or 1.0)
        for r in records
        if r.exposure_time_s
    ]
    if not rows:
        raise ValueError("no frame has exposure settings")
    t = np.array([r[0] for r in rows])
    g = np.array([r[1] for r in rows])
    n = np.array([r[2] for r in rows])
    ev = np.log2(n**2 / t) - np.log2(g)
    return ExposureRange(
        (float(ev.min()), float(ev.max())),
        (float(t.min()), float(t.max())),
        (float(g.min()), float(g.max())),
    )


def reference_frames(records: Sequence[FrameRecord]) -> list[FrameRecord]:
    """One frame per shot in capture order: the frame itself, or a bracket set's 0 EV frame."""
    refs = [r for r in records if r.bracket_set is None or abs(r.ev_offset or 0.0) < 1e-6]
    return sorted(refs, key=lambda r: (r.captured_at, r.path))


# ------------------------------------------------------------------------------------------
# The stages
# ------------------------------------------------------------------------------------------


class _Stages:
    """A rich progress bar with one row per stage, and the time each stage took."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description:>9}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
        )
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def task(self, name: str, total: float) -> Callable[..., None]:
        """A progress row; returns ``update(completed=None, detail=None, total=None)``."""
        task = self.progress.add_task(name, total=total, detail="")

        def update(
            completed: float | None = None, detail: str | None = None, total: float | None = None
        ) -> None:
            # None leaves a value as it is (rich does so for completed and total itself)
            if detail is None:
                self.progress.update(task, completed=completed, total=total)
            else:
                self.progress.update(task, completed=completed, total=total, detail=detail)

        return update

    def record(self, name: str, seconds: float, cpu_seconds: float) -> None:
        self.seconds[name] = seconds
        self.cpu_seconds[name] = cpu_seconds

    @contextlib.contextmanager
    def stage(self, name: str, total: float) -> Iterator[Callable[..., None]]:
        """A progress row timed from entering to leaving the block."""
        update = self.task(name, total)
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        try:
            yield update
        finally:
            self.record(name, time.perf_counter() - t0, _cpu_seconds() - cpu0)
        update(completed=total)


class _Follower(threading.Thread):
    """Runs ``step`` (which returns how much it did) every ``poll_s`` while the stage upstream
    runs, then until a step finds nothing once ``upstream_done`` is set: the station's transfer
    loop and the processing side's ingest loop, one behind the other. The first error ends it
    and is kept in ``error``."""

    def __init__(
        self, name: str, step: Callable[[], int], upstream_done: threading.Event, poll_s: float
    ):
        super().__init__(name=f"demo-{name}", daemon=True)
        self.step = step
        self.upstream_done = upstream_done
        self.poll_s = poll_s
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.finished_at = math.nan
        self.finished_cpu = math.nan

    def run(self) -> None:
        try:
            while True:
                last = self.upstream_done.is_set()
                if self.step() == 0 and last:
                    break
                if not last:
                    self.upstream_done.wait(self.poll_s)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at, self.finished_cpu = time.perf_counter(), _cpu_seconds()
            self.done.set()


def prepare_out(out: Path) -> None:
    """Create the output folder; clear what an earlier demo left there (only its own folders,
    and only where its marker file says so)."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    leftovers = [out / name for name in OWNED if (out / name).exists()]
    if leftovers and not marker.exists():
        raise DemoError(
            f"{out} holds {', '.join(p.name for p in leftovers)} that an earlier "
            "demo did not write; choose another --out"
        )
    for path in leftovers:
        shutil.rmtree(path)
    marker.write_text("written by `skylapse demo`; it replaces capture/, ssh/ and processing/\n")


def _check_programs() -> None:
    from skylapse.transfer.local_sshd import missing_transfer_programs

    missing = missing_transfer_programs()
    if missing:
        programs = ", ".join(e.program for e in missing)
        packages = " ".join(sorted({e.package for e in missing} | {"openssh-server", "rsync"}))
        raise DemoError(
            f"the demo transfers frames with the real rsync over SSH, but {programs} "
            f"{'is' if len(missing) == 1 else 'are'} missing: install {packages} "
            f"(`apt-get install {packages}`; `make demo` run as root installs them)"
        )


async def _capture(
    cfg: SkylapseConfig,
    options: DemoOptions,
    buffer: Path,
    update: Callable[..., None],
    tick: Callable[[], None] = lambda: None,
):
    from skylapse.capture.cameras import CameraConfig, CameraFactory, Location
    from skylapse.capture.clock import SimulatedClock
    from skylapse.capture.service import CaptureService, SessionSpec

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
                if event["event"] == "frame":
                    written += 1
                    phase = event["record"].get("phase") or phase
            elapsed = (clock.now() - start).total_seconds()
            update(
                min(elapsed, duration),
                f"{clock.now().astimezone(tz):%H:%M} {phase.replace('_', ' ')}, {written} frames",
            )
            tick()
        return session.result()
    finally:
        await service.close()


def _capture_transfer_ingest(
    cfg: SkylapseConfig,
    options: DemoOptions,
    stages: _Stages,
    jobs,
    buffer: Path,
    inbox: Path,
    ssh_dir: Path,
):
    """Capture the session while the station's transfer loop sends what is written (rsync over
    the private sshd) and the processing side's ingest loop takes in what is committed, as the
    two services do; each loop ends once the stage before it has ended and it found nothing
    more. Stage times: capture (the loops run alongside), then how long transfer and ingest
    still took after the stage before them ended."""
    from skylapse.capture.service import CATALOG_NAME
    from skylapse.catalog import Catalog
    from skylapse.processing.ingest import Ingestor, IngestReport
    from skylapse.transfer.local_sshd import running_sshd
    from skylapse.transfer.queue import TransferSettings, TransferWorker

    catalog = Catalog(buffer / CATALOG_NAME)
    ingestor = Ingestor(inbox, jobs.store, inbox.parent / "quarantine", jobs.catalog)
    report = IngestReport()

    def ingest_step() -> int:
        scanned = ingestor.scan()
        report.ingested += scanned.ingested
        report.already_ingested += scanned.already_ingested
        report.quarantined += scanned.quarantined
        report.manifests += scanned.manifests
        return scanned.ingested + len(scanned.quarantined)

    capture_update = stages.task("capture", options.minutes * 60.0)
    transfer_update = stages.task("transfer", 1)
    ingest_update = stages.task("ingest", 1)
    with running_sshd(ssh_dir) as sshd:
        # JPEGs hardly compress, and over loopback compressing only costs CPU
        worker = TransferWorker(
            catalog,
            buffer,
            sshd.target(inbox),
            STATION,
            TransferSettings(batch_size=250, compress=False),
        )
        capture_done = threading.Event()

        def transfer_step() -> int:
            if capture_done.is_set():  # the rest, retrying failures for up to a minute
                return worker.drain(deadline_s=60.0)
            try:  # one batch every few seconds, as the station's loop (`TransferWorker.run`)
                return worker.send_batch()
            except Exception as exc:  # the next poll or the final drain tries again
                log.warning("transfer batch failed", error=str(exc))
                return 0

        transfer = _Follower("transfer", transfer_step, capture_done, poll_s=4.0)
        ingest = _Follower("ingest", ingest_step, transfer.done, poll_s=1.0)

        def tick() -> None:
            written = catalog.count_frames()
            st = worker.stats
            transfer_update(
                st.frames_sent,
                f"{st.frames_sent} of {written} frames, {st.batches_verified} batches verified",
                total=max(written, 1),
            )
            ingest_update(
                report.ingested,
                f"{report.ingested} frames, {len(report.quarantined)} quarantined",
                total=max(written, 1),
            )

        transfer.start()
        ingest.start()
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        try:
            summary = asyncio.run(_capture(cfg, options, buffer, capture_update, tick))
        except BaseException:
            worker.stop()
            raise
        finally:
            capture_done.set()
            t_captured, cpu_captured = time.perf_counter(), _cpu_seconds()
            early_batches = worker.stats.batches_verified
            capture_update(completed=options.minutes * 60.0)
            for follower in (transfer, ingest):
                while follower.is_alive():
                    follower.join(0.1)
                    tick()
            tick()
        for follower in (transfer, ingest):
            if follower.error is not None:
                raise DemoError(
                    f"{follower.name.removeprefix('demo-')} failed: {follower.error}"
                ) from follower.error
    stages.record("capture", t_captured - t0, cpu_captured - cpu0)
    stages.record(
        "transfer",
        max(0.0, transfer.finished_at - t_captured),
        max(0.0, transfer.finished_cpu - cpu_captured),
    )
    stages.record(
        "ingest",
        max(0.0, ingest.finished_at - transfer.finished_at),
        max(0.0, ingest.finished_cpu - transfer.finished_cpu),
    )
    return summary, catalog, worker, report, early_batches


def _measure_video(path: Path, levels: bool = True) -> tuple[VideoInfo, np.ndarray]:
    """The stream's properties and (with ``levels``) each frame's central log2 luminance.

    With ``levels`` every frame is decoded; without, only the first (it decodes at all) and the
    frame count is the container's."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        cc = stream.codec_context
        w, h = stream.width, stream.height
        mw = min(MEASURE_WIDTH, w)
        mh = max(2, round(h * mw / w / 2) * 2)
        values, frames = [], 0
        for frame in container.decode(stream):
            frames += 1
            if not levels:
                frames = max(stream.frames, frames)
                break
            values.append(
                measure.central_log2_luminance(
                    frame.to_ndarray(format="rgb48le", width=mw, height=mh, interpolation="AREA")
                )
            )
        seconds = (
            float(stream.duration * stream.time_base)
            if stream.duration and stream.time_base
            else 0.0
        )
        info = VideoInfo(
            path, cc.name, cc.profile, cc.pix_fmt, (w, h), stream.codec_tag, frames, seconds
        )
    return info, np.array(values)


def _input_levels(buffer: Path, refs: Sequence[FrameRecord]) -> np.ndarray:
    """Central log2 luminance of the captured frames, decoded at 1/4 scale (DCT scaling)."""
    levels = []
    for r in refs:
        bgr = cv2.imread(str(buffer / r.path), cv2.IMREAD_REDUCED_COLOR_4)
        if bgr is not None:
            levels.append(measure.central_log2_luminance(np.ascontiguousarray(bgr[..., ::-1])))
    return np.array(levels)


def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    """Run every stage (module docstring); raises DemoError with what to do when one fails."""
    from skylapse.processing.archive import ArchiveConfig
    from skylapse.processing.backup import BackupConfig
    from skylapse.processing.jobs import JobService, RenderJobOptions

    t_start, cpu0 = time.perf_counter(), _cpu_seconds()
    out = options.out.resolve()
    _check_programs()
    prepare_out(out)
    log_path = out / "demo.log"
    buffer, ssh_dir = out / "capture", out / "ssh"
    data_dir = out / "processing"
    inbox = data_dir / "inbox"
    cfg = demo_config(options, buffer)
    stages = _Stages(console)
    render_task: list[Callable[..., None]] = []

    def on_progress(job_id: str, fraction: float) -> None:
        if render_task:
            render_task[0](fraction, f"job {job_id}")

    consumer = None
    try:
        with _logs_to(log_path), stages.progress:
            jobs = JobService(
                data_dir,
                queue_url="",
                retries=0,
                on_progress=on_progress,
                archive=ArchiveConfig(after_render=True),
                backup=BackupConfig(),
            )
            # 1-3. capture, with the transfer and ingest loops following it -------------
            summary, catalog, worker, report, early_batches = _capture_transfer_ingest(
                cfg, options, stages, jobs, buffer, inbox, ssh_dir
            )
            total = summary.written
            records = catalog.frames()
            verified = sum(r.transfer_state == "verified" for r in records)
            if verified != total or len(records) != total:
                raise DemoError(
                    f"only {verified} of {total} frames were transferred and "
                    f"verified; see {log_path}"
                )
            stats = worker.stats
            if report.quarantined or report.ingested != total:
                raise DemoError(
                    f"{len(report.quarantined)} frames quarantined at ingest: "
                    f"{report.quarantined[:3]}"
                )
            (sequence,) = [s for s in jobs.catalog.sequences() if s["station"] == STATION]
            # 4. render (a job on the queue, run by an in-process consumer) ----------------
            with stages.stage("render", 1.0) as update:
                render_task.append(update)
                jobs.catalog.close_sequence(sequence["id"], dt.datetime.now(dt.UTC))
                render_options = RenderJobOptions(
                    formats=["h265", "h264"],
                    size=options.size,
                    brackets="auto",
                    preset=options.preset,
                )
                render_id = jobs.submit_render(sequence["id"], render_options)
                consumer = jobs.consumer(workers=1)
                consumer._set_signal_handlers = lambda: None  # Ctrl-C stays ours
                consumer.start()
                render_job = _wait_for_job(jobs, lambda: jobs.catalog.job(render_id))
            # 5. archive (queued by the finished render) ----------------------------------
            with stages.stage("archive", 1.0) as update:
                update(0, "waiting for the archive job")
                archive_job = _wait_for_job(jobs, lambda: _archive_job_for(jobs, render_id))
            timelapse = jobs.catalog.timelapse_for_job(render_id)
            if timelapse is None:
                raise DemoError(f"the render {render_id} was not archived; see {log_path}")
            archive_dir = data_dir / "archive" / timelapse["path"]
            # 6. measure ------------------------------------------------------------------
            with stages.stage("measure", 3.0) as update:
                videos: dict[str, VideoInfo] = {}
                levels: dict[str, np.ndarray] = {}
                update(0, "decoding timelapse.mp4")
                videos["h265"], levels["h265"] = _measure_video(archive_dir / "timelapse.mp4")
                update(1, "decoding timelapse.preview.mp4")
                videos["h264"], _ = _measure_video(
                    archive_dir / "timelapse.preview.mp4", levels=False
                )
                update(2, "captured frames")
                refs = reference_frames(records)
                flicker_in = flicker_estimate_ev(_input_levels(buffer, refs))
                flicker_out = flicker_estimate_ev(levels["h265"])
            if consumer is not None:
                consumer.stop(graceful=True)
                consumer = None
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)
    result = DemoResult(
        options=options,
        out=out,
        session_id=summary.session_id,
        capture_buffer=buffer,
        capture_catalog=catalog.path,
        shots=summary.shots,
        files_captured=summary.written,
        bracket_sets=len({r.bracket_set for r in records if r.bracket_set is not None}),
        phases=list(summary.phases),
        exposure=exposure_range(records),
        frames_verified=verified,
        bytes_sent=stats.bytes_sent,
        batches=stats.batches_verified,
        batches_during_capture=early_batches,
        inbox=inbox,
        ssh_dir=ssh_dir,
        ingested=report.ingested,
        quarantined=len(report.quarantined),
        data_dir=data_dir,
        sequence_id=sequence["id"],
        render_job=render_job,
        archive_job=archive_job,
        archive_dir=archive_dir,
        archived_files=sorted(p for p in archive_dir.rglob("*") if p.is_file()),
        videos=videos,
        flicker_in_ev=flicker_in,
        flicker_out_ev=flicker_out,
        stage_seconds=dict(stages.seconds),
        stage_cpu_seconds=dict(stages.cpu_seconds),
        log_path=log_path,
    )
    result.wall_s = time.perf_counter() - t_start
    result.cpu_s = _cpu_seconds() - cpu0
    return result


@contextlib.contextmanager
def _logs_to(path: Path, mode: str = "w") -> Iterator[None]:
    """Route the services' JSON logs to ``path`` (the console has the progress bars), and put
    the previous logging set-up back afterwards."""
    import logging

    import structlog

    from skylapse.log import configure

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config = structlog.get_config()
    with open(path, mode) as stream:
        configure("INFO", stream=stream)
        try:
            yield
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            structlog.configure(**structlog_config)


def _archive_job_for(jobs, render_id: str) -> dict[str, Any] | None:
    for job in jobs.catalog.jobs(limit=20):
        if job["kind"] == "archive" and job["params"].get("job_id") == render_id:
            return job
    return None


def _wait_for_job(
    jobs, lookup: Callable[[], dict[str, Any] | None], timeout_s: float = 1800.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = lookup()
        if job is not None and job["state"] in ("done", "failed", "cancelled"):
            if job["state"] != "done":
                raise DemoError(
                    f"the {job['kind']} job {job['id']} {job['state']}: {job.get('error')}"
                )
            return job
        time.sleep(0.05)
    raise DemoError(f"no job finished within {timeout_s:.0f} s")


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (rsync, ssh,
    sshd)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# ------------------------------------------------------------------------------------------
# Printing and serving
# ------------------------------------------------------------------------------------------


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _shutter(seconds: float) -> str:
    return f"1/{1 / seconds:.0f} s" if seconds < 0.5 else f"{seconds:.2g} s"


def print_demo_summary(result: DemoResult, console: Console) -> None:
    """Where everything is, and the summary table (frames, exposures, flicker, times)."""
    out = result.out

    def rel(path: Path) -> Path:
        return path.relative_to(out.parent) if path.is_relative_to(out.parent) else path

    where = Table(title="Where everything is", show_header=False, title_justify="left")
    where.add_column(style="bold")
    where.add_column()
    for label, path in (
        ("capture buffer", result.capture_buffer),
        ("capture catalog", result.capture_catalog),
        ("ssh keys, sshd_config", result.ssh_dir),
        ("inbox (received)", result.inbox),
        ("processing data", result.data_dir),
        ("job queue", result.data_dir / "queue.db"),
        ("timelapse (archived)", result.archive_dir),
        ("logs", result.log_path),
    ):
        if path is not None:
            where.add_row(label, str(rel(path)))
    for path in result.archived_files:
        where.add_row("", f"{path.name} ({_size(path)})")
    console.print(where)

    table = Table(title="Demo summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    singles = result.shots - result.bracket_sets
    table.add_row(
        "session",
        f"{result.session_id} at {DEMO_LOCATION.latitude:.2f} N "
        f"{DEMO_LOCATION.longitude:.2f} E, simulated camera and clock",
    )
    table.add_row(
        "frames captured",
        f"{result.files_captured} files in {result.shots} shots: "
        f"{result.bracket_sets} HDR bracket sets, {singles} single frames",
    )
    table.add_row("phases", ", ".join(p.replace("_", " ") for p in result.phases))
    ex = result.exposure
    table.add_row(
        "exposure range",
        f"EV100 {ex.ev100[1]:.1f} .. {ex.ev100[0]:.1f} "
        f"({ex.ev100[1] - ex.ev100[0]:.1f} stops; shutter {_shutter(ex.exposure_s[0])}"
        f" .. {_shutter(ex.exposure_s[1])}, gain {ex.gain[0]:.2f} .. {ex.gain[1]:.2f})",
    )
    table.add_row(
        "transferred",
        f"{result.frames_verified} frames verified in "
        f"{result.batches} batches, {result.batches_during_capture} of them during "
        f"the capture ({result.bytes_sent / 1e6:.1f} MB, rsync over ssh)",
    )
    table.add_row("ingested", f"{result.ingested} frames, {result.quarantined} quarantined")
    rr = result.render_job.get("result") or {}
    table.add_row(
        "rendered",
        f"{rr.get('frames')} frames at {rr.get('render_fps')} fps, "
        f"deflicker {_ev_range(rr.get('exposure_correction_ev'))}",
    )
    for codec, info in result.videos.items():
        profile = f" {info.profile}" if info.profile else ""
        table.add_row(
            f"video {codec}",
            f"{info.codec}{profile} {info.pix_fmt} "
            f"{info.size[0]}x{info.size[1]} '{info.tag}', {info.frames} frames, "
            f"{info.seconds:.1f} s",
        )
    table.add_row(
        "flicker (estimate)",
        f"{result.flicker_out_ev:.3f} EV in the output vs {result.flicker_in_ev:.3f} "
        "EV as captured",
    )
    table.add_row(
        "",
        "no ground truth for a simulated session: std of the second differences "
        "of the central 50 % brightness / sqrt(6); clouds and the sun count too",
    )
    after = {
        "capture": ", transfer and ingest running alongside",
        "transfer": " more after the capture ended",
        "ingest": " more after the transfer ended",
    }
    for stage, seconds in result.stage_seconds.items():
        cpu = result.stage_cpu_seconds.get(stage)
        table.add_row(
            f"time: {stage}",
            f"{seconds:.1f} s{after.get(stage, '')}"
            + (f" (CPU {cpu:.1f} s)" if cpu is not None else ""),
        )
        if stage == "render":
            parts = ", ".join(
                f"{part} {s:.1f}"
                for part, s in sorted(result.render_stage_seconds.items(), key=lambda kv: -kv[1])
            )
            table.add_row("", f"render stages (s, threads overlap): {parts}")
    table.add_row("total", f"{result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU")
    console.print(table)


def _ev_range(values: Sequence[float] | None) -> str:
    if not values:
        return "—"
    return f"{values[0]:+.2f} .. {values[1]:+.2f} EV"


def serve_demo(result: DemoResult, console: Console, port: int = 8081) -> None:
    """Serve the processing API (and the capture API, where the package has one) on
    127.0.0.1 with a new token, over the demo's data, until Ctrl-C."""
    from skylapse.api.common import DASHBOARD_DIR
    from skylapse.api.processing.app import ProcessingSettings, create_processing_app
    from skylapse.api.server import ServerThread, free_port

    token = secrets.token_urlsafe(24)
    settings = ProcessingSettings(
        data_dir=result.data_dir,
        token=token,
        workers=1,
        inbox=result.inbox,
        archive_dir=result.data_dir / "archive",
        ingest_every_s=5.0,
        render_after_min=None,
    )
    servers = [("processing", create_processing_app(settings), _port_or_free(port))]
    try:
        from skylapse.api.capture import create_capture_app
    except ModuleNotFoundError as exc:
        if exc.name != "skylapse.api.capture":
            raise
    else:
        from skylapse.capture.cameras import CameraConfig, CameraFactory, Location

        # the station's API over the demo's buffer, on the real clock; no unattended plan, so
        # nothing is captured unless asked for (POST /capture, /sessions)
        loc = DEMO_LOCATION
        camera = CameraFactory.create(
            "simulated",
            seed=result.options.seed,
            location=Location(loc.latitude, loc.longitude, loc.elevation_m),
        )
        app = create_capture_app(
            demo_config(result.options, result.capture_buffer),
            token,
            camera=camera,
            buffer=result.capture_buffer,
            unattended=False,
            camera_config=CameraConfig(resolution=result.options.resolution),
        )
        servers.append(("capture", app, _port_or_free(port - 1)))
    with contextlib.ExitStack() as stack:
        stack.enter_context(_logs_to(result.out / "serve.log", "a"))
        urls = {}
        for name, app, p in servers:
            server = stack.enter_context(ServerThread(app, port=p or free_port()))
            urls[name] = server.url
            console.print(f"{name} service: {server.url}/", highlight=False)
        if DASHBOARD_DIR.is_dir():
            console.print(
                f"dashboard: {urls['processing']}/ (it asks for the token)", highlight=False
            )
        console.print(f"token: {token}", highlight=False)
        console.print(
            "e.g. curl -H 'Authorization: Bearer TOKEN' URL/timelapses; Ctrl-C stops",
            highlight=False,
        )
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping")
        finally:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _port_or_free(port: int) -> int | None:
    """``port`` when it is free on loopback, else None (a free one is chosen)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


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
    "print_demo_summary",
    "reference_frames",
    "run_demo",
    "serve_demo",
    "session_start",
]
