"""Replay camera, the factory's detection order, the clock, focus search and bracket plans."""

import asyncio
import math
import sys
import types
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from _fake_picamera2 import FakePicamera2
from PIL import Image

from skylapse.capture.cameras import (
    CameraError,
    CameraFactory,
    CapabilityNotSupported,
    CaptureSettings,
    Picamera2Camera,
    ReplayCamera,
    ReplayExhausted,
    SimulatedCamera,
    UsbCamera,
    bracket_exposures,
    contrast_autofocus,
    focus_score,
)
from skylapse.capture.cameras.factory import MissingCamera, camera_stack
from skylapse.capture.clock import RealClock, ShiftedClock, SimulatedClock

T0 = datetime(2026, 7, 1, 18, 0, tzinfo=UTC)


def run(coro):
    return asyncio.run(coro)


# -- replay ------------------------------------------------------------------------------------
def test_replay_serves_folder_in_order(tmp_path):
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65535, (24, 32, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "frame_002.png"), a16[..., ::-1])
    b8 = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame_001.png"), b8[..., ::-1])
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x829A] = 1 / 125  # ExposureTime
    exif_ifd[0x8827] = 400  # ISO
    exif_ifd[0x829D] = 2.8  # FNumber
    Image.fromarray(b8).save(tmp_path / "frame_003.jpg", exif=exif, quality=95)
    (tmp_path / "notes.txt").write_text("not a frame")

    cam = ReplayCamera(tmp_path, clock=SimulatedClock(T0))
    run(cam.configure())
    assert cam.capabilities == frozenset()
    first, second, third = (run(cam.capture()) for _ in range(3))
    assert first.pixels.dtype == np.uint8 and np.array_equal(first.pixels, b8)
    assert np.array_equal(second.pixels, a16)
    assert (first.metadata.bit_depth, second.metadata.bit_depth) == (8, 16)
    assert math.isnan(first.metadata.exposure_time_s)
    assert third.metadata.exposure_time_s == pytest.approx(1 / 125)
    assert third.metadata.iso == pytest.approx(400)
    assert third.metadata.aperture_f == pytest.approx(2.8)
    assert third.metadata.extra["source"].endswith("frame_003.jpg")
    with pytest.raises(ReplayExhausted):
        run(cam.capture())
    with pytest.raises(CapabilityNotSupported):
        run(cam.capture(CaptureSettings(exposure_time_s=0.01)))


def test_replay_loops_and_rejects_empty_folder(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cam = ReplayCamera(tmp_path, loop=True)
    run(cam.configure())
    assert all(run(cam.capture()).pixels.shape == (8, 8, 3) for _ in range(3))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="no frames"):
        run(ReplayCamera(empty).configure())


# -- factory -----------------------------------------------------------------------------------
class NeverOpens:
    def __init__(self):
        self.probed = []

    def __call__(self, device, api):
        self.probed.append(device)
        return self

    def isOpened(self):
        return False

    def read(self):
        return False, None

    def release(self):
        pass


class OpensAndReads(NeverOpens):
    def isOpened(self):
        return True

    def read(self):
        return True, np.zeros((4, 4, 3), np.uint8)


