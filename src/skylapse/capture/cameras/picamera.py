"""Raspberry Pi cameras through picamera2 (libcamera): IMX708 (Camera Module 3), IMX519, IMX219.

One long-lived ``Picamera2`` object serves every capture (opening the camera costs seconds and a
subprocess per frame would lose the tuned AGC/AWB state); it is configured once for full
resolution stills. How picamera2 and libcamera really behave, and what this backend does about
it (the test fake ``tests/capture/_fake_picamera2.py`` cites the sources):

* **Camera number** = picamera2's index into ``Picamera2.global_camera_info()``, which is sorted
  (USB cameras last), not libcamera's ``Num``.
* **Full control set per frame.** libcamera keeps whatever it last had: after an automatic frame,
  ``AeEnable=False`` alone freezes what the AE chose and ``AwbEnable=False`` the AWB's last gains.
  Every manual frame therefore sends all its controls (exposure, gain, frame duration, white
  balance, lens), whether or not they changed.
* **No stale frames; the frame nearest the deadline.** picamera2 holds one completed request
  back; ``capture_request(flush=T)`` drops completed requests whose exposure started before
  ``T`` (nanoseconds on ``SensorTimestamp``'s clock; ``flush=True`` is the call's
  ``time.monotonic_ns()``) and waits for the first that started at or after it. The sensor
  free-runs, so an exposure cannot start on demand: without a deadline the frame kept is the
  first exposed after the call (up to one frame late); with one (``capture(deadline=...)``),
  ``T`` is half a frame period before the deadline, so the frame kept is the one whose exposure
  starts nearest it (within half a frame either side). picamera2 keeps only the newest completed
  request, so that frame is lost to a call made after the next one completes (from about a frame
  after the deadline): the capture loop calls ``deadline_lead_s`` (0.2 s) early and the call
  waits for it. ``FrameMetadata.timestamp`` and ``exposure_start_monotonic`` are that exposure
  start (``SensorTimestamp - ExposureTime``), mapped onto the camera clock through one reading
  of both clocks taken together in the capture thread.
* **Settling, bounded.** Controls reach the sensor 2-3 frames late (more with long exposures).
  Targets are first clamped to what the sensor advertises; frames are then read until the
  metadata shows the exposure within a line, the gain within a code step and the colour gains
  asked for, or until ``SETTLE_FRAMES`` frames or ``settle_budget_s`` of sensor time have gone
  by. The frame kept reports what the sensor delivered; a mismatch is logged and counted
  (``mismatches``).
* **White balance.** A colour temperature uses the ``ColourTemperature`` control where libcamera
  has it (v0.4+); otherwise ``ColourGains`` from the tuning file's ``ct_curve`` (gains
  ``1 / curve(T)``, as libcamera does), else the profile's daylight gains. Never an error.
* **Focus** is decided from what the metadata reports after a probe frame: ``AfState`` means
  libcamera runs an AF algorithm (IMX708; ``FOCUS_LIBCAMERA_AF``, with the contrast search as
  fallback); ``LensPosition`` alone means the lens moves (``FOCUS_CONTRAST``); neither — the
  IMX519 with Raspberry Pi's stock tuning, which has no ``rpi.af`` — means libcamera ignores
  the lens controls, so the lens stays where the driver left it (``FOCUS_FIXED``).

``picamera2`` is imported lazily (the Raspberry Pi OS package ``python3-picamera2``), so the rest
of Skylapse runs anywhere. The main stream is ``RGB888``, which picamera2 delivers as B, G, R
bytes; frames are reordered to RGB and widened to the uint16 pipeline convention.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from skylapse.capture.cameras.base import (
    FOCUS_CONTRAST,
    FOCUS_FIXED,
    FOCUS_LIBCAMERA_AF,
    Camera,
    CameraCapability,
    CameraConfig,
    CameraError,
    CaptureSettings,
    Frame,
    FrameMetadata,
    rgb_frame,
)
from skylapse.capture.cameras.profiles import CameraProfile, profile_for_sensor
from skylapse.capture.clock import Clock

log = logging.getLogger(__name__)

# libcamera.controls.AfModeEnum values, used as plain ints so libcamera need not be imported
AF_MODE_MANUAL = 0
AF_MODE_AUTO = 1

#: Frames read at most while waiting for new controls to take effect.
SETTLE_FRAMES = 8
#: Frames a reachable target needs at most (sensor delay 2-3, plus the frame in flight).
EXPECTED_SETTLE_FRAMES = 5
#: Margin of the frame duration over the exposure: the sensor needs frameIntegrationDiff lines
#: (48 on the IMX708, 32 on the IMX519) between the end of the exposure and the end of the frame.
FRAME_MARGIN_US = 20_000
#: Tolerance of the colour gains and lens position read back.
GAIN_TOLERANCE = 0.01
LENS_TOLERANCE = 0.05


def import_picamera2() -> Any:
    """The ``Picamera2`` class, imported on first use. The error names what failed: on Raspberry
    Pi OS a numpy 2 venv breaks picamera2's compiled ``simplejpeg`` (README "Installing for
    real")."""
    try:
        from picamera2 import Picamera2
    except ImportError as exc:  # not on a Pi, or picamera2's import chain is broken
        raise CameraError(f"picamera2 cannot be imported: {exc}") from exc
    return Picamera2


