"""The simulated camera: light from the sun, sensor noise and clipping, focus, determinism."""

import asyncio
import itertools
import math
import time
from datetime import date, datetime, timedelta

import astral
import astral.sun
import numpy as np
import pytest

from skylapse import sky
from skylapse.capture.cameras import (
    CameraCapability,
    CameraConfig,
    CaptureSettings,
    SimulatedCamera,
    SimWeather,
    focus_score,
)
from skylapse.capture.cameras.simulated import Location, develop, sensor_readout
from skylapse.capture.clock import SimulatedClock
from skylapse.processing.srgb import luma, to_linear

SIZE = (320, 180)
DAY = date(2026, 3, 20)
LOC = Location()
CLEAR = SimWeather(cloud_cover=0.0)


def when_sun_at(altitude: float) -> datetime:
    # elevation 0: astral's time_at_elevation corrects for the horizon dip of a raised
    # observer, whereas elevation() (which the camera uses) is the true altitude
    obs = astral.Observer(LOC.latitude, LOC.longitude, 0.0)
    return astral.sun.time_at_elevation(obs, altitude, DAY, direction=astral.SunDirection.SETTING)


def camera(clock, size=SIZE, **kw) -> SimulatedCamera:
    kw.setdefault("weather", CLEAR)
    kw.setdefault("seed", 3)
    cam = SimulatedCamera(clock=clock, location=LOC, **kw)
    asyncio.run(cam.configure(CameraConfig(resolution=size)))
    cam.lens_position = cam.profile.focus.infinity_lens_position
    return cam


def metered(altitude: float, aperture: float = 2.0) -> float:
    return aperture**2 / 2.0 ** float(sky.ev100(altitude))


def mean_luma(frame) -> float:
    return float(luma(frame.pixels).mean())


def test_all_capabilities():
    cam = camera(SimulatedClock(when_sun_at(10)))
    assert cam.capabilities == set(CameraCapability) - {
        CameraCapability.RAW_DNG,
        CameraCapability.COLOUR_TEMPERATURE,  # white balance as (red, blue) gains
    }


def test_brightness_follows_the_sun():
    clock = SimulatedClock(when_sun_at(30))
    cam = camera(clock)
    metered_means, fixed = {}, {}
    fixed_t = metered(0.0)
    for alt in (30, 20, 5, 0, -4, -6):
        clock.set(when_sun_at(alt))
        frame = asyncio.run(cam.capture(CaptureSettings(exposure_time_s=metered(alt))))
        assert frame.metadata.extra["sun_altitude_deg"] == pytest.approx(alt, abs=0.3)
        metered_means[alt] = mean_luma(frame)
        fixed[alt] = mean_luma(asyncio.run(cam.capture(CaptureSettings(exposure_time_s=fixed_t))))
    # the sky table spans 14 EV over these altitudes; exposed for it, frames stay within a few EV
    logs = [math.log2(m) for m in metered_means.values()]
    assert max(logs) - min(logs) < 3.5
    assert all(0.01 < m < 0.2 for m in metered_means.values())
    # at one fixed exposure, the frame darkens as the table says (unclipped, above the floor)
    for a, b in ((5, 0), (0, -4), (5, -4)):
        measured = math.log2(fixed[a] / fixed[b])
        expected = float(sky.ev100(a) - sky.ev100(b))
        assert measured == pytest.approx(expected, abs=1.5)


def test_mean_level_is_linear_in_exposure():
    cam = camera(SimulatedClock(when_sun_at(5)))
    t = metered(5) / 2
    a = mean_luma(asyncio.run(cam.capture(CaptureSettings(exposure_time_s=t))))
    b = mean_luma(asyncio.run(cam.capture(CaptureSettings(exposure_time_s=2 * t))))
    c = mean_luma(asyncio.run(cam.capture(CaptureSettings(exposure_time_s=t, analogue_gain=2.0))))
    assert b / a == pytest.approx(2.0, rel=0.06)
    assert c / a == pytest.approx(2.0, rel=0.06)


def test_noise_grows_with_gain():
    cam = camera(SimulatedClock(when_sun_at(-2)))
    t = metered(-2)

    def temporal_noise(exposure, gain):
        s = CaptureSettings(exposure_time_s=exposure, analogue_gain=gain)
        f1, f2 = (asyncio.run(cam.capture(s)) for _ in range(2))
        d = luma(f1.pixels) - luma(f2.pixels)
        return float(d.std() / math.sqrt(2)), mean_luma(f1)

    low, low_mean = temporal_noise(t, 1.0)
    high, high_mean = temporal_noise(t / 16, 16.0)
    assert high_mean == pytest.approx(low_mean, rel=0.08)  # same brightness
    assert high > 2.5 * low  # ~sqrt(16) in the shot-noise regime


