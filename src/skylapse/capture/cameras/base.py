"""The one camera interface every backend implements, and the values that cross it.

A camera is used like this (all calls are coroutines; blocking driver calls run in a worker
thread so the capture loop's other tasks keep running)::

    camera = CameraFactory.auto_detect_camera()
    await camera.configure()                       # full-resolution still mode
    if camera.supports_capability(CameraCapability.AUTOFOCUS):
        await camera.autofocus()
    frame = await camera.capture(CaptureSettings(exposure_time_s=1 / 250, analogue_gain=1.0))
    bracket = await camera.capture_hdr_sequence(settings, ev_offsets=(-2, 0, 2))
    await camera.close()

Frame pixels are arrays of shape ``(H, W, 3)``, RGB order, sRGB-encoded, after the camera's
white balance, in the sample type the camera delivers: ``uint8`` (0..255) from the real cameras,
whose ISP output is 8-bit, and ``uint16`` over 0..65535 (the pipeline convention of
``skylapse.imaging.srgb``) from the simulated camera, which quantises at its sensor bit depth,
and from 16-bit replayed files; ``FrameMetadata.bit_depth`` says which. Nothing on the capture
path needs more than the camera's bits (the writer stores 8-bit JPEG, metering works on a reduced
copy), and widening 8 bits to 16 would double a 12 MP frame to 72 MB for no information.
:func:`rgb_frame` turns a driver's BGR image into frame pixels in place. Photometric consumers
(metering, exposure control) go back to linear light with ``srgb.to_linear`` /
``luma.linear_luminance`` (both in :mod:`skylapse.imaging`), which take either sample type.
"""

from __future__ import annotations

import abc
import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skylapse.capture.cameras.focus import focus_score
from skylapse.capture.cameras.profiles import CameraProfile
from skylapse.capture.clock import Clock, RealClock


class CameraCapability(Enum):
    """What a backend can do; discovered from the device where the device can tell."""

    MANUAL_EXPOSURE = "manual_exposure"
    MANUAL_GAIN = "manual_gain"
    HDR_BRACKETING = "hdr_bracketing"
    AUTOFOCUS = "autofocus"
    MANUAL_FOCUS = "manual_focus"
    RAW_DNG = "raw_dng"
    WHITE_BALANCE = "white_balance"  # a manual white balance (as the device takes it)
    # the white balance can be a colour temperature in kelvin (``colour_temperature_k``);
    # without it, a manual white balance is (red, blue) gains only
    COLOUR_TEMPERATURE = "colour_temperature"
    TEMPERATURE = "temperature"


#: How a camera focuses (``Camera.focus_method``; ``/health``, ``/status`` and the session record):
#: libcamera's own AF algorithm, Skylapse's contrast search over a lens that moves, or a lens that
#: stays where it is (fixed focus, no lens control, or parked at the profile's infinity).
FOCUS_LIBCAMERA_AF = "libcamera_af"
FOCUS_CONTRAST = "contrast_search"
FOCUS_FIXED = "fixed"


class CameraError(RuntimeError):
    """A camera could not be opened, configured or read."""


class CapabilityNotSupported(CameraError):
    """The call needs a capability this camera does not have."""


@dataclass(frozen=True)
class CameraConfig:
    """Stream set-up chosen at ``configure()``: output size and whether a RAW stream is kept."""

    resolution: tuple[int, int] | None = None  # (width, height); None = the profile's default
    raw: bool = False  # keep the Bayer stream so frames can be saved as DNG


@dataclass(frozen=True)
class CaptureSettings:
    """Manual controls for one frame. ``None`` means "let the camera decide" (auto)."""

    exposure_time_s: float | None = None
    analogue_gain: float | None = None
    white_balance_gains: tuple[float, float] | None = None  # (red, blue) gains, green = 1
    # alternative white balance for devices that take a temperature (V4L2, newer libcamera)
    colour_temperature_k: float | None = None
    lens_position: float | None = None  # dioptres, as libcamera's LensPosition; None = keep
    dng_path: Path | None = None  # also save the RAW frame here (needs RAW_DNG)

    def with_exposure(self, exposure_time_s: float, analogue_gain: float | None) -> CaptureSettings:
        return replace(self, exposure_time_s=exposure_time_s, analogue_gain=analogue_gain)


