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

Its parts, each in its own module: `skylapse.capture.running` (a session's live state; opening
or resuming one), `skylapse.capture.focus` (autofocus at a session's start, the focus held in
fog), `skylapse.capture.sky_watch` (the weather's sky and the learned one),
`skylapse.capture.handoff` (a shot's frames to the writer, and back as events) and
`skylapse.capture.unattended` (``run_plan``). This module keeps the deadline loop.

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
kept: signed, negative for one begun before it), else to the call. The next shot's settings are
handed to the camera ahead of its deadline (``Camera.prepare``; what it is told:
`skylapse.capture.shot.camera_settings`). After the exposure the loop meters the frame and
scores its quality in a worker thread (on a copy reduced to at most 960 px wide), hands the
pixels to the :class:`~skylapse.capture.writer.FrameWriter` (encode, EXIF, atomic write, catalog
row, in its own thread: `skylapse.capture.handoff`), asks the controller for the next frame's
settings (sun elevation now and at the next deadline, metering, the strategy of the next frame's
phase and sky) and sleeps. Weather refreshes and storage enforcement (retention, watermark) run
as background tasks started from the loop when due, never awaited by it.

Weather and learning: a session first asks the weather source for the observation, so its first
frame's strategy, interval and focus follow the sky; in fog the lens keeps its last good focus.
The feed-forward starts from the station's learned sky (`skylapse.capture.learning`,
``<buffer>/sky-memory.json``), and a closed session is learned from (`skylapse.capture.sky_watch`).

Layout: ``<buffer>/<YYYY-MM-DD>/<session_id>/frame_000123.jpg`` (brackets ``frame_000123_b0.jpg``
...), with ``capture.raw`` its DNG ``frame_000123.dng`` beside it (the row's companion; the frame
itself with ``capture.jpeg: false``), the catalog at ``<buffer>/catalog.sqlite``; catalog paths
are relative to the buffer. ``capture.raw`` is read when the service opens the camera (the RAW
stream is part of its configuration); a camera without RAW support then refuses to open.
A session with an existing id resumes (`skylapse.capture.running`): numbering continues after
the highest frame found on disk or in the catalog, so nothing is overwritten.

API
---
``SessionSpec``, ``SessionSummary``, ``DeadlineSchedule``, ``SessionError``, ``FrameNotStored``
(`skylapse.capture.session`), ``FrameAnalysis``, ``analyse_frame`` (`skylapse.capture.analysis`).
``CaptureService`` (methods above; events: `skylapse.capture.events`), ``CATALOG_NAME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from skylapse.capture.analysis import ANALYSIS_WIDTH, FrameAnalysis, analyse_frame, analyse_frames
from skylapse.capture.cameras.base import Camera, CameraCapability, CameraConfig, CameraError, Frame
from skylapse.capture.clock import Clock, RealClock, interruptible_sleep
from skylapse.capture.events import CaptureEvent, DeadlinesSkipped, SessionStarted, SessionStopped
from skylapse.capture.exposure import ExposureController, ExposureSettings
from skylapse.capture.focus import Focus
from skylapse.capture.handoff import Handoff
from skylapse.capture.learning import MEMORY_NAME, StationMemory
from skylapse.capture.reconcile import reconcile_buffer
from skylapse.capture.running import RunningSession, open_session
from skylapse.capture.session import (
    DeadlineSchedule,
    FrameNotStored,
    SessionError,
    SessionSpec,
    SessionSummary,
    summary_lines,
)
from skylapse.capture.shot import Shot, camera_settings
from skylapse.capture.sky_watch import SkyWatch
from skylapse.capture.storage import DiskUsage, StorageManager, staging_path
from skylapse.capture.strategy import CaptureChoice, choose_capture
from skylapse.capture.sun import sun_elevation
from skylapse.capture.unattended import run_plan
from skylapse.capture.weather import SkySource, WeatherService, is_foggy
from skylapse.capture.writer import FrameWriter, WriteJob
from skylapse.catalog.capture import Catalog, FrameCatalog, FrameRecord
from skylapse.config import LocationConfig, SkylapseConfig, default_config
from skylapse.log import correlation_id, get_logger

log = get_logger(__name__)

