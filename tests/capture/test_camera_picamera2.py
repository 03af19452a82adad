"""The picamera2 backend, driven through a fake Picamera2 that behaves like picamera2 + libcamera
(``_fake_picamera2.py`` cites the sources of each behaviour)."""

import asyncio
import datetime as dt
import sys
from dataclasses import replace

import numpy as np
import pytest
from _fake_picamera2 import FakePicamera2, VirtualTime, ct_curve_eval

from skylapse.capture.cameras import (
    CameraCapability,
    CameraConfig,
    CameraError,
    CameraFactory,
    CapabilityNotSupported,
    CaptureSettings,
    Picamera2Camera,
)
from skylapse.capture.cameras.base import FOCUS_FIXED, FOCUS_LIBCAMERA_AF

CAP = CameraCapability
SMALL = CameraConfig(resolution=(64, 48))


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(FakePicamera2, "instances", [])
    monkeypatch.setattr(FakePicamera2, "cameras", list(FakePicamera2.cameras))
    monkeypatch.setattr(FakePicamera2, "clock", VirtualTime())
    monkeypatch.setattr(FakePicamera2, "libcamera_version", (0, 5))
    return FakePicamera2


def csi(model, i2c="i2c@88000", num=0):
    return {
        "Model": model,
        "Location": 2,
        "Rotation": 0,
        "Id": f"/base/{i2c}/{model}@1a",
        "Num": num,
    }


def with_model(fake, model):
    fake.cameras = [csi(model)]


def run(coro):
    return asyncio.run(coro)


def opened(fake, model="imx708_wide", config=SMALL):
    with_model(fake, model)
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(config))
    return cam, fake.instances[-1]


@pytest.mark.parametrize(
    ("model", "profile", "af", "temperature"),
    [
        ("imx708_wide", "imx708", True, True),
        ("imx519", "imx519", False, False),  # stock tuning: no rpi.af, the lens does not move
        ("imx219", "imx219", False, False),
    ],
)
def test_identifies_sensor_and_discovers_capabilities(fake, model, profile, af, temperature):
    with_model(fake, model)
    cam = Picamera2Camera(picamera2_class=fake)
    assert cam.profile.name == profile
    run(cam.configure(SMALL))
    assert cam.supports_capability(CAP.MANUAL_EXPOSURE)
    assert cam.supports_capability(CAP.MANUAL_GAIN)
    assert cam.supports_capability(CAP.HDR_BRACKETING)
    assert cam.supports_capability(CAP.WHITE_BALANCE)
    assert cam.supports_capability(CAP.AUTOFOCUS) is af
    assert cam.supports_capability(CAP.MANUAL_FOCUS) is af
    assert cam.supports_capability(CAP.TEMPERATURE) is temperature
    assert not cam.supports_capability(CAP.RAW_DNG)  # no raw stream asked for


def test_unknown_sensor_needs_an_explicit_profile(fake):
    fake.cameras = [{"Model": "ov5647", "Id": "/base/ov5647@36", "Num": 0}]
    with pytest.raises(CameraError, match="ov5647"):
        Picamera2Camera(picamera2_class=fake)


# -- 1. camera number: picamera2's index into its sorted list -----------------------------------


def test_camera_number_is_the_index_into_picamera2s_sorted_list(fake):
    # libcamera enumerates the IMX519 first (Num 0); picamera2 sorts by Id, descending
    fake.cameras = [csi("imx519", "i2c@80000", 0), csi("imx708_wide", "i2c@88000", 1)]
    assert [c["Model"] for c in fake.global_camera_info()] == ["imx708_wide", "imx519"]
    for index, model, num in ((0, "imx708_wide", 1), (1, "imx519", 0)):
        cam = Picamera2Camera(index, picamera2_class=fake)
        run(cam.configure(SMALL))
        picam = fake.instances[-1]
        assert cam.sensor_model == model
        assert picam.camera_properties["Model"] == model and picam.camera_idx == num
        run(cam.close())


