"""Raspberry Pi cameras through picamera2 (libcamera): IMX708 (Camera Module 3), IMX519, IMX219.

One long-lived ``Picamera2`` object serves every capture (opening the camera costs seconds and a
subprocess per frame would lose the tuned AGC/AWB state); it is configured once for full
resolution stills. Manual frames set ``ExposureTime`` (µs), ``AnalogueGain``, ``ColourGains``
and ``LensPosition`` with auto-exposure and AWB off. libcamera applies new controls a few frames
late, so ``capture`` reads requests until the metadata reports the requested exposure, gain and
lens position, releasing the stale ones. Brackets change ``ExposureTime`` between frames; DNGs
are written by picamera2's own ``request.save_dng``.

``picamera2`` is imported lazily (``pip install skylapse[pi]`` or the Raspberry Pi OS package),
so the rest of Skylapse runs anywhere. The main stream is ``RGB888``, which picamera2 delivers
as B, G, R bytes; frames are reordered to RGB and widened to the uint16 pipeline convention.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skylapse.capture.cameras.base import (
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

# libcamera.controls.AfModeEnum values, used as plain ints so libcamera need not be imported
AF_MODE_MANUAL = 0
AF_MODE_AUTO = 1

#: How many requests to read while waiting for new controls to take effect.
MAX_SETTLE_FRAMES = 8


def import_picamera2() -> Any:
    """The ``Picamera2`` class, imported on first use."""
    try:
        from picamera2 import Picamera2
    except ImportError as exc:  # not on a Pi, or the [pi] extra is missing
        raise CameraError("picamera2 is not installed (pip install 'skylapse[pi]')") from exc
    return Picamera2


def sensor_models(picamera2_class: Any) -> list[dict[str, Any]]:
    """libcamera's camera list (``Picamera2.global_camera_info()``): Model, Id, Num per camera."""
    return list(picamera2_class.global_camera_info())


