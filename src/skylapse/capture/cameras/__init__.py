"""The camera layer of the capture service: one async interface over every camera.

Public API (details in each module):

- ``base``: :class:`Camera` (``capabilities``, ``supports_capability``, ``configure``,
  ``capture(settings) -> Frame``, ``capture_hdr_sequence(settings, ev_offsets)``,
  ``autofocus``, ``close``), :class:`CameraCapability`, :class:`CaptureSettings`,
  :class:`CameraConfig`, :class:`Frame`, :class:`FrameMetadata`, :func:`bracket_exposures`.
  :func:`rgb_frame`. Frame pixels: (H, W, 3) RGB, sRGB-encoded after white balance, uint8 from
  the real cameras (8-bit ISP output), uint16 0..65535 from the simulated camera.
- ``factory``: :class:`CameraFactory` (``auto_detect_camera()``, ``create(name)``),
  :func:`make_camera` (a ``--camera`` spec such as ``replay:DIR`` to a camera).
- backends: :class:`Picamera2Camera`, :class:`UsbCamera`, :class:`SimulatedCamera` (imported
  when first named), :class:`ReplayCamera`.
- ``profiles``: YAML camera profiles (``builtin_profile``, ``load_profile``, ``ProfileError``).
- ``focus``: ``focus_score`` (variance of the Laplacian), ``contrast_autofocus``.
"""

from typing import TYPE_CHECKING

from skylapse.capture.cameras.base import (
    Camera,
    CameraCapability,
    CameraConfig,
    CameraError,
    CapabilityNotSupported,
    CaptureSettings,
    Frame,
    FrameMetadata,
    bracket_exposures,
    rgb_frame,
)
from skylapse.capture.cameras.factory import CameraFactory, make_camera
from skylapse.capture.cameras.focus import FocusResult, contrast_autofocus, focus_score
from skylapse.capture.cameras.picamera import Picamera2Camera
from skylapse.capture.cameras.profiles import (
    CameraProfile,
    ProfileError,
    available_profiles,
    builtin_profile,
    load_profile,
    profile_for_sensor,
)
from skylapse.capture.cameras.replay import ReplayCamera, ReplayExhausted
from skylapse.capture.cameras.usb import UsbCamera

if TYPE_CHECKING:
    from skylapse.capture.cameras.simulated import Location, SimulatedCamera, SimWeather

#: Imported on first use (``__getattr__``): the simulated camera brings the procedural scene
#: (`skylapse.scene`), which a station with a real camera never needs (README: footprint).
_SIMULATED = ("Location", "SimulatedCamera", "SimWeather")


def __getattr__(name: str) -> object:
    if name in _SIMULATED:
        from skylapse.capture.cameras import simulated

        return getattr(simulated, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Camera",
    "CameraCapability",
    "CameraConfig",
    "CameraError",
    "CameraFactory",
    "CameraProfile",
    "CapabilityNotSupported",
    "CaptureSettings",
    "FocusResult",
    "Frame",
    "FrameMetadata",
    "Location",
    "Picamera2Camera",
    "ProfileError",
    "ReplayCamera",
    "ReplayExhausted",
    "SimWeather",
    "SimulatedCamera",
    "UsbCamera",
    "available_profiles",
    "bracket_exposures",
    "builtin_profile",
    "contrast_autofocus",
    "focus_score",
    "load_profile",
    "make_camera",
    "profile_for_sensor",
    "rgb_frame",
]