def test_overexposure_clips_at_white():
    cam = camera(SimulatedClock(when_sun_at(20)))
    ok = asyncio.run(cam.capture(CaptureSettings(exposure_time_s=metered(20))))
    over = asyncio.run(cam.capture(CaptureSettings(exposure_time_s=metered(20) * 16)))
    assert np.mean(ok.pixels == 65535) < 0.02
    clipped = np.mean(np.all(over.pixels == 65535, axis=2))
    assert clipped > 0.3
    assert mean_luma(over) < 1.0


def test_quantisation_and_clipping_of_the_sensor():
    flat = np.full((8, 8, 3), 0.5, np.float32)
    codes = sensor_readout(
        flat,
        np.ones(3, np.float32),
        np.zeros_like(flat),
        electrons_at_full_scale=10000,
        read_noise_e=3,
        dark_e=0,
        bit_depth=12,
    )
    assert codes.dtype == np.uint16 and np.all(codes == 2048)
    noisy = np.random.default_rng(1).standard_normal((64, 64, 3)).astype(np.float32)
    bright = sensor_readout(
        np.full((64, 64, 3), 3.0, np.float32),
        np.ones(3, np.float32),
        noisy,
        electrons_at_full_scale=5000,
        read_noise_e=3,
        dark_e=0,
        bit_depth=10,
    )
    assert bright.max() == 1023 and np.all(bright == 1023)
    ramp = np.linspace(0, 1, 4096, dtype=np.float32).reshape(64, 64, 1).repeat(3, axis=2)
    ten = sensor_readout(
        ramp,
        np.ones(3, np.float32),
        np.zeros_like(ramp),
        electrons_at_full_scale=5000,
        read_noise_e=0,
        dark_e=0,
        bit_depth=10,
    )
    assert len(np.unique(ten)) == 1024
    frame = develop(ten, 10, (1.0, 1.0), None)
    assert frame.dtype == np.uint16 and frame.max() == 65535 and frame.min() == 0


def test_white_balance_gains_scale_channels():
    cam = camera(SimulatedClock(when_sun_at(20)))
    t = metered(20) / 4
    daylight = asyncio.run(cam.capture(CaptureSettings(exposure_time_s=t)))
    unity = asyncio.run(
        cam.capture(CaptureSettings(exposure_time_s=t, white_balance_gains=(1.0, 1.0)))
    )
    r_gain, b_gain = cam.profile.colour.daylight_wb_gains
    lin_d, lin_u = to_linear(daylight.pixels), to_linear(unity.pixels)
    ratio = lin_u.reshape(-1, 3).mean(axis=0) / lin_d.reshape(-1, 3).mean(axis=0)
    assert ratio[0] == pytest.approx(1 / r_gain, rel=0.05)
    assert ratio[1] == pytest.approx(1.0, rel=0.02)
    assert ratio[2] == pytest.approx(1 / b_gain, rel=0.05)
    assert unity.metadata.white_balance_gains == (1.0, 1.0)


def test_deterministic_for_a_seed():
    start = when_sun_at(3)

    def shots(seed):
        clock = SimulatedClock(start)
        cam = camera(clock, seed=seed, weather=SimWeather(cloud_cover=0.5))
        out = []
        for _ in range(2):
            out.append(asyncio.run(cam.capture()).pixels)
            asyncio.run(clock.sleep(30))
        return out

    a, b, c = shots(5), shots(5), shots(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])  # time moved on and the noise is fresh


def test_clouds_follow_weather_and_drift_with_the_wind():
    start = when_sun_at(15)

    def sky_change(wind):
        clock = SimulatedClock(start)
        cam = camera(
            clock, weather=SimWeather(cloud_cover=0.6, wind_speed_mps=wind, wind_from_deg=180.0)
        )
        s = CaptureSettings(exposure_time_s=metered(15))
        a = luma(asyncio.run(cam.capture(s)).pixels)[:45]
        clock.advance(120)
        b = luma(asyncio.run(cam.capture(s)).pixels)[:45]
        return float(np.abs(a - b).mean()), a

    windy, cloudy = sky_change(15.0)
    calm, _ = sky_change(0.0)
    assert windy > 2 * calm
    clear_cam = camera(SimulatedClock(start))
    clear = luma(
        asyncio.run(clear_cam.capture(CaptureSettings(exposure_time_s=metered(15)))).pixels
    )[:45]
    # clouds change the sky (they are dimmed by their cover, Kasten & Czeplak: 0.87 at 60 %)
    assert float(np.abs(cloudy - clear).mean()) > 0.12 * float(clear.mean())