@dataclass(frozen=True)
class FrameMetadata:
    """What was actually used for a frame, as reported by the device (not as requested)."""

    timestamp: datetime
    exposure_time_s: float
    analogue_gain: float
    aperture_f: float
    camera: str
    lens_position: float | None = None
    white_balance_gains: tuple[float, float] | None = None
    colour_temperature_k: float | None = None
    sensor_temperature_c: float | None = None
    focus_score: float = 0.0
    bit_depth: int = 8
    dng_path: Path | None = None
    ev_offset: float = 0.0  # position in an HDR bracket; 0 for single frames
    extra: dict[str, Any] = field(default_factory=dict)
    # when the exposure started, on the camera clock's ``monotonic()`` scale, as the device
    # reports it (None: the backend knows only when it asked, i.e. ``timestamp``); with a
    # ``deadline`` it may lie before it (``Camera.capture``)
    exposure_start_monotonic: float | None = None

    @property
    def iso(self) -> float:
        """ISO speed: ISO 100 at unity analogue gain, as on the Raspberry Pi sensors."""
        return 100.0 * self.analogue_gain

    @property
    def ev100(self) -> float:
        """The ISO-100 exposure value this frame is exposed for: log2(N²/t) - log2(ISO/100).

        Equal to the scene's EV100 when the frame is exposed "as metered"; comparable directly
        with ``skylapse.sky.ev100``.
        """
        return math.log2(self.aperture_f**2 / self.exposure_time_s) - math.log2(self.iso / 100.0)


@dataclass(frozen=True)
class Frame:
    """Pixels (uint8 or uint16 RGB sRGB, see module docstring) and the metadata they were taken
    with."""

    pixels: np.ndarray
    metadata: FrameMetadata


#: Rows that :func:`swap_red_blue` reorders at a time (its buffer: 440 KB of a 12 MP frame).
_SWAP_ROWS = 32


def swap_red_blue(image: np.ndarray) -> np.ndarray:
    """Reverse the channel order of a writable ``(H, W, 3)`` image in place (RGB <-> BGR) and
    return it. OpenCV's ``cvtColor`` copies the whole image first when its output is its input
    (36 MB at 12 MP), so this goes a strip of rows at a time through a small buffer."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    buffer = np.empty((min(_SWAP_ROWS, image.shape[0]), *image.shape[1:]), image.dtype)
    for row in range(0, image.shape[0], _SWAP_ROWS):
        strip = image[row : row + _SWAP_ROWS]
        swapped = cv2.cvtColor(strip, cv2.COLOR_BGR2RGB, dst=buffer[: len(strip)])
        strip[...] = swapped
    return image


def rgb_frame(image: np.ndarray) -> np.ndarray:
    """A driver's or decoder's image in OpenCV's channel order (BGR, BGRA or grey; uint8 or
    uint16) as frame pixels: RGB ``(H, W, 3)`` of the same sample type.

    A writable BGR image is reordered in place (:func:`swap_red_blue`) and returned, so a frame
    never needs a second full-size buffer (36 MB at 12 MP); any other image is converted into a
    new array.
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 or uint16 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected a grey, BGR or BGRA image, got shape {image.shape}")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.flags.writeable:
        return swap_red_blue(image)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def bracket_exposures(
    base_exposure_s: float,
    base_gain: float,
    ev_offsets: Iterable[float],
    exposure_range: tuple[float, float],
    gain_range: tuple[float, float],
) -> list[tuple[float, float]]:
    """(exposure time, gain) for each EV offset, bracketing by exposure time.

    Brackets change the exposure time, never the gain, so every frame of a set has the same
    noise character; only when the exposure limit is reached does the remainder go into gain (and
    below the shortest exposure, gain is lowered), so the requested EV spacing is kept as far as
    the sensor allows.
    """
    lo_t, hi_t = exposure_range
    lo_g, hi_g = gain_range
    out = []
    for offset in ev_offsets:
        t = min(max(base_exposure_s * 2.0**offset, lo_t), hi_t)
        # equals base_gain unless the exposure time was clamped
        g = min(max(base_exposure_s * base_gain * 2.0**offset / t, lo_g), hi_g)
        out.append((t, g))
    return out