class Picamera2Camera(Camera):
    """A Raspberry Pi camera (see module docstring). ``picamera2_class`` is injectable for
    tests; by default the real library is imported when the camera is created."""

    name = "picamera2"

    def __init__(
        self,
        camera_num: int = 0,
        profile: CameraProfile | None = None,
        clock: Clock | None = None,
        picamera2_class: Any = None,
    ) -> None:
        self._cls = picamera2_class or import_picamera2()
        infos = sensor_models(self._cls)
        info = next((i for i in infos if i.get("Num", 0) == camera_num), None)
        if info is None:
            raise CameraError(f"no libcamera camera number {camera_num} (found {len(infos)})")
        self.sensor_model = str(info.get("Model", ""))
        if profile is None:
            profile = profile_for_sensor(self.sensor_model)
            if profile is None:
                raise CameraError(
                    f"no shipped profile for sensor {self.sensor_model!r}; pass profile="
                )
        super().__init__(profile, clock)
        self.camera_num = camera_num
        self._picam: Any = None
        self._config = CameraConfig()
        self._applied: dict[str, Any] = {}

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
        self._applied = {}
        # One request tells which metadata this sensor reports (IMX219 has no temperature).
        request = picam.capture_request()
        try:
            metadata = request.get_metadata()
        finally:
            request.release()
        controls = picam.camera_controls
        caps = {CameraCapability.RAW_DNG} if config.raw else set()
        if "ExposureTime" in controls:
            caps |= {CameraCapability.MANUAL_EXPOSURE, CameraCapability.HDR_BRACKETING}
        if "AnalogueGain" in controls:
            caps.add(CameraCapability.MANUAL_GAIN)
        if "ColourGains" in controls:
            caps.add(CameraCapability.WHITE_BALANCE)
            if "ColourTemperature" in controls:  # newer libcamera
                caps.add(CameraCapability.COLOUR_TEMPERATURE)
        if "LensPosition" in controls:
            caps.add(CameraCapability.MANUAL_FOCUS)
        if "AfMode" in controls:
            caps.add(CameraCapability.AUTOFOCUS)
        if "SensorTemperature" in metadata:
            caps.add(CameraCapability.TEMPERATURE)
        self._capabilities = frozenset(caps)
        self._configured = True

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

    # -- capture -------------------------------------------------------------------------------
    def _controls_for(self, settings: CaptureSettings) -> dict[str, Any]:
        controls: dict[str, Any] = {}
        if settings.exposure_time_s is not None:
            exposure_us = round(settings.exposure_time_s * 1e6)
            controls["AeEnable"] = False
            controls["ExposureTime"] = exposure_us
            controls["AnalogueGain"] = float(settings.analogue_gain or self.profile.gain.min)
            # a frame must last at least as long as its exposure
            controls["FrameDurationLimits"] = (100, max(exposure_us + 1000, 100_000))
        else:
            controls["AeEnable"] = True
            if "FrameDurationLimits" in self._applied:
                # give the AE back the sensor's whole frame-duration range
                lo, hi, _ = self._picam.camera_controls["FrameDurationLimits"]
                controls["FrameDurationLimits"] = (lo, hi)
            if settings.analogue_gain is not None:
                controls["AnalogueGain"] = float(settings.analogue_gain)
        if settings.white_balance_gains is not None:
            controls["AwbEnable"] = False
            controls["ColourGains"] = tuple(float(g) for g in settings.white_balance_gains)
        elif settings.colour_temperature_k is not None:  # COLOUR_TEMPERATURE: checked before
            controls["AwbEnable"] = False
            controls["ColourTemperature"] = int(settings.colour_temperature_k)
        else:
            controls["AwbEnable"] = True
        if settings.lens_position is not None:
            controls["AfMode"] = AF_MODE_MANUAL
            controls["LensPosition"] = float(settings.lens_position)
        return controls

    def _settled(self, metadata: dict[str, Any], controls: dict[str, Any]) -> bool:
        """Whether a request's metadata shows the controls we set (within sensor quantisation)."""
        if "ExposureTime" in controls:
            want, got = controls["ExposureTime"], metadata.get("ExposureTime", -1)
            if abs(got - want) > 0.03 * want + 50:
                return False
        if "AnalogueGain" in controls and not controls.get("AeEnable", False):
            want, got = controls["AnalogueGain"], metadata.get("AnalogueGain", -1.0)
            if abs(got - want) > 0.03 * want:
                return False
        return not (
            "LensPosition" in controls
            and "LensPosition" in metadata
            and abs(metadata["LensPosition"] - controls["LensPosition"]) > 0.05
        )

    async def capture(self, settings: CaptureSettings | None = None) -> Frame:
        settings = settings or CaptureSettings()
        self._check_settings(settings)
        if self._picam is None:
            raise CameraError("configure() the camera first")
        timestamp = self.clock.now()
        pixels, metadata = await self._in_thread(self._capture_blocking, settings)
        return Frame(pixels, self._frame_metadata(metadata, pixels, timestamp, settings))

    def _capture_blocking(self, settings: CaptureSettings) -> tuple[np.ndarray, dict[str, Any]]:
        picam = self._picam
        controls = self._controls_for(settings)
        changed = {k: v for k, v in controls.items() if self._applied.get(k) != v}
        if changed:
            picam.set_controls(changed)
            self._applied.update(changed)
        for attempt in range(MAX_SETTLE_FRAMES):
            request = picam.capture_request()
            try:
                metadata = request.get_metadata()
                if attempt < MAX_SETTLE_FRAMES - 1 and not self._settled(metadata, controls):
                    continue
                pixels = rgb_frame(request.make_array("main"))  # RGB888 is B, G, R bytes
                if settings.dng_path is not None:
                    settings.dng_path.parent.mkdir(parents=True, exist_ok=True)
                    request.save_dng(str(settings.dng_path))
                return pixels, dict(metadata)
            finally:
                request.release()
        raise AssertionError("unreachable: the last attempt always returns")

    def _frame_metadata(
        self, md: dict[str, Any], pixels: np.ndarray, timestamp: Any, settings: CaptureSettings
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
            dng_path=settings.dng_path,
            extra={k: v for k, v in md.items() if k not in known},
        )

    # -- focus ---------------------------------------------------------------------------------
    async def autofocus(self) -> float:
        """A libcamera AF cycle (PDAF on the IMX708, contrast on the IMX519), then the lens is
        locked where it landed. Falls back to Skylapse's contrast search if the cycle fails."""
        if self.profile.focus.mode == "fixed_infinity" or not self.supports_capability(
            CameraCapability.AUTOFOCUS
        ):
            return await super().autofocus()
        position = await self._in_thread(self._af_cycle)
        if position is None:
            return await super().autofocus()
        await self._set_lens_position(position)
        return position

    def _af_cycle(self) -> float | None:
        picam = self._picam
        picam.set_controls({"AfMode": AF_MODE_AUTO})
        self._applied.pop("AfMode", None)
        if not picam.autofocus_cycle():
            return None
        request = picam.capture_request()
        try:
            position = request.get_metadata().get("LensPosition")
        finally:
            request.release()
        return None if position is None or not math.isfinite(position) else float(position)

    async def _set_lens_position(self, position: float) -> None:
        self._require(CameraCapability.MANUAL_FOCUS)
        controls = {"AfMode": AF_MODE_MANUAL, "LensPosition": float(position)}
        await self._in_thread(self._picam.set_controls, controls)
        self._applied.update(controls)
