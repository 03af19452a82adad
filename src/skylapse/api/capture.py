"""The capture service's API: the station's status, plan, configuration, frames and live view.

``create_capture_app(config, token)`` builds the app on the shared layer (`skylapse.api.common`)
around one :class:`~skylapse.capture.service.CaptureService`. Its lifespan opens the camera
(``capture.camera``: auto-detected or configured), tells systemd READY once the camera is open
and feeds the watchdog while the capture loop is alive, runs the unattended plan
(``capture.unattended``), the transfer worker (when ``transfer.host`` is set) and the alerts.

=========================================  ====================================================
``GET    /health``                          camera, disk, scheduler, transfer, alerts (no token)
``GET    /metrics``                         Prometheus text format
``GET    /status``                          what the station is doing now (fields below)
``GET    /schedule``                        the day's plan, its windows and the phase now
``GET    /config``                          the running configuration (secrets redacted)
``PUT    /config``                          change it: validated, applied whole or not at all
``POST   /capture``                         a frame (or bracket set) now; the frame records
``GET    /sessions``                        the catalog's sessions
``POST   /sessions``                        start a session (201); 409 while one runs
``DELETE /sessions/{id}``                   stop the running session; its summary
``GET    /frames``                          frames, paged (``since``, ``until``, ``limit``,
                                            ``offset``), oldest first
``GET    /frames/{id}/image``               the frame as JPEG, ``size=thumb|preview|full`` or a
                                            width in pixels
``WS     /ws``                              live status, previews and events (below)
=========================================  ====================================================

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>``; invalid input is a 422
whose entries name the field.

``GET /status`` (also the ``status`` of the WebSocket's status messages)::

    {"state": "capturing" | "idle", "now": ISO, "session": SESSION | null,
     "sky": "clear" | "overcast" | "stormy", "camera": "simulated:simulated",
     "camera_ok": bool, "camera_error": str | null, "lens_position": float | null,
     "focus_acquisition_time_s": float | null, "last_frame_at": ISO | null,
     "sun_elevation_deg": float, "phase": str, "strategy": str, "interval_s": float,
     "unattended": bool, "window": {"session_id", "start", "end", "open": bool} | null,
     "writer": {"written", "failed", "queue_depth", "max_queue_depth", "writer_waits",
                "write_ms_p50", "write_ms_max"},
     "storage": {"utilization_pct", "watermark_pct", "deleted": {...}},
     "frames": {"stored": int, "awaiting_transfer": int},
     "transfer": null | {"enabled": true, "host", "queue_depth", "frames_sent",
                         "batches_verified", "failures", "last_success", "failing_for_s",
                         "last_error"},
     "alerts": [{"alert", "severity", "component", "title", "detail", "episode",
                 "opened_at"}]}

    SESSION = {"session_id", "started_at", "ended_at", "shots", "files", "written", "failed",
               "skipped_deadlines", "latency_ms_p50", "latency_ms_p99", "latency_ms_max",
               "exposure_s": [min, max], "gain": [min, max], "ev": [min, max], "phases": [...],
               "focus_acquisition_time_s", "lens_position"}

``GET /schedule?date=YYYY-MM-DD`` (default today at the station)::

    {"date", "timezone", "location": {...}, "now": ISO, "sun_elevation_deg", "phase",
     "strategy", "interval_s", "total_frames",
     "phases": [{"start", "end", "phase", "min_elevation_deg", "max_elevation_deg",
                 "interval_s", "strategy", "hdr", "white_balance", "ev100_min", "ev100_max",
                 "frames"}],
     "windows": [{"session_id", "name", "start", "end", "open": bool}],
     "sun": {"sunrise", "sunset", "noon", "civil_dawn", "civil_dusk", ...: ISO | null}}

``GET /frames`` answers ``{"frames": [FRAME], "limit", "offset", "next_offset": int | null}``;
a FRAME is the catalog record (`skylapse.catalog.FrameRecord.to_json`: ``id``, ``path``,
``captured_at``, ``scheduled_at``, ``session_id``, exposure fields, ``quality_score``,
``latency_ms``, ``phase``, ``strategy``, ``bracket``, ``transfer_state``, ``extra``...) plus
``"image_url": "/frames/<id>/image"``. ``POST /capture`` answers ``{"frames": [FRAME]}``.
Times are ISO 8601 with an offset; ``since``/``until`` without one are taken as UTC.

``PUT /config`` takes a JSON object shaped like the config file; it is merged into the running
configuration (objects key by key; lists and values replace), and the result is validated as a
whole. It applies at once: phases, intervals and strategies from the next frame, exposure
settings from the next session, JPEG quality, retention and the watermark from the next write
or storage check, weather thresholds at the next fetch, alert thresholds at the next
evaluation. Numbers must be finite and within each field's bounds. Nothing is applied unless
all of it is. Fields that only take effect at a restart (``api``, ``transfer``,
``capture.buffer_dir|camera|resolution|writer_queue|unattended``,
``weather.base_url|cache_path``, the alert notifiers) are refused with 422 naming them. The
change lives in memory: edit the config file to keep it across restarts. Secrets (the fields
typed `skylapse.config.Secret`) show as ``"***"``; sending ``"***"`` back keeps them.

WebSocket ``/ws``: the token as the ``Authorization`` header, ``?token=`` or a first message
``{"token": "..."}`` (refused: closed with 4401). Text messages, JSON:

* ``{"type": "status", "status": STATUS}`` on connecting and then every second;
* ``{"type": "preview", "frame_at": ISO, "session_id": str | null, "width": int,
  "height": int, "content_type": "image/jpeg", "jpeg_base64": str}`` on connecting (once a
  frame exists) and then about once a second: the newest frame, at most 640 px wide;
* ``{"type": "frame", "session_id": str, "record": FRAME}`` for every frame written;
* ``{"type": "session_started", "session_id": str}``,
  ``{"type": "session_stopped", "session": SESSION}``,
  ``{"type": "skipped", "session_id": str, "count": int}`` (deadlines missed);
* ``{"type": "alert", "alert": {"alert", "state": "firing" | "resolved", "severity",
  "component", "title", "detail", "episode", "opened_at", "resolved_at", ...}}``;
* ``{"type": "pong"}`` in answer to ``{"type": "ping"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from skylapse.alerts import AlertCondition, AlertManager, Notifier, notifiers_from_config
from skylapse.api.auth import authenticate_websocket
from skylapse.api.common import Check, create_service_app
from skylapse.api.middleware import validation_details
from skylapse.api.ws import WebSocketHub
from skylapse.capture.cameras import Camera, CameraConfig, CameraError
from skylapse.capture.clock import Clock, RealClock
from skylapse.capture.plan import day_plan
from skylapse.capture.service import CaptureService, SessionError, SessionSpec
from skylapse.capture.strategy import choose_capture
from skylapse.capture.sun import sun_elevation
from skylapse.capture.watchdog import Watchdog
from skylapse.capture.windows import current_or_next_window, day_windows
from skylapse.config import REDACTED, SkylapseConfig
from skylapse.log import get_logger
from skylapse.metrics import ServiceMetrics, UptimeTracker
from skylapse.names import NAME_PATTERN, Name
from skylapse.processing import srgb

log = get_logger(__name__)

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

#: ``GET /frames/{id}/image?size=``: named widths (``full`` = the file as stored).
IMAGE_SIZES = {"thumb": 320, "preview": 960, "full": None}
PREVIEW_WIDTH = 640
#: Changes to these only take effect when the service starts.
RESTART_ONLY = (
    ("api",),
    ("transfer",),
    ("capture", "buffer_dir"),
    ("capture", "camera"),
    ("capture", "resolution"),
    ("capture", "writer_queue"),
    ("capture", "unattended"),
    ("weather", "base_url"),
    ("weather", "cache_path"),
    ("alerts", "webhook_url"),
    ("alerts", "mqtt"),
    ("alerts", "evaluate_every_s"),
)
_MAX_DB_INT = 2**62


# -- request models ----------------------------------------------------------------------------


class CaptureRequest(BaseModel):
    """``POST /capture``."""

    model_config = ConfigDict(extra="forbid")

    bracket: StrictBool = Field(False, description="take the strategy's bracket set (HDR) instead")


class SessionRequest(BaseModel):
    """``POST /sessions``: all optional; the session ends at whichever limit comes first."""

    model_config = ConfigDict(extra="forbid")

    session_id: Name | None = Field(None, description="an existing id resumes that session")
    interval_s: float | None = Field(
        None, gt=0, le=3600, description="fixed interval; null follows the plan"
    )
    duration_s: float | None = Field(None, gt=0, le=7 * 86400)
    max_frames: int | None = Field(None, ge=1, le=10_000_000)
    hdr: StrictBool | None = Field(None, description="null: capture.hdr")


FrameId = Annotated[int, PathParam(ge=1, le=_MAX_DB_INT, description="frame id")]
SessionId = Annotated[str, PathParam(pattern=NAME_PATTERN)]


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat(timespec="microseconds") if when is not None else None


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def frame_out(record) -> dict[str, Any]:
    out = record.to_json()
    out["image_url"] = f"/frames/{record.id}/image"
    return out


def _invalid(field_name: str, message: str) -> HTTPException:
    return HTTPException(
        422,
        detail=[
            {
                "field": field_name,
                "loc": ["body", *field_name.split(".")],
                "msg": message,
                "type": "value_error",
            }
        ],
    )


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)  # type: ignore[assignment]
    return doc


def _drop_redacted(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {k: _drop_redacted(v) for k, v in patch.items() if v != REDACTED}
    return patch


def preview_jpeg(pixels: np.ndarray, width: int = PREVIEW_WIDTH, quality: int = 80) -> bytes:
    """A uint16 sRGB frame as an 8-bit JPEG at most ``width`` pixels wide (area averaging)."""
    h, w = pixels.shape[:2]
    if w > width:
        pixels = cv2.resize(
            pixels, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA
        )
    rgb8 = srgb.to_uint8(pixels) if pixels.dtype == np.uint16 else pixels
    bgr = cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR) if rgb8.ndim == 3 else rgb8
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def resized_jpeg(path: Path, width: int, quality: int = 85) -> bytes:
    """A stored JPEG reduced to ``width`` pixels wide; libjpeg's DCT scaling does most of the
    reduction while decoding (``IMREAD_REDUCED_*``), area averaging the rest."""
    from PIL import Image

    with Image.open(path) as probe:  # reads the header only
        full_w = probe.size[0]
    data = np.fromfile(path, dtype=np.uint8)
    flag = cv2.IMREAD_COLOR
    for factor, reduced in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    ):
        if full_w / factor >= width:
            flag = reduced
            break
    image = cv2.imdecode(data, flag)
    if image is None:
        raise ValueError(f"{path.name} is not a readable image")
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(
            image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA
        )
    ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return out.tobytes()


# -- the station's moving parts ----------------------------------------------------------------


class CaptureRuntime:
    """What runs beside the API: the camera supervisor (open, plan, recovery), the event pump
    (metrics, WebSocket), the status/preview ticker, transfers, alerts and the watchdog."""

    def __init__(
        self,
        service: CaptureService,
        config: SkylapseConfig,
        hub: WebSocketHub,
        metrics: ServiceMetrics,
        uptime: UptimeTracker,
        watchdog: Watchdog,
        *,
        unattended: bool,
        transfer_worker: Any | None,
        retry_s: float,
        tick_s: float,
        stall_after_s: float | None,
        notifiers: list[Notifier] | None,
    ):
        self.service = service
        self.config = config
        self.hub = hub
        self.metrics = metrics
        self.uptime = uptime
        self.watchdog = watchdog
        self.unattended = unattended
        self.transfer = transfer_worker
        self.retry_s = retry_s
        self.tick_s = tick_s
        self._stall_after_s = stall_after_s
        self.camera_open = False
        self.camera_error: str | None = None
        self.camera_error_at: float | None = None
        self.last_progress: float | None = None  # monotonic: last frame / session start
        self.last_tick = time.monotonic()
        self.supervisor_done: str | None = None
        self.manual_interval_s: float | None = None
        self.latencies: deque[float] = deque(maxlen=100)
        self.qualities: deque[float] = deque(maxlen=10)
        self._focus_seen: float | None = None
        self._written_seen = 0
        self._failed_seen = 0
        self._sent_seen = 0
        self._bytes_seen = 0
        self._failures_seen = 0
        self._quarantined_seen = 0
        self._preview: tuple[int, dict[str, Any]] | None = None
        self._window_cache: tuple[SkylapseConfig, Any, dt.datetime] | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._transfer_thread: threading.Thread | None = None
        self.alerts = AlertManager(
            "capture",
            self.station,
            self._conditions(),
            notifiers if notifiers is not None else notifiers_from_config(config, self.station),
        )
        # storage raises its alert itself, before it deletes anything untransferred
        service.storage.on_alert = self._alert_now

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

    def loop_alive(self) -> bool:
        """The watchdog's question: is the event loop turning and the capture loop moving?"""
        if time.monotonic() - self.last_tick > max(10.0, 5 * self.tick_s):
            return False
        if self.supervisor_done is not None:
            return False
        return self.camera_problem() is None

    def now_choice(self):
        now = self.service.clock.now()
        elev = sun_elevation(self.config.location, now)
        return now, elev, choose_capture(self.config, elev, self.service.status()["sky"])

    def window(self, now: dt.datetime):
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

    def transfer_status(self) -> dict[str, Any] | None:
        if self.transfer is None:
            return None
        st = self.transfer.stats
        return {
            "enabled": True,
            "host": self.transfer.target.destination,
            "queue_depth": st.queue_depth,
            "frames_sent": st.frames_sent,
            "batches_verified": st.batches_verified,
            "failures": st.failures,
            "last_success": _iso(st.last_success),
            "failing_for_s": round(self.transfer.failing_for_s(), 1),
            "last_error": st.last_error,
        }

    def status(self) -> dict[str, Any]:
        svc = self.service
        out = svc.status()
        now, elev, choice = self.now_choice()
        window = self.window(now)
        catalog = svc.catalog
        stored = catalog.count_frames()
        out.update(
            {
                "now": _iso(now),
                "camera_ok": self.camera_problem() is None,
                "camera_error": self.camera_problem(),
                "sun_elevation_deg": round(elev, 3),
                "phase": choice.phase,
                "strategy": choice.strategy_name,
                "interval_s": choice.interval_s,
                "unattended": self.unattended,
                "window": None
                if window is None
                else {
                    "session_id": window.session_id,
                    "start": _iso(window.start),
                    "end": _iso(window.end),
                    "open": window.contains(now),
                },
                "frames": {
                    "stored": stored,
                    "awaiting_transfer": stored - catalog.count_frames(transfer_state="verified"),
                },
                "transfer": self.transfer_status(),
                "alerts": self.alerts.active(),
            }
        )
        out["storage"] = {**out["storage"], "watermark_pct": self.config.capture.watermark_pct}
        return out

    # -- alert conditions ------------------------------------------------------------------
    def _conditions(self) -> list[AlertCondition]:
        def clear_after() -> float:
            return self.config.alerts.clear_after_s

        def camera(active: bool) -> tuple[bool, str]:
            problem = self.camera_problem()
            return problem is not None, problem or ""

        def disk(active: bool) -> tuple[bool, str]:
            pct = self.service.storage.utilization_pct()
            mark = self.config.capture.watermark_pct
            limit = mark - self.service.storage.margin_pct if active else mark
            return pct > limit, f"{pct:.1f} % used (emergency watermark {mark:g} %)"

        def untransferred(active: bool) -> tuple[bool, str]:
            detail = self.service.storage.untransferred_alert
            return detail is not None, detail or ""

        def transfer(active: bool) -> tuple[bool, str]:
            if self.transfer is None:
                return False, ""
            failing = self.transfer.failing_for_s()
            after = self.config.transfer.alert_after_s
            return failing > after, (
                f"failing for {failing:.0f} s: {self.transfer.stats.last_error}"
            )

        def latency(active: bool) -> tuple[bool, str]:
            if len(self.latencies) < 10:
                return False, ""
            p99 = float(np.percentile(list(self.latencies), 99))
            target = self.config.alerts.capture_latency_p99_ms
            return p99 > (0.8 * target if active else target), (
                f"p99 {p99:.1f} ms over the last {len(self.latencies)} frames "
                f"(target {target:g} ms)"
            )

        def quality(active: bool) -> tuple[bool, str]:
            if len(self.qualities) < 3:
                return False, ""
            median = statistics.median(self.qualities)
            floor = self.config.alerts.image_quality_min
            return median < (floor + 0.05 if active else floor), (
                f"median quality {median:.2f} of the last {len(self.qualities)} frames "
                f"(minimum {floor:g})"
            )

        def quarantined(active: bool) -> tuple[bool, str]:
            if self.transfer is None:
                return False, ""
            return self.transfer.quarantine_alert()

        def queue(active: bool) -> tuple[bool, str]:
            if self.transfer is None:
                return False, ""
            depth = self.transfer.stats.queue_depth
            limit = self.config.alerts.transfer_queue_max
            return depth > (0.8 * limit if active else limit), (
                f"{depth} frames waiting for transfer (target at most {limit})"
            )

        # clear_after_s is read when the manager is built; thresholds are read live
        c = clear_after()
        return [
            AlertCondition(
                "camera_not_answering",
                "Camera not answering",
                "critical",
                "camera",
                camera,
                clear_after_s=c,
            ),
            AlertCondition(
                "disk_emergency",
                "Disk past the emergency watermark",
                "critical",
                "disk",
                disk,
                clear_after_s=c,
            ),
            AlertCondition(
                "untransferred_frames_at_risk",
                "Untransferred frames at risk",
                "critical",
                "disk",
                untransferred,
                clear_after_s=c,
            ),
            AlertCondition(
                "transfer_failing",
                "Transfers failing",
                "critical",
                "transfer",
                transfer,
                clear_after_s=c,
            ),
            AlertCondition(
                "capture_latency",
                "Capture latency above target",
                "warning",
                "scheduler",
                latency,
                clear_after_s=c,
            ),
            AlertCondition(
                "image_quality",
                "Image quality below target",
                "warning",
                "camera",
                quality,
                clear_after_s=c,
            ),
            AlertCondition(
                "transfer_quarantine",
                "Frames quarantined on the station",
                "warning",
                "transfer",
                quarantined,
                clear_after_s=c,
            ),
            AlertCondition(
                "transfer_queue",
                "Transfer queue too deep",
                "warning",
                "transfer",
                queue,
                clear_after_s=c,
            ),
        ]

    # -- health ----------------------------------------------------------------------------
    def _with_alerts(self, component: str, check: Check) -> Check:
        alerts = self.alerts.component_alerts(component)
        if check.status == "ok" and alerts:
            status = "failing" if any(a["severity"] == "critical" for a in alerts) else "degraded"
            return Check(status=status, detail="; ".join(a["detail"] for a in alerts))
        return check

    def check_camera(self) -> Check:
        problem = self.camera_problem()
        if problem is not None:
            return Check(status="failing", detail=problem)
        if not self.camera_open:
            return Check(status="degraded", detail="opening the camera")
        st = self.service.status()
        last = st["last_frame_at"]
        return self._with_alerts(
            "camera",
            Check(status="ok", detail=f"{st['camera']} open; last frame {last or 'none yet'}"),
        )

    def check_disk(self) -> Check:
        pct = self.service.storage.utilization_pct()
        mark = self.config.capture.watermark_pct
        detail = f"{pct:.1f} % used; emergency cleanup above {mark:g} %"
        if pct > mark:
            return Check(status="failing", detail=detail)
        return Check(status="degraded" if pct > mark - 10 else "ok", detail=detail)

    def check_scheduler(self) -> Check:
        if self.supervisor_done is not None:
            return Check(
                status="failing", detail=f"capture supervisor stopped: {self.supervisor_done}"
            )
        if time.monotonic() - self.last_tick > max(10.0, 5 * self.tick_s):
            return Check(status="failing", detail="the event loop is not turning")
        st = self.service.status()
        if st["state"] == "capturing":
            detail = f"capturing session {st['session']['session_id']}"
        elif not self.unattended:
            detail = "idle; unattended plan off"
        else:
            window = self.window(self.service.clock.now())
            detail = (
                "idle; no window ahead"
                if window is None
                else f"idle; next window {window.session_id} opens {_iso(window.start)}"
            )
        return self._with_alerts("scheduler", Check(status="ok", detail=detail))

    def check_transfer(self) -> Check:
        if self.transfer is None:
            return Check(status="ok", detail="off: no transfer host configured")
        st = self.transfer.stats
        failing = self.transfer.failing_for_s()
        if failing > self.config.transfer.alert_after_s:
            return Check(status="failing", detail=f"failing for {failing:.0f} s: {st.last_error}")
        if failing > 0:
            return Check(status="degraded", detail=f"failing for {failing:.0f} s: {st.last_error}")
        return self._with_alerts(
            "transfer",
            Check(
                status="ok",
                detail=f"{st.queue_depth} frames queued; last verified batch "
                f"{_iso(st.last_success) or 'none yet'}",
            ),
        )

    # -- background tasks ------------------------------------------------------------------
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
        self.uptime.heartbeat()

    async def _alerts(self) -> None:
        self.alerts.start()
        while True:
            events = await asyncio.to_thread(self.alerts.evaluate)
            for event in events:
                self.hub.publish({"type": "alert", "alert": event.to_json()})
            await asyncio.sleep(self.config.alerts.evaluate_every_s)

    def _alert_now(self) -> None:
        """Evaluate the alerts at once (from any thread), publishing what opens or closes."""
        for event in self.alerts.evaluate():
            self.hub.publish_threadsafe({"type": "alert", "alert": event.to_json()})

    async def _reopen_camera(self) -> None:
        cam = self.service.camera
        with contextlib.suppress(Exception):
            await cam.close()
        await cam.configure(self.service.camera_config)

    def _camera_failed(self, exc: BaseException) -> None:
        self.camera_error = f"{type(exc).__name__}: {exc}"
        self.camera_error_at = time.monotonic()
        self.metrics["frames_failed"].labels(stage="capture").inc()
        log.error("camera failed", error=self.camera_error)

    async def _supervise(self) -> None:
        """Open the camera (retrying), say READY, then run the plan and recover from errors."""
        try:
            while not self.camera_open:
                try:
                    await self.service.open()
                    self.camera_open = True
                    self.camera_error = None
                except Exception as exc:
                    self.camera_error = f"{type(exc).__name__}: {exc}"
                    log.error("camera did not open", error=self.camera_error)
                    await asyncio.sleep(self.retry_s)
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
                    self._camera_failed(exc)
                    await asyncio.sleep(self.retry_s)
                    with contextlib.suppress(Exception):
                        await self._reopen_camera()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pragma: no cover - the loop above catches capture errors
            self.supervisor_done = repr(exc)
            log.error("capture supervisor died", error=repr(exc))

    async def _pump(self, queue: asyncio.Queue) -> None:
        """Service events into metrics, progress and WebSocket messages."""
        m = self.metrics
        while True:
            event = await queue.get()
            kind = event.pop("event")
            if kind == "frame":
                record = event["record"]
                self.last_progress = time.monotonic()
                self.camera_error = None
                m["frames_captured"].inc()
                bracket = record.get("bracket")
                first_of_shot = bracket is None or bracket.get("index") == 0
                latency = record.get("latency_ms")
                if first_of_shot and isinstance(latency, int | float):
                    m["capture_latency_ms"].observe(latency)
                    self.latencies.append(latency)
                score = record.get("quality_score")
                if isinstance(score, int | float):
                    m["image_quality_score"].set(score)
                    if first_of_shot:
                        self.qualities.append(score)
                focus = self.service.focus_acquisition_time_s
                if focus is not None and focus != self._focus_seen:
                    self._focus_seen = focus
                    m["focus_acquisition_time_s"].observe(focus)
                record = dict(record, image_url=f"/frames/{record['id']}/image")
                self.hub.publish(
                    {"type": "frame", "session_id": event.get("session_id"), "record": record}
                )
            else:
                if kind == "session_started":
                    self.last_progress = time.monotonic()
                    self.watchdog.status(f"capturing session {event.get('session_id')}")
                elif kind == "session_stopped" and not self._stopping:
                    self.watchdog.status("idle")
                elif kind == "skipped":
                    self.last_progress = time.monotonic()
                self.hub.publish({"type": kind, **event})

    async def _tick(self) -> None:
        """Once per ``tick_s``: liveness, counters from the writer and transfers, and the
        status and preview messages while someone listens."""
        beat = 0.0
        while True:
            self.last_tick = time.monotonic()
            try:
                self._count_deltas()
                if self.last_tick - beat >= 5.0:
                    beat = self.last_tick
                    await asyncio.to_thread(self.uptime.heartbeat)
                if self.hub.client_count:
                    status = await asyncio.to_thread(self.status)
                    self.hub.publish({"type": "status", "status": status})
                    preview = await self.preview()
                    if preview is not None:
                        self.hub.publish(preview)
            except Exception as exc:  # keep ticking: the watchdog depends on it
                log.warning("status tick failed", error=repr(exc))
            await asyncio.sleep(self.tick_s)

    def _count_deltas(self) -> None:
        stats = self.service.writer.stats()
        failed = stats["failed"]
        if failed > self._failed_seen:
            self.metrics["frames_failed"].labels(stage="write").inc(failed - self._failed_seen)
            self._failed_seen = failed
        if self.transfer is not None:
            stats = self.transfer.stats
            sent = stats.frames_sent
            if sent > self._sent_seen:
                self.metrics["frames_transferred"].inc(sent - self._sent_seen)
                self._sent_seen = sent
            if stats.bytes_sent > self._bytes_seen:
                self.metrics["transfer_bytes_sent"].inc(stats.bytes_sent - self._bytes_seen)
                self._bytes_seen = stats.bytes_sent
            if stats.failures > self._failures_seen:
                self.metrics["transfer_failures"].inc(stats.failures - self._failures_seen)
                self._failures_seen = stats.failures
            if stats.quarantined > self._quarantined_seen:  # frames set aside on the station
                failed_now = stats.quarantined - self._quarantined_seen
                self.metrics["frames_failed"].labels(stage="transfer").inc(failed_now)
                self._quarantined_seen = stats.quarantined
            self.metrics["transfer_queue_depth"].set(stats.queue_depth)
            if stats.last_success is not None:
                self.metrics["transfer_last_success_timestamp_seconds"].set(
                    stats.last_success.timestamp()
                )

    async def preview(self) -> dict[str, Any] | None:
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
            self._preview = (
                key,
                {
                    "type": "preview",
                    "frame_at": _iso(frame.metadata.timestamp),
                    "session_id": (st["session"] or {}).get("session_id")
                    if st["state"] == "capturing"
                    else None,
                    "width": width,
                    "height": max(1, round(h * width / w)),
                    "content_type": "image/jpeg",
                    "jpeg_base64": base64.b64encode(jpeg).decode("ascii"),
                },
            )
        return self._preview[1]


