"""The picamera2 backend, driven through a fake Picamera2 at the library boundary."""

import asyncio
import sys

import numpy as np
import pytest
from _fake_picamera2 import FakePicamera2

from skylapse.capture.cameras import (
    CameraCapability,
    CameraConfig,
    CameraError,
    CapabilityNotSupported,
    CaptureSettings,
    Picamera2Camera,
)

CAP = CameraCapability


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(FakePicamera2, "instances", [])
    monkeypatch.setattr(FakePicamera2, "cameras", list(FakePicamera2.cameras))
    return FakePicamera2


def with_model(fake, model):
    fake.cameras = [
        {
            "Model": model,
            "Location": 2,
            "Rotation": 0,
            "Id": f"/base/soc/i2c0mux/i2c@1/{model}@1a",
            "Num": 0,
        }
    ]


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("model", "profile", "af", "temperature"),
    [
        ("imx708_wide", "imx708", True, True),
        ("imx519", "imx519", True, False),
        ("imx219", "imx219", False, False),
    ],
)
def test_identifies_sensor_and_discovers_capabilities(fake, model, profile, af, temperature):
    with_model(fake, model)
    cam = Picamera2Camera(picamera2_class=fake)
    assert cam.profile.name == profile
    run(cam.configure())
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


def test_still_configuration_at_full_resolution(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure())
    (picam,) = fake.instances
    cfg = picam.configs[-1]
    assert cfg["use_case"] == "still"
    assert tuple(cfg["main"]["size"]) == (4608, 2592)
    assert cfg["main"]["format"] == "RGB888"
    assert cfg["raw"] is None
    run(cam.configure(CameraConfig(raw=True)))
    assert picam.configs[-1]["raw"] is not None
    assert cam.supports_capability(CAP.RAW_DNG)


def test_manual_controls_are_set_and_waited_for(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(64, 48))))
    picam = fake.instances[0]
    settings = CaptureSettings(
        exposure_time_s=0.01, analogue_gain=2.0, white_balance_gains=(2.1, 1.4), lens_position=0.5
    )
    frame = run(cam.capture(settings))
    sent = {k: v for c in picam.control_log for k, v in c.items()}
    assert sent["AeEnable"] is False and sent["AwbEnable"] is False
    assert sent["ExposureTime"] == 10000
    assert sent["AnalogueGain"] == 2.0
    assert sent["ColourGains"] == (2.1, 1.4)
    assert sent["AfMode"] == 0 and sent["LensPosition"] == 0.5
    md = frame.metadata
    # the fake applies controls two requests late: the stale frames must have been skipped
    assert md.exposure_time_s == pytest.approx(0.01)
    assert md.analogue_gain == 2.0 and md.iso == 200.0
    assert md.lens_position == 0.5
    assert md.white_balance_gains == (2.1, 1.4)
    assert md.sensor_temperature_c == 41.0
    assert md.aperture_f == 1.8
    assert md.focus_score > 0
    assert picam.released == picam.requests  # every request went back to the camera
    # RGB888 arrives as B, G, R bytes; frames are RGB, 8-bit as the ISP delivers them
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (48, 64, 3)
    r, g, b = (int(frame.pixels[1, 1, c]) for c in range(3))
    assert r > g > b


def test_bracket_changes_exposure_time_not_ae_compensation(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(32, 24))))
    picam = fake.instances[0]
    frames = run(
        cam.capture_hdr_sequence(
            CaptureSettings(exposure_time_s=0.004, analogue_gain=1.0), [-2, 0, 2]
        )
    )
    assert [f.metadata.exposure_time_s for f in frames] == pytest.approx([0.001, 0.004, 0.016])
    assert [f.metadata.ev_offset for f in frames] == [-2, 0, 2]
    assert all(f.metadata.analogue_gain == 1.0 for f in frames)
    sent_exposures = [c["ExposureTime"] for c in picam.control_log if "ExposureTime" in c]
    assert sent_exposures == [1000, 4000, 16000]
    assert not any(c.get("AeEnable") for c in picam.control_log)
    assert not any("ExposureValue" in c for c in picam.control_log)
    means = [float(f.pixels.mean()) for f in frames]
    assert means[0] < means[1] < means[2]