CATALOG_NAME = "catalog.sqlite"


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
        self.handoff = Handoff(self.writer, self._emit)
        self._session: RunningSession | None = None
        self._last_summary: SessionSummary | None = None
        self._subscribers: set[asyncio.Queue[CaptureEvent]] = set()
        self.memory = StationMemory(self.buffer / MEMORY_NAME)
        self.sky = SkyWatch(self.memory)
        self.focus = Focus(camera, self._camera_lock, self.memory)
        self._weather_task: asyncio.Task | None = None
        self._storage_task: asyncio.Task | None = None
        self._last_storage_check: float | None = None
        self._plan_stop = asyncio.Event()
        self._opened = False
        self._raw = False  # capture.raw as the camera was opened with
        self._reconciled = False

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def location(self) -> LocationConfig:
        return self.config.location

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
    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``GET /status``."""
        s = self._session
        summary = s.summary if s else self._last_summary
        return {
            "state": "capturing" if s else "idle",
            "session": summary.to_json() if summary else None,
            "sky": self.sky.condition,
            "camera": f"{self.camera.name}:{self.camera.profile.name}",
            "camera_notice": self.camera.notice,
            "focus_method": self.camera.focus_method,
            "lens_position": self.focus.lens_position,
            "focus_acquisition_time_s": self.focus.acquisition_time_s,
            "writer": self.writer.stats(),
            "storage": {
                "utilization_pct": self.storage.utilization_pct(),
                "deleted": dict(self.storage.deleted_total),
            },
            "last_frame_at": (
                self.handoff.last_frame.metadata.timestamp.isoformat(timespec="microseconds")
                if self.handoff.last_frame
                else None
            ),
        }

    def latest_frame(self) -> Frame | None:
        """The last frame taken, reduced to at most ``ANALYSIS_WIDTH`` px wide (the analysed
        copy: the full frame is not kept), for a live preview; do not modify its pixels."""
        return self.handoff.last_frame

    # -- sessions --------------------------------------------------------------------------
    def _local_date(self, when: dt.datetime) -> dt.date:
        return when.astimezone(ZoneInfo(self.location.timezone)).date()

    def _open_session(self, spec: SessionSpec) -> RunningSession:
        now = self.clock.now()
        day = spec.day or self._local_date(now)
        return open_session(
            spec, now=now, day=day, buffer=self.buffer, catalog=self.catalog,
            camera=self.camera, location=self.location, hdr=self._hdr_enabled(spec),
        )  # fmt: skip

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
        return await run_plan(self, self._plan_stop, until)

    def stop_plan(self) -> None:
        self._plan_stop.set()
        if self._session is not None:
            self._session.stop.set()

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
        choice = self._choice(elev)
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
        analyses = await asyncio.to_thread(analyse_frames, frames, self._exposure_config.clip_level)
        jpeg = self.config.capture.jpeg
        futures = await self.handoff.submit(s.summary, frames, shot, analyses, jpeg=jpeg, jobs=jobs)
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
    def _choice(self, elev: float) -> CaptureChoice:
        """Phase, strategy and interval at sun elevation ``elev`` under the sky as last seen."""
        return choose_capture(self.config, elev, self.sky.condition, self.sky.observation)

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
        cam_settings = camera_settings(self.camera, settings, choice, dng, self.focus.held)
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
            cam_settings = camera_settings(self.camera, settings, choice, None, self.focus.held)
            await self.camera.prepare(cam_settings, offsets)

    def _maintenance(self, summary: SessionSummary) -> None:
        """Start weather and storage work when due; never awaited by the loop."""
        now_m = self.clock.monotonic()
        if self.weather is not None and (self._weather_task is None or self._weather_task.done()):
            self._weather_task = asyncio.create_task(
                self.sky.refresh(self.weather, self.clock.now(), self.config.weather)
            )
        due = (
            self._last_storage_check is None
            or now_m - self._last_storage_check >= self.config.capture.storage_check_s
        )
        if due and (self._storage_task is None or self._storage_task.done()):
            self._last_storage_check = now_m
            self._storage_task = asyncio.create_task(
                asyncio.to_thread(self.storage.enforce, self.clock.now())
            )

    async def _run(self, s: RunningSession) -> SessionSummary:
        with correlation_id(s.correlation_id):  # every line of the session's task carries it
            return await self._run_session(s)

    async def _run_session(self, s: RunningSession) -> SessionSummary:
        summary = s.summary
        try:
            self._emit(SessionStarted(summary.session_id))
            if self.weather is not None:  # the first frame and the focus follow the sky
                await self.sky.refresh(self.weather, self.clock.now(), self.config.weather)
            await self.focus.start_session(
                summary,
                autofocus=self.config.capture.autofocus,
                foggy=is_foggy(self.sky.observation, self.config.weather),
            )
            await self._loop(s)
            await self.writer.drain()
        finally:
            summary.ended_at = self.clock.now()
            self.catalog.close_session(summary.session_id, summary.ended_at)
            self.sky.learn(
                s.controller, s.cloud_covers, self._exposure_config,
                self.focus.lens_position, self.clock.now(),
            )  # fmt: skip
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

    async def _loop(self, s: RunningSession) -> None:
        """The deadlines of a session until it ends (module docstring: the loop, per frame)."""
        summary, clock = s.summary, self.clock
        mono0, wall0 = clock.monotonic(), clock.now()

        def wall(mono: float) -> dt.datetime:
            return wall0 + dt.timedelta(seconds=mono - mono0)

        end_mono = s.spec.end_monotonic(mono0, wall0)

        elev = sun_elevation(self.location, wall0)
        choice = self._choice(elev)
        interval = s.spec.interval_s or choice.interval_s
        schedule = DeadlineSchedule(mono0, interval)
        ahead = sun_elevation(self.location, wall0 + dt.timedelta(seconds=interval))
        prior = self.sky.prior(elev, ahead, self._exposure_config)
        ctrl = ExposureController(self._exposure_config, choice.strategy, prior)
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
                await interruptible_sleep(clock, delay, s.stop)
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
            s.note_shot(settings, choice, latency_ms)
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
            await self.handoff.submit(
                summary, frames, shot, analyses, jpeg=self.config.capture.jpeg
            )
            del frames  # the writer holds the pixels now, and drops them once they are stored
            next_choice = self._choice(elev_next)
            ctrl.prior = self.sky.prior(elev, elev_next, self._exposure_config)
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