def test_auto_detection_opens_the_csi_camera_beside_a_usb_webcam(fake):
    usb = {"Model": "HD Webcam", "Id": "/base/scb/pcie/usb@1-1.2:1.0-046d:0825", "Num": 1}
    fake.cameras = [usb, csi("imx708_wide", "i2c@88000", 1)]  # libcamera lists the USB one first
    found = CameraFactory.probe_picamera2(loader=lambda: fake)
    assert found is not None and found[1] == 0  # picamera2 puts USB cameras last
    cam = CameraFactory.auto_detect_camera(picamera2_loader=lambda: fake, usb_devices=[])
    run(cam.configure(SMALL))
    assert fake.instances[-1].camera_properties["Model"] == "imx708_wide"
    with pytest.raises(CameraError, match="USB"):
        Picamera2Camera(1, picamera2_class=fake)


# -- 2. focus from what the metadata reports ------------------------------------------------------


def test_imx519_with_stock_tuning_has_fixed_focus_not_a_keyerror(fake):
    cam, picam = opened(fake, "imx519")
    assert "AfMode" in picam.camera_controls  # advertised: a lens driver is linked
    assert cam.focus_method == FOCUS_FIXED
    with pytest.raises(CapabilityNotSupported):
        run(cam.autofocus())
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.01)))
    assert frame.metadata.lens_position is None
    # picamera2's own AF cycle on this tuning: the KeyError the backend must never meet
    with pytest.raises(KeyError, match="AfState"):
        picam.autofocus_cycle()


def test_imx708_runs_libcamera_af_then_locks_the_lens(fake):
    cam, picam = opened(fake, "imx708_wide")
    assert cam.focus_method == FOCUS_LIBCAMERA_AF
    position = run(cam.autofocus())
    assert position == pytest.approx(fake.af_target)
    assert picam.control_log[-1] == {"AfMode": 0, "LensPosition": pytest.approx(0.35)}
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.01)))
    assert frame.metadata.lens_position == pytest.approx(0.35)


def test_failed_af_cycle_falls_back_to_the_contrast_search(fake, monkeypatch):
    monkeypatch.setattr(FakePicamera2, "af_success", False)
    cam, _ = opened(fake, "imx708_wide")
    position = run(cam.autofocus())
    assert position == pytest.approx(fake.af_target, abs=0.3)  # found by contrast


def test_fixed_focus_sensor_has_no_autofocus(fake):
    cam, _ = opened(fake, "imx219")
    with pytest.raises(CapabilityNotSupported):
        run(cam.autofocus())
    with pytest.raises(CapabilityNotSupported):
        run(cam.capture(CaptureSettings(lens_position=1.0)))


# -- 3. every manual frame carries its full control set ------------------------------------------


def test_manual_frame_after_an_automatic_one_gets_what_it_asked(fake, monkeypatch):
    cam, picam = opened(fake, "imx708_wide")
    manual = CaptureSettings(
        exposure_time_s=0.01, analogue_gain=2.0, white_balance_gains=(2.1, 1.4)
    )
    first = run(cam.capture(manual))
    monkeypatch.setattr(FakePicamera2, "scene_exposure_us", 60000.0)  # brighter scene for AE
    monkeypatch.setattr(FakePicamera2, "scene_kelvin", 3000.0)
    run(cam.capture(CaptureSettings()))  # automatic: AE and AWB run
    fake.clock.sleep(2.0)  # a preview, an AF probe: the AE converges meanwhile
    auto = run(cam.capture(CaptureSettings()))
    assert auto.metadata.exposure_time_s * auto.metadata.analogue_gain > 0.03  # the AE moved
    again = run(cam.capture(manual))
    for frame in (first, again):
        md = frame.metadata
        assert md.exposure_time_s == pytest.approx(0.01, abs=30e-6)  # within a line (26 µs)
        assert md.analogue_gain == pytest.approx(2.0, abs=2.0**2 / 1024)  # within a code step
        assert md.white_balance_gains == pytest.approx((2.1, 1.4), rel=1e-3)
    for frame in (first, again):
        assert frame.metadata.extra["settle"]["mismatch"] == []
    sent = picam.control_log[-1]
    assert {"AeEnable", "ExposureTime", "AnalogueGain", "AwbEnable", "ColourGains"} <= set(sent)
    assert cam.mismatches == 0
    assert picam.released == picam.requests  # every request went back to the camera


def test_a_frame_that_never_matches_is_counted_and_logged(fake, caplog):
    cam, picam = opened(fake, "imx708_wide")
    picam.camera_controls["AnalogueGain"] = (1.0, 16.0, 1.0)  # claims more than the sensor does
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.01, analogue_gain=1.0)))
    assert frame.metadata.analogue_gain == pytest.approx(1.1228, abs=1e-3)  # what was delivered
    assert frame.metadata.extra["settle"]["mismatch"] == ["AnalogueGain"]
    assert cam.mismatches == 1
    assert "did not deliver AnalogueGain" in caplog.text


