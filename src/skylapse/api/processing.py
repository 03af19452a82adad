"""The processing service's API: sequences, render jobs, finished timelapses, live progress.

``create_processing_app(settings)`` builds the app on the shared layer (`skylapse.api.common`):

=========================================  ====================================================
``GET  /health``                            queue, disk, catalog, workers, ingest, store (no token)
``GET  /metrics``                           Prometheus text format
``GET  /sequences``                         ingested sequences, to choose what to render
``GET  /jobs``                              jobs, newest first (``?state=``, ``?limit=``)
``GET  /jobs/{id}``                         one job
``POST /jobs``                              queue a render of a sequence (202; 429 when too many)
``POST /jobs/{id}/cancel``                  cancel a queued or running job
``POST /jobs/{id}/retry``                   queue a failed or cancelled job again
``GET  /timelapses``                        finished renders and their files, with URLs
``GET  /timelapses/{job_id}/{file}``        one file, with HTTP range requests (206)
``WS   /ws``                                job events (see below)
=========================================  ====================================================

``POST /jobs`` takes renders up to 8K UHD (``MAX_RENDER_PIXELS``, no side over
``MAX_RENDER_SIDE``) and at most ``job_burst`` at once and ``jobs_per_minute`` on average;
beyond that it answers 429 with ``Retry-After``.

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>`` (the file endpoint
also takes ``?token=``, for ``<video>`` and ``<img>`` elements). The WebSocket takes the
token as that header, as ``?token=``, or as a first message ``{"token": "..."}``; a refused
socket is closed with code 4401. It then receives JSON events:

* ``{"type": "snapshot", "jobs": [...]}`` once, the recent jobs;
* ``{"type": "job", "job": {...}}`` whenever a job's state, progress, attempts or error changes
  in the catalog (polled every ``job_poll_s``, so jobs run by `skylapse worker` processes on
  this or other machines are seen too);
* ``{"type": "progress", "job_id": ..., "progress": 0.42}`` at once from this process's own
  workers (the render reports at most every half second);
* ``{"type": "alert", "alert": {...}}`` when an alert episode opens or closes (a job failing
  repeatedly, the queue deeper than ``alerts.processing_queue_max``; see `skylapse.alerts`);
* ``{"type": "pong"}`` in answer to ``{"type": "ping"}``.

With ``workers > 0`` the app runs a huey consumer with that many threads; with
``ingest_every_s`` set it scans the inbox in a background thread and queues a render for every
sequence whose frames stopped coming ``render_after_min`` minutes ago. So one process can be the
whole processing service, or only its API in front of separate worker processes.

Timelapse files are served only by name from a finished render job's own outputs, from its
folder in ``DATA/timelapses`` or the archive (``DATA/archive`` or ``$SKYLAPSE_ARCHIVE_DIR``),
and the resolved path must stay inside that store: no path from the request reaches the file
system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from skylapse.alerts import AlertManager, notifiers_from_config, processing_conditions
from skylapse.api.auth import authenticate_websocket
from skylapse.api.common import (
    DEFAULT_MAX_BODY_BYTES,
    Check,
    create_service_app,
    disk_check,
)
from skylapse.api.middleware import RateLimit, request_correlation_id
from skylapse.api.ws import WebSocketHub
from skylapse.catalog import JOB_STATES
from skylapse.config import (
    DEFAULT_MAX_FRAME_PIXELS,
    AlertsConfig,
    ArchiveConfig,
    BackupConfig,
    SkylapseConfig,
)
from skylapse.log import correlation_id, get_logger
from skylapse.metrics import ServiceMetrics, UptimeTracker
from skylapse.processing.jobs import JobService, RenderJobOptions
from skylapse.processing.retention import StoreRetention

log = get_logger(__name__)

ARCHIVE_DIR_ENV = "SKYLAPSE_ARCHIVE_DIR"

#: What the processing service measures (see `skylapse.metrics`); the capture-only metrics
#: (frames captured, focus acquisition) are the capture service's.
PROCESSING_METRICS = (
    "processing_queue_depth",
    "storage_utilization_pct",
    "system_uptime_pct",
    "capture_latency_ms",
    "image_quality_score",
    "frames_transferred",
    "frames_failed",
    "render_frames_per_second",
    "job_duration_seconds",
    "store_bytes",
    "store_utilization_pct",
    "store_frames_deleted",
)

_X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
_MAX_DB_INT = 2**62  # SQLite integers are 64-bit; larger ids cannot exist
#: The largest render ``POST /jobs`` accepts: 8K UHD's pixels, no side over 8192 px.
MAX_RENDER_SIDE = 8192
MAX_RENDER_PIXELS = 7680 * 4320


@dataclass
class ProcessingSettings:
    """Everything `create_processing_app` needs; `skylapse serve processing` fills it from the
    config file, the environment and the command line."""

    data_dir: Path
    token: str
    queue_url: str | None = None
    workers: int = 0
    inbox: Path | None = None
    archive_dir: Path | None = None
    ingest_every_s: float | None = 5.0
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # config processing.max_frame_pixels
    render_after_min: float | None = 30.0
    job_poll_s: float = 0.5
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    public_docs: bool = False
    disk_warn_pct: float = 90.0
    disk_fail_pct: float = 97.0
    stale_queue_min: float = 10.0
    archive: Any = None  # config `archive` section (skylapse.config.ArchiveConfig); None: env only
    backup: Any = None  # config `backup` section (skylapse.config.BackupConfig); None: env only
    alerts: Any = None  # a config `alerts` section (skylapse.config.AlertsConfig); None: defaults
    retention: Any = None  # config processing.retention (RetentionConfig); None: defaults
    alert_notifiers: list | None = None  # None: the ones the alerts section configures
    station: str = "processing"
    jobs_per_minute: float = 20.0  # POST /jobs: this many a minute on average ...
    job_burst: int = 10  # ... and this many at once (429 beyond)
    extra: dict[str, Any] = field(default_factory=dict)


# -- request and response models --------------------------------------------------------------

JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="job id")]
FileName = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="a file of the timelapse")
]


class RenderOptionsIn(RenderJobOptions):
    """Render options as the API accepts them: `RenderJobOptions`, with every free-text field
    checked up front so that a bad value is a 422 now rather than a failed job later."""

    formats: list[Literal["h265", "h264", "frames"]] = Field(
        default_factory=lambda: ["h265"], min_length=1, max_length=3
    )
    size: str | None = Field(
        None,
        max_length=16,
        description=f"2160p, 1080p, 720p or WxH; at most {MAX_RENDER_SIDE} px a side and "
        f"{MAX_RENDER_PIXELS} pixels (8K UHD)",
    )
    preset: str = Field("medium", description="x264/x265 preset, ultrafast .. placebo")
    white_balance: str | None = Field(
        None, max_length=16, description="gray-world, or a colour temperature such as 5600K"
    )
    brackets: Annotated[int, Field(ge=2, le=9)] | Literal["auto"] | None = None
    focus_stack: int | None = Field(None, ge=2, le=32)

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        from skylapse.processing.encode import parse_size

        if v is not None:
            # raises ValueError naming the accepted forms; "<N>p" as for a 16:9 source
            width, height = parse_size(v, (1920, 1080))
            if max(width, height) > MAX_RENDER_SIDE or width * height > MAX_RENDER_PIXELS:
                raise ValueError(
                    f"{width}x{height} is larger than renders may be: at most "
                    f"{MAX_RENDER_SIDE} px a side and {MAX_RENDER_PIXELS} pixels (7680x4320)"
                )
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v not in _X26X_PRESETS:
            raise ValueError(f"expected one of {', '.join(_X26X_PRESETS)}")
        return v

    @field_validator("white_balance")
    @classmethod
    def _white_balance(cls, v: str | None) -> str | None:
        if v is None or v.replace("_", "-").lower() in ("gray-world", "grey-world"):
            return v
        try:
            kelvin = float(v.lower().removesuffix("k"))
        except ValueError:
            raise ValueError("expected gray-world or a colour temperature such as 5600K") from None
        if not 1500 <= kelvin <= 15000:
            raise ValueError("colour temperature must be 1500..15000 K")
        return v


class RenderRequest(BaseModel):
    """``POST /jobs``: render one sequence (or one phase of it)."""

    model_config = ConfigDict(extra="forbid")

    sequence_id: int = Field(ge=1, le=_MAX_DB_INT, description="from GET /sequences")
    phase: str | None = Field(
        None, max_length=64, description="render only this phase (one of the sequence's phases)"
    )
    options: RenderOptionsIn = Field(default_factory=RenderOptionsIn)


class SequenceOut(BaseModel):
    id: int
    station: str
    camera: str
    session_id: str
    first_at: str | None
    last_at: str | None
    frames: int
    phases: list[str]
    closed_at: str | None


class JobOut(BaseModel):
    id: str
    kind: str
    state: str
    progress: float
    attempts: int
    error: str | None
    sequence_id: int | None = None
    phase: str | None = None
    params: dict[str, Any]
    result: dict[str, Any] | None
    correlation_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class TimelapseFile(BaseModel):
    name: str
    kind: Literal["video", "preview", "keogram", "contact_sheet", "other"]
    media_type: str
    size_bytes: int
    url: str = Field(description="GET it with the token; supports Range requests")
    archived: bool


class TimelapseOut(BaseModel):
    job_id: str
    sequence_id: int | None
    phase: str | None
    finished_at: str | None
    frames: int | None
    render_fps: float | None
    files: list[TimelapseFile]


def job_out(job: dict[str, Any]) -> dict[str, Any]:
    """A catalog job as the API shows it."""
    params = job.get("params") or {}
    return {
        "id": job["id"],
        "kind": job["kind"],
        "state": job["state"],
        "progress": job["progress"],
        "attempts": job["attempts"],
        "error": job["error"],
        "sequence_id": params.get("sequence_id"),
        "phase": params.get("phase"),
        "params": params,
        "result": job["result"],
        "correlation_id": job.get("correlation_id"),
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
    }


def _file_kind(name: str) -> tuple[str, str]:
    if name.endswith(".preview.mp4"):
        return "preview", "video/mp4"
    if name.endswith(".mp4"):
        return "video", "video/mp4"
    if name.endswith(".keogram.png"):
        return "keogram", "image/png"
    if name.endswith(".contact.png"):
        return "contact_sheet", "image/png"
    return "other", "application/octet-stream"


# -- background work --------------------------------------------------------------------------


class IngestLoop:
    """Scans the inbox every ``every_s`` seconds in a thread; counts what it saw into metrics
    and queues renders of sequences that went idle."""

    def __init__(
        self,
        jobs: JobService,
        inbox: Path,
        metrics: ServiceMetrics,
        every_s: float,
        render_after_min: float | None,
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    ):
        from skylapse.processing.ingest import Ingestor

        self.jobs = jobs
        self.ingestor = Ingestor(
            inbox,
            jobs.store,
            jobs.data_dir / "quarantine",
            jobs.catalog,
            max_pixels=max_frame_pixels,
        )
        self.metrics = metrics
        self.every_s = every_s
        self.render_after = (
            timedelta(minutes=render_after_min) if render_after_min is not None else None
        )
        self.last_scan_at: float | None = None
        self.last_error: str | None = None
        self.last_summary = "no scan yet"
        self._last_row = jobs.catalog.last_ingested_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan_once(self) -> None:
        with correlation_id():
            report = self.ingestor.scan()
            self.metrics["frames_transferred"].inc(report.ingested)
            if report.quarantined:
                self.metrics["frames_failed"].labels(stage="ingest").inc(len(report.quarantined))
            self._observe_new_frames()
            queued = []
            if self.render_after is not None:
                queued = self.jobs.close_idle_sequences(self.render_after)
            if report.ingested or report.quarantined or queued:
                log.info(
                    "ingest scan",
                    ingested=report.ingested,
                    quarantined=len(report.quarantined),
                    renders_queued=queued,
                )
        self.last_summary = (
            f"ingested {report.ingested}, quarantined "
            f"{len(report.quarantined)}, renders queued {len(queued)}"
            + (f", refused {len(report.refused)} (symbolic links)" if report.refused else "")
        )
        if report.failed:  # the other manifests went on; health shows these until they succeed
            where, error = report.failed[0]
            raise RuntimeError(f"{len(report.failed)} manifest(s) failed, first {where}: {error}")

    def _observe_new_frames(self) -> None:
        """Capture-side measurements travel in each frame's metadata; expose them here too."""
        while rows := self.jobs.catalog.ingested_after(self._last_row, limit=1000):
            for row in rows:
                meta = row["metadata"]
                latency = meta.get("latency_ms")
                if isinstance(latency, int | float) and latency >= 0:
                    self.metrics["capture_latency_ms"].observe(latency)
                quality = meta.get("quality_score")
                if isinstance(quality, int | float):
                    self.metrics["image_quality_score"].set(quality)
            self._last_row = rows[-1]["id"]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
                self.last_error = None
            except Exception as exc:  # keep scanning: the next scan may succeed
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("ingest scan failed", error=self.last_error)
            self.last_scan_at = time.monotonic()
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="skylapse-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check(self) -> Check:
        if self._thread is None or not self._thread.is_alive():
            return Check(status="failing", detail="ingest loop is not running")
        if self.last_error:
            return Check(status="degraded", detail=f"last scan failed: {self.last_error}")
        if self.last_scan_at is None:
            return Check(status="ok", detail="first scan running")
        age = time.monotonic() - self.last_scan_at
        if age > 3 * self.every_s + 60:
            return Check(status="degraded", detail=f"no scan finished for {age:.0f} s")
        return Check(status="ok", detail=f"last scan {age:.0f} s ago: {self.last_summary}")


