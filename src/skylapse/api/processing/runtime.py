"""What a running processing service holds: :class:`ProcessingRuntime`, kept on ``app.state``.

The routes get it with the :data:`Runtime` dependency (``request.app.state.runtime``); the
app's lifespan is :meth:`ProcessingRuntime.lifespan`, which starts the in-process workers
(``workers > 0``), the ingest loop (``ingest_every_s``), the job watcher and the alert
evaluation, and stops them again in the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI
from prometheus_client import Gauge
from starlette.requests import HTTPConnection

from skylapse.alerts import (
    AlertManager,
    notifiers_from_config,
    processing_conditions,
    storage_condition,
)
from skylapse.api.middleware import RateLimit
from skylapse.api.processing.background import IngestLoop, JobWatcher
from skylapse.api.processing.settings import PROCESSING_METRICS, ProcessingSettings
from skylapse.api.ws import WebSocketHub
from skylapse.catalog import JobRow
from skylapse.config import ArchiveConfig, BackupConfig, SkylapseConfig, reveal
from skylapse.log import get_logger
from skylapse.metrics import ServiceMetrics, UptimeTracker
from skylapse.processing.jobs import BackgroundConsumer, JobService
from skylapse.processing.retention import StoreRetention

log = get_logger(__name__)


class ProcessingRuntime:
    """The job service and everything that runs beside the routes, built from the settings.

    ``stores`` are where finished renders' files are served from: the render folders
    (``DATA/timelapses``) and the archive (``archive_dir``, else where the archive jobs put
    them: the archive section's ``dir`` or ``$SKYLAPSE_ARCHIVE_DIR``, else ``DATA/archive``), in
    that order. ``consumer`` is the in-process huey consumer while the service runs with
    worker threads, else None.
    """

    def __init__(self, settings: ProcessingSettings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        pc = settings.processing
        self.hub = WebSocketHub()
        self.metrics = ServiceMetrics(PROCESSING_METRICS)
        self.jobs = JobService(
            self.data_dir,
            reveal(pc.queue_url),  # None: $SKYLAPSE_QUEUE_URL or SQLite
            on_progress=self._on_progress,
            archive=ArchiveConfig.from_env(base=settings.archive),
            backup=BackupConfig.from_env(base=settings.backup),
        )
        self.uptime = UptimeTracker(self.data_dir / "uptime-processing.json")
        self.retention = StoreRetention(
            self.jobs.store, self.jobs.catalog, pc.retention, metrics=self.metrics
        )
        self.watcher = JobWatcher(self.jobs, self.hub, self.metrics, self.uptime, pc.job_poll_s)
        archive_dir = settings.archive_dir or self.jobs.archive.dir or self.data_dir / "archive"
        self.stores = (self.jobs.timelapses, archive_dir)
        self.ingest_loop = (
            IngestLoop(
                self.jobs,
                settings.inbox or self.data_dir / "inbox",
                self.metrics,
                pc.ingest_every_s,
                pc.render_after_min,
                pc.max_frame_pixels,
                pc.render,
            )
            if settings.ingest
            else None
        )
        self.alerts_section = settings.alerts
        self.alerts = AlertManager(
            "processing",
            settings.station,
            [
                *processing_conditions(
                    self.jobs.catalog,
                    self.alerts_section,
                    store_at_risk=lambda: self.retention.at_risk,
                ),
                storage_condition(
                    lambda: _disk_pct(self.data_dir),
                    lambda: self.alerts_section,
                    clear_after_s=self.alerts_section.clear_after_s,
                ),
            ],
            settings.alert_notifiers
            if settings.alert_notifiers is not None
            else notifiers_from_config(
                SkylapseConfig(alerts=self.alerts_section), settings.station
            ),
        )
        self.job_rate = RateLimit(settings.jobs_per_minute, settings.job_burst)
        self.consumer: BackgroundConsumer | None = None
        gauge = self.metrics.typed
        gauge("processing_queue_depth", Gauge).set_function(self.jobs.catalog.queue_depth)
        gauge("storage_utilization_pct", Gauge).set_function(lambda: _disk_pct(self.data_dir))
        gauge("system_uptime_pct", Gauge).set_function(self.uptime.percent)

    def _on_progress(self, job_id: str, fraction: float) -> None:
        """A render's progress from this process's workers: to the clients at once."""
        self.hub.publish_threadsafe(
            {"type": "progress", "job_id": job_id, "progress": round(fraction, 4)}
        )
        self.watcher.nudge()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Run the background work while the app serves (the app's ``lifespan``)."""
        self.hub.bind_loop()
        workers = self.settings.worker_threads
        if workers > 0:
            # the server owns SIGINT/SIGTERM: the consumer leaves them alone
            self.consumer = self.jobs.start_consumer(workers)
        if self.ingest_loop is not None:
            self.ingest_loop.start()
        tasks = [
            asyncio.create_task(self.watcher.run()),
            asyncio.create_task(self.retention.run()),
            asyncio.create_task(
                self.alerts.run(
                    lambda: self.alerts_section.evaluate_every_s,
                    lambda event: self.hub.publish({"type": "alert", "alert": event.to_json()}),
                )
            ),
        ]
        log.info("processing service started", data=str(self.data_dir), workers=workers)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(self.alerts.close)
            self.hub.close_all()
            if self.ingest_loop is not None:
                await asyncio.to_thread(self.ingest_loop.stop)
            if self.consumer is not None:
                consumer, self.consumer = self.consumer, None
                await asyncio.to_thread(consumer.stop)
            self.uptime.heartbeat()
            log.info("processing service stopped")

    def locate(self, job: JobRow, name: str) -> tuple[Path, bool] | None:
        """A file of a finished render by name, in its render folder or in the archive:
        its resolved path and whether it is the archived copy; None when there is none.

        Only names among the job's own outputs are looked up, and the resolved path must
        stay inside its store: no path from a request reaches the file system."""
        outputs = job.outputs
        folders = {Path(p).parts[1] for p in outputs if len(Path(p).parts) == 3}
        if name not in {Path(p).name for p in outputs} or len(folders) != 1:
            return None
        folder = folders.pop()
        for archived, root in enumerate(self.stores):
            candidate = root / folder / name
            try:
                resolved = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if resolved.is_relative_to(root.resolve()) and resolved.is_file():
                return resolved, bool(archived)
        return None


def get_runtime(connection: HTTPConnection) -> ProcessingRuntime:
    """The app's runtime, for a request or a WebSocket."""
    runtime: ProcessingRuntime = connection.app.state.runtime
    return runtime


#: The dependency routes declare to reach the runtime: ``def route(runtime: Runtime)``.
Runtime = Annotated[ProcessingRuntime, Depends(get_runtime)]


def _disk_pct(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return 100.0 * usage.used / usage.total if usage.total else 0.0