# -- 4. no stale frames ----------------------------------------------------------------------------


def test_a_frame_is_exposed_after_the_call_never_before(fake):
    clock = fake.clock
    cam, _ = opened(fake, "imx708_wide")
    night = CaptureSettings(exposure_time_s=2.0, analogue_gain=4.0)
    run(cam.capture(night))
    clock.sleep(20.0)  # the next deadline, 20 s later: frames kept streaming meanwhile
    called = clock.monotonic_ns()
    frame = run(cam.capture(night))
    exposure_start = frame.metadata.extra["SensorTimestamp"] - 2.0e9
    assert exposure_start >= called  # picamera2 held a frame exposed before the call


def test_frame_times_are_the_exposure_start_the_sensor_reports(fake):
    clock = fake.clock
    with_model(fake, "imx708_wide")
    cam = Picamera2Camera(picamera2_class=fake, monotonic_ns=clock.monotonic_ns)
    run(cam.configure(SMALL))
    run(cam.capture(CaptureSettings(exposure_time_s=2.0)))
    clock.sleep(20.0)
    called, mono, wall = clock.monotonic_ns(), cam.clock.monotonic(), cam.clock.now()
    frame = run(cam.capture(CaptureSettings(exposure_time_s=2.0)))
    delay_s = (frame.metadata.extra["SensorTimestamp"] - 2.0e9 - called) / 1e9
    assert 0 <= delay_s < 2.1  # the next frame's start: within one frame of the call
    assert frame.metadata.exposure_start_monotonic == pytest.approx(mono + delay_s, abs=0.05)
    assert (frame.metadata.timestamp - wall).total_seconds() == pytest.approx(delay_s, abs=0.05)


class SensorClock:
    """The camera clock on the fake's virtual time, so deadlines fall on the sensor's clock."""

    def __init__(self, time: VirtualTime) -> None:
        self.time = time

    def monotonic(self) -> float:
        return self.time.monotonic_ns() / 1e9

    def now(self) -> dt.datetime:
        return dt.datetime(2026, 6, 21, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        self.time.sleep(seconds)


@pytest.mark.parametrize("exposure_s", [0.01, 0.2])  # 14 fps grid; a frame set by the exposure
@pytest.mark.parametrize("offset", [0.3, 0.45, 0.55, 0.7])  # deadline past a start, in frames
@pytest.mark.parametrize("early_s", [0.0, 0.5])  # the call this long before the deadline
def test_the_frame_whose_exposure_starts_nearest_the_deadline_is_kept(
    fake, exposure_s, offset, early_s
):
    with_model(fake, "imx708_wide")
    clock = SensorClock(fake.clock)
    cam = Picamera2Camera(picamera2_class=fake, clock=clock, monotonic_ns=fake.clock.monotonic_ns)
    run(cam.configure(SMALL))
    shot = CaptureSettings(exposure_time_s=exposure_s, analogue_gain=2.0)
    settled = run(cam.capture(shot)).metadata  # the sensor now runs at this shot's frame period
    period_s = settled.extra["FrameDuration"] / 1e6
    # the free-running sensor starts an exposure every frame period from this one
    deadline = settled.exposure_start_monotonic + (20 + offset) * period_s
    fake.clock.sleep(deadline - early_s - clock.monotonic())
    frame = run(cam.capture(shot, deadline=deadline))
    latency_s = frame.metadata.exposure_start_monotonic - deadline
    nearest_s = (-offset if offset < 0.5 else 1 - offset) * period_s  # before or after it
    assert latency_s == pytest.approx(nearest_s, abs=1e-4)
    assert frame.metadata.extra["settle"]["frames"] == 1


# -- 5. settling: long exposures, unreachable targets, bounded -----------------------------------


def test_long_exposure_settles_in_the_sensor_delay_and_records_what_was_delivered(fake):
    cam, picam = opened(fake, "imx708_wide")
    run(cam.capture(CaptureSettings(exposure_time_s=0.001, analogue_gain=1.2)))
    frame = run(cam.capture(CaptureSettings(exposure_time_s=2.0, analogue_gain=1.2)))
    assert frame.metadata.exposure_time_s == pytest.approx(2.0, abs=30e-6)
    settle = frame.metadata.extra["settle"]
    assert 2 <= settle["frames"] <= 5 and settle["mismatch"] == []
    assert picam.control_log[-1]["FrameDurationLimits"][1] >= 2_000_000 + 1300  # + 48 lines


def test_a_target_below_the_sensor_minimum_does_not_burn_every_settle_frame(fake):
    cam, picam = opened(fake, "imx708_wide")  # lowest analogue gain 1.12 (gain code 112)
    before = picam.requests
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.01, analogue_gain=1.0)))
    assert picam.requests - before <= 5
    assert frame.metadata.analogue_gain == pytest.approx(1.1228, abs=1e-3)
    assert frame.metadata.extra["settle"]["mismatch"] == []


