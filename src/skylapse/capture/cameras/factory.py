"""Choosing a camera: auto-detection on the station, or one backend by name.

``CameraFactory.auto_detect_camera()`` probes in order of preference:

1. picamera2: if the library imports and libcamera lists a sensor we have a profile for
   (IMX519, IMX708 = Camera Module 3, IMX219 = Camera Module 2, identified by libcamera's
   sensor model name; USB cameras that libcamera also lists are left to step 2);
2. a USB/V4L2 camera through OpenCV: the first ``/dev/video*`` that opens and delivers a frame;
3. where no camera stack exists (not a Raspberry Pi, no libcamera, picamera2 not importable) the
   simulated camera, flagged with a ``notice`` (``/health`` degraded "simulated camera") and a
   warning in the log; on a machine that has one (a Pi, libcamera installed) a
   :class:`MissingCamera`, which never captures: opening it fails with the reason, so the
   service reports the camera failing, raises its alert and retries. Never simulated frames on
   a station.

``CameraFactory.create(name, **options)`` builds one backend explicitly: ``"picamera2"``,
``"usb"``, ``"simulated"`` or ``"replay"`` (which needs ``folder=``). Nothing is opened until
the camera's ``configure()``, except the probes that detection itself needs.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2

from skylapse.capture.cameras.base import (
    Camera,
    CameraConfig,
    CameraError,
    CaptureSettings,
    Frame,
)
from skylapse.capture.cameras.picamera import (
    Picamera2Camera,
    import_picamera2,
    is_usb,
    sensor_models,
)
from skylapse.capture.cameras.profiles import builtin_profile, profile_for_sensor
from skylapse.capture.cameras.replay import ReplayCamera
from skylapse.capture.cameras.usb import UsbCamera
from skylapse.capture.clock import Clock
from skylapse.config import LocationConfig

log = logging.getLogger(__name__)

BACKENDS = ("picamera2", "usb", "simulated", "replay")
#: Where the device tree names the board ("Raspberry Pi 5 Model B Rev 1.0").
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
#: Where libcamera installs its IPA data (the tuning files).
LIBCAMERA_DIRS = (Path("/usr/share/libcamera"), Path("/usr/local/share/libcamera"))
UNAVAILABLE = "picamera2 unavailable: "
SIMULATED_NOTICE = "simulated camera: no camera stack here (not a Raspberry Pi, no libcamera)"


def camera_stack(
    model_path: Path = DEVICE_TREE_MODEL, libcamera_dirs: Sequence[Path] = LIBCAMERA_DIRS
) -> str | None:
    """What makes this machine one that should have a real camera: the board's name when it is a
    Raspberry Pi, or libcamera's data folder; None when there is neither."""
    try:
        model = model_path.read_bytes().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        model = ""
    if "raspberry pi" in model.lower():
        return model
    return next((f"libcamera ({d})" for d in libcamera_dirs if d.is_dir()), None)


class MissingCamera(Camera):
    """The camera a station should have but does not: every ``configure`` and ``capture`` fails
    with ``reason`` (the service retries, ``/health`` fails, the camera alert fires)."""

    name = "none"

    def __init__(self, reason: str, clock: Clock | None = None) -> None:
        super().__init__(builtin_profile("simulated"), clock)
        self.reason = reason

    async def configure(self, config: CameraConfig | None = None) -> None:
        raise CameraError(self.reason)

    async def close(self) -> None:
        self._configured = False

    async def capture(
        self, settings: CaptureSettings | None = None, *, deadline: float | None = None
    ) -> Frame:
        raise CameraError(self.reason)


def v4l2_devices() -> list[int]:
    """Indices of the ``/dev/videoN`` nodes present (empty off Linux)."""
    found = (re.fullmatch(r"/dev/video(\d+)", p) for p in glob.glob("/dev/video*"))
    return sorted(int(m.group(1)) for m in found if m)


