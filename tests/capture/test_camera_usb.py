"""The USB/V4L2 backend, driven through a fake cv2.VideoCapture at the OpenCV boundary."""

import asyncio

import cv2
import numpy as np
import pytest

from skylapse.capture.cameras import (
    CameraCapability,
    CameraConfig,
    CameraError,
    CapabilityNotSupported,
    CaptureSettings,
    UsbCamera,
)

CAP = CameraCapability


class FakeVideoCapture:
    """A UVC device: ``honours`` props take writes; ``ignores`` accept the write and keep their
    value (as many UVC drivers do); everything else refuses the write. Like V4L2 devices, the
    exposure cannot outlast the frame interval: it reads back (and exposes) at most 1 / fps."""

    def __init__(self, honours=(), ignores=(), opens=True, size=(64, 48)):
        self.values = {
            cv2.CAP_PROP_FRAME_WIDTH: size[0],
            cv2.CAP_PROP_FRAME_HEIGHT: size[1],
            cv2.CAP_PROP_AUTO_EXPOSURE: 3,
            cv2.CAP_PROP_EXPOSURE: 156,
            cv2.CAP_PROP_GAIN: 0,
            cv2.CAP_PROP_FOCUS: 0,
            cv2.CAP_PROP_AUTOFOCUS: 1,
            cv2.CAP_PROP_AUTO_WB: 1,
            cv2.CAP_PROP_WB_TEMPERATURE: 4600,
            cv2.CAP_PROP_FPS: 30,
        }
        self.honours, self.ignores, self.opens = set(honours), set(ignores), opens
        self.writes, self.grabs, self.reads, self.released = [], 0, 0, False
        self.opened_with = None

    def __call__(self, device, api):
        self.opened_with = (device, api)
        return self

    def isOpened(self):
        return self.opens

    def set(self, prop, value):
        self.writes.append((prop, value))
        if prop in self.honours:
            self.values[prop] = value
            return True
        return prop in self.ignores

    def get(self, prop):
        if prop == cv2.CAP_PROP_EXPOSURE:  # 100 µs units, bounded by the frame interval
            return float(min(self.values[prop], 1e4 / self.values[cv2.CAP_PROP_FPS]))
        return float(self.values.get(prop, 0))

    def grab(self):
        self.grabs += 1
        return True

    def read(self):
        self.reads += 1
        w = int(self.values[cv2.CAP_PROP_FRAME_WIDTH])
        h = int(self.values[cv2.CAP_PROP_FRAME_HEIGHT])
        level = self.get(cv2.CAP_PROP_EXPOSURE) * (1 + self.values[cv2.CAP_PROP_GAIN] / 16)
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0], bgr[..., 1], bgr[..., 2] = (
            np.clip(k * level / 100, 0, 255) for k in (20, 40, 60)
        )
        return True, bgr

    def release(self):
        self.released = True


EXPOSURE_AND_GAIN = (
    cv2.CAP_PROP_AUTO_EXPOSURE,
    cv2.CAP_PROP_EXPOSURE,
    cv2.CAP_PROP_GAIN,
    cv2.CAP_PROP_FRAME_WIDTH,
    cv2.CAP_PROP_FRAME_HEIGHT,
)


def run(coro):
    return asyncio.run(coro)


def test_capabilities_from_what_the_device_accepts():
    device = FakeVideoCapture(
        honours=EXPOSURE_AND_GAIN, ignores=(cv2.CAP_PROP_AUTOFOCUS, cv2.CAP_PROP_FOCUS)
    )
    cam = UsbCamera(2, video_capture=device)
    run(cam.configure())
    assert device.opened_with == (2, cv2.CAP_V4L2)
    assert cam.capabilities == {CAP.MANUAL_EXPOSURE, CAP.HDR_BRACKETING, CAP.MANUAL_GAIN}
    # probing left the device in automatic exposure
    assert device.values[cv2.CAP_PROP_AUTO_EXPOSURE] == 3


def test_focus_and_white_balance_found_when_honoured():
    device = FakeVideoCapture(
        honours=(
            *EXPOSURE_AND_GAIN,
            cv2.CAP_PROP_AUTOFOCUS,
            cv2.CAP_PROP_FOCUS,
            cv2.CAP_PROP_AUTO_WB,
            cv2.CAP_PROP_WB_TEMPERATURE,
        )
    )
    cam = UsbCamera(video_capture=device)
    run(cam.configure())
    assert {CAP.MANUAL_FOCUS, CAP.AUTOFOCUS, CAP.WHITE_BALANCE} <= cam.capabilities
    assert CAP.TEMPERATURE not in cam.capabilities and CAP.RAW_DNG not in cam.capabilities
    frame = run(cam.capture(CaptureSettings(colour_temperature_k=5600, lens_position=40)))
    assert device.values[cv2.CAP_PROP_WB_TEMPERATURE] == 5600
    assert device.values[cv2.CAP_PROP_AUTO_WB] == 0
    assert frame.metadata.lens_position == 40
    assert frame.metadata.colour_temperature_k == 5600