class Camera(abc.ABC):
    """The async camera interface. Subclasses implement the ``_``-prefixed hooks."""

    name: str = "camera"
    #: How long before a deadline the capture loop calls :meth:`capture` with it. A camera that
    #: keeps the frame nearest the deadline (picamera2) is called early, so that a wake-up made
    #: late by a busy machine still finds that frame; one that exposes when called is called at
    #: the deadline (0).
    deadline_lead_s: float = 0.0
    #: Set when this camera stands in for a missing one (e.g. the simulated camera chosen by
    #: ``camera: auto``): ``/health`` reports the camera degraded with this text.
    notice: str | None = None

    def __init__(self, profile: CameraProfile, clock: Clock | None = None) -> None:
        self.profile = profile
        self.clock: Clock = clock or RealClock()
        self._capabilities: frozenset[CameraCapability] = frozenset()
        self._configured = False

    @property
    def focus_method(self) -> str:
        """``FOCUS_CONTRAST`` when ``autofocus()`` runs the contrast search, else ``FOCUS_FIXED``
        (backends with a hardware AF report ``FOCUS_LIBCAMERA_AF``)."""
        if self.profile.focus.mode == "fixed_infinity":
            return FOCUS_FIXED
        return FOCUS_CONTRAST if CameraCapability.AUTOFOCUS in self._capabilities else FOCUS_FIXED

    # -- capabilities --------------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[CameraCapability]:
        return self._capabilities

    def supports_capability(self, capability: CameraCapability) -> bool:
        return capability in self._capabilities

    def _require(self, capability: CameraCapability) -> None:
        if capability not in self._capabilities:
            raise CapabilityNotSupported(f"{self.name} does not support {capability.value}")

    def _check_settings(self, settings: CaptureSettings) -> None:
        if settings.exposure_time_s is not None:
            self._require(CameraCapability.MANUAL_EXPOSURE)
            if settings.exposure_time_s <= 0:
                raise ValueError("exposure time must be positive")
        if settings.analogue_gain is not None:
            self._require(CameraCapability.MANUAL_GAIN)
        if settings.white_balance_gains is not None or settings.colour_temperature_k is not None:
            self._require(CameraCapability.WHITE_BALANCE)
        if settings.colour_temperature_k is not None:
            self._require(CameraCapability.COLOUR_TEMPERATURE)
        if settings.lens_position is not None:
            self._require(CameraCapability.MANUAL_FOCUS)
        if settings.dng_path is not None:
            self._require(CameraCapability.RAW_DNG)

    # -- lifecycle -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def configure(self, config: CameraConfig | None = None) -> None:
        """Open the device if needed and set up full-resolution still capture."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the device. The camera can be configured again afterwards."""

    async def __aenter__(self) -> Camera:
        if not self._configured:
            await self.configure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- capture -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def capture(
        self, settings: CaptureSettings | None = None, *, deadline: float | None = None
    ) -> Frame:
        """One frame with the given manual settings (``None`` fields are automatic).

        ``deadline`` is when the frame is due, on ``self.clock.monotonic()``'s scale; it is a
        hint. A camera whose sensor streams frames on its own grid (picamera2) keeps the frame
        whose exposure starts nearest the deadline, which may have started up to half a frame
        before it; a camera that exposes when asked (simulated, USB, replay) ignores it.
        Without a deadline, only a frame exposed after the call is kept.
        """

    async def capture_hdr_sequence(
        self,
        settings: CaptureSettings,
        ev_offsets: Sequence[float],
        *,
        deadline: float | None = None,
    ) -> list[Frame]:
        """A bracket: one frame per EV offset around ``settings``, by changing exposure time.

        Without a base exposure time the camera first meters one automatic frame and brackets
        around the exposure it chose (the bracket itself is always manual, never an EV
        compensation on auto-exposure, which would let the AE drift between frames).
        ``deadline`` (see :meth:`capture`) goes to the first frame taken.
        """
        self._require(CameraCapability.HDR_BRACKETING)
        base = settings
        if settings.exposure_time_s is None:
            metered = await self.capture(replace(settings, dng_path=None), deadline=deadline)
            deadline = None
            base = replace(
                settings,
                exposure_time_s=metered.metadata.exposure_time_s,
                analogue_gain=settings.analogue_gain or metered.metadata.analogue_gain,
            )
        assert base.exposure_time_s is not None
        plan = bracket_exposures(
            base.exposure_time_s,
            base.analogue_gain or 1.0,
            ev_offsets,
            self.profile.exposure.range_s,
            self.profile.gain.range,
        )
        frames = []
        for offset, (t, g) in zip(ev_offsets, plan, strict=True):
            dng = base.dng_path
            if dng is not None:
                dng = dng.with_name(f"{dng.stem}_ev{offset:+.1f}{dng.suffix}")
            frame = await self.capture(
                replace(base, exposure_time_s=t, analogue_gain=g, dng_path=dng), deadline=deadline
            )
            deadline = None  # the bracket's other frames follow at once
            frames.append(Frame(frame.pixels, replace(frame.metadata, ev_offset=float(offset))))
        return frames

    async def prepare(  # noqa: B027 - an optional hook: most cameras need no notice
        self, settings: CaptureSettings, ev_offsets: Sequence[float] | None = None
    ) -> None:
        """Announce the next shot ahead of its deadline (its settings, and the bracket's EV
        offsets if it is one), so a camera whose controls take frames to apply has them in
        place when the deadline comes and its first frame after it can be kept. Optional: the
        default does nothing; nothing is captured."""

    def first_frame(
        self, settings: CaptureSettings, ev_offsets: Sequence[float] | None
    ) -> CaptureSettings:
        """The settings of the first frame of a shot (a bracket's first offset, as
        :meth:`capture_hdr_sequence` takes it when the base exposure is known)."""
        if not ev_offsets or settings.exposure_time_s is None:
            return settings
        ((t, g),) = bracket_exposures(
            settings.exposure_time_s,
            settings.analogue_gain or 1.0,
            ev_offsets[:1],
            self.profile.exposure.range_s,
            self.profile.gain.range,
        )
        return replace(settings, exposure_time_s=t, analogue_gain=g)

    async def autofocus(self) -> float:
        """Focus the lens and leave it there; returns the chosen lens position (dioptres).

        The default is the contrast search of ``skylapse.capture.cameras.focus`` driven through
        manual lens positions; backends with a hardware AF cycle override it. A profile with
        ``focus.mode: fixed_infinity`` parks the lens at its calibrated infinity position.
        """
        from skylapse.capture.cameras.focus import contrast_autofocus

        if self.profile.focus.mode == "fixed_infinity":
            self._require(CameraCapability.MANUAL_FOCUS)
            position = self.profile.focus.infinity_lens_position
            await self._set_lens_position(position)
            return position
        self._require(CameraCapability.AUTOFOCUS)
        lo, hi = self.profile.focus.lens_position_range
        result = await contrast_autofocus(
            self._focus_measure, lo, hi, fallback=self.profile.focus.infinity_lens_position
        )
        await self._set_lens_position(result.lens_position)
        return result.lens_position

    async def _focus_measure(self, lens_position: float) -> float:
        """Focus score of a frame taken at ``lens_position`` (used by the contrast search)."""
        frame = await self.capture(CaptureSettings(lens_position=lens_position))
        return frame.metadata.focus_score

    async def _set_lens_position(self, position: float) -> None:
        raise CapabilityNotSupported(f"{self.name} has no focus control")

    @staticmethod
    async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking driver call off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    @staticmethod
    def _score(pixels: np.ndarray) -> float:
        return focus_score(pixels)
