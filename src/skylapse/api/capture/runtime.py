"""What runs beside the capture API: :class:`CaptureRuntime`, stored as ``app.state.runtime``.

It owns the camera supervisor (open with retries, systemd READY, the unattended plan, recovery
from camera errors), the event pump (service events into metrics, progress and WebSocket
messages), the status/preview ticker (which also keeps ``system_uptime_pct``, see
:meth:`CaptureRuntime.capturing`, and the storage history behind the time-to-full alert), the
transfer worker's thread, the alerts (`skylapse.api.capture.health`, `skylapse.maintenance`)
and the watchdog. Routes reach it through the :data:`Runtime` dependency (``request.app.state``).

`skylapse.api.capture.app` assembles it from the configuration.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from skylapse.alerts import AlertCondition, AlertManager, Notifier, notifiers_from_config
from skylapse.api.capture.images import PREVIEW_WIDTH, preview_jpeg
from skylapse.api.capture.models import (
    PreviewMessage,
    Status,
    TransferStatus,
    Window,
)
from skylapse.api.ws import WebSocketHub
from skylapse.capture.events import (
    CaptureEvent,
    DeadlinesSkipped,
    FrameWritten,
    SessionStarted,
    SessionStopped,
)
from skylapse.capture.sensors import read_thermal_zone
from skylapse.capture.service import CaptureService, SessionError
from skylapse.capture.strategy import CaptureChoice, choose_capture
from skylapse.capture.sun import sun_elevation
from skylapse.capture.watchdog import Watchdog
from skylapse.capture.windows import SessionWindow, current_or_next_window
from skylapse.config import SkylapseConfig
from skylapse.config_store import ConfigFile
from skylapse.log import get_logger
from skylapse.maintenance import (
    KernelLog,
    StationSignals,
    StorageErrors,
    UsageHistory,
    disk_of,
    read_clock,
    read_wear,
)
from skylapse.metrics import ScheduledUptime, ServiceMetrics
from skylapse.transfer.queue import TransferWorker

log = get_logger("skylapse.api.capture")

#: What the capture service measures (see `skylapse.metrics`).
CAPTURE_METRICS = (
    "capture_latency_ms",
    "focus_acquisition_time_s",
    "storage_utilization_pct",
    "image_quality_score",
    "system_uptime_pct",
    "frames_captured",
    "frames_transferred",
    "frames_failed",
    "transfer_queue_depth",
    "transfer_bytes_sent",
    "transfer_failures",
    "transfer_last_success_timestamp_seconds",
)


def iso(when: dt.datetime | None) -> str | None:
    """ISO 8601 with microseconds, as the catalog writes times (None stays None)."""
    return when.isoformat(timespec="microseconds") if when is not None else None


#: Builds the alert conditions over a runtime (`skylapse.api.capture.health`).
ConditionsFor = Callable[["CaptureRuntime"], Sequence[AlertCondition]]


class CaptureRuntime:
    """The station's moving parts beside the API (module docstring)."""

    def __init__(
        self,
        service: CaptureService,
        config: SkylapseConfig,
        *,
        watchdog: Watchdog,
        unattended: bool,
        transfer_worker: TransferWorker | None,
        conditions: ConditionsFor,
        notifiers: list[Notifier] | None = None,
        retry_s: float = 30.0,
        tick_s: float = 1.0,
        stall_after_s: float | None = None,
        signals: StationSignals | None = None,
        config_file: ConfigFile | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.config_file = config_file  # where PUT /config saves (None: memory only)
        self.hub = WebSocketHub()
        self.metrics = ServiceMetrics(CAPTURE_METRICS)
        self.watchdog = watchdog
        self.unattended = unattended
        self.uptime = ScheduledUptime(
            service.buffer / "uptime-capture.json",
            self.scheduled_spans,
            window_s=config.alerts.uptime_window_h * 3600,
        )
        self.signals = signals or station_signals(self)
        self.transfer = transfer_worker
        self.retry_s = retry_s
        self.tick_s = tick_s
        self._stall_after_s = stall_after_s
        self.camera_open = False
        self.camera_error: str | None = None
        self.camera_error_at: float | None = None
        self.last_progress: float | None = None  # monotonic: last frame / session start
        self.last_stored: float | None = None  # monotonic: last frame stored / session start
        self.last_tick = time.monotonic()
        self.supervisor_done: str | None = None
        self.manual_interval_s: float | None = None
        self.latencies: deque[float] = deque(maxlen=100)
        self.qualities: deque[float] = deque(maxlen=10)
        self._focus_seen: float | None = None
        self._failed_seen = 0
        # writer failures already seen by the frames_not_stored alert (`health`)
        self.failed_alerted = 0
        self._sent_seen = 0
        self._bytes_seen = 0
        self._failures_seen = 0
        self._quarantined_seen = 0
        self._preview: tuple[int, PreviewMessage] | None = None
        self._window_cache: tuple[SkylapseConfig, SessionWindow | None, dt.datetime] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._transfer_thread: threading.Thread | None = None
        self.alerts = AlertManager(
            "capture",
            self.station,
            conditions(self),
            notifiers if notifiers is not None else notifiers_from_config(config, self.station),
        )
        # storage raises its alert itself, before it deletes anything untransferred
        service.storage.on_alert = self._alert_now
        self.metrics.gauge("storage_utilization_pct").set_function(service.storage.utilization_pct)
        self.metrics.gauge("system_uptime_pct").set_function(self.uptime.percent)

    @property
    def station(self) -> str:
        return self.config.transfer.station

    # -- derived state ---------------------------------------------------------------------
    def stall_after_s(self) -> float:
        """How long a running session may go without a frame before the loop counts as hung:
        two of the longest intervals plus the longest exposure, plus a margin."""
        if self._stall_after_s is not None:
            return self._stall_after_s
        cfg = self.config
        longest = max([p.interval_s for p in cfg.schedule.phases] + [self.manual_interval_s or 0.0])
        exposure = max(s.max_exposure_s for s in cfg.strategies.values())
        return 2 * longest + exposure + 30.0

    def camera_problem(self) -> str | None:
        """Why the camera counts as not answering now, or None."""
        if not self.camera_open:
            return None if self.camera_error is None else f"camera not open: {self.camera_error}"
        if self.camera_error is not None:
            return f"capture failed: {self.camera_error}"
        if self.service.status()["state"] == "capturing" and self.last_progress is not None:
            quiet = time.monotonic() - self.last_progress
            if quiet > self.stall_after_s():
                return f"no frame for {quiet:.0f} s in a running session"
        return None

    def capture_scheduled(self, now: dt.datetime) -> bool:
        """Whether the station should be capturing now: a session runs, or (unattended) a
        window of the plan is open."""
        if self.service.status()["state"] == "capturing":
            return True
        window = self.window(now) if self.unattended else None
        return window is not None and window.contains(now)

    def capturing(self) -> bool:
        """Whether the station captures as scheduled now (what ``system_uptime_pct`` counts
        as up): a session runs, the camera answers, and a frame was stored within one and a
        half intervals plus the longest exposure plus 10 s (autofocus, writing) of the last one
        or of the session's start."""
        if not self.camera_open or self.camera_problem() is not None:
            return False
        if self.service.status()["state"] != "capturing" or self.last_stored is None:
            return False
        interval = self.manual_interval_s or self.now_choice()[2].interval_s
        exposure = max(s.max_exposure_s for s in self.config.strategies.values())
        return time.monotonic() - self.last_stored <= 1.5 * interval + exposure + 10.0

    def scheduled_spans(self, start: float, end: float) -> list[tuple[float, float]]:
        """The plan's windows within ``[start, end]`` (Unix times): the scheduled capture
        time while the service was down (none unless unattended)."""
        if not self.unattended:
            return []
        spans = []
        when = dt.datetime.fromtimestamp(start, dt.UTC)
        stop = dt.datetime.fromtimestamp(end, dt.UTC)
        while when < stop:
            window = current_or_next_window(self.config.location, when, self.config)
            if window is None or window.start >= stop:
                break
            spans.append((max(window.start, when).timestamp(), min(window.end, stop).timestamp()))
            when = window.end
        return spans

    def loop_stalled(self) -> bool:
        """The event loop has not ticked for five ticks (at least 10 s)."""
        return time.monotonic() - self.last_tick > max(10.0, 5 * self.tick_s)

    def loop_alive(self) -> bool:
        """The watchdog's question: is the event loop turning and the capture loop moving?"""
        if self.loop_stalled() or self.supervisor_done is not None:
            return False
        return self.camera_problem() is None

    def now_choice(self) -> tuple[dt.datetime, float, CaptureChoice]:
        """The station's time, the sun's elevation and what the plan would capture now."""
        now = self.service.clock.now()
        elev = sun_elevation(self.config.location, now)
        return now, elev, choose_capture(self.config, elev, self.service.status()["sky"])

    def window(self, now: dt.datetime) -> SessionWindow | None:
        """The current or next session window, cached until it ends or the config changes
        (astral for five days costs milliseconds; ``/status`` is polled)."""
        cached = self._window_cache
        if cached is not None:
            config, window, computed_at = cached
            # still the first window ending after now, as long as it has not ended
            if config is self.config and window is not None and computed_at <= now < window.end:
                return window
        window = current_or_next_window(self.config.location, now, self.config)
        self._window_cache = (self.config, window, now)
        return window

    def transfer_status(self) -> TransferStatus | None:
        if self.transfer is None:
            return None
        st = self.transfer.stats
        return TransferStatus(
            enabled=True,
            host=self.transfer.target.destination,
            queue_depth=st.queue_depth,
            frames_sent=st.frames_sent,
            batches_verified=st.batches_verified,
            failures=st.failures,
            last_success=iso(st.last_success),
            failing_for_s=round(self.transfer.failing_for_s(), 1),
            last_error=st.last_error,
        )

    def status(self) -> Status:
        """``GET /status``: the service's own status and the station's around it."""
        svc = self.service
        base = svc.status()
        now, elev, choice = self.now_choice()
        window = self.window(now)
        catalog = svc.catalog
        stored = catalog.count_frames()
        problem = self.camera_problem()
        return Status.model_validate(
            {
                **base,
                "now": iso(now),
                "camera_ok": problem is None,
                "camera_error": problem,
                "sun_elevation_deg": round(elev, 3),
                "phase": choice.phase,
                "strategy": choice.strategy_name,
                "interval_s": choice.interval_s,
                "unattended": self.unattended,
                "window": None
                if window is None
                else Window(
                    session_id=window.session_id,
                    start=window.start.isoformat(timespec="microseconds"),
                    end=window.end.isoformat(timespec="microseconds"),
                    open=window.contains(now),
                ),
                "storage": {**base["storage"], "watermark_pct": self.config.capture.watermark_pct},
                "frames": {
                    "stored": stored,
                    "awaiting_transfer": stored - catalog.count_frames(transfer_state="verified"),
                },
                "transfer": self.transfer_status(),
                "alerts": self.alerts.active(),
            }
        )

    async def preview(self) -> PreviewMessage | None:
        """The newest frame as a preview message (encoded once per frame)."""
        frame = self.service.latest_frame()
        if frame is None:
            return None
        key = id(frame)
        if self._preview is None or self._preview[0] != key:
            jpeg = await asyncio.to_thread(preview_jpeg, frame.pixels)
            h, w = frame.pixels.shape[:2]
            width = min(w, PREVIEW_WIDTH)
            st = self.service.status()
            message = PreviewMessage(
                frame_at=frame.metadata.timestamp.isoformat(timespec="microseconds"),
                session_id=(st["session"] or {}).get("session_id")
                if st["state"] == "capturing"
                else None,
                width=width,
                height=max(1, round(h * width / w)),
                jpeg_base64=base64.b64encode(jpeg).decode("ascii"),
            )
            self._preview = (key, message)
        return self._preview[1]

    def camera_failed(self, exc: BaseException) -> None:
        """Count a capture that failed on the camera (the supervisor reopens it)."""
        self.camera_error = f"{type(exc).__name__}: {exc}"
        self.camera_error_at = time.monotonic()
        self.metrics.counter("frames_failed").labels(stage="capture").inc()
        log.error("camera failed", error=self.camera_error)

    # -- background tasks ------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: the background tasks run while it serves."""
        await self.start()
        log.info(
            "capture service started",
            buffer=str(self.service.buffer),
            camera=self.service.camera.name,
        )
        try:
            yield
        finally:
            await self.stop()
            log.info("capture service stopped")

    async def start(self) -> None:
        self.hub.bind_loop()
        self.last_tick = time.monotonic()
        queue = self.service.subscribe(1024)
        self._tasks = [
            asyncio.create_task(self._pump(queue), name="capture-events"),
            asyncio.create_task(self._tick(), name="capture-ticker"),
            asyncio.create_task(self._supervise(), name="capture-supervisor"),
            asyncio.create_task(self._alerts(), name="capture-alerts"),
        ]
        if self.transfer is not None:
            self._transfer_thread = threading.Thread(
                target=self.transfer.run,
                args=(self.config.transfer.poll_s,),
                name="skylapse-transfer",
                daemon=True,
            )
            self._transfer_thread.start()

    async def stop(self) -> None:
        self._stopping = True
        self.watchdog.stopping()
        self.service.stop_plan()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.service.close(), 60)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.transfer is not None:
            self.transfer.stop()
            if self._transfer_thread is not None:
                await asyncio.to_thread(self._transfer_thread.join, 30)
        self.hub.close_all()
        await asyncio.to_thread(self.alerts.close)
        self._beat()
        self.uptime.save()

    async def _alerts(self) -> None:
        self.alerts.start()
        while True:
            events = await asyncio.to_thread(self.alerts.evaluate)
            for event in events:
                self.hub.publish({"type": "alert", "alert": event.to_json()})
            await asyncio.sleep(self.config.alerts.evaluate_every_s)

    async def frames_not_stored(self) -> None:
        """Frames were taken but not stored (``POST /capture``): count them at once and
        evaluate the alerts now (``frames_not_stored``), not at the next tick."""
        self._count_deltas()
        await asyncio.to_thread(self._alert_now)

    def _alert_now(self) -> None:
        """Evaluate the alerts at once (from any thread), publishing what opens or closes."""
        for event in self.alerts.evaluate():
            self.hub.publish_threadsafe({"type": "alert", "alert": event.to_json()})

    async def _reopen_camera(self) -> None:
        cam = self.service.camera
        with contextlib.suppress(Exception):
            await cam.close()
        await cam.configure(self.service.camera_config)

    async def _open_camera(self) -> None:
        """Open the camera, retrying every ``retry_s`` until it opens."""
        while not self.camera_open:
            try:
                await self.service.open()
                self.camera_open = True
                self.camera_error = None
            except Exception as exc:
                self.camera_error = f"{type(exc).__name__}: {exc}"
                log.error("camera did not open", error=self.camera_error)
                await asyncio.sleep(self.retry_s)

    async def _supervise(self) -> None:
        """Open the camera (retrying), say READY, then run the plan and recover from errors."""
        try:
            await self._open_camera()
            self.watchdog.ready(f"camera {self.service.status()['camera']} open")
            self.watchdog.start(self.loop_alive)
            log.info(
                "capture service ready",
                camera=self.service.status()["camera"],
                unattended=self.unattended,
                watchdog_s=self.watchdog.interval_s,
            )
            while self.unattended and not self._stopping:
                try:
                    await self.service.run_plan()
                    return  # stop_plan: shutting down
                except SessionError:  # a session started through the API runs: let it
                    await self.service.wait_session()
                except Exception as exc:
                    self.camera_failed(exc)
                    await asyncio.sleep(self.retry_s)
                    with contextlib.suppress(Exception):
                        await self._reopen_camera()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pragma: no cover - the loop above catches capture errors
            self.supervisor_done = repr(exc)
            log.error("capture supervisor died", error=repr(exc))

    async def _pump(self, queue: asyncio.Queue[CaptureEvent]) -> None:
        """Service events into metrics, progress and WebSocket messages."""
        while True:
            event = await queue.get()
            if isinstance(event, FrameWritten):
                self._observe_frame(event)
            elif isinstance(event, SessionStarted):
                self.last_progress = self.last_stored = time.monotonic()
                self.watchdog.status(f"capturing session {event.session_id}")
            elif isinstance(event, SessionStopped) and not self._stopping:
                self.watchdog.status("idle")
            elif isinstance(event, DeadlinesSkipped):
                self.last_progress = time.monotonic()
            self.hub.publish(event.to_json())

    def _observe_frame(self, event: FrameWritten) -> None:
        """A frame was written: progress, and its latency, quality and focus into metrics."""
        m = self.metrics
        record = event.record
        self.last_progress = self.last_stored = time.monotonic()
        self.camera_error = None
        m.counter("frames_captured").inc()
        if event.first_of_shot and record.latency_ms is not None:
            m.histogram("capture_latency_ms").observe(record.latency_ms)
            self.latencies.append(record.latency_ms)
        if record.quality_score is not None:
            m.gauge("image_quality_score").set(record.quality_score)
            if event.first_of_shot:
                self.qualities.append(record.quality_score)
        focus = self.service.focus.acquisition_time_s
        if focus is not None and focus != self._focus_seen:
            self._focus_seen = focus
            m.histogram("focus_acquisition_time_s").observe(focus)

    async def _tick(self) -> None:
        """Once per ``tick_s``: liveness, counters from the writer and transfers, and the
        status and preview messages while someone listens; every fifth tick, the uptime
        heartbeat and a storage sample."""
        beat = 0.0
        while True:
            self.last_tick = time.monotonic()
            try:
                self._count_deltas()
                if self.last_tick - beat >= 5 * self.tick_s:  # 5 s by default
                    beat = self.last_tick
                    await asyncio.to_thread(self._beat)
                    await asyncio.to_thread(self._sample_storage)
                if self.hub.client_count:
                    status = await asyncio.to_thread(self.status)
                    self.hub.publish({"type": "status", "status": status.model_dump(mode="json")})
                    preview = await self.preview()
                    if preview is not None:
                        self.hub.publish(preview.model_dump(mode="json"))
            except Exception as exc:  # keep ticking: the watchdog depends on it
                log.warning("status tick failed", error=repr(exc))
            await asyncio.sleep(self.tick_s)

    def _beat(self) -> None:
        """Count the time since the last beat into ``system_uptime_pct``."""
        self.uptime.window_s = self.config.alerts.uptime_window_h * 3600
        now = self.service.clock.now()
        self.uptime.heartbeat(self.capture_scheduled(now), self.capturing())

    def _sample_storage(self) -> None:
        """A sample of the buffer's disk use for the time-to-full alert (at most every 5 min)."""
        usage = self.service.storage.usage()
        self.signals.usage.add(time.time(), usage.used, usage.total)

    def _count_deltas(self) -> None:
        """Counters from the writer's and the transfer worker's totals since the last tick."""
        failed = self.service.writer.stats()["failed"]
        if failed > self._failed_seen:
            self.metrics.counter("frames_failed").labels(stage="write").inc(
                failed - self._failed_seen
            )
            self._failed_seen = failed
        if self.transfer is None:
            return
        stats = self.transfer.stats
        if stats.frames_sent > self._sent_seen:
            self.metrics.counter("frames_transferred").inc(stats.frames_sent - self._sent_seen)
            self._sent_seen = stats.frames_sent
        if stats.bytes_sent > self._bytes_seen:
            self.metrics.counter("transfer_bytes_sent").inc(stats.bytes_sent - self._bytes_seen)
            self._bytes_seen = stats.bytes_sent
        if stats.failures > self._failures_seen:
            self.metrics.counter("transfer_failures").inc(stats.failures - self._failures_seen)
            self._failures_seen = stats.failures
        if stats.quarantined > self._quarantined_seen:  # frames set aside on the station
            failed_now = stats.quarantined - self._quarantined_seen
            self.metrics.counter("frames_failed").labels(stage="transfer").inc(failed_now)
            self._quarantined_seen = stats.quarantined
        self.metrics.gauge("transfer_queue_depth").set(stats.queue_depth)
        if stats.last_success is not None:
            self.metrics.gauge("transfer_last_success_timestamp_seconds").set(
                stats.last_success.timestamp()
            )


def station_signals(rt: CaptureRuntime) -> StationSignals:
    """The station's maintenance signals (`skylapse.maintenance`) from this machine: the
    kernel log and sysfs of the buffer's disk, the thermal zone, adjtimex, the storage history
    beside the buffer and the weather client."""
    service = rt.service
    disk = disk_of(service.buffer)
    return StationSignals(
        soc_temp_c=read_thermal_zone,
        wear=lambda: read_wear(disk),
        storage_errors=StorageErrors(KernelLog(), (disk.name,) if disk is not None else ()),
        clock=read_clock,
        usage=UsageHistory(service.buffer / "storage-history.json"),
        watermark_pct=lambda: rt.config.capture.watermark_pct,
        weather_failures=lambda: getattr(service.weather, "failures", None),
    )


def get_runtime(conn: HTTPConnection) -> CaptureRuntime:
    """The app's runtime (a FastAPI dependency, for requests and WebSockets alike)."""
    runtime = conn.app.state.runtime
    assert isinstance(runtime, CaptureRuntime)
    return runtime


#: A route parameter typed ``Runtime`` receives the app's :class:`CaptureRuntime`.
Runtime = Annotated[CaptureRuntime, Depends(get_runtime)]