def test_bare_device_is_automatic_only():
    device = FakeVideoCapture()
    cam = UsbCamera(video_capture=device)
    run(cam.configure())
    assert cam.capabilities == frozenset()
    with pytest.raises(CapabilityNotSupported):
        run(cam.capture(CaptureSettings(exposure_time_s=0.01)))
    frame = run(cam.capture())
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (48, 64, 3)
    r, g, b = (int(frame.pixels[0, 0, c]) for c in range(3))
    assert r > g > b  # BGR from the driver, RGB out
    assert frame.metadata.analogue_gain == 1.0


def test_manual_exposure_in_v4l2_units_and_stale_buffers_drained():
    device = FakeVideoCapture(honours=EXPOSURE_AND_GAIN)
    cam = UsbCamera(video_capture=device)
    run(cam.configure(CameraConfig(resolution=(32, 24))))
    assert (device.values[cv2.CAP_PROP_FRAME_WIDTH], device.values[cv2.CAP_PROP_FRAME_HEIGHT]) == (
        32,
        24,
    )
    dark = run(cam.capture(CaptureSettings(exposure_time_s=0.002, analogue_gain=1.0)))
    assert device.values[cv2.CAP_PROP_AUTO_EXPOSURE] == 1
    assert device.values[cv2.CAP_PROP_EXPOSURE] == 20  # 100 µs units
    assert dark.metadata.exposure_time_s == pytest.approx(0.002)
    grabs = device.grabs
    assert grabs >= 2
    same = run(cam.capture(CaptureSettings(exposure_time_s=0.002, analogue_gain=1.0)))
    assert device.grabs == grabs  # nothing changed, nothing to drain
    bright = run(cam.capture(CaptureSettings(exposure_time_s=0.002, analogue_gain=3.0)))
    assert device.values[cv2.CAP_PROP_GAIN] == 32  # profile: 16 device units per +1 gain
    assert bright.metadata.analogue_gain == pytest.approx(3.0)
    assert bright.pixels.mean() > 2.5 * same.pixels.mean()
    bracket = run(cam.capture_hdr_sequence(CaptureSettings(exposure_time_s=0.004), [-1, 1]))
    assert [f.metadata.exposure_time_s for f in bracket] == pytest.approx([0.002, 0.008])


def test_device_that_does_not_open():
    cam = UsbCamera(7, video_capture=FakeVideoCapture(opens=False))
    with pytest.raises(CameraError, match="cannot open"):
        run(cam.configure())


def test_close_releases_device():
    device = FakeVideoCapture()
    cam = UsbCamera(video_capture=device)
    run(cam.configure())
    run(cam.close())
    assert device.released


ALL = (
    *EXPOSURE_AND_GAIN,
    cv2.CAP_PROP_AUTOFOCUS,
    cv2.CAP_PROP_FOCUS,
    cv2.CAP_PROP_AUTO_WB,
    cv2.CAP_PROP_WB_TEMPERATURE,
    cv2.CAP_PROP_FPS,
)


def test_the_probe_puts_back_auto_white_balance_and_autofocus():
    device = FakeVideoCapture(honours=ALL)
    before = dict(device.values)
    cam = UsbCamera(video_capture=device)
    run(cam.configure())
    assert {CAP.MANUAL_FOCUS, CAP.WHITE_BALANCE, CAP.MANUAL_EXPOSURE} <= cam.capabilities
    for prop in (
        cv2.CAP_PROP_AUTOFOCUS,
        cv2.CAP_PROP_AUTO_WB,
        cv2.CAP_PROP_AUTO_EXPOSURE,
        cv2.CAP_PROP_FOCUS,
        cv2.CAP_PROP_WB_TEMPERATURE,
        cv2.CAP_PROP_GAIN,
    ):
        assert device.values[prop] == before[prop], prop


def test_an_exposure_longer_than_the_frame_interval_lowers_the_frame_rate():
    device = FakeVideoCapture(honours=ALL)
    cam = UsbCamera(video_capture=device)
    run(cam.configure())
    night = run(cam.capture(CaptureSettings(exposure_time_s=0.5)))
    assert device.values[cv2.CAP_PROP_FPS] == pytest.approx(2.0)
    assert night.metadata.exposure_time_s == pytest.approx(0.5)  # what the device read back
    assert night.metadata.extra["fps"] == pytest.approx(2.0)
    day = run(cam.capture(CaptureSettings(exposure_time_s=0.002)))
    assert device.values[cv2.CAP_PROP_FPS] == 30  # the configured rate is back
    assert day.metadata.exposure_time_s == pytest.approx(0.002)


def test_metadata_reports_what_the_device_did_not_what_was_asked():
    device = FakeVideoCapture(honours=EXPOSURE_AND_GAIN)  # no frame-rate control
    cam = UsbCamera(video_capture=device)
    run(cam.configure())
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.5)))
    assert frame.metadata.exposure_time_s == pytest.approx(1 / 30)  # bounded by the interval