def test_metadata_and_a_sunset_in_seconds():
    clock = SimulatedClock(when_sun_at(4))
    cam = camera(clock, size=(160, 90), weather=SimWeather(cloud_cover=0.0, temperature_c=-3.0))
    start_wall, start_sim = time.perf_counter(), clock.now()
    frames = []
    while clock.now() < start_sim + timedelta(minutes=60):
        frames.append(asyncio.run(cam.capture()))  # automatic exposure
        asyncio.run(clock.sleep(60))
    assert time.perf_counter() - start_wall < 15
    md = [f.metadata for f in frames]
    assert len(md) >= 55  # one a minute, less the time the shutter was open
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(md))
    assert md[-1].extra["sun_altitude_deg"] < -4
    exposure = [m.exposure_time_s * m.analogue_gain for m in md]
    assert all(b >= a for a, b in itertools.pairwise(exposure))
    assert math.log2(exposure[-1] / exposure[0]) > 8  # the light fell by more than 8 EV
    assert md[0].sensor_temperature_c == pytest.approx(-3.0 + cam.profile.thermal.self_heating_c)
    assert md[0].ev100 == pytest.approx(md[0].extra["scene_ev100"], abs=0.01)


def test_sharpness_peaks_at_the_calibrated_lens_position():
    cam = camera(SimulatedClock(when_sun_at(20)), size=(1920, 1080))
    t = metered(20)
    positions = [0.0, 0.3, 0.6, 0.9, 1.5, 4.0]
    scores = [
        asyncio.run(
            cam.capture(CaptureSettings(exposure_time_s=t, lens_position=p))
        ).metadata.focus_score
        for p in positions
    ]
    assert positions[int(np.argmax(scores))] == cam.profile.focus.infinity_lens_position
    assert scores[0] < scores[1] < scores[2] > scores[3] > scores[4] > scores[5]
    assert scores[2] > 1.5 * scores[0] and scores[2] > 4 * scores[-1]
    # the score recorded with the frame is the focus measure of its pixels
    frame = asyncio.run(cam.capture(CaptureSettings(exposure_time_s=t)))
    assert frame.metadata.focus_score == pytest.approx(focus_score(frame.pixels))


def test_autofocus_finds_infinity_quickly_at_1080p():
    cam = camera(SimulatedClock(when_sun_at(25)), size=(1920, 1080))
    cam.lens_position = 6.0
    start = time.perf_counter()
    position = asyncio.run(cam.autofocus())
    elapsed = time.perf_counter() - start
    assert position == pytest.approx(cam.profile.focus.infinity_lens_position, abs=0.15)
    assert cam.lens_position == position
    assert elapsed < 2.0


def test_fixed_infinity_profile_parks_the_lens():
    profile = SimulatedCamera().profile
    fixed = profile.model_copy(
        update={"focus": profile.focus.model_copy(update={"mode": "fixed_infinity"})}
    )
    clock = SimulatedClock(when_sun_at(25))
    cam = SimulatedCamera(profile=fixed, clock=clock, weather=CLEAR)
    asyncio.run(cam.configure(CameraConfig(resolution=(64, 36))))
    assert asyncio.run(cam.autofocus()) == profile.focus.infinity_lens_position


def test_raw_saved_when_configured(tmp_path):
    clock = SimulatedClock(when_sun_at(10))
    cam = SimulatedCamera(clock=clock, weather=CLEAR)
    asyncio.run(cam.configure(CameraConfig(resolution=(64, 36), raw=True)))
    frame = asyncio.run(cam.capture(CaptureSettings(dng_path=tmp_path / "f.dng")))
    assert frame.metadata.dng_path is not None and frame.metadata.dng_path.exists()
    import cv2

    raw = cv2.imread(str(frame.metadata.dng_path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (36, 64, 3)
    assert np.all(raw % 16 == 0)  # 12-bit codes in the top bits


def test_hdr_bracket_by_exposure_time():
    cam = camera(SimulatedClock(when_sun_at(-3)), size=(160, 90))
    t = metered(-3)
    frames = asyncio.run(cam.capture_hdr_sequence(CaptureSettings(exposure_time_s=t), [-2, 0, 2]))
    assert [f.metadata.exposure_time_s for f in frames] == pytest.approx([t / 4, t, 4 * t])
    assert {f.metadata.analogue_gain for f in frames} == {1.0}
    means = [mean_luma(f) for f in frames]
    assert means[1] / means[0] == pytest.approx(4.0, rel=0.1)
    assert means[2] > means[1]


def test_weather_from_an_observation():
    class Obs:
        cloud_cover_pct = 75.0
        wind_ms = 9.0

    w = SimWeather.from_observation(Obs(), wind_from_deg=90.0)
    assert (w.cloud_cover, w.wind_speed_mps, w.wind_from_deg) == (0.75, 9.0, 90.0)