# -- the app -----------------------------------------------------------------------------------


def _make_transfer_worker(config: SkylapseConfig, service: CaptureService):
    tc = config.transfer
    if not tc.host:
        return None
    from skylapse.transfer.queue import TransferSettings, TransferWorker
    from skylapse.transfer.rsync import SshTarget

    target = SshTarget(
        host=tc.host,
        inbox=tc.inbox,
        user=tc.user,
        port=tc.port,
        key_file=tc.key_file.expanduser() if tc.key_file else None,
        known_hosts=tc.known_hosts.expanduser() if tc.known_hosts else None,
    )
    settings = TransferSettings(
        batch_size=tc.batch_size, bandwidth_limit_kbps=tc.bandwidth_limit_kbps
    )
    return TransferWorker(service.catalog, service.buffer, target, tc.station, settings)


def create_capture_app(
    config: SkylapseConfig,
    token: str,
    *,
    camera: Camera | None = None,
    clock: Clock | None = None,
    buffer: str | Path | None = None,
    camera_config: CameraConfig | None = None,
    unattended: bool | None = None,
    watchdog: Watchdog | None = None,
    notifiers: list[Notifier] | None = None,
    transfer_worker: Any | None = None,
    disk_usage: Callable[[Path], Any] | None = None,
    weather: Any | None = None,
    tick_s: float = 1.0,
    retry_s: float = 30.0,
    stall_after_s: float | None = None,
) -> FastAPI:
    """The capture service's FastAPI app (see the module docstring).

    The keyword arguments replace what the configuration would choose, for tests and benches:
    ``camera`` (default: ``capture.camera``), ``clock`` (default: the real clock), ``buffer``
    (default: ``capture.buffer_dir``), ``camera_config`` (default: ``capture.resolution``),
    ``unattended`` (default: ``capture.unattended``), ``watchdog`` (default: systemd's from the
    environment), ``notifiers`` (default: from ``alerts``), ``transfer_worker`` (default: from
    ``transfer``), ``disk_usage`` (for the storage manager), ``weather`` (default: the
    OpenWeatherMap client on the real clock when enabled), the status tick, the camera retry
    pause and the stall limit of the loop (default: from the longest interval and exposure).
    """
    from skylapse.capture.cameras import make_camera

    clock = clock or RealClock()
    buffer_dir = Path(buffer if buffer is not None else config.capture.buffer_dir).expanduser()
    if camera is None:
        camera = make_camera(config.capture.camera, clock, config.location, seed=0)
    if camera_config is None:
        camera_config = CameraConfig(resolution=config.capture.resolution)
    if weather is None and isinstance(clock, RealClock) and config.weather.enabled:
        from skylapse.capture.weather import WeatherService

        weather = WeatherService(config.weather, config.location)
    service = CaptureService(
        camera,
        buffer=buffer_dir,
        config=config,
        clock=clock,
        camera_config=camera_config,
        weather=weather or None,
        disk_usage=disk_usage,
    )
    hub = WebSocketHub()
    metrics = ServiceMetrics(CAPTURE_METRICS)
    uptime = UptimeTracker(buffer_dir / "uptime-capture.json")
    runtime = CaptureRuntime(
        service,
        config,
        hub,
        metrics,
        uptime,
        watchdog or Watchdog(),
        unattended=config.capture.unattended if unattended is None else unattended,
        transfer_worker=(
            transfer_worker
            if transfer_worker is not None
            else _make_transfer_worker(config, service)
        ),
        retry_s=retry_s,
        tick_s=tick_s,
        stall_after_s=stall_after_s,
        notifiers=notifiers,
    )
    metrics["storage_utilization_pct"].set_function(service.storage.utilization_pct)
    metrics["system_uptime_pct"].set_function(uptime.percent)

    health_checks = {
        "camera": runtime.check_camera,
        "disk": runtime.check_disk,
        "scheduler": runtime.check_scheduler,
        "transfer": runtime.check_transfer,
        "alerts": runtime.alerts.health,
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start()
        log.info("capture service started", buffer=str(buffer_dir), camera=camera.name)
        try:
            yield
        finally:
            await runtime.stop()
            log.info("capture service stopped")

    api = config.api
    app = create_service_app(
        service="capture",
        title="Skylapse capture service",
        description=__doc__ or "",
        token=token,
        metrics=metrics,
        health_checks=health_checks,
        cors_origins=api.cors_origins,
        max_body_bytes=api.max_body_kb * 1024,
        public_docs=api.public_docs,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.runtime = runtime
    app.state.hub = hub
    router = APIRouter(dependencies=[Depends(app.state.require_token)])

    @router.get("/status", tags=["station"])
    def get_status() -> dict[str, Any]:
        """What the station is doing now (fields in the module docstring)."""
        return runtime.status()

    @router.get("/schedule", tags=["station"])
    def get_schedule(
        date: Annotated[dt.date | None, Query(description="YYYY-MM-DD; default today")] = None,
    ) -> dict[str, Any]:
        """The day's plan (phases with intervals and strategies), its windows, the phase now."""
        cfg = runtime.config
        loc = cfg.location
        tz = ZoneInfo(loc.timezone)
        now, elev, choice = runtime.now_choice()
        day = date or now.astimezone(tz).date()
        if not dt.date(1900, 1, 1) <= day <= dt.date(2200, 12, 31):
            raise HTTPException(
                422,
                detail=[
                    {
                        "field": "date",
                        "loc": ["query", "date"],
                        "msg": "date must be within 1900..2200",
                        "type": "value_error",
                    }
                ],
            )
        plan = day_plan(loc, day, cfg)
        ev = plan.events
        sun = {
            name: _iso(getattr(ev, name))
            for name in (
                "astronomical_dawn",
                "nautical_dawn",
                "civil_dawn",
                "sunrise",
                "noon",
                "sunset",
                "civil_dusk",
                "nautical_dusk",
                "astronomical_dusk",
            )
        }
        return {
            "date": day.isoformat(),
            "timezone": loc.timezone,
            "location": loc.model_dump(),
            "now": _iso(now),
            "sun_elevation_deg": round(elev, 3),
            "phase": choice.phase,
            "strategy": choice.strategy_name,
            "interval_s": choice.interval_s,
            "total_frames": plan.total_frames,
            "phases": [
                {
                    "start": _iso(r.start),
                    "end": _iso(r.end),
                    "phase": r.phase,
                    "min_elevation_deg": round(r.min_elevation_deg, 3),
                    "max_elevation_deg": round(r.max_elevation_deg, 3),
                    "interval_s": r.interval_s,
                    "strategy": r.strategy,
                    "hdr": r.hdr,
                    "white_balance": r.white_balance,
                    "ev100_min": None if not math.isfinite(r.ev100_min) else round(r.ev100_min, 2),
                    "ev100_max": None if not math.isfinite(r.ev100_max) else round(r.ev100_max, 2),
                    "frames": r.frames,
                }
                for r in plan.rows
            ],
            "windows": [
                {
                    "session_id": w.session_id,
                    "name": w.name,
                    "start": _iso(w.start),
                    "end": _iso(w.end),
                    "open": w.contains(now),
                }
                for w in day_windows(loc, day, cfg)
            ],
            "sun": sun,
        }

    @router.get("/config", tags=["config"])
    def get_config() -> dict[str, Any]:
        """The running configuration; secrets show as ``"***"``."""
        return runtime.config.model_dump(mode="json")  # `skylapse.config.Secret` fields redact

    @router.put(
        "/config",
        tags=["config"],
        responses={422: {"description": "invalid, or needs a restart; nothing applied"}},
    )
    def put_config(
        patch: Annotated[dict[str, Any], Body(description="part of the config file, as JSON")],
    ) -> dict[str, Any]:
        """Change the running configuration (merged, validated whole, applied at once)."""
        # Python mode: secrets stay `SecretStr` values, so a merged document keeps them
        current = runtime.config.model_dump()
        merged = deep_merge(current, _drop_redacted(patch))
        try:
            new = SkylapseConfig.model_validate(merged)
        except ValidationError as exc:
            errors = [dict(e, loc=("body", *e["loc"])) for e in exc.errors()]
            raise HTTPException(422, detail=validation_details(errors)) from None
        new_doc = new.model_dump()
        for path in RESTART_ONLY:
            if _get(new_doc, path) != _get(current, path):
                raise _invalid(
                    ".".join(path),
                    "takes effect only when the service starts; "
                    "change it in the config file and restart",
                )
        changed = sorted(_changed_paths(current, new_doc))
        service.apply_config(new)  # whole or not at all; the runtime follows once it took
        runtime.config = new
        if changed:
            log.info("configuration changed", fields=changed)
        return {"changed": changed, "config": new.model_dump(mode="json")}

    @router.post(
        "/capture",
        tags=["frames"],
        responses={
            409: {"description": "the camera cannot bracket"},
            503: {"description": "the camera failed"},
        },
    )
    async def post_capture(body: CaptureRequest | None = None) -> dict[str, Any]:
        """Take a frame (or the strategy's bracket set) now; the running session's folder, or
        the day's ``manual`` session."""
        body = body or CaptureRequest()
        if not runtime.camera_open:
            raise HTTPException(503, detail=runtime.camera_problem() or "the camera is opening")
        try:
            records = await service.capture_now(bracket=body.bracket)
        except SessionError as exc:
            raise HTTPException(409, detail=str(exc)) from None
        except CameraError as exc:
            runtime._camera_failed(exc)
            raise HTTPException(503, detail=f"camera: {exc}") from None
        return {"frames": [frame_out(r) for r in records]}

    @router.get("/sessions", tags=["sessions"])
    def list_sessions(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Capture sessions in the catalog, newest last."""
        return service.catalog.sessions()[-limit:]

    @router.post(
        "/sessions",
        status_code=201,
        tags=["sessions"],
        responses={
            409: {"description": "a session is already running"},
            503: {"description": "the camera is not open"},
        },
    )
    async def start_session(body: SessionRequest | None = None) -> dict[str, Any]:
        """Start a session now (beside the plan: the plan waits while it runs)."""
        body = body or SessionRequest()
        if not runtime.camera_open:
            raise HTTPException(503, detail=runtime.camera_problem() or "the camera is opening")
        spec = SessionSpec(
            session_id=body.session_id,
            interval_s=body.interval_s,
            duration_s=body.duration_s,
            max_frames=body.max_frames,
            hdr=body.hdr,
        )
        try:
            sid = await service.start_session(spec)
        except SessionError as exc:
            raise HTTPException(409, detail=str(exc)) from None
        runtime.manual_interval_s = body.interval_s
        return {"session_id": sid, "status": runtime.status()}

    @router.delete(
        "/sessions/{session_id}",
        tags=["sessions"],
        responses={404: {"description": "no such running session"}},
    )
    async def stop_session(session_id: SessionId) -> dict[str, Any]:
        """Stop the running session at its next deadline; its summary."""
        try:
            summary = await service.stop_session(session_id)
        except SessionError as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return summary.to_json()

    @router.get("/frames", tags=["frames"])
    def list_frames(
        since: Annotated[dt.datetime | None, Query(description="captured at or after")] = None,
        until: Annotated[dt.datetime | None, Query(description="captured before")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=_MAX_DB_INT)] = 0,
    ) -> dict[str, Any]:
        """Frames still in the buffer, oldest first, paged."""
        try:
            records = service.catalog.frames(
                since=_utc(since), until=_utc(until), limit=limit, offset=offset
            )
        except OverflowError:
            records = []
        return {
            "frames": [frame_out(r) for r in records],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + len(records) if len(records) == limit else None,
        }

    @router.get(
        "/frames/{frame_id}", tags=["frames"], responses={404: {"description": "no such frame"}}
    )
    def get_frame(frame_id: FrameId) -> dict[str, Any]:
        record = service.catalog.get_frame(frame_id)
        if record is None:
            raise HTTPException(404, detail=f"no frame {frame_id}")
        return frame_out(record)

    @router.get(
        "/frames/{frame_id}/image",
        tags=["frames"],
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}},
            404: {"description": "no such frame, or no longer in the buffer"},
        },
    )
    def get_frame_image(
        frame_id: FrameId,
        size: Annotated[
            str,
            Query(
                pattern=r"^(thumb|preview|full|[1-9][0-9]{1,3})$",
                description="thumb (320 px), preview (960 px), full (as stored) or a width "
                "10..9999 px",
            ),
        ] = "preview",
    ) -> Response:
        """A frame as JPEG, reduced on the fly; only files inside the buffer are served."""
        record = service.catalog.get_frame(frame_id)
        path = _buffer_file(service.buffer, record.path) if record is not None else None
        if record is None or record.deleted_at is not None or path is None:
            raise HTTPException(404, detail=f"no image for frame {frame_id}")
        width = IMAGE_SIZES[size] if size in IMAGE_SIZES else int(size)
        if width is None:
            return FileResponse(path, media_type="image/jpeg")
        try:
            data = resized_jpeg(path, width)
        except (ValueError, OSError) as exc:  # the message names the file: logged, not answered
            log.warning("frame image unreadable", frame=frame_id, error=str(exc))
            raise HTTPException(404, detail=f"image of frame {frame_id} unreadable") from None
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    app.include_router(router)

    @app.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        if not await authenticate_websocket(websocket, token):
            return
        initial = [{"type": "status", "status": await asyncio.to_thread(runtime.status)}]
        preview = await runtime.preview()
        if preview is not None:
            initial.append(preview)
        await hub.serve(websocket, initial)

    return app


def _buffer_file(buffer: Path, relative: str) -> Path | None:
    """``buffer / relative`` when it resolves to a file inside the buffer, else None."""
    root = buffer.resolve()
    try:
        resolved = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved


def _changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _changed_paths(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


__all__ = [
    "CAPTURE_METRICS",
    "CaptureRuntime",
    "create_capture_app",
    "preview_jpeg",
    "resized_jpeg",
]