def test_bracket_without_base_exposure_meters_first(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(32, 24))))
    frames = run(cam.capture_hdr_sequence(CaptureSettings(), [-1, 1]))
    # the fake's AE sits at 20 ms: the bracket is built around it with manual exposure times
    assert [f.metadata.exposure_time_s for f in frames] == pytest.approx([0.01, 0.04])


def test_dng_through_picamera2_helper(fake, tmp_path):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(32, 24))))
    with pytest.raises(CapabilityNotSupported):
        run(cam.capture(CaptureSettings(dng_path=tmp_path / "a.dng")))
    run(cam.configure(CameraConfig(resolution=(32, 24), raw=True)))
    frame = run(
        cam.capture(CaptureSettings(exposure_time_s=0.002, dng_path=tmp_path / "sub" / "a.dng"))
    )
    assert fake.instances[0].saved_dngs == [str(tmp_path / "sub" / "a.dng")]
    assert (tmp_path / "sub" / "a.dng").read_bytes().startswith(b"II*")
    assert frame.metadata.dng_path == tmp_path / "sub" / "a.dng"


def test_one_picamera2_object_for_many_captures(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(16, 12))))

    async def many():
        for i in range(12):
            await cam.capture(CaptureSettings(exposure_time_s=0.001 * (1 + i % 3)))
        await cam.capture_hdr_sequence(CaptureSettings(exposure_time_s=0.002), [-1, 0, 1])
        await cam.configure(CameraConfig(resolution=(16, 12), raw=True))
        await cam.capture()

    run(many())
    assert len(fake.instances) == 1
    picam = fake.instances[0]
    assert picam.requests >= 16
    run(cam.close())
    assert picam.closed


def test_autofocus_cycle_then_lens_locked(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(16, 12))))
    picam = fake.instances[0]
    position = run(cam.autofocus())
    assert position == pytest.approx(picam.af_target)
    assert picam.control_log[-1] == {"AfMode": 0, "LensPosition": pytest.approx(0.35)}
    frame = run(cam.capture())
    assert frame.metadata.lens_position == pytest.approx(0.35)


def test_fixed_focus_sensor_has_no_autofocus(fake):
    with_model(fake, "imx219")
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(16, 12))))
    with pytest.raises(CapabilityNotSupported):
        run(cam.autofocus())
    with pytest.raises(CapabilityNotSupported):
        run(cam.capture(CaptureSettings(lens_position=1.0)))


def test_library_is_imported_lazily(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    import skylapse.capture.cameras.picamera as backend  # importable without the library

    with pytest.raises(CameraError, match="picamera2 is not installed"):
        backend.Picamera2Camera()


def test_auto_exposure_after_manual_frees_the_frame_duration(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(16, 12))))
    picam = fake.instances[0]
    run(cam.capture(CaptureSettings(exposure_time_s=2.0)))
    assert picam.state["FrameDurationLimits"][1] >= 2_000_000  # a frame lasts the exposure
    run(cam.capture())
    assert picam.control_log[-1]["AeEnable"] is True
    assert picam.control_log[-1]["FrameDurationLimits"] == (33333, 120_000_000)


def test_colour_temperature_only_where_libcamera_has_the_control(fake):
    cam = Picamera2Camera(picamera2_class=fake)
    run(cam.configure(CameraConfig(resolution=(64, 48))))
    assert not cam.supports_capability(CAP.COLOUR_TEMPERATURE)
    with pytest.raises(CapabilityNotSupported, match="colour_temperature"):
        run(cam.capture(CaptureSettings(colour_temperature_k=5500)))
    (picam,) = fake.instances
    picam.camera_controls["ColourTemperature"] = (2000, 10000, None)
    run(cam.configure(CameraConfig(resolution=(64, 48))))
    assert cam.supports_capability(CAP.COLOUR_TEMPERATURE)