def test_settling_stops_at_its_time_budget(fake):
    cam, picam = opened(fake, "imx708_wide")
    run(cam.capture(CaptureSettings(exposure_time_s=20.0, analogue_gain=2.0)))
    picam.sensor = replace(picam.sensor, delay=40)  # a sensor that never gets there
    before = picam.requests
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.1, analogue_gain=2.0)))
    assert picam.requests - before <= 6
    settle = frame.metadata.extra["settle"]
    assert settle["mismatch"] == ["ExposureTime"]
    # five 20 s frames, not eight: 100 s of sensor time, not 160
    assert settle["frames"] <= 6 and settle["s"] <= 5 * 20.03
    assert frame.metadata.exposure_time_s == pytest.approx(20.0, abs=1e-3)  # what it delivered


# -- 6. white balance by colour temperature on any libcamera -------------------------------------


@pytest.mark.parametrize("version", [(0, 3), (0, 5)])
def test_colour_temperature_with_or_without_the_control(fake, monkeypatch, version):
    monkeypatch.setattr(FakePicamera2, "libcamera_version", version)
    cam, picam = opened(fake, "imx708_wide")
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.01, colour_temperature_k=3000)))
    sent = picam.control_log[-1]
    rg, bg = ct_curve_eval(picam.sensor.ct_curve, 3000)
    if version < (0, 4):
        assert "ColourTemperature" not in picam.camera_controls
        assert sent["ColourGains"] == pytest.approx((1 / rg, 1 / bg))
    else:
        assert sent["ColourTemperature"] == 3000
    assert frame.metadata.white_balance_gains == pytest.approx((1 / rg, 1 / bg), rel=1e-3)
    assert frame.metadata.colour_temperature_k == pytest.approx(3000, abs=1)


# -- the rest of the backend ---------------------------------------------------------------------


def test_still_configuration_at_full_resolution(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure())
    (picam,) = fake.instances
    cfg = picam.configs[-1]
    assert cfg["use_case"] == "still" and cfg["buffer_count"] == 2
    assert tuple(cfg["main"]["size"]) == (4608, 2592)
    assert cfg["main"]["format"] == "RGB888"
    assert cfg["raw"] is None
    run(cam.configure(CameraConfig(raw=True)))
    assert picam.configs[-1]["raw"] is not None
    assert cam.supports_capability(CAP.RAW_DNG)


def test_pixels_are_rgb_uint8_from_bgr_bytes(fake):
    cam, _ = opened(fake, "imx708_wide")
    frame = run(cam.capture(CaptureSettings(exposure_time_s=0.02, white_balance_gains=(1.0, 0.5))))
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (48, 64, 3)
    r, b = (float(frame.pixels[..., c].mean()) for c in (0, 2))
    assert (
        b < r
    )  # blue gain halved; RGB888 arrives as B, G, R bytes, 8-bit as the ISP delivers them
    assert frame.metadata.sensor_temperature_c == 41.0 and frame.metadata.aperture_f == 1.8
    assert frame.metadata.focus_score > 0


def test_bracket_changes_exposure_time_not_ae_compensation(fake):
    cam, picam = opened(fake, "imx708_wide")
    frames = run(
        cam.capture_hdr_sequence(
            CaptureSettings(exposure_time_s=0.004, analogue_gain=2.0), [-2, 0, 2]
        )
    )
    assert [f.metadata.exposure_time_s for f in frames] == pytest.approx(
        [0.001, 0.004, 0.016], abs=30e-6
    )
    assert [f.metadata.ev_offset for f in frames] == [-2, 0, 2]
    assert all(f.metadata.analogue_gain == pytest.approx(2.0, abs=0.01) for f in frames)
    sent_exposures = [c["ExposureTime"] for c in picam.control_log if "ExposureTime" in c]
    assert sent_exposures[-3:] == [1000, 4000, 16000]
    assert not any("ExposureValue" in c for c in picam.control_log)
    means = [float(f.pixels.mean()) for f in frames]
    assert means[0] < means[1] < means[2]


