"""The capture service: sessions of frames taken on monotonic deadlines, day after day.

One :class:`CaptureService` owns the camera, the catalog, the writer and the storage manager.
The CLI drives it (``skylapse capture``), and so does the REST API (`skylapse.api.capture`,
``skylapse serve capture``), whose endpoints are noted beside the calls::

    service = CaptureService(camera, buffer="/var/skylapse", config=cfg, clock=RealClock())
    await service.open()                                  # reconcile buffer, open camera
    sid = await service.start_session(SessionSpec(duration_s=3600))   # POST /sessions
    records = await service.capture_now(bracket=False)    # POST /capture (between deadlines)
    service.status()                                      # GET /status
    queue = service.subscribe()                           # per-frame events (WS /ws)
    summary = await service.stop_session(sid)             # DELETE /sessions/{id}
    await service.run_plan()                              # unattended: sessions by the plan
    await service.close()

The loop, per frame
-------------------
Deadlines are ``anchor + k * interval`` on ``clock.monotonic()`` (:class:`DeadlineSchedule`),
never "previous frame + interval", so lateness never accumulates. When the interval changes with
the phase (``interval="auto"``) the schedule is re-anchored at the current deadline. When a
frame's work runs past the next deadline by more than ``LATE_TOLERANCE_FRACTION`` of the
interval, that deadline is skipped for the first future one, and counted; a deadline missed by
less is taken late, with its real latency recorded.

Everything for frame *k* (settings from the exposure controller, phase and strategy from the sun
and the sky, whether to bracket) is computed *before* its deadline, so at the deadline the loop
only wakes and calls the camera, with the deadline: ``capture_latency_ms`` runs from the deadline
to the exposure start the camera reports (``FrameMetadata.exposure_start_monotonic``: picamera2's
``SensorTimestamp``, on the sensor's frame grid, whose frame starting nearest the deadline is
kept: signed, negative for one begun before it), else to the call. The next shot's
settings are handed to the camera ahead of its deadline (``Camera.prepare``). After the exposure
the loop meters the frame and scores its quality in a worker thread (on a copy reduced to at
most 960 px wide), hands the pixels to the :class:`~skylapse.capture.writer.FrameWriter`
(encode, EXIF, atomic write, catalog row, in its own thread), asks the controller for the next
frame's settings (sun elevation now and at the next deadline, metering, the strategy of the
next frame's phase and sky) and sleeps. Weather refreshes and storage enforcement (retention,
watermark) run as background tasks started from the loop when due, never awaited by it.

Weather and learning: a session first asks the weather source for the observation, so its first
frame's strategy, interval and focus follow the sky. In fog the lens is held at the last good
focus (no autofocus hunting). The controller's feed-forward starts from the station's learned sky
(`skylapse.capture.learning`, ``<buffer>/sky-memory.json``), and a closed session is learned from.

Layout: ``<buffer>/<YYYY-MM-DD>/<session_id>/frame_000123.jpg`` (brackets ``frame_000123_b0.jpg``
...), with ``capture.raw`` its DNG ``frame_000123.dng`` beside it (the row's companion; the frame
itself with ``capture.jpeg: false``), the catalog at ``<buffer>/catalog.sqlite``; catalog paths
are relative to the buffer. ``capture.raw`` is read when the service opens the camera (the RAW
stream is part of its configuration); a camera without RAW support then refuses to open.
A session with an existing id resumes: numbering continues after the highest frame found on
disk or in the catalog, so nothing is overwritten.

API
---
``SessionSpec``, ``SessionSummary``, ``DeadlineSchedule``, ``SessionError``, ``FrameNotStored``
(from `skylapse.capture.session`), ``FrameAnalysis``, ``analyse_frame(pixels, clip_level)`` (from
`skylapse.capture.analysis`)                                            pure.
``CaptureService`` (methods above); its events are `skylapse.capture.events`.
``CATALOG_NAME`` = "catalog.sqlite".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from skylapse.capture.analysis import ANALYSIS_WIDTH, FrameAnalysis, analyse_frame, analyse_frames
from skylapse.capture.cameras.base import (
    Camera,
    CameraCapability,
    CameraConfig,
    CameraError,
    CaptureSettings,
    Frame,
)
from skylapse.capture.clock import Clock, RealClock
from skylapse.capture.events import (
    CaptureEvent,
    DeadlinesSkipped,
    FrameWritten,
    SessionStarted,
    SessionStopped,
)
from skylapse.capture.exposure import ExposureController, ExposureSettings
from skylapse.capture.learning import MEMORY_NAME, StationMemory
from skylapse.capture.reconcile import reconcile_buffer
from skylapse.capture.sensors import Bme280, read_thermal_zone
from skylapse.capture.session import (
    DeadlineSchedule,
    FrameNotStored,
    SessionError,
    SessionSpec,
    SessionSummary,
    summary_lines,
)
from skylapse.capture.shot import Shot, frame_exif_fields, frame_record
from skylapse.capture.storage import DiskUsage, StorageManager, staging_path
from skylapse.capture.strategy import CaptureChoice, choose_capture
from skylapse.capture.sun import sun_elevation
from skylapse.capture.weather import (
    ObservationSource,
    SkyCondition,
    SkySource,
    WeatherObservation,
    WeatherService,
    classify_sky,
    is_foggy,
)
from skylapse.capture.windows import plan_wake_time, promises_colour
from skylapse.capture.writer import FrameWriter, WriteJob
from skylapse.catalog.capture import Catalog, FrameCatalog, FrameRecord
from skylapse.catalog.sqlite import JsonObject
from skylapse.config import LocationConfig, SkylapseConfig, default_config
from skylapse.log import correlation_id, get_logger, new_correlation_id

log = get_logger(__name__)

CATALOG_NAME = "catalog.sqlite"
_FRAME_NAME = re.compile(r"frame_(\d{6,})(?:_b\d+)?\.(?:jpg|dng)$")


# ------------------------------------------------------------------------------------------
# Sessions
# ------------------------------------------------------------------------------------------


@dataclass
class _Session:
    spec: SessionSpec
    summary: SessionSummary
    folder: Path  # relative to the buffer
    next_number: int
    correlation_id: str  # of this session; each frame's id derives from it (`Shot.frame_id`)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    settings: ExposureSettings | None = None  # the last settings used (for capture_now)
    controller: ExposureController | None = None  # the loop's (its samples are learned from)
    cloud_covers: list[float] = field(default_factory=list)  # observed, one per shot


class CaptureService:
    """Sessions, manual frames, status and per-frame events over one camera (module docstring).

    ``write_hook`` (tests, benches) runs in the writer thread before each write.
    """

    def __init__(
        self,
        camera: Camera,
        *,
        buffer: str | Path,
        config: SkylapseConfig | None = None,
        clock: Clock | None = None,
        camera_config: CameraConfig | None = None,
        weather: SkySource | None = None,
        catalog: FrameCatalog | None = None,
        disk_usage: Callable[[Path], DiskUsage] | None = None,
        write_hook: Callable[[WriteJob], None] | None = None,
    ) -> None:
        self.camera = camera
        self.config = config or default_config()
        self.clock: Clock = clock or camera.clock or RealClock()
        self.buffer = Path(buffer).expanduser()
        self.buffer.mkdir(parents=True, exist_ok=True)
        self.camera_config = camera_config
        self.weather = weather
        self.catalog: FrameCatalog = catalog or Catalog(self.buffer / CATALOG_NAME)
        cap = self.config.capture
        self.storage = StorageManager(
            self.buffer,
            self.catalog,
            retention=dt.timedelta(hours=cap.retention_h),
            watermark_pct=cap.watermark_pct,
            keep_untransferred=dt.timedelta(hours=cap.keep_untransferred_h),
            disk_usage=disk_usage,
        )
        self.writer = FrameWriter(
            self.buffer,
            self.catalog,
            storage=self.storage,
            quality=cap.jpeg_quality,
            maxsize=cap.writer_queue,
            max_bytes=cap.writer_queue_mb * 2**20,
            write_hook=write_hook,
        )
        self._camera_lock = asyncio.Lock()
        self._session: _Session | None = None
        self._last_summary: SessionSummary | None = None
        self._subscribers: set[asyncio.Queue[CaptureEvent]] = set()
        self._sky: SkyCondition = "clear"
        self._observation: WeatherObservation | None = None
        self.memory = StationMemory(self.buffer / MEMORY_NAME)
        self._held_focus: float | None = None  # the session keeps this focus (fog)
        self._weather_task: asyncio.Task | None = None
        self._storage_task: asyncio.Task | None = None
        self._last_storage_check: float | None = None
        self._plan_stop = asyncio.Event()
        self._opened = False
        self._raw = False  # capture.raw as the camera was opened with
        self._reconciled = False
        self._bme280 = Bme280()  # read only if fitted; the driver loads lazily
        self._last_frame: Frame | None = None
        self._lens_position: float | None = None
        self.focus_acquisition_time_s: float | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def location(self) -> LocationConfig:
        return self.config.location

    def _learn(self, s: _Session) -> None:
        """Fold a closed session's metered offsets (and the last good focus) into the memory."""
        ex = self._exposure_config
        if s.controller is not None and ex.learn:
            samples, covers = s.controller.samples, s.cloud_covers
            self.memory.learn_session(samples, covers, ex.learn_weight, self.clock.now())
        elif self._lens_position is not None:
            self.memory.save()

    def _prior(self, elev_now: float, elev_next: float) -> Callable[[float], float] | None:
        """The learned feed-forward for the sun's direction and the observed cloud cover."""
        obs = self._observation
        cover = None if obs is None else obs.cloud_cover_pct
        return (
            self.memory.prior(elev_now, elev_next, cover) if self._exposure_config.learn else None
        )

    async def open(self) -> None:
        """Reconcile the buffer with the catalog (what a crash left), configure the camera."""
        if self._opened:
            return
        if not self._reconciled:  # once, before the writer has written anything
            report = await asyncio.to_thread(reconcile_buffer, self.buffer, self.catalog)
            self._reconciled = True
            if report.changed():
                log.warning(
                    "reconciled buffer", **{k: len(v) for k, v in vars(report).items() if v}
                )
        raw = self.config.capture.raw
        await self.camera.configure(replace(self.camera_config or CameraConfig(), raw=raw))
        if raw and not self.camera.supports_capability(CameraCapability.RAW_DNG):
            await self.camera.close()
            raise CameraError(
                f"capture.raw is true but the {self.camera.name} camera cannot save DNG;"
                " set capture.raw: false"
            )
        self._raw = raw
        ex = self.config.exposure
        self._exposure_config = ex.model_copy(
            update={"aperture_f": self.camera.profile.lens.aperture_f}
        )
        self._opened = True

    def apply_config(self, config: SkylapseConfig) -> None:
        """Use ``config`` from now on (``PUT /config``): phases, intervals and strategies from
        the next frame, exposure settings from the next session, JPEG quality from the next
        write, retention, watermark and untransferred floor from the next storage check, weather
        thresholds from the next fetch, ``capture.jpeg`` from the next frame. The buffer, the
        camera (``capture.raw`` included) and the writer queue's size stay as they were opened.
        Nothing changes when it raises."""
        cap = config.capture
        if self._opened and cap.raw != self._raw:
            raise ValueError("capture.raw takes effect when the service opens the camera")
        # everything that can fail first, so a failure changes nothing
        retention = dt.timedelta(hours=cap.retention_h)
        keep_untransferred = dt.timedelta(hours=cap.keep_untransferred_h)
        exposure = None
        if self._opened:
            exposure = config.exposure.model_copy(
                update={"aperture_f": self.camera.profile.lens.aperture_f}
            )
        self.config = config
        self.writer.quality = cap.jpeg_quality
        self.storage.retention = retention
        self.storage.watermark_pct = cap.watermark_pct
        self.storage.keep_untransferred = keep_untransferred
        if exposure is not None:
            self._exposure_config = exposure
        if isinstance(self.weather, WeatherService):
            self.weather.config = config.weather

    async def close(self) -> None:
        """Stop any session, finish writing, release the camera."""
        if self._session is not None:
            await self.stop_session(self._session.summary.session_id)
        for task in (self._weather_task, self._storage_task):
            if task is not None and not task.done():
                with contextlib.suppress(Exception):
                    await task
        await self.writer.drain()
        self.writer.close()
        if self._opened:
            await self.camera.close()
            self._opened = False

    # -- events ----------------------------------------------------------------------------
    def subscribe(self, maxsize: int = 256) -> asyncio.Queue[CaptureEvent]:
        """A queue of typed events (`skylapse.capture.events`); when a slow reader lets it
        fill, the oldest are dropped."""
        q: asyncio.Queue[CaptureEvent] = asyncio.Queue(maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[CaptureEvent]) -> None:
        self._subscribers.discard(q)

    def _emit(self, event: CaptureEvent) -> None:
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)

    # -- status ----------------------------------------------------------------------------
    def _read_environment(self) -> dict[str, float]:
        """The Pi's own temperature and, with a BME280 fitted, the air around the station."""
        values: dict[str, float] = {}
        soc = read_thermal_zone()
        if soc is not None:
            values["soc_temp_c"] = soc
        air = self._bme280.read()
        if air is not None:
            values.update(
                ambient_temp_c=air.temperature_c,
                humidity_pct=air.humidity_pct,
                pressure_hpa=air.pressure_hpa,
            )
        return values

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``GET /status``."""
        s = self._session
        summary = s.summary if s else self._last_summary
        return {
            "state": "capturing" if s else "idle",
            "session": summary.to_json() if summary else None,
            "sky": self._sky,
            "camera": f"{self.camera.name}:{self.camera.profile.name}",
            "camera_notice": self.camera.notice,
            "focus_method": self.camera.focus_method,
            "lens_position": self._lens_position,
            "focus_acquisition_time_s": self.focus_acquisition_time_s,
            "writer": self.writer.stats(),
            "storage": {
                "utilization_pct": self.storage.utilization_pct(),
                "deleted": dict(self.storage.deleted_total),
            },
            "last_frame_at": (
                self._last_frame.metadata.timestamp.isoformat(timespec="microseconds")
                if self._last_frame
                else None
            ),
        }

    def latest_frame(self) -> Frame | None:
        """The last frame taken, reduced to at most ``ANALYSIS_WIDTH`` px wide (the analysed
        copy: the full frame is not kept), for a live preview; do not modify its pixels."""
        return self._last_frame

    # -- sessions --------------------------------------------------------------------------
    def _local_date(self, when: dt.datetime) -> dt.date:
        return when.astimezone(ZoneInfo(self.location.timezone)).date()

    def _next_number(self, folder: Path, session_id: str) -> int:
        """One past the highest frame number on disk or in the catalog for this session."""
        numbers = [
            int(m.group(1))
            for p in (self.buffer / folder).glob("frame_*")
            if (m := _FRAME_NAME.search(p.name))
        ]
        numbers += [
            int(m.group(1))
            for path in self.catalog.session_paths(session_id)
            if (m := _FRAME_NAME.search(path))
        ]
        return max(numbers, default=-1) + 1

    def _open_session(self, spec: SessionSpec) -> _Session:
        now = self.clock.now()
        sid = spec.session_id or now.strftime("%Y%m%d-%H%M%S")
        day = spec.day or self._local_date(now)
        folder = Path(day.isoformat()) / sid
        number = self._next_number(folder, sid)
        known = self.catalog.session(sid)
        started = known.started_at if known is not None else now  # resuming: the first start
        # the session's correlation id (`skylapse.capture.shot`); a resumed session keeps it
        cid = str((known.settings.get("correlation_id") if known else None) or new_correlation_id())
        settings: JsonObject = {
            "interval_s": spec.interval_s or "auto",
            "hdr": self._hdr_enabled(spec),
            "location": self.location.model_dump(),
            "resumed_at_frame": number,
            "correlation_id": cid,
            "focus_method": self.camera.focus_method,
        }
        camera_name = f"{self.camera.name}:{self.camera.profile.name}"
        self.catalog.open_session(sid, started, camera_name, settings)
        summary = SessionSummary(
            sid, now, first_frame_number=number, focus_method=self.camera.focus_method
        )
        log.info(
            "session opened",
            session_id=sid,
            resumed=number > 0,
            first_frame=number,
            correlation_id=cid,
        )
        return _Session(spec, summary, folder, number, cid)

    def _hdr_enabled(self, spec: SessionSpec) -> bool:
        wanted = self.config.capture.hdr if spec.hdr is None else spec.hdr
        return wanted and self.camera.supports_capability(CameraCapability.HDR_BRACKETING)

    async def start_session(self, spec: SessionSpec | None = None) -> str:
        """Open a session and run its loop in the background; returns the session id."""
        await self.open()
        if self._session is not None:
            raise SessionError(f"session {self._session.summary.session_id} is running")
        session = self._open_session(spec or SessionSpec())
        self._session = session
        session.task = asyncio.create_task(
            self._run(session), name=f"capture-{session.summary.session_id}"
        )
        return session.summary.session_id

    async def wait_session(self) -> SessionSummary | None:
        """Wait for the running session (if any) to end; its summary."""
        s = self._session
        if s is None or s.task is None:
            return self._last_summary
        return await s.task

    async def stop_session(self, session_id: str) -> SessionSummary:
        """Stop the running session at its next deadline (an exposure in progress completes)."""
        s = self._session
        if s is None or s.summary.session_id != session_id:
            raise SessionError(f"no running session {session_id!r}")
        s.stop.set()
        assert s.task is not None
        return await s.task

    async def run_session(self, spec: SessionSpec | None = None) -> SessionSummary:
        """Start a session and wait for it to end."""
        await self.start_session(spec)
        summary = await self.wait_session()
        assert summary is not None
        return summary

    async def run_plan(self, until: dt.datetime | None = None) -> list[SessionSummary]:
        """Unattended operation: open and close sessions by the configured windows, forever
        (or until ``until``, or :meth:`stop_plan`). A start inside a window resumes it; the
        weather may extend a window (`skylapse.capture.windows`, the colour rule)."""
        await self.open()
        summaries = []
        while not self._plan_stop.is_set():
            now = self.clock.now()
            if until is not None and now >= until:
                break
            if self.weather is not None:
                await self._refresh_sky(self.weather)
            colour = promises_colour(self._observation, self.config)
            planned = plan_wake_time(self.location, now, self.config, colour)
            if planned is None:  # polar night / day without windows: look again in an hour
                await self._sleep_wall(now + dt.timedelta(hours=1), until)
                continue
            window, wake = planned
            if wake > now:
                log.info(
                    "waiting for the next window",
                    session_id=window.session_id,
                    opens=window.start.isoformat(),
                    colour=colour,
                )
                await self._sleep_wall(wake, until)
                continue
            end = window.end if until is None else min(window.end, until)
            summaries.append(
                await self.run_session(
                    SessionSpec(session_id=window.session_id, end=end, day=window.day)
                )
            )
            # the last deadline fell before the end: let the window close before looking again
            await self._sleep_wall(end, until)
        return summaries

    def stop_plan(self) -> None:
        self._plan_stop.set()
        if self._session is not None:
            self._session.stop.set()

    async def _sleep_wall(self, when: dt.datetime, until: dt.datetime | None) -> None:
        """Sleep to a wall time in chunks (so clock corrections and stop requests are seen)."""
        if until is not None:
            when = min(when, until)
        while not self._plan_stop.is_set():
            remaining = (when - self.clock.now()).total_seconds()
            if remaining <= 0:
                return
            await self._interruptible_sleep(min(remaining, 300.0), self._plan_stop)

    async def _interruptible_sleep(self, seconds: float, stop: asyncio.Event) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, stopper):
            task.cancel()

    # -- manual frames ---------------------------------------------------------------------
    async def capture_now(self, bracket: bool = False) -> list[FrameRecord]:
        """Take a frame (or a bracket) now, between the session's deadlines; returns the
        written catalog records. Outside a session it goes to the day's ``manual`` session.
        Raises :class:`FrameNotStored` (naming each lost frame and why) when any frame taken
        could not be written."""
        await self.open()
        s = self._session
        if s is None:
            now = self.clock.now()
            sid = f"{self._local_date(now):%Y%m%d}-manual"
            s = self._open_session(SessionSpec(session_id=sid))
            own = True
        else:
            own = False
        elev = sun_elevation(self.location, self.clock.now())
        choice = choose_capture(self.config, elev, self._sky, self._observation)
        settings = s.settings
        if settings is None:
            ctrl = ExposureController(self._exposure_config, choice.strategy)
            settings = ctrl.next_settings(None, elev, elev, choice.interval_s)
        number = s.next_number
        s.next_number += 1
        offsets = choice.strategy.bracket_ev if bracket else None
        if bracket and not self.camera.supports_capability(CameraCapability.HDR_BRACKETING):
            raise SessionError(f"{self.camera.name} cannot bracket")
        frames = await self._capture(settings, choice, offsets, s.folder, number)
        shot = Shot(
            s.summary.session_id,
            s.folder,
            number,
            settings,
            choice,
            elev_now=elev,
            elev_next=elev,
            scheduled_at=self.clock.now(),
            latency_ms=None,
            manual=True,
            correlation_id=s.correlation_id,
        )
        jobs: list[WriteJob] = []
        futures = await self._submit(s.summary, frames, shot, jobs=jobs)
        results = await asyncio.gather(*futures)
        if own:
            self.catalog.close_session(s.summary.session_id, self.clock.now())
        lost = [job for job, record in zip(jobs, results, strict=True) if record is None]
        if lost:
            raise FrameNotStored(
                f"{len(lost)} of {len(jobs)} frames not stored: "
                + "; ".join(f"{j.record.path}: {j.error}" for j in lost)
            )
        return [r for r in results if r is not None]

    # -- the loop --------------------------------------------------------------------------
    def _camera_settings(
        self, settings: ExposureSettings, choice: CaptureChoice, dng: Path | None
    ) -> CaptureSettings:
        cam = self.camera
        manual_t = cam.supports_capability(CameraCapability.MANUAL_EXPOSURE)
        manual_g = cam.supports_capability(CameraCapability.MANUAL_GAIN)
        wb = choice.strategy.white_balance
        # a fixed colour temperature where the device takes one; a camera that takes only
        # (red, blue) gains (the simulated one renders at its daylight balance, ~5500 K) keeps
        # its own white balance
        kelvin = (
            float(wb)
            if isinstance(wb, int) and cam.supports_capability(CameraCapability.COLOUR_TEMPERATURE)
            else None
        )
        return CaptureSettings(
            exposure_time_s=settings.exposure_s if manual_t else None,
            analogue_gain=settings.gain if manual_g else None,
            colour_temperature_k=kelvin,
            lens_position=self._held_focus,
            dng_path=dng,
        )

    async def _capture(
        self,
        settings: ExposureSettings,
        choice: CaptureChoice,
        offsets: list[float] | None,
        folder: Path,
        number: int,
        deadline: float | None = None,
    ) -> list[Frame]:
        dng = None
        if self._raw:  # the camera writes it here; the writer adds EXIF, renames
            dng = staging_path(self.buffer / folder / f"frame_{number:06d}.dng")
        cam_settings = self._camera_settings(settings, choice, dng)
        async with self._camera_lock:
            if offsets:
                return await self.camera.capture_hdr_sequence(
                    cam_settings, offsets, deadline=deadline
                )
            return [await self.camera.capture(cam_settings, deadline=deadline)]

    async def _prepare(self, settings: ExposureSettings, choice: CaptureChoice, hdr: bool) -> None:
        """Give the camera the next shot's settings ahead of its deadline (``Camera.prepare``)."""
        offsets = choice.strategy.bracket_ev if hdr and choice.strategy.hdr else None
        async with self._camera_lock:
            await self.camera.prepare(self._camera_settings(settings, choice, None), offsets)

    async def _autofocus(self, summary: SessionSummary) -> None:
        self._held_focus = None
        if not self.config.capture.autofocus:
            return
        if not self.camera.supports_capability(CameraCapability.AUTOFOCUS):
            return
        if is_foggy(self._observation, self.config.weather):
            self._hold_focus(summary)
            return
        t0 = time.perf_counter()
        async with self._camera_lock:
            position = await self.camera.autofocus()
        self.focus_acquisition_time_s = time.perf_counter() - t0
        self._lens_position = position
        self.memory.note_focus(position)
        summary.focus_acquisition_time_s = self.focus_acquisition_time_s
        summary.lens_position = position
        log.info(
            "autofocus",
            lens_position=position,
            focus_acquisition_time_s=round(self.focus_acquisition_time_s, 3),
        )

    def _hold_focus(self, summary: SessionSummary) -> None:
        """Fog: no contrast search on a grey veil; keep the last good focus for the session."""
        if not self.camera.supports_capability(CameraCapability.MANUAL_FOCUS):
            return
        keep = self._lens_position
        if keep is None:
            keep = self.memory.memory.last_good_focus
        if keep is None:
            keep = self.camera.profile.focus.infinity_lens_position
        self._held_focus = self._lens_position = summary.lens_position = keep
        log.info("fog: keeping the last good focus", lens_position=keep)

    def _maintenance(self, summary: SessionSummary) -> None:
        """Start weather and storage work when due; never awaited by the loop."""
        now_m = self.clock.monotonic()
        if self.weather is not None and (self._weather_task is None or self._weather_task.done()):
            self._weather_task = asyncio.create_task(self._refresh_sky(self.weather))
        due = (
            self._last_storage_check is None
            or now_m - self._last_storage_check >= self.config.capture.storage_check_s
        )
        if due and (self._storage_task is None or self._storage_task.done()):
            self._last_storage_check = now_m
            self._storage_task = asyncio.create_task(
                asyncio.to_thread(self.storage.enforce, self.clock.now())
            )

    async def _refresh_sky(self, weather: SkySource) -> None:
        """The sky condition, and the observation when the source gives one."""
        try:
            now = self.clock.now()
            if isinstance(weather, ObservationSource):
                self._observation = await weather.current(now)
                self._sky = classify_sky(self._observation, self.config.weather)
            else:
                self._sky = await weather.condition(now)
        except Exception as exc:  # weather never stops capture
            log.warning("weather failed", error=f"{type(exc).__name__}: {exc}")

    async def _submit(
        self,
        summary: SessionSummary,
        frames: list[Frame],
        shot: Shot,
        analyses: list[FrameAnalysis] | None = None,
        jobs: list[WriteJob] | None = None,
    ) -> list[asyncio.Future[FrameRecord | None]]:
        """Hand a shot's frames to the writer (analysing them first unless done); futures of
        their written records (None: the write failed, the job's ``error`` says why).
        ``jobs``, if given, collects the write jobs in the same order."""
        if analyses is None:
            analyses = await asyncio.to_thread(
                analyse_frames, frames, self._exposure_config.clip_level
            )
        bracketed = len(frames) > 1
        environment = await asyncio.to_thread(self._read_environment)
        futures = []
        for i, (frame, analysis) in enumerate(zip(frames, analyses, strict=True)):
            md = frame.metadata
            record = frame_record(shot, i, bracketed, md, analysis, environment)
            exif = frame_exif_fields(shot, i, bracketed, md, analysis)
            job = WriteJob(
                frame.pixels, record, md.camera, exif,
                dng=md.dng_path, jpeg=self.config.capture.jpeg,
            )  # fmt: skip
            if jobs is not None:
                jobs.append(job)
            fut = await self.writer.submit(job)
            summary.files += 1
            summary.note_exposure(md.exposure_time_s, md.analogue_gain)
            fut.add_done_callback(functools.partial(self._written, summary))
            futures.append(fut)
        self._last_frame = Frame(analyses[-1].reduced, frames[-1].metadata)
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

    async def _run(self, s: _Session) -> SessionSummary:
        with correlation_id(s.correlation_id):  # every line of the session's task carries it
            return await self._run_session(s)

    async def _run_session(self, s: _Session) -> SessionSummary:
        summary = s.summary
        try:
            self._emit(SessionStarted(summary.session_id))
            if self.weather is not None:  # the first frame and the focus follow the sky
                await self._refresh_sky(self.weather)
            await self._autofocus(summary)
            await self._loop(s)
            await self.writer.drain()
        finally:
            summary.ended_at = self.clock.now()
            self.catalog.close_session(summary.session_id, summary.ended_at)
            self._learn(s)
            self._last_summary = summary
            self._session = None
            self._emit(SessionStopped(summary))
            log.info(
                "session closed",
                **{
                    k: v
                    for k, v in summary.to_json().items()
                    if k not in ("exposure_s", "gain", "ev", "phases")
                },
            )
        return summary

    def _note_skipped(self, summary: SessionSummary, skipped: int, number: int) -> None:
        summary.skipped_deadlines += skipped
        log.warning(
            "deadlines skipped", session_id=summary.session_id, skipped=skipped, frame=number
        )
        self._emit(DeadlinesSkipped(summary.session_id, skipped))

    async def _loop(self, s: _Session) -> None:
        """The deadlines of a session until it ends (module docstring: the loop, per frame)."""
        summary, clock = s.summary, self.clock
        mono0, wall0 = clock.monotonic(), clock.now()

        def wall(mono: float) -> dt.datetime:
            return wall0 + dt.timedelta(seconds=mono - mono0)

        end_mono = math.inf
        if s.spec.duration_s is not None:
            end_mono = mono0 + s.spec.duration_s
        if s.spec.end is not None:
            end_mono = min(end_mono, mono0 + (s.spec.end - wall0).total_seconds())

        elev = sun_elevation(self.location, wall0)
        choice = choose_capture(self.config, elev, self._sky, self._observation)
        interval = s.spec.interval_s or choice.interval_s
        schedule = DeadlineSchedule(mono0, interval)
        ahead = sun_elevation(self.location, wall0 + dt.timedelta(seconds=interval))
        ctrl = ExposureController(self._exposure_config, choice.strategy, self._prior(elev, ahead))
        s.controller = ctrl
        settings = ctrl.next_settings(None, elev, elev, interval)
        hdr = self._hdr_enabled(s.spec)
        await self._prepare(settings, choice, hdr)
        self._maintenance(summary)

        while not s.stop.is_set() and schedule.deadline < end_mono:
            if s.spec.max_frames is not None and summary.shots >= s.spec.max_frames:
                break
            deadline = schedule.deadline
            offsets = choice.strategy.bracket_ev if hdr and choice.strategy.hdr else None
            number = s.next_number
            # -- at the deadline: wake and expose, nothing else ----------------------------
            wake = deadline - self.camera.deadline_lead_s  # Camera.deadline_lead_s
            delay = wake - clock.monotonic()
            if delay > 0:
                await self._interruptible_sleep(delay, s.stop)
                if s.stop.is_set():
                    break
            while clock.monotonic() < wake:  # sub-ms early wake-up of the event loop
                await asyncio.sleep(0)
            t_call = clock.monotonic()
            frames = await self._capture(settings, choice, offsets, s.folder, number, deadline)
            # to the exposure start the camera reports (signed: the frame nearest the deadline
            # may have started before it, Camera.capture); else to the call
            started = frames[0].metadata.exposure_start_monotonic
            latency_ms = ((t_call if started is None else started) - deadline) * 1e3
            # -- after the exposure: analysis, hand-off, next settings ---------------------
            s.next_number += 1
            s.settings = settings
            summary.shots += 1
            summary.latencies_ms.append(latency_ms)
            if choice.phase not in summary.phases:
                summary.phases.append(choice.phase)
            if choice.weather is not None:
                s.cloud_covers.append(choice.weather.cloud_cover_pct)
            analyses = await asyncio.to_thread(
                analyse_frames, frames, self._exposure_config.clip_level
            )
            ref = min(range(len(frames)), key=lambda i: abs(frames[i].metadata.ev_offset))
            md = frames[ref].metadata
            taken = ExposureSettings(md.exposure_time_s, md.analogue_gain, settings.wanted_ev)
            # the next deadline: the phase of this frame sets the interval (auto)
            skipped = schedule.advance(clock.monotonic(), s.spec.interval_s or choice.interval_s)
            if skipped:
                self._note_skipped(summary, skipped, number)
            elev_next = sun_elevation(self.location, wall(schedule.deadline))
            shot = Shot(
                summary.session_id, s.folder, number, settings, choice,
                elev_now=elev, elev_next=elev_next, scheduled_at=wall(deadline),
                latency_ms=latency_ms, correlation_id=s.correlation_id,
            )  # fmt: skip
            await self._submit(summary, frames, shot, analyses)
            del frames  # the writer holds the pixels now, and drops them once they are stored
            next_choice = choose_capture(self.config, elev_next, self._sky, self._observation)
            ctrl.prior = self._prior(elev, elev_next)
            settings = ctrl.next_settings(
                analyses[ref].metering,
                sun_elevation(self.location, clock.now()),
                elev_next,
                schedule.interval,
                strategy=next_choice.strategy,
                taken_with=taken,
            )
            choice, elev = next_choice, elev_next
            await self._prepare(settings, choice, hdr)
            self._maintenance(summary)
        summary.skipped_deadlines = schedule.skipped


__all__ = [
    "ANALYSIS_WIDTH",
    "CATALOG_NAME",
    "CaptureService",
    "DeadlineSchedule",
    "FrameAnalysis",
    "FrameNotStored",
    "SessionError",
    "SessionSpec",
    "SessionSummary",
    "analyse_frame",
    "summary_lines",
]
