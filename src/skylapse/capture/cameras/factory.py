"""Choosing a camera: auto-detection on the station, or one backend by name.

``CameraFactory.auto_detect_camera()`` probes in order of preference:

1. picamera2: if the library imports and libcamera lists a sensor we have a profile for
   (IMX519, IMX708 = Camera Module 3, IMX219 = Camera Module 2, identified by libcamera's
   sensor model name; USB cameras that libcamera also lists are left to step 2);
2. a USB/V4L2 camera through OpenCV: the first ``/dev/video*`` that opens and delivers a frame;
3. the simulated camera, so the service always has something to capture from.

``CameraFactory.create(name, **options)`` builds one backend explicitly: ``"picamera2"``,
``"usb"``, ``"simulated"`` or ``"replay"`` (which needs ``folder=``). Nothing is opened until
the camera's ``configure()``, except the probes that detection itself needs.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import cv2

from skylapse.capture.cameras.base import Camera, CameraError
from skylapse.capture.cameras.picamera import Picamera2Camera, import_picamera2, sensor_models
from skylapse.capture.cameras.profiles import profile_for_sensor
from skylapse.capture.cameras.replay import ReplayCamera
from skylapse.capture.cameras.usb import UsbCamera
from skylapse.capture.clock import Clock

log = logging.getLogger(__name__)

BACKENDS = ("picamera2", "usb", "simulated", "replay")


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
    def probe_picamera2(loader: Callable[[], Any] = import_picamera2) -> tuple[Any, int] | None:
        """(Picamera2 class, camera number) of the first supported CSI sensor, or None."""
        try:
            cls = loader()
        except CameraError:
            return None
        try:
            infos = sensor_models(cls)
        except Exception as exc:  # libcamera present but unusable (no camera stack)
            log.info("picamera2 imported but listing cameras failed: %s", exc)
            return None
        for info in infos:
            if "/usb" in str(info.get("Id", "")):
                continue
            if profile_for_sensor(str(info.get("Model", ""))) is not None:
                return cls, int(info.get("Num", 0))
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
        **simulated_options: Any,
    ) -> Camera:
        """The best camera present: picamera2, then USB, then the simulated camera."""
        found = cls.probe_picamera2(picamera2_loader)
        if found is not None:
            picamera2_class, num = found
            log.info("camera: picamera2 sensor %d", num)
            return Picamera2Camera(num, clock=clock, picamera2_class=picamera2_class)
        device = cls.probe_usb(usb_devices, video_capture)
        if device is not None:
            log.info("camera: USB device %d", device)
            return UsbCamera(device, clock=clock, video_capture=video_capture)
        log.info("camera: none found, using the simulated camera")
        from skylapse.capture.cameras.simulated import SimulatedCamera  # and its scene

        return SimulatedCamera(clock=clock, **simulated_options)