def test_bracket_without_base_exposure_meters_first(fake):
    cam, _ = opened(fake, "imx219")
    frames = run(cam.capture_hdr_sequence(CaptureSettings(), [-1, 1]))
    low, high = (f.metadata.exposure_time_s for f in frames)
    assert high == pytest.approx(low * 4, rel=0.01)  # around the AE's exposure, 2 EV apart


def test_dng_through_picamera2_helper(fake, tmp_path):
    cam, picam = opened(fake, "imx708_wide")
    with pytest.raises(CapabilityNotSupported):
        run(cam.capture(CaptureSettings(dng_path=tmp_path / "a.dng")))
    run(cam.configure(CameraConfig(resolution=(32, 24), raw=True)))
    frame = run(
        cam.capture(CaptureSettings(exposure_time_s=0.002, dng_path=tmp_path / "sub" / "a.dng"))
    )
    assert picam.saved_dngs == [str(tmp_path / "sub" / "a.dng")]
    assert frame.metadata.dng_path == tmp_path / "sub" / "a.dng"


def test_one_picamera2_object_for_many_captures(fake):
    cam, picam = opened(fake, "imx708_wide")

    async def many():
        for i in range(6):
            await cam.capture(CaptureSettings(exposure_time_s=0.001 * (1 + i % 3)))
        await cam.capture_hdr_sequence(CaptureSettings(exposure_time_s=0.002), [-1, 0, 1])
        await cam.configure(CameraConfig(resolution=(16, 12), raw=True))
        await cam.capture()

    run(many())
    assert len(fake.instances) == 1
    run(cam.close())
    assert picam.closed


def test_library_is_imported_lazily(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    import skylapse.capture.cameras.picamera as backend  # importable without the library

    with pytest.raises(CameraError, match="picamera2 cannot be imported"):
        backend.Picamera2Camera()


def test_auto_exposure_after_manual_frees_the_frame_duration(fake):
    cam, picam = opened(fake, "imx708_wide")
    run(cam.capture(CaptureSettings(exposure_time_s=2.0)))
    run(cam.capture())
    assert picam.control_log[-1]["AeEnable"] is True
    lo, hi, _ = picam.camera_controls["FrameDurationLimits"]
    assert picam.control_log[-1]["FrameDurationLimits"] == (lo, hi)


@pytest.mark.parametrize("version", [(0, 3), (0, 5)])
def test_colour_temperature_capability_wherever_a_kelvin_can_be_honoured(fake, version):
    """COLOUR_TEMPERATURE is reported by every libcamera: the native control where it exists,
    ColourGains from the tuning's ct_curve otherwise (issue 10, item 6)."""
    fake.libcamera_version = version
    cam, picam = opened(fake, "imx519")
    assert cam.supports_capability(CAP.COLOUR_TEMPERATURE)
    run(cam.capture(CaptureSettings(colour_temperature_k=5500)))
    sent = picam.control_log[-1]
    assert sent["AwbEnable"] is False
    if version < (0, 4):
        rg, bg = ct_curve_eval(picam.sensor.ct_curve, 5500)
        assert "ColourTemperature" not in sent
        assert sent["ColourGains"] == pytest.approx((1 / rg, 1 / bg))
    else:
        assert sent["ColourTemperature"] == 5500 and "ColourGains" not in sent


def test_colour_temperature_without_control_or_ct_curve_uses_the_profile_gains(fake, monkeypatch):
    fake.libcamera_version = (0, 3)

    def no_tuning(tuning_file, dir=None):
        raise RuntimeError("Tuning file not found")

    monkeypatch.setattr(FakePicamera2, "load_tuning_file", staticmethod(no_tuning))
    cam, picam = opened(fake, "imx708_wide")
    assert cam.supports_capability(CAP.COLOUR_TEMPERATURE)
    run(cam.capture(CaptureSettings(colour_temperature_k=5500)))
    assert picam.control_log[-1]["ColourGains"] == cam.profile.colour.daylight_wb_gains