class JobWatcher:
    """Polls the catalog's jobs and publishes what changed; also feeds the job metrics.

    Polling the catalog (not the in-process callback) is what sees jobs run by worker
    processes elsewhere; a callback from this process's own workers only wakes it early.
    """

    def __init__(
        self,
        jobs: JobService,
        hub: WebSocketHub,
        metrics: ServiceMetrics,
        uptime: UptimeTracker,
        interval_s: float,
        limit: int = 200,
    ):
        self.jobs = jobs
        self.hub = hub
        self.metrics = metrics
        self.uptime = uptime
        self.interval_s = interval_s
        self.limit = limit
        self._seen: dict[str, tuple] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_heartbeat = 0.0

    def nudge(self) -> None:
        """Wake the poller now (safe from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def poll(self) -> list[dict[str, Any]]:
        """Jobs that changed since the last poll, as events (the first poll only records)."""
        jobs = self.jobs.catalog.jobs(limit=self.limit)
        current = {j["id"]: (j["state"], j["progress"], j["attempts"], j["error"]) for j in jobs}
        events = []
        if self._seen is not None:
            for job in reversed(jobs):  # oldest first
                before = self._seen.get(job["id"])
                now = current[job["id"]]
                if before == now:
                    continue
                events.append({"type": "job", "job": job_out(job)})
                finished = now[0] in ("done", "failed", "cancelled")
                if finished and (before is None or before[0] != now[0]):
                    self._observe_finished(job)
        self._seen = current
        if time.monotonic() - self._last_heartbeat >= 5.0:
            self._last_heartbeat = time.monotonic()
            self.uptime.heartbeat()
        return events

    def _observe_finished(self, job: dict[str, Any]) -> None:
        if job["started_at"] and job["finished_at"]:
            seconds = (
                datetime.fromisoformat(job["finished_at"])
                - datetime.fromisoformat(job["started_at"])
            ).total_seconds()
            if seconds >= 0:
                self.metrics["job_duration_seconds"].labels(
                    kind=job["kind"], state=job["state"]
                ).observe(seconds)
        fps = (job["result"] or {}).get("render_fps")
        if job["kind"] == "render" and job["state"] == "done" and isinstance(fps, int | float):
            self.metrics["render_frames_per_second"].set(fps)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                events = await asyncio.to_thread(self.poll)
            except Exception as exc:  # the catalog may be briefly locked; try again
                log.warning("job poll failed", error=repr(exc))
                events = []
            for event in events:
                self.hub.publish(event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()


# -- the app ---------------------------------------------------------------------------------


def create_processing_app(settings: ProcessingSettings) -> FastAPI:
    """The processing service's FastAPI app (see the module docstring for its endpoints)."""
    data_dir = Path(settings.data_dir)
    hub = WebSocketHub()
    metrics = ServiceMetrics(PROCESSING_METRICS)
    watcher_box: list[JobWatcher] = []

    def on_progress(job_id: str, fraction: float) -> None:
        hub.publish_threadsafe(
            {"type": "progress", "job_id": job_id, "progress": round(fraction, 4)}
        )
        if watcher_box:
            watcher_box[0].nudge()

    jobs = JobService(
        data_dir,
        settings.queue_url,
        on_progress=on_progress,
        archive=ArchiveConfig.from_env(base=settings.archive),
        backup=BackupConfig.from_env(base=settings.backup),
    )
    uptime = UptimeTracker(data_dir / "uptime-processing.json")
    retention = StoreRetention(jobs.store, jobs.catalog, settings.retention, metrics=metrics)
    watcher = JobWatcher(jobs, hub, metrics, uptime, settings.job_poll_s)
    watcher_box.append(watcher)
    archive_dir = settings.archive_dir or Path(
        os.environ.get(ARCHIVE_DIR_ENV) or data_dir / "archive"
    )
    stores = [jobs.timelapses, archive_dir]
    ingest_loop = (
        IngestLoop(
            jobs,
            settings.inbox or data_dir / "inbox",
            metrics,
            settings.ingest_every_s,
            settings.render_after_min,
            settings.max_frame_pixels,
        )
        if settings.ingest_every_s
        else None
    )
    consumer_box: list[Any] = []

    metrics["processing_queue_depth"].set_function(jobs.catalog.queue_depth)
    metrics["storage_utilization_pct"].set_function(lambda: _disk_pct(data_dir))
    metrics["system_uptime_pct"].set_function(uptime.percent)

    # -- health -----------------------------------------------------------------------------

    def check_catalog() -> Check:
        depth = jobs.catalog.queue_depth()
        return Check(status="ok", detail=f"{depth} jobs queued or running")

    def check_queue() -> Check:
        backend = "redis" if type(jobs.huey).__name__ == "RedisHuey" else "sqlite"
        pending = jobs.huey.pending_count()
        return Check(status="ok", detail=f"{pending} tasks waiting in the {backend} queue")

    def check_workers() -> Check:
        if consumer_box:
            threads = [t for _, t in consumer_box[0].worker_threads]
            alive = sum(t.is_alive() for t in threads)
            if alive == len(threads):
                return Check(status="ok", detail=f"{alive} in-process worker threads")
            status = "degraded" if alive else "failing"
            return Check(status=status, detail=f"{alive} of {len(threads)} worker threads alive")
        queued = jobs.catalog.jobs(state="queued", limit=1000)
        running = jobs.catalog.jobs(state="running", limit=1000)
        if queued and not running:
            oldest = min(datetime.fromisoformat(j["created_at"]) for j in queued)
            waited = (datetime.now(UTC) - oldest).total_seconds() / 60
            if waited >= settings.stale_queue_min:
                return Check(
                    status="degraded",
                    detail=f"{len(queued)} jobs waiting for {waited:.0f} min and none running: "
                    "is a `skylapse worker` process running?",
                )
        return Check(
            status="ok",
            detail=f"no in-process workers; {len(running)} jobs running in worker processes",
        )

    def check_ingest() -> Check:
        if ingest_loop is None:
            return Check(status="ok", detail="ingest loop disabled in this process")
        return ingest_loop.check()

    alerts_section = settings.alerts or AlertsConfig()
    alerts = AlertManager(
        "processing",
        settings.station,
        processing_conditions(
            jobs.catalog, alerts_section, store_at_risk=lambda: retention.at_risk
        ),
        settings.alert_notifiers
        if settings.alert_notifiers is not None
        else notifiers_from_config(SkylapseConfig(alerts=alerts_section), settings.station),
    )

    health_checks = {
        "queue": check_queue,
        "disk": lambda: disk_check(data_dir, settings.disk_warn_pct, settings.disk_fail_pct),
        "catalog": check_catalog,
        "workers": check_workers,
        "ingest": check_ingest,
        "store": retention.check,
        "alerts": alerts.health,
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        hub.bind_loop()
        if settings.workers > 0:
            consumer = jobs.consumer(settings.workers)
            # The server owns SIGINT/SIGTERM; huey must not replace its handlers.
            consumer._set_signal_handlers = lambda: None
            consumer.start()
            consumer_box.append(consumer)
        if ingest_loop is not None:
            ingest_loop.start()
        watcher_task = asyncio.create_task(watcher.run())
        retention_task = asyncio.create_task(retention.run())
        alerts_task = asyncio.create_task(
            alerts.run(
                lambda: alerts_section.evaluate_every_s,
                lambda event: hub.publish({"type": "alert", "alert": event.to_json()}),
            )
        )
        log.info("processing service started", data=str(data_dir), workers=settings.workers)
        try:
            yield
        finally:
            for task in (watcher_task, alerts_task, retention_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(alerts.close)
            hub.close_all()
            if ingest_loop is not None:
                await asyncio.to_thread(ingest_loop.stop)
            if consumer_box:
                await asyncio.to_thread(consumer_box.pop().stop)
            uptime.heartbeat()
            log.info("processing service stopped")

    app = create_service_app(
        service="processing",
        title="Skylapse processing service",
        description=__doc__ or "",
        token=settings.token,
        metrics=metrics,
        health_checks=health_checks,
        cors_origins=settings.cors_origins,
        max_body_bytes=settings.max_body_bytes,
        public_docs=settings.public_docs,
        lifespan=lifespan,
    )
    app.state.jobs = jobs
    app.state.hub = hub
    app.state.watcher = watcher
    app.state.ingest_loop = ingest_loop
    app.state.settings = settings
    app.state.alerts = alerts
    app.state.retention = retention

    router = APIRouter(dependencies=[Depends(app.state.require_token)])
    job_rate = RateLimit(settings.jobs_per_minute, settings.job_burst)

    def require_job(job_id: str) -> dict[str, Any]:
        job = jobs.catalog.job(job_id)
        if job is None:
            raise HTTPException(404, detail=f"no job {job_id}")
        return job

    @router.get("/sequences", response_model=list[SequenceOut], tags=["sequences"])
    def list_sequences(
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        """Ingested sequences (one per station, camera and capture session), newest last."""
        return jobs.catalog.sequences()[-limit:]

    @router.get("/jobs", response_model=list[JobOut], tags=["jobs"])
    def list_jobs(
        state: Annotated[Literal[JOB_STATES] | None, Query()] = None,  # type: ignore[valid-type]
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        return [job_out(j) for j in jobs.catalog.jobs(state=state, limit=limit)]

    @router.get(
        "/jobs/{job_id}",
        response_model=JobOut,
        tags=["jobs"],
        responses={404: {"description": "no such job"}},
    )
    def get_job(job_id: JobId) -> dict[str, Any]:
        return job_out(require_job(job_id))

    @router.post(
        "/jobs",
        response_model=JobOut,
        status_code=202,
        tags=["jobs"],
        responses={429: {"description": "too many render jobs; retry after Retry-After s"}},
    )
    def submit_job(body: RenderRequest, request: Request) -> dict[str, Any]:
        """Queue a render of a sequence; the job carries this request's correlation id."""
        sequence = jobs.catalog.sequence(body.sequence_id)
        if sequence is None:
            raise _invalid("sequence_id", f"no sequence {body.sequence_id}")
        if body.phase is not None and body.phase not in sequence["phases"]:
            raise _invalid(
                "phase",
                f"sequence {body.sequence_id} has no phase {body.phase!r}; "
                f"it has {sequence['phases']}",
            )
        job_rate.check("render jobs")
        job_id = jobs.submit_render(
            body.sequence_id,
            body.options,
            phase=body.phase,
            correlation=request_correlation_id(request),
        )
        log.info("render requested", job=job_id, sequence=body.sequence_id)
        watcher.nudge()
        return job_out(require_job(job_id))

    @router.post(
        "/jobs/{job_id}/cancel",
        response_model=JobOut,
        tags=["jobs"],
        responses={
            404: {"description": "no such job"},
            409: {"description": "the job already finished"},
        },
    )
    def cancel_job(job_id: JobId) -> dict[str, Any]:
        job = require_job(job_id)
        if job["state"] not in ("queued", "running"):
            raise HTTPException(
                409,
                detail=f"job {job_id} is {job['state']}; only queued or "
                "running jobs can be cancelled",
            )
        out = job_out(jobs.cancel(job_id))
        watcher.nudge()
        return out

    @router.post(
        "/jobs/{job_id}/retry",
        response_model=JobOut,
        tags=["jobs"],
        responses={
            404: {"description": "no such job"},
            409: {"description": "the job is not failed or cancelled"},
        },
    )
    def retry_job(job_id: JobId) -> dict[str, Any]:
        require_job(job_id)
        try:
            out = job_out(jobs.retry(job_id))
        except ValueError as exc:
            raise HTTPException(409, detail=str(exc)) from None
        watcher.nudge()
        return out

    def locate(job: dict[str, Any], name: str) -> tuple[Path, bool] | None:
        """A file of a finished render by name: in its render folder or in the archive."""
        outputs = (job.get("result") or {}).get("outputs") or []
        folders = {Path(p).parts[1] for p in outputs if len(Path(p).parts) == 3}
        if name not in {Path(p).name for p in outputs} or len(folders) != 1:
            return None
        folder = folders.pop()
        for archived, root in enumerate(stores):
            candidate = root / folder / name
            try:
                resolved = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if resolved.is_relative_to(root.resolve()) and resolved.is_file():
                return resolved, bool(archived)
        return None

    @router.get("/timelapses", response_model=list[TimelapseOut], tags=["timelapses"])
    def list_timelapses(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Finished renders whose files still exist, newest first, with a URL per file."""
        out = []
        for job in jobs.catalog.jobs(state="done", limit=limit):
            if job["kind"] != "render":
                continue
            files = []
            for rel in (job["result"] or {}).get("outputs") or []:
                name = Path(rel).name
                found = locate(job, name)
                if found is None:
                    continue
                kind, media_type = _file_kind(name)
                files.append(
                    {
                        "name": name,
                        "kind": kind,
                        "media_type": media_type,
                        "size_bytes": found[0].stat().st_size,
                        "url": f"/timelapses/{job['id']}/{name}",
                        "archived": found[1],
                    }
                )
            if files:
                result = job["result"] or {}
                out.append(
                    {
                        "job_id": job["id"],
                        "sequence_id": job["params"].get("sequence_id"),
                        "phase": job["params"].get("phase"),
                        "finished_at": job["finished_at"],
                        "frames": result.get("frames"),
                        "render_fps": result.get("render_fps"),
                        "files": files,
                    }
                )
        return out

    # <video>/<img> cannot send headers: this one also takes ?token= (see media_auth).
    files = APIRouter(dependencies=[Depends(app.state.require_media_token)])

    @files.get(
        "/timelapses/{job_id}/{file_name}",
        tags=["timelapses"],
        response_class=FileResponse,
        responses={
            200: {"content": {"video/mp4": {}, "image/png": {}}},
            206: {"description": "the requested byte range"},
            404: {"description": "no such job or file"},
            416: {"description": "range not satisfiable"},
        },
    )
    def get_timelapse_file(
        job_id: JobId,
        file_name: FileName,
    ) -> FileResponse:
        """One output file of a finished render; honours ``Range`` (206) so players can seek."""
        job = jobs.catalog.job(job_id)
        found = None
        if job is not None and job["kind"] == "render" and job["state"] == "done":
            found = locate(job, file_name)
        if found is None:
            raise HTTPException(404, detail=f"no file {file_name!r} for job {job_id}")
        return FileResponse(
            found[0],
            media_type=_file_kind(file_name)[1],
            content_disposition_type="inline",
            filename=file_name,
        )

    app.include_router(router)
    app.include_router(files)

    @app.websocket("/ws")
    async def job_events(websocket: WebSocket) -> None:
        if not await authenticate_websocket(websocket, settings.token):
            return
        recent = await asyncio.to_thread(jobs.catalog.jobs, None, 50)
        await hub.serve(websocket, [{"type": "snapshot", "jobs": [job_out(j) for j in recent]}])

    return app


def _invalid(field_name: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's validation errors, for checks that need the catalog."""
    return HTTPException(
        422,
        detail=[
            {
                "field": field_name,
                "loc": ["body", field_name],
                "msg": message,
                "type": "value_error",
            }
        ],
    )


def _disk_pct(path: Path) -> float:
    import shutil

    usage = shutil.disk_usage(path)
    return 100.0 * usage.used / usage.total if usage.total else 0.0