class CameraFactory:
    """Builds cameras (see module docstring)."""

    @staticmethod
    def create(name: str, *, clock: Clock | None = None, **options: Any) -> Camera:
        """One backend by name; ``options`` go to its constructor."""
        if name == "picamera2":
            return Picamera2Camera(clock=clock, **options)
        if name == "usb":
            return UsbCamera(clock=clock, **options)
        if name == "simulated":
            from skylapse.capture.cameras.simulated import SimulatedCamera  # and its scene

            return SimulatedCamera(clock=clock, **options)
        if name == "replay":
            if "folder" not in options:
                raise CameraError("the replay camera needs folder=")
            return ReplayCamera(clock=clock, **options)
        raise CameraError(f"unknown camera backend {name!r}; choose one of {', '.join(BACKENDS)}")

    @staticmethod
    def probe_picamera2(
        loader: Callable[[], Any] = import_picamera2, why: list[str] | None = None
    ) -> tuple[Any, int] | None:
        """(Picamera2 class, camera index) of the first supported CSI sensor, or None. The index
        is the position in picamera2's sorted camera list, which ``Picamera2(index)`` takes.
        ``why`` (if given) collects why nothing was found."""
        why = [] if why is None else why
        try:
            cls = loader()
        except CameraError as exc:
            why.append(f"{UNAVAILABLE}{exc}")
            return None
        try:
            infos = sensor_models(cls)
        except Exception as exc:  # libcamera present but unusable
            log.info("picamera2 imported but listing cameras failed: %s", exc)
            why.append(f"picamera2 imported but listing cameras failed: {exc}")
            return None
        for index, info in enumerate(infos):
            if not is_usb(info) and profile_for_sensor(str(info.get("Model", ""))) is not None:
                return cls, index
        models = [str(i.get("Model", "?")) for i in infos if not is_usb(i)]
        why.append(f"libcamera lists no supported sensor ({', '.join(models) or 'none'})")
        return None

    @staticmethod
    def probe_usb(
        devices: Sequence[int] | None = None,
        video_capture: Callable[..., Any] = cv2.VideoCapture,
    ) -> int | None:
        """The first V4L2 device that opens and returns a frame, or None."""
        for device in v4l2_devices() if devices is None else devices:
            cap = video_capture(device, cv2.CAP_V4L2)
            try:
                if cap.isOpened() and cap.read()[0]:
                    return device
            except cv2.error:
                continue
            finally:
                cap.release()
        return None

    @classmethod
    def auto_detect_camera(
        cls,
        *,
        clock: Clock | None = None,
        picamera2_loader: Callable[[], Any] = import_picamera2,
        usb_devices: Sequence[int] | None = None,
        video_capture: Callable[..., Any] = cv2.VideoCapture,
        stack: Callable[[], str | None] = camera_stack,
        **simulated_options: Any,
    ) -> Camera:
        """The best camera present: picamera2, then USB; then the simulated camera only where
        there is no camera stack, else a :class:`MissingCamera` (module docstring)."""
        why: list[str] = []
        found = cls.probe_picamera2(picamera2_loader, why)
        if found is not None:
            picamera2_class, index = found
            log.info("camera: picamera2 camera %d", index)
            return Picamera2Camera(index, clock=clock, picamera2_class=picamera2_class)
        device = cls.probe_usb(usb_devices, video_capture)
        if device is not None:
            log.info("camera: USB device %d", device)
            return UsbCamera(device, clock=clock, video_capture=video_capture)
        imported = not any(w.startswith(UNAVAILABLE) for w in why)
        machine = stack() or ("picamera2 is installed" if imported else None)
        if machine is not None:
            reason = f"no camera found on {machine}: {'; '.join(why)}; no USB camera answers"
            log.error("camera: %s", reason)
            return MissingCamera(reason, clock=clock)
        log.warning("camera: %s; frames are procedural, not real", SIMULATED_NOTICE)
        from skylapse.capture.cameras.simulated import SimulatedCamera  # and its scene

        camera = SimulatedCamera(clock=clock, **simulated_options)
        camera.notice = SIMULATED_NOTICE
        return camera


def make_camera(spec: str, clock: Clock, location: LocationConfig, seed: int) -> Camera:
    """The camera a ``--camera`` / ``capture.camera`` spec names: ``auto``, ``simulated``,
    ``replay:DIR``, ``picamera2[:N]``, ``usb[:DEVICE]`` (or any other registered name)."""
    name, _, arg = spec.partition(":")
    if name in ("auto", "simulated"):  # the simulated camera (and its scene) may be used
        from skylapse.capture.cameras.simulated import Location

        site = Location(location.latitude, location.longitude, location.elevation_m)
        if name == "auto":
            return CameraFactory.auto_detect_camera(clock=clock, location=site, seed=seed)
        return CameraFactory.create("simulated", clock=clock, location=site, seed=seed)
    if name == "replay":
        if not arg:
            raise CameraError("use replay:DIR")
        return CameraFactory.create("replay", clock=clock, folder=arg)
    if name == "usb":
        return CameraFactory.create(
            "usb", clock=clock, **({"device": int(arg) if arg.isdigit() else arg} if arg else {})
        )
    if name == "picamera2":
        return CameraFactory.create(
            "picamera2", clock=clock, **({"camera_num": int(arg)} if arg else {})
        )
    return CameraFactory.create(name, clock=clock)
