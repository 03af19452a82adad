"""The capture service end to end on the picamera2 backend, through the faithful fake on the real
clock: a golden-hour session with brackets, libcamera AF, the strategy's white balance, every
frame written with the exposure the sensor delivered, latency to the reported exposure start."""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import pytest
from _fake_picamera2 import FakePicamera2, RealTime, ct_curve_eval

from skylapse.capture.cameras import CameraConfig, Picamera2Camera
from skylapse.capture.clock import ShiftedClock
from skylapse.capture.service import CaptureService, SessionSpec

GOLDEN = dt.datetime(2024, 3, 20, 17, 55, tzinfo=dt.UTC)  # golden hour (HDR, 5500 K)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(FakePicamera2, "instances", [])
    monkeypatch.setattr(FakePicamera2, "clock", RealTime())
    monkeypatch.setattr(
        FakePicamera2,
        "cameras",
        [{"Model": "imx708_wide", "Id": "/base/axi/rp1/i2c@88000/imx708@1a", "Num": 0}],
    )
    return FakePicamera2


def test_bracketed_golden_hour_session_on_picamera2(fake, tmp_path):
    clock = ShiftedClock(GOLDEN)
    camera = Picamera2Camera(picamera2_class=fake, clock=clock)
    service = CaptureService(
        camera, buffer=tmp_path, clock=clock, camera_config=CameraConfig(resolution=(64, 48))
    )

    async def go():
        await service.open()
        summary = await service.run_session(
            SessionSpec(session_id="gold", interval_s=1.5, max_frames=3, hdr=True)
        )
        await service.close()
        return summary

    summary = asyncio.run(go())
    picam = fake.instances[-1]
    rows = service.catalog.frames()
    assert summary.shots == 3 and summary.failed == 0
    assert summary.written == summary.files == len(rows) == 9  # three brackets of three
    assert {r.phase for r in rows} == {"golden_hour"}
    # libcamera AF ran, the session record says so, the lens stayed where it focused
    assert summary.focus_method == "libcamera_af"
    (session,) = [s for s in service.catalog.sessions() if s.id == "gold"]
    assert session.settings["focus_method"] == "libcamera_af"
    assert all(r.lens_position == pytest.approx(fake.af_target) for r in rows)
    # the golden-hour strategy's 5500 K, as libcamera turns it into gains
    rg, bg = ct_curve_eval(picam.sensor.ct_curve, 5500)
    assert all(r.white_balance == pytest.approx((1 / rg, 1 / bg), rel=1e-3) for r in rows)
    # every row holds the exposure the sensor reported for the frame that was kept
    delivered = {round(md["ExposureTime"] / 1e6, 6) for md in picam.returned}
    assert {round(r.exposure_time_s, 6) for r in rows} <= delivered
    for r in rows:
        assert r.extra["achieved_ev"] == pytest.approx(
            math.log2(r.exposure_time_s * r.analogue_gain)
        )
    # latency: from the deadline to the exposure start, on the IMX708's 14 fps frame grid. The
    # next shot's controls go out ahead of its deadline (Camera.prepare), so the frame starting
    # nearest the deadline is kept, up to half a frame before or after it; only the first
    # shot, due at once, waits for the settling.
    frame_s = picam.returned[-1]["FrameDuration"] / 1e6
    first, *rest = summary.latencies_ms
    assert -1e3 * frame_s / 2 <= first <= 1e3 * 5 * (frame_s + 0.02)
    assert rest and all(-1e3 * frame_s / 2 <= lat <= 1e3 * (frame_s / 2 + 0.02) for lat in rest)
