"""The processing service's background work: the inbox scan and the job watcher.

* :class:`IngestLoop` scans the inbox in a thread, counts what it saw into the metrics and
  queues a render for every sequence whose frames stopped coming;
* :class:`JobWatcher` polls the catalog's jobs on the event loop and publishes each change to
  the WebSocket clients, and feeds the job metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from skylapse.api.common import Check
from skylapse.api.processing.models import JobOut
from skylapse.api.ws import Event, WebSocketHub
from skylapse.config import DEFAULT_MAX_FRAME_PIXELS
from skylapse.log import correlation_id, get_logger
from skylapse.metrics import ServiceMetrics, UptimeTracker
from skylapse.processing.ingest import Ingestor
from skylapse.processing.jobs import JobService
from skylapse.processing.options import RenderOptions

log = get_logger(__name__)


class IngestLoop:
    """Scans the inbox every ``every_s`` seconds in a thread; counts what it saw into metrics
    and queues renders of sequences that went idle (with ``render_options``, the
    configuration's ``processing.render``)."""

    def __init__(
        self,
        jobs: JobService,
        inbox: Path,
        metrics: ServiceMetrics,
        every_s: float,
        render_after_min: float | None,
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
        render_options: RenderOptions | None = None,
    ) -> None:
        self.jobs = jobs
        self.render_options = render_options or RenderOptions()
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
            self.metrics.typed("frames_transferred", Counter).inc(report.ingested)
            if report.quarantined:
                self.metrics.typed("frames_failed", Counter).labels(stage="ingest").inc(
                    len(report.quarantined)
                )
            self._observe_new_frames()
            queued = []
            if self.render_after is not None:
                queued = self.jobs.close_idle_sequences(self.render_after, self.render_options)
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
                meta = row.metadata
                latency = meta.get("latency_ms")
                if isinstance(latency, int | float) and latency >= 0:
                    self.metrics.typed("capture_latency_ms", Histogram).observe(latency)
                quality = meta.get("quality_score")
                if isinstance(quality, int | float):
                    self.metrics.typed("image_quality_score", Gauge).set(quality)
            self._last_row = rows[-1].id

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
    ) -> None:
        self.jobs = jobs
        self.hub = hub
        self.metrics = metrics
        self.uptime = uptime
        self.interval_s = interval_s
        self.limit = limit
        self._seen: dict[str, tuple[object, ...]] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_heartbeat = 0.0

    def nudge(self) -> None:
        """Wake the poller now (safe from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def poll(self) -> list[Event]:
        """Jobs that changed since the last poll, as events (the first poll only records)."""
        jobs = self.jobs.catalog.jobs(limit=self.limit)
        current: dict[str, tuple[object, ...]] = {
            j.id: (j.state, j.progress, j.attempts, j.error) for j in jobs
        }
        events: list[Event] = []
        if self._seen is not None:
            for job in reversed(jobs):  # oldest first
                before = self._seen.get(job.id)
                now = current[job.id]
                if before == now:
                    continue
                out = JobOut.from_row(job)
                events.append({"type": "job", "job": out.model_dump()})
                if job.finished and (before is None or before[0] != now[0]):
                    self._observe_finished(out)
        self._seen = current
        if time.monotonic() - self._last_heartbeat >= 5.0:
            self._last_heartbeat = time.monotonic()
            self.uptime.heartbeat()
        return events

    def _observe_finished(self, job: JobOut) -> None:
        if job.started_at and job.finished_at:
            seconds = (
                datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
            ).total_seconds()
            if seconds >= 0:
                self.metrics.typed("job_duration_seconds", Histogram).labels(
                    kind=job.kind, state=job.state
                ).observe(seconds)
        fps = (job.result or {}).get("render_fps")
        if job.kind == "render" and job.state == "done" and isinstance(fps, int | float):
            self.metrics.typed("render_frames_per_second", Gauge).set(fps)

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
