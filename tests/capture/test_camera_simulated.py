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
    CameraError,
    CaptureSettings,
    SimulatedCamera,
    SimWeather,
    focus_score,
)
from skylapse.capture.cameras.simulated import Location
from skylapse.capture.cameras.simulated.sensor import develop, sensor_readout
from skylapse.capture.clock import SimulatedClock
from skylapse.imaging.luma import linear_luminance
from skylapse.imaging.srgb import to_linear

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
    return float(linear_luminance(frame.pixels).mean())


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
        d = linear_luminance(f1.pixels) - linear_luminance(f2.pixels)
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
        a = linear_luminance(asyncio.run(cam.capture(s)).pixels)[:45]
        clock.advance(120)
        b = linear_luminance(asyncio.run(cam.capture(s)).pixels)[:45]
        return float(np.abs(a - b).mean()), a

    windy, cloudy = sky_change(15.0)
    calm, _ = sky_change(0.0)
    assert windy > 2 * calm
    clear_cam = camera(SimulatedClock(start))
    clear = linear_luminance(
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


def test_autofocus_finds_infinity_at_1080p_from_one_rendered_instant():
    """What keeps the search fast (bench/capture_bench.py times it): the scene is rendered once
    and every lens position re-runs only the lens and sensor on the AF window."""
    cam = camera(SimulatedClock(when_sun_at(25)), size=(1920, 1080))
    cam.lens_position = 6.0
    renders = []
    render = cam.render_radiance
    cam.render_radiance = lambda *a, **k: renders.append(a) or render(*a, **k)  # type: ignore[method-assign]
    position = asyncio.run(cam.autofocus())
    assert position == pytest.approx(cam.profile.focus.infinity_lens_position, abs=0.15)
    assert cam.lens_position == position
    assert len(renders) == 1


def test_fixed_infinity_profile_parks_the_lens():
    profile = SimulatedCamera().profile
    fixed = profile.model_copy(
        update={"focus": profile.focus.model_copy(update={"mode": "fixed_infinity"})}
    )
    clock = SimulatedClock(when_sun_at(25))
    cam = SimulatedCamera(profile=fixed, clock=clock, weather=CLEAR)
    asyncio.run(cam.configure(CameraConfig(resolution=(64, 36))))
    assert asyncio.run(cam.autofocus()) == profile.focus.infinity_lens_position


def _block_means(image: np.ndarray, block: int = 8) -> np.ndarray:
    h, w = (d - d % block for d in image.shape[:2])
    return image[:h, :w].reshape(h // block, block, w // block, block, -1).mean(axis=(1, 3))


@pytest.mark.parametrize("profile_name", ["simulated", "imx519"])
def test_dng_is_a_bayer_mosaic_that_develops_back_to_the_scene(tmp_path, profile_name):
    """The DNG is real: LibRaw reads its CFA, black and white level and as-shot white balance,
    and develops it (linear, colour matrix from ColorMatrix1) back to the scene's linear render.

    Tolerance: compared as 8x8 block means where the scene is between 10 % and 85 % of full
    scale, so each block averages 64 photosites. Shot noise at 10 % of the IMX519's 4500 e-
    full well is 1/sqrt(450) = 4.7 % per pixel; its colour matrix, applied after the noise,
    amplifies it by its rows' norm (1.8), so ~1.1 % per block, and demosaicing and the lens's
    0.6 px softness move light across block edges: measured, the median block error is 1.0 %
    and 95 % of blocks are within 3.5 %; the test allows 2 % and 6 %. The channel means over
    all those blocks carry no noise to speak of and must agree within 1 %: a wrong black
    level (6 % of full scale at 12 bits), white balance (gains 1.5..1.9) or matrix (1.7 on
    the IMX519's diagonal) each miss by far more.
    """
    import rawpy

    from skylapse.capture.cameras import builtin_profile
    from skylapse.capture.cameras.simulated.camera import exposure_ev100

    profile = builtin_profile(profile_name)
    clock = SimulatedClock(when_sun_at(15))
    cam = SimulatedCamera(profile=profile, clock=clock, location=LOC, weather=CLEAR, seed=3)
    asyncio.run(cam.configure(CameraConfig(resolution=SIZE, raw=True)))
    assert CameraCapability.RAW_DNG in cam.capabilities
    cam.lens_position = profile.focus.infinity_lens_position
    path = tmp_path / "f.dng"
    frame = asyncio.run(cam.capture(CaptureSettings(dng_path=path)))
    assert frame.metadata.dng_path == path
    md = frame.metadata
    ev = exposure_ev100(md.exposure_time_s, md.analogue_gain, md.aperture_f)
    vignette = profile.lens.relative_illumination(*SIZE)[..., None]
    scene = np.clip(cam.render_radiance(md.timestamp, ev) * vignette, 0.0, 1.0)

    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image.shape == (SIZE[1], SIZE[0])  # one sample per photosite
        assert raw.color_desc == b"RGBG" and raw.raw_pattern.tolist() == [[0, 1], [3, 2]]
        black = profile.sensor.black_codes
        assert raw.black_level_per_channel == [black] * 4 and black > 0
        assert raw.white_level == 2**profile.sensor.bit_depth - 1
        r_gain, b_gain = profile.colour.daylight_wb_gains
        assert raw.camera_whitebalance[:3] == pytest.approx([r_gain, 1.0, b_gain], rel=1e-3)
        developed = raw.postprocess(
            output_bps=16,
            output_color=rawpy.ColorSpace.sRGB,
            gamma=(1.0, 1.0),
            use_camera_wb=True,
            no_auto_bright=True,
            adjust_maximum_thr=0.0,
        )
    linear = developed.astype(np.float64) / 65535.0
    got, want = _block_means(linear), _block_means(scene)
    usable = (want > 0.1) & (want < 0.85)
    assert usable.mean() > 0.3
    error = np.abs(got / np.where(usable, want, 1.0) - 1.0)[usable]
    assert np.median(error) < 0.02
    assert np.percentile(error, 95) < 0.06
    mask = usable.all(axis=2)
    assert got[mask].mean(axis=0) == pytest.approx(want[mask].mean(axis=0), rel=0.01)


def test_raw_stream_needs_a_size_the_dng_can_hold():
    cam = SimulatedCamera(clock=SimulatedClock(when_sun_at(10)), weather=CLEAR)
    with pytest.raises(CameraError, match="even height"):
        asyncio.run(cam.configure(CameraConfig(resolution=(64, 35), raw=True)))
    asyncio.run(cam.configure(CameraConfig(resolution=(64, 35))))  # no RAW: any size


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
