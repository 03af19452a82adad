"""USB (UVC) cameras through OpenCV's V4L2 backend.

UVC devices differ in which controls they honour, and V4L2 accepts writes it then ignores, so
capabilities are discovered by writing a probe value and reading it back
(``VideoCapture.set`` must succeed *and* ``get`` must return the value). Manual exposure uses
``CAP_PROP_AUTO_EXPOSURE = 1`` (V4L2 "manual mode"; 3 is aperture-priority auto) and
``CAP_PROP_EXPOSURE`` in the profile's ``v4l2.exposure_unit_s`` (100 µs for exposure_absolute).
Gain, focus and white-balance temperature are device units mapped through the profile.
No RAW and no sensor temperature: UVC exposes neither.

The probe puts back what it touched: auto exposure, auto white balance and autofocus are
restored to the values read before (a probe that left autofocus off would freeze the lens).
V4L2 limits the exposure to the frame interval, so an exposure longer than it lowers the frame
rate (``CAP_PROP_FPS``) first, and the configured rate comes back for shorter ones. Metadata
reports what the device read back (exposure, gain, focus, temperature, frame rate), not what was
asked.

Frames are 8-bit BGR from the driver; they are reordered to RGB and widened to uint16.
V4L2 queues a few buffers captured with the old settings, so after a control change the
queue is drained before the frame that is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
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
from skylapse.capture.cameras.profiles import CameraProfile, builtin_profile
from skylapse.capture.clock import Clock

V4L2_EXPOSURE_MANUAL = 1
V4L2_EXPOSURE_AUTO = 3
#: Buffers to discard after changing controls (the driver's queue depth, plus one).
STALE_FRAMES = 2


def _accepts(cap: Any, prop: int, value: float, tolerance: float = 0.5) -> bool:
    """Whether the device takes ``value`` for ``prop``: the write succeeds and reads back."""
    try:
        if not cap.set(prop, value):
            return False
        return abs(float(cap.get(prop)) - value) <= tolerance
    except cv2.error:
        return False


class UsbCamera(Camera):
    """A V4L2 device (``/dev/video<device>``). ``video_capture`` is injectable for tests."""

    name = "usb"

    def __init__(
        self,
        device: int | str = 0,
        profile: CameraProfile | None = None,
        clock: Clock | None = None,
        video_capture: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(profile or builtin_profile("usb_generic"), clock)
        self.device = device
        self._open = video_capture or cv2.VideoCapture
        self._cap: Any = None
        self._resolution: tuple[int, int] = self.profile.resolution
        self._fps: float | None = None

    # -- set-up --------------------------------------------------------------------------------
    async def configure(self, config: CameraConfig | None = None) -> None:
        await self._in_thread(self._configure, config or CameraConfig())

    def _configure(self, config: CameraConfig) -> None:
        if config.raw:
            raise CameraError("USB cameras deliver no RAW stream")
        if self._cap is None:
            cap = self._open(self.device, cv2.CAP_V4L2)
            if not cap.isOpened():
                raise CameraError(f"cannot open V4L2 device {self.device!r}")
            self._cap = cap
        cap = self._cap
        width, height = config.resolution or self.profile.resolution
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._resolution = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or width,
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or height,
        )
        self._fps = float(cap.get(cv2.CAP_PROP_FPS)) or None  # the configured frame rate
        self._capabilities = frozenset(self._discover(cap))
        self._configured = True

    def _discover(self, cap: Any) -> set[CameraCapability]:
        """Write a probe value to each control and read it back; restore what was there."""
        caps: set[CameraCapability] = set()
        v4l2 = self.profile.v4l2
        props = (
            cv2.CAP_PROP_AUTO_EXPOSURE,
            cv2.CAP_PROP_EXPOSURE,
            cv2.CAP_PROP_GAIN,
            cv2.CAP_PROP_AUTO_WB,
            cv2.CAP_PROP_WB_TEMPERATURE,
            cv2.CAP_PROP_AUTOFOCUS,
            cv2.CAP_PROP_FOCUS,
        )
        before = {prop: float(cap.get(prop)) for prop in props}
        if _accepts(cap, cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_MANUAL):
            probe = max(1.0, round(0.01 / v4l2.exposure_unit_s))
            if _accepts(cap, cv2.CAP_PROP_EXPOSURE, probe):
                caps |= {CameraCapability.MANUAL_EXPOSURE, CameraCapability.HDR_BRACKETING}
        if _accepts(cap, cv2.CAP_PROP_GAIN, before[cv2.CAP_PROP_GAIN] + 1):
            caps.add(CameraCapability.MANUAL_GAIN)
        if _accepts(cap, cv2.CAP_PROP_AUTO_WB, 0) and _accepts(
            cap, cv2.CAP_PROP_WB_TEMPERATURE, 5000, tolerance=1.0
        ):
            caps |= {CameraCapability.WHITE_BALANCE, CameraCapability.COLOUR_TEMPERATURE}
        if _accepts(cap, cv2.CAP_PROP_AUTOFOCUS, 0) and _accepts(
            cap, cv2.CAP_PROP_FOCUS, before[cv2.CAP_PROP_FOCUS] + 1
        ):
            # contrast search over the focus motor (base class autofocus)
            caps |= {CameraCapability.MANUAL_FOCUS, CameraCapability.AUTOFOCUS}
        # values first, then the auto modes (a manual value written after would switch them off)
        for prop in (cv2.CAP_PROP_EXPOSURE, cv2.CAP_PROP_GAIN, cv2.CAP_PROP_WB_TEMPERATURE,
                     cv2.CAP_PROP_FOCUS, cv2.CAP_PROP_AUTO_EXPOSURE, cv2.CAP_PROP_AUTO_WB,
                     cv2.CAP_PROP_AUTOFOCUS):  # fmt: skip
            if abs(float(cap.get(prop)) - before[prop]) > 1e-6:
                try:
                    cap.set(prop, before[prop])
                except cv2.error:
                    continue
        return caps

    async def close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            await self._in_thread(cap.release)
        self._configured = False

    # -- capture -------------------------------------------------------------------------------
    def _device_gain(self, analogue_gain: float) -> float:
        v4l2 = self.profile.v4l2
        return round(v4l2.gain_at_unity + (analogue_gain - 1.0) * v4l2.gain_units_per_unity)

    def _analogue_gain(self, device_gain: float) -> float:
        v4l2 = self.profile.v4l2
        return 1.0 + (device_gain - v4l2.gain_at_unity) / v4l2.gain_units_per_unity

    def _apply(self, settings: CaptureSettings) -> bool:
        """Write the settings; True if anything was written (so stale buffers must go)."""
        cap, unit = self._cap, self.profile.v4l2.exposure_unit_s
        writes: list[tuple[int, float]] = []
        if self._fps:  # the frame interval bounds the exposure: lower the rate to fit it
            t = settings.exposure_time_s or 0.0
            writes.append((cv2.CAP_PROP_FPS, min(self._fps, 1.0 / t) if t > 0 else self._fps))
        if settings.exposure_time_s is not None:
            writes += [
                (cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_MANUAL),
                (cv2.CAP_PROP_EXPOSURE, max(1.0, round(settings.exposure_time_s / unit))),
            ]
        elif CameraCapability.MANUAL_EXPOSURE in self._capabilities:
            writes.append((cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_AUTO))
        if settings.analogue_gain is not None:
            writes.append((cv2.CAP_PROP_GAIN, self._device_gain(settings.analogue_gain)))
        if settings.white_balance_gains is not None:
            raise CameraError("UVC white balance is a colour temperature: set colour_temperature_k")
        if settings.colour_temperature_k is not None:
            writes += [
                (cv2.CAP_PROP_AUTO_WB, 0),
                (cv2.CAP_PROP_WB_TEMPERATURE, float(settings.colour_temperature_k)),
            ]
        if settings.lens_position is not None:
            writes += [(cv2.CAP_PROP_AUTOFOCUS, 0), (cv2.CAP_PROP_FOCUS, settings.lens_position)]
        changed = False
        for prop, value in writes:
            if abs(float(cap.get(prop)) - value) > 1e-6:
                cap.set(prop, value)
                changed = True
        return changed

    def _capture_blocking(self, settings: CaptureSettings) -> tuple[np.ndarray, dict[str, float]]:
        cap = self._cap
        if self._apply(settings):
            for _ in range(STALE_FRAMES):
                cap.grab()
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise CameraError(f"V4L2 device {self.device!r} returned no frame")
        pixels = rgb_frame(bgr)
        readback = {
            "exposure": float(cap.get(cv2.CAP_PROP_EXPOSURE)),
            "gain": float(cap.get(cv2.CAP_PROP_GAIN)),
            "focus": float(cap.get(cv2.CAP_PROP_FOCUS)),
            "wb_temperature": float(cap.get(cv2.CAP_PROP_WB_TEMPERATURE)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
        }
        return pixels, readback

    async def capture(
        self, settings: CaptureSettings | None = None, *, deadline: float | None = None
    ) -> Frame:
        settings = settings or CaptureSettings()
        self._check_settings(settings)
        if self._cap is None:
            raise CameraError("configure() the camera first")
        timestamp = self.clock.now()
        pixels, rb = await self._in_thread(self._capture_blocking, settings)
        caps = self._capabilities
        exposure = (
            rb["exposure"] * self.profile.v4l2.exposure_unit_s
            if CameraCapability.MANUAL_EXPOSURE in caps and rb["exposure"] > 0
            else settings.exposure_time_s or float("nan")
        )
        meta = FrameMetadata(
            timestamp=timestamp,
            exposure_time_s=exposure,
            analogue_gain=(
                self._analogue_gain(rb["gain"]) if CameraCapability.MANUAL_GAIN in caps else 1.0
            ),
            aperture_f=self.profile.lens.aperture_f,
            camera=f"{self.name}:{self.device}",
            lens_position=rb["focus"] if CameraCapability.MANUAL_FOCUS in caps else None,
            colour_temperature_k=(
                rb["wb_temperature"] if CameraCapability.WHITE_BALANCE in caps else None
            ),
            focus_score=self._score(pixels),
            bit_depth=8,
            extra={"fps": rb["fps"]} if rb["fps"] > 0 else {},
        )
        return Frame(pixels, meta)

    async def _set_lens_position(self, position: float) -> None:
        self._require(CameraCapability.MANUAL_FOCUS)
        await self._in_thread(self._apply, CaptureSettings(lens_position=position))