def test_auto_detect_falls_back_to_simulated(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # not importable
    usb = NeverOpens()
    cam = CameraFactory.auto_detect_camera(
        usb_devices=[0, 1], video_capture=usb, seed=4, stack=lambda: None
    )
    assert isinstance(cam, SimulatedCamera) and cam.seed == 4
    assert cam.notice is not None and cam.notice.startswith("simulated camera")
    assert usb.probed == [0, 1]


def test_auto_detect_prefers_usb_over_simulated(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    cam = CameraFactory.auto_detect_camera(usb_devices=[3], video_capture=OpensAndReads())
    assert isinstance(cam, UsbCamera) and cam.device == 3


def test_auto_detect_prefers_picamera2(monkeypatch):
    monkeypatch.setattr(FakePicamera2, "instances", [])
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    usb = OpensAndReads()
    cam = CameraFactory.auto_detect_camera(usb_devices=[0], video_capture=usb)
    assert isinstance(cam, Picamera2Camera) and cam.profile.name == "imx708"
    assert usb.probed == []
    assert FakePicamera2.instances == []  # nothing opened until configure()


def test_auto_detect_skips_unsupported_and_usb_sensors_listed_by_libcamera(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(
        FakePicamera2,
        "cameras",
        [
            {"Model": "uvcvideo", "Id": "/base/axi/usb@200000-1:1.0-046d:0825", "Num": 0},
            {"Model": "ov5647", "Id": "/base/soc/i2c0mux/ov5647@36", "Num": 1},
        ],
    )
    cam = CameraFactory.auto_detect_camera(
        usb_devices=[], video_capture=NeverOpens(), stack=lambda: None
    )
    # picamera2 imports: a camera stack is here, so no simulated frames
    assert isinstance(cam, MissingCamera) and "ov5647" in cam.reason


def test_a_pi_without_a_camera_never_gets_simulated_frames(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # even with picamera2 unusable
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    cam = CameraFactory.auto_detect_camera(
        usb_devices=[0], video_capture=NeverOpens(), stack=lambda: camera_stack(model, [])
    )
    assert isinstance(cam, MissingCamera)
    assert "Raspberry Pi 5" in cam.reason and "picamera2 cannot be imported" in cam.reason
    with pytest.raises(CameraError, match="no camera found"):
        asyncio.run(cam.configure())
    with pytest.raises(CameraError):
        asyncio.run(cam.capture())


def test_camera_stack_from_the_board_or_libcamera(tmp_path):
    assert camera_stack(tmp_path / "absent", []) is None
    (tmp_path / "model").write_bytes(b"Generic x86 board\x00")
    assert camera_stack(tmp_path / "model", []) is None
    (tmp_path / "libcamera").mkdir()
    assert "libcamera" in camera_stack(tmp_path / "model", [tmp_path / "libcamera"])


def test_create_by_name(tmp_path):
    assert isinstance(CameraFactory.create("simulated"), SimulatedCamera)
    assert isinstance(CameraFactory.create("usb", device=2), UsbCamera)
    assert isinstance(CameraFactory.create("replay", folder=tmp_path), ReplayCamera)
    with pytest.raises(CameraError, match="folder="):
        CameraFactory.create("replay")
    with pytest.raises(CameraError, match="unknown camera backend 'gopro'"):
        CameraFactory.create("gopro")


# -- clock -------------------------------------------------------------------------------------
def test_simulated_clock_sleeps_instantly():
    clock = SimulatedClock(T0)

    async def evening():
        for _ in range(600):
            await clock.sleep(30)

    run(evening())
    assert clock.now() == T0 + timedelta(hours=5)
    assert clock.monotonic() == pytest.approx(18000)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        SimulatedClock(datetime(2026, 1, 1))  # naive
    assert RealClock().now().tzinfo is not None


def test_shifted_clock_runs_in_real_time_from_its_start():
    clock = ShiftedClock(T0)
    m0 = clock.monotonic()
    run(clock.sleep(0.05))
    waited = clock.monotonic() - m0
    assert waited >= 0.05  # a real wait
    assert timedelta(seconds=0.05) <= clock.now() - T0 <= timedelta(seconds=waited + 0.05)
    with pytest.raises(ValueError):
        ShiftedClock(datetime(2026, 1, 1))  # naive


# -- focus and brackets --------------------------------------------------------------------------
def test_focus_score_falls_with_blur():
    rng = np.random.default_rng(2)
    sharp = cv2.resize(
        rng.random((45, 80)).astype(np.float32), (320, 180), interpolation=cv2.INTER_NEAREST
    )
    frames = [
        (np.clip(cv2.GaussianBlur(sharp, (0, 0), s) if s else sharp, 0, 1) * 65535).astype(
            np.uint16
        )
        for s in (0, 1, 2, 4)
    ]
    scores = [focus_score(np.dstack([f] * 3)) for f in frames]
    assert scores[0] > scores[1] > scores[2] > scores[3]
    assert scores[0] > 10 * scores[3]


def test_contrast_search_finds_the_peak_between_samples():
    calls = []

    async def measure(position):
        calls.append(position)
        return 1e-3 * math.exp(-((position - 3.37) ** 2) / (2 * 0.8**2)) + 1e-5

    result = run(contrast_autofocus(measure, 0.0, 10.0))
    assert result.lens_position == pytest.approx(3.37, abs=0.05)
    assert len(calls) == len(set(calls)) <= 13
    assert result.evaluations == sorted(result.evaluations)


def test_contrast_search_without_a_peak_falls_back_to_infinity():
    rng = __import__("random").Random(3)

    async def noise_only(position):  # a dark or foggy scene: the score is noise
        return 1e-4 * (1 + 0.05 * rng.random())

    result = run(contrast_autofocus(noise_only, 0.0, 10.0, fallback=0.6))
    assert result.lens_position == 0.6 and not result.found

    async def peaked(position):
        return 1e-3 * math.exp(-((position - 3.37) ** 2) / (2 * 0.8**2)) + 1e-5

    found = run(contrast_autofocus(peaked, 0.0, 10.0, fallback=0.6))
    assert found.found and found.lens_position == pytest.approx(3.37, abs=0.05)


def test_bracket_plan_keeps_gain_until_exposure_limit():
    plan = bracket_exposures(
        0.5, 2.0, [-2, 0, 2, 4], exposure_range=(1e-4, 4.0), gain_range=(1.0, 16.0)
    )
    assert plan[0] == pytest.approx((0.125, 2.0))
    assert plan[1] == pytest.approx((0.5, 2.0))
    assert plan[2] == pytest.approx((2.0, 2.0))
    assert plan[3] == pytest.approx((4.0, 4.0))  # 8 s wanted: 4 s and twice the gain