def sensor_models(picamera2_class: Any) -> list[dict[str, Any]]:
    """picamera2's camera list (``Picamera2.global_camera_info()``), in its order: the position
    in this list is the index ``Picamera2(index)`` takes (Model, Id, Num per camera)."""
    return list(picamera2_class.global_camera_info())


def is_usb(info: dict[str, Any]) -> bool:
    """A UVC camera libcamera also lists (picamera2 sorts them last)."""
    return "/usb" in str(info.get("Id", ""))


def gains_from_ct_curve(curve: Sequence[float], kelvin: float) -> tuple[float, float]:
    """(red, blue) gains for ``kelvin`` from a libcamera tuning ``ct_curve`` (flat K, r/g, b/g
    triples): ``1 / curve(T)``, with T clamped to the curve, as libcamera's AWB does."""
    ks, rs, bs = curve[0::3], curve[1::3], curve[2::3]
    if len(ks) < 2:
        raise ValueError("a ct_curve needs at least two (K, r, b) points")
    k = min(max(kelvin, ks[0]), ks[-1])
    return 1.0 / float(np.interp(k, ks, rs)), 1.0 / float(np.interp(k, ks, bs))


class Picamera2Camera(Camera):
    """A Raspberry Pi camera (see module docstring). ``picamera2_class`` is injectable for
    tests; by default the real library is imported when the camera is created.
    ``monotonic_ns`` is the clock of ``SensorTimestamp``: the V4L2 buffer timestamp, which V4L2
    capture drivers take on CLOCK_MONOTONIC and picamera2 compares with
    ``time.monotonic_ns()`` (libcamera documents CLOCK_BOOTTIME: the same while the system has
    never been suspended, as on a station)."""

    name = "picamera2"
    #: Called this early, the capture waits in picamera2 for the frame nearest the deadline; at
    #: the deadline, a call more than about a frame late (a loaded machine) would miss it.
    deadline_lead_s = 0.2

    def __init__(
        self,
        camera_num: int = 0,
        profile: CameraProfile | None = None,
        clock: Clock | None = None,
        picamera2_class: Any = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._cls = picamera2_class or import_picamera2()
        infos = sensor_models(self._cls)
        if not 0 <= camera_num < len(infos):
            raise CameraError(f"no picamera2 camera {camera_num} (found {len(infos)})")
        info = infos[camera_num]
        self.sensor_model = str(info.get("Model", ""))
        if is_usb(info):
            raise CameraError(f"picamera2 camera {camera_num} is a USB camera; use camera: usb")
        if profile is None:
            profile = profile_for_sensor(self.sensor_model)
            if profile is None:
                raise CameraError(
                    f"no shipped profile for sensor {self.sensor_model!r}; pass profile="
                )
        super().__init__(profile, clock)
        self.camera_num = camera_num
        self._monotonic_ns = monotonic_ns
        self._picam: Any = None
        self._config = CameraConfig()
        self._focus = FOCUS_FIXED
        self._ct_curve: list[float] | None = None
        self._lens_position: float | None = None
        self._last_md: dict[str, Any] = {}
        self.mismatches = 0  # frames whose metadata never matched what was asked

    @property
    def focus_method(self) -> str:
        if self.profile.focus.mode == "fixed_infinity" or self._focus == FOCUS_FIXED:
            return FOCUS_FIXED
        return self._focus

    # -- set-up --------------------------------------------------------------------------------
    async def configure(self, config: CameraConfig | None = None) -> None:
        await self._in_thread(self._configure, config or CameraConfig())

    def _configure(self, config: CameraConfig) -> None:
        if self._picam is None:
            self._picam = self._cls(self.camera_num)
        else:
            self._picam.stop()
        picam = self._picam
        model = str(picam.camera_properties.get("Model", self.sensor_model))
        if not model.lower().startswith(self.profile.sensor.model.lower()):
            raise CameraError(f"camera reports sensor {model!r}, profile is {self.profile.name!r}")
        size = config.resolution or (self.profile.sensor.width_px, self.profile.sensor.height_px)
        still = picam.create_still_configuration(
            main={"size": tuple(size), "format": "RGB888"},
            raw={} if config.raw else None,
            buffer_count=2,
        )
        picam.configure(still)
        picam.start()
        self._config = config
        self._ct_curve = self._load_ct_curve(model)
        # One probe frame tells which metadata this sensor reports: temperature (not the
        # IMX219), and whether an AF algorithm drives the lens (AfState, LensPosition).
        request = picam.capture_request(flush=True)
        try:
            metadata = request.get_metadata()
        finally:
            request.release()
        self._last_md = metadata
        self._capabilities = frozenset(self._discover(picam.camera_controls, metadata, config))
        self._configured = True
        log.info(
            "picamera2 camera %d (%s) open: focus %s, white balance by %s",
            self.camera_num,
            model,
            self.focus_method,
            "ColourTemperature"
            if "ColourTemperature" in picam.camera_controls
            else "ct_curve gains"
            if self._ct_curve
            else "profile gains",
        )

    def _discover(
        self, controls: dict[str, Any], metadata: dict[str, Any], config: CameraConfig
    ) -> set[CameraCapability]:
        caps = {CameraCapability.RAW_DNG} if config.raw else set()
        if "ExposureTime" in controls:
            caps |= {CameraCapability.MANUAL_EXPOSURE, CameraCapability.HDR_BRACKETING}
        if "AnalogueGain" in controls:
            caps.add(CameraCapability.MANUAL_GAIN)
        if "ColourGains" in controls:
            caps.add(CameraCapability.WHITE_BALANCE)
            # a kelvin request is always honoured: the ColourTemperature control on newer
            # libcamera, else ColourGains from the tuning's ct_curve (or the profile's gains)
            caps.add(CameraCapability.COLOUR_TEMPERATURE)
        if "SensorTemperature" in metadata:
            caps.add(CameraCapability.TEMPERATURE)
        # libcamera advertises AfMode/LensPosition whenever a lens driver is linked, but only
        # an AF algorithm in the tuning moves the lens and reports it: trust the metadata.
        lens_moves = "LensPosition" in metadata and "LensPosition" in controls
        if "AfState" in metadata and "AfMode" in controls and lens_moves:
            self._focus = FOCUS_LIBCAMERA_AF
        elif lens_moves:
            self._focus = FOCUS_CONTRAST
        else:
            self._focus = FOCUS_FIXED
        if lens_moves:
            caps |= {CameraCapability.MANUAL_FOCUS, CameraCapability.AUTOFOCUS}
            self._lens_position = float(metadata["LensPosition"])
        return caps

    def _load_ct_curve(self, model: str) -> list[float] | None:
        """The AWB colour-temperature curve of the sensor's tuning file, if it can be read."""
        try:
            tuning = self._cls.load_tuning_file(f"{model}.json")
            curve = [float(v) for v in self._cls.find_tuning_algo(tuning, "rpi.awb")["ct_curve"]]
            gains_from_ct_curve(curve, 5000.0)  # validates its shape
        except (RuntimeError, OSError, KeyError, StopIteration, TypeError, ValueError) as exc:
            log.warning("no ct_curve in the %s tuning file (%s): profile gains instead", model, exc)
            return None
        return curve

    async def close(self) -> None:
        if self._picam is not None:
            picam, self._picam = self._picam, None
            await self._in_thread(self._close, picam)
        self._configured = False

    @staticmethod
    def _close(picam: Any) -> None:
        try:
            picam.stop()
        finally:
            picam.close()

    # -- controls ------------------------------------------------------------------------------
    def _clamped(self, name: str, value: float) -> float:
        lo, hi = self._picam.camera_controls[name][:2]
        return float(min(max(value, lo), hi))

    def _wb_gains(self, kelvin: float) -> tuple[float, float]:
        if self._ct_curve is not None:
            return gains_from_ct_curve(self._ct_curve, kelvin)
        return self.profile.colour.daylight_wb_gains

    def _controls_for(self, settings: CaptureSettings) -> dict[str, Any]:
        """The whole control set of one frame (module docstring: nothing is left to chance)."""
        available = self._picam.camera_controls
        controls: dict[str, Any] = {}
        if settings.exposure_time_s is not None:
            exposure_us = round(self._clamped("ExposureTime", settings.exposure_time_s * 1e6))
            gain = settings.analogue_gain or self.profile.gain.min
            controls["AeEnable"] = False
            controls["ExposureTime"] = exposure_us
            controls["AnalogueGain"] = self._clamped("AnalogueGain", gain)
            # a frame must last the exposure plus the sensor's integration margin
            lo = available["FrameDurationLimits"][0]
            controls["FrameDurationLimits"] = (lo, max(exposure_us + FRAME_MARGIN_US, lo))
        else:
            controls["AeEnable"] = True
            lo, hi = available["FrameDurationLimits"][:2]
            controls["FrameDurationLimits"] = (lo, hi)  # the AE gets the whole range back
            if settings.analogue_gain is not None:
                controls["AnalogueGain"] = self._clamped("AnalogueGain", settings.analogue_gain)
        if settings.white_balance_gains is not None:
            controls["AwbEnable"] = False
            controls["ColourGains"] = tuple(float(g) for g in settings.white_balance_gains)
        elif settings.colour_temperature_k is not None:  # COLOUR_TEMPERATURE: checked before
            controls["AwbEnable"] = False
            if "ColourTemperature" in available:
                controls["ColourTemperature"] = int(settings.colour_temperature_k)
            else:  # libcamera before v0.4: gains from the tuning's colour-temperature curve
                controls["ColourGains"] = self._wb_gains(settings.colour_temperature_k)
        else:
            controls["AwbEnable"] = True
        lens = settings.lens_position
        if lens is None and self._focus != FOCUS_FIXED:
            lens = self._lens_position  # keep the lens where focusing left it
        if lens is not None and CameraCapability.MANUAL_FOCUS in self._capabilities:
            controls["AfMode"] = AF_MODE_MANUAL
            controls["LensPosition"] = self._clamped("LensPosition", lens)
        return controls

    def _mismatch(self, md: dict[str, Any], controls: dict[str, Any]) -> list[str]:
        """The controls this frame's metadata does not (yet) show, within sensor quantisation:
        the exposure within one line (the shortest exposure is one line; long exposures are
        quantised coarser), the gain within one code step (``base / (base - code)``: g²/256 on
        the coarsest sensor), colour gains and lens position within a small tolerance."""
        off = []
        if "ExposureTime" in controls:
            want, got = controls["ExposureTime"], md.get("ExposureTime", -1)
            line = max(1.0, float(self._picam.camera_controls["ExposureTime"][0]))
            if abs(got - want) > line * max(1.0, want / (line * 32768)) + 1:
                off.append("ExposureTime")
        if "AnalogueGain" in controls:
            want, got = controls["AnalogueGain"], md.get("AnalogueGain", -1.0)
            if abs(got - want) > want * want / 256 + 1e-3:
                off.append("AnalogueGain")
        got_gains = md.get("ColourGains")
        if "ColourGains" in controls and got_gains is not None:
            wanted = controls["ColourGains"]
            if any(abs(g - w) > GAIN_TOLERANCE * w for g, w in zip(got_gains, wanted, strict=True)):
                off.append("ColourGains")
        lens = md.get("LensPosition")
        if lens is not None and abs(lens - controls.get("LensPosition", lens)) > LENS_TOLERANCE:
            off.append("LensPosition")
        return off

    def _settle_budget_ns(self, controls: dict[str, Any]) -> int:
        """Sensor time a reachable target needs at most: the frames in flight at the old frame
        duration, then the new one."""
        old_us = float(self._last_md.get("FrameDuration", 0) or 0)
        new_us = float(controls.get("ExposureTime", 0)) + FRAME_MARGIN_US
        return int(EXPECTED_SETTLE_FRAMES * max(old_us, new_us) * 1000)

    # -- capture -------------------------------------------------------------------------------
    async def capture(
        self, settings: CaptureSettings | None = None, *, deadline: float | None = None
    ) -> Frame:
        settings = settings or CaptureSettings()
        self._check_settings(settings)
        if self._picam is None:
            raise CameraError("configure() the camera first")
        pixels, md, start_ns, (ref_ns, mono, wall), settle = await self._in_thread(
            self._capture_blocking, settings, deadline
        )
        delay_s = (start_ns - ref_ns) / 1e9  # the exposure began this long after the reading
        meta = self._frame_metadata(md, pixels, wall + dt.timedelta(seconds=delay_s), settings)
        meta.extra["settle"] = settle
        return Frame(pixels, replace(meta, exposure_start_monotonic=mono + delay_s))

    async def prepare(
        self, settings: CaptureSettings, ev_offsets: Sequence[float] | None = None
    ) -> None:
        """Send the next shot's first-frame controls now: by its deadline the sensor has
        applied them (2-3 frames), so the first frame exposed after the deadline is kept."""
        if self._picam is None:
            return
        first = self.first_frame(settings, ev_offsets)
        self._check_settings(replace(first, dng_path=None))
        await self._in_thread(self._picam.set_controls, self._controls_for(first))

    def _frame_period_ns(self, controls: dict[str, Any]) -> int:
        """The frame period once ``controls`` apply: a manual exposure's (the exposure, at least
        the shortest frame asked for; short by the sensor's few lines of integration margin),
        under the AE the last frame's."""
        if "ExposureTime" in controls:
            return 1000 * max(controls["ExposureTime"], controls["FrameDurationLimits"][0])
        last_us = self._last_md.get("FrameDuration")
        return 1000 * int(last_us or self._picam.camera_controls["FrameDurationLimits"][0])

    def _capture_blocking(
        self, settings: CaptureSettings, deadline: float | None
    ) -> tuple[np.ndarray, dict[str, Any], int, tuple[int, float, dt.datetime], dict[str, Any]]:
        picam = self._picam
        controls = self._controls_for(settings)
        # the sensor's clock and the camera clock, read together: maps one onto the other
        ref = (self._monotonic_ns(), self.clock.monotonic(), self.clock.now())
        picam.set_controls(controls)
        budget = self._settle_budget_ns(controls)
        flush: bool | int = True  # only frames exposed after this call
        if deadline is not None:  # the frame whose exposure starts nearest the deadline
            deadline_ns = ref[0] + round((deadline - ref[1]) * 1e9)
            flush = deadline_ns - self._frame_period_ns(controls) // 2
        first_start: int | None = None
        for attempt in range(1, SETTLE_FRAMES + 1):
            request = picam.capture_request(flush=flush)
            try:
                md = request.get_metadata()
                start = int(md["SensorTimestamp"] - 1000 * md["ExposureTime"])
                first_start = start if first_start is None else first_start
                off = self._mismatch(md, controls)
                spent = start - first_start
                if off and attempt < SETTLE_FRAMES and spent < budget:
                    flush = start + 1  # the next frame, whenever it started
                    continue
                pixels = rgb_frame(request.make_array("main"))  # RGB888 is B, G, R bytes
                if settings.dng_path is not None:
                    settings.dng_path.parent.mkdir(parents=True, exist_ok=True)
                    request.save_dng(str(settings.dng_path))
            finally:
                request.release()
            self._last_md = md
            settle = {"frames": attempt, "s": round(spent / 1e9, 3), "mismatch": off}
            if off:
                self.mismatches += 1
                log.warning(
                    "camera did not deliver %s after %d frames (%.2f s): asked %s, got %s",
                    ", ".join(off),
                    attempt,
                    spent / 1e9,
                    {k: controls[k] for k in off},
                    {k: md.get(k) for k in off},
                )
            elif attempt > 1:
                log.debug("controls settled after %d frames (%.2f s)", attempt, spent / 1e9)
            return pixels, dict(md), start, ref, settle
        raise AssertionError("unreachable: the last attempt always returns")

    def _frame_metadata(
        self, md: dict[str, Any], pixels: np.ndarray, timestamp: dt.datetime, s: CaptureSettings
    ) -> FrameMetadata:
        gains = md.get("ColourGains")
        known = {
            "ExposureTime",
            "AnalogueGain",
            "LensPosition",
            "ColourGains",
            "ColourTemperature",
            "SensorTemperature",
        }
        return FrameMetadata(
            timestamp=timestamp,
            exposure_time_s=md.get("ExposureTime", 0) / 1e6,
            analogue_gain=float(md.get("AnalogueGain", 1.0)),
            aperture_f=self.profile.lens.aperture_f,
            camera=f"{self.name}:{self.sensor_model}",
            lens_position=md.get("LensPosition"),
            white_balance_gains=(float(gains[0]), float(gains[1])) if gains else None,
            colour_temperature_k=md.get("ColourTemperature"),
            sensor_temperature_c=md.get("SensorTemperature"),
            focus_score=self._score(pixels),
            bit_depth=8,
            dng_path=s.dng_path,
            extra={k: v for k, v in md.items() if k not in known},
        )

    # -- focus ---------------------------------------------------------------------------------
    async def autofocus(self) -> float:
        """libcamera's AF cycle where the metadata showed an AF algorithm (PDAF + contrast on
        the IMX708), then the lens is locked where it landed; the contrast search where the lens
        moves but the cycle fails; nothing to do on a fixed lens."""
        if self.focus_method == FOCUS_LIBCAMERA_AF:
            position = await self._in_thread(self._af_cycle)
            if position is not None:
                await self._set_lens_position(position)
                return position
            log.warning("libcamera AF cycle failed: contrast search instead")
        return await super().autofocus()

    def _af_cycle(self) -> float | None:
        picam = self._picam
        try:
            focused = picam.autofocus_cycle()
        except KeyError as exc:  # no AfState in the metadata after all
            log.warning("AF cycle impossible, metadata lacks %s", exc)
            return None
        if not focused:
            return None
        request = picam.capture_request(flush=True)
        try:
            position = request.get_metadata().get("LensPosition")
        finally:
            request.release()
        return None if position is None or not math.isfinite(position) else float(position)

    async def _set_lens_position(self, position: float) -> None:
        self._require(CameraCapability.MANUAL_FOCUS)
        self._lens_position = float(position)
        controls = {
            "AfMode": AF_MODE_MANUAL,
            "LensPosition": self._clamped("LensPosition", position),
        }
        await self._in_thread(self._picam.set_controls, controls)
