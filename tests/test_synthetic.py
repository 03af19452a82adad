"""Tests of the mountain scene (skylapse.scene) and the sequence generator (skylapse.testing)."""

from __future__ import annotations

import numpy as np
import pytest

from skylapse import sky
from skylapse.scene import (
    MountainScene,
    cloud_layer,
    mountain_scene,
    render_frame,
    sky_radiance,
)
from skylapse.testing import SequenceSpec, SequenceTruth, central_log2_luminance, generate_sequence

W, H = 320, 180


@pytest.fixture(scope="module")
def scene() -> MountainScene:
    return mountain_scene(W, H, seed=3)


def test_scene_is_deterministic_for_a_seed_and_differs_between_seeds(scene):
    again = mountain_scene(W, H, seed=3)
    other = mountain_scene(W, H, seed=4)
    np.testing.assert_array_equal(scene.reflectance, again.reflectance)
    np.testing.assert_array_equal(scene.depth, again.depth)
    assert np.abs(scene.reflectance - other.reflectance).mean() > 0.01


def test_scene_layout_sky_above_terrain_below(scene):
    assert scene.reflectance.shape == (H, W, 3) and scene.reflectance.dtype == np.float32
    assert scene.sky_mask[0].min() == 1.0  # the top row is sky everywhere
    assert scene.sky_mask[-1].max() == 0.0  # the bottom row is foreground everywhere
    sky_frac = scene.sky_mask.mean()
    assert 0.15 < sky_frac < 0.6
    terrain = scene.sky_mask < 0.5
    assert scene.depth[terrain].max() < 1e5 <= scene.depth[~terrain].min()
    # Nearer is lower in the frame: the foreground is much closer than the far ridge.
    assert np.median(scene.depth[-5:]) < 0.1 * np.median(scene.depth[terrain])
    assert scene.reflectance.min() >= 0.0 and scene.reflectance.max() <= 0.95
    # Snow on the high peaks: some bright terrain, but not most of it.
    bright = (scene.reflectance.mean(axis=2) > 0.6) & terrain
    assert 0.005 < bright.sum() / terrain.sum() < 0.3


def test_metered_render_is_normally_exposed_and_exposure_scales_by_ev(scene):
    for alt in (20.0, 3.0, -5.0):
        frame = render_frame(scene, sun_altitude_deg=alt)
        assert frame.dtype == np.float32 and frame.shape == (H, W, 3)
        mean_log = central_log2_luminance(frame)
        assert -4.5 < mean_log < -1.0  # mean luminance between 0.045 and 0.5
        assert frame.max() < 1.0
    metered = render_frame(scene, sun_altitude_deg=10.0)
    ev = float(sky.ev100(10.0))
    under = render_frame(scene, sun_altitude_deg=10.0, exposure_ev=ev + 2.0)
    np.testing.assert_allclose(under * 4.0, metered, rtol=1e-5, atol=1e-7)


def test_sky_is_warm_at_sunset_and_blue_in_the_blue_hour():
    horizon = H * 0.6
    golden = sky_radiance(W, H, 1.0, horizon_row=horizon)
    blue = sky_radiance(W, H, -6.0, horizon_row=horizon)
    low_rows = slice(int(horizon) - 20, int(horizon) - 5)
    g = golden[low_rows].mean(axis=(0, 1))
    b = blue[low_rows].mean(axis=(0, 1))
    assert g[0] > 1.5 * g[2]  # red over blue near the horizon at sunset
    assert b[2] > 1.3 * b[0]  # blue over red in the blue hour
    # The zenith is darker than the horizon by day.
    day = sky_radiance(W, H, 30.0, horizon_row=horizon)
    assert day[0].mean() < day[low_rows].mean()


def test_clouds_drift_with_the_wind():
    layer = cloud_layer(W, H, seed=1, coverage=0.5, wind_px_per_s=(2.0, 0.0), evolve_s=1e9)
    a0, a1 = layer.alpha(0.0), layer.alpha(4.0)
    assert a0.shape == (H, W) and a0.min() >= 0.0 and a0.max() <= 1.0
    cloudy = (layer.alpha(0.0)[: H // 2] > 0.05).mean()
    assert 0.15 < cloudy < 0.9
    # After 4 s at 2 px/s the pattern has moved 8 px right: compare with a shifted copy.
    moved = np.abs(a1[:, 8:] - a0[:, :-8]).mean()
    still = np.abs(a1 - a0).mean()
    assert moved < 0.2 * still


def test_render_with_clouds_changes_only_the_sky(scene):
    layer = cloud_layer(W, H, seed=2, coverage=0.6, horizon_row=scene.horizon_row)
    clear = render_frame(scene, 100.0, sun_altitude_deg=5.0)
    cloudy = render_frame(scene, 100.0, sun_altitude_deg=5.0, clouds=layer)
    diff = np.abs(cloudy - clear).sum(axis=2)
    assert diff[scene.sky_mask == 1.0].mean() > 0.01
    assert diff[scene.sky_mask == 0.0].max() < 1e-6


def _read_linear(path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rgb = bgr[..., ::-1].astype(np.float64) / 255.0
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def test_sequence_files_exif_and_determinism(tmp_path):
    from PIL import Image

    a = generate_sequence(tmp_path / "a", SequenceSpec(frames=6, size=(W, H), seed=5))
    b = generate_sequence(tmp_path / "b", SequenceSpec(frames=6, size=(W, H), seed=5))
    c = generate_sequence(tmp_path / "c", SequenceSpec(frames=6, size=(W, H), seed=6))
    files = sorted((tmp_path / "a").glob("frame_*.jpg"))
    assert [f.name for f in files] == [f"frame_{i:05d}.jpg" for i in range(6)]
    assert all(5_000 < f.stat().st_size < 200_000 for f in files)
    for fa in files:
        assert fa.read_bytes() == (tmp_path / "b" / fa.name).read_bytes()
    assert a == b and a != c
    assert SequenceTruth.load(tmp_path / "a") == a
    with Image.open(files[3]) as im:
        assert im.size == (W, H)
        exif = im.getexif().get_ifd(0x8769)
    assert exif[0x9003] == "2024:09:21 18:40:30"  # 3 frames x 10 s after 18:40:00
    assert exif[0x9291] == "000000"  # SubSecTimeOriginal in microseconds
    assert float(exif[0x829A]) == pytest.approx(1 / 250, rel=1e-4)
    assert exif[0x8827] == 100 and float(exif[0x829D]) == pytest.approx(8.0)


def test_written_brightness_matches_truth_and_flicker_is_as_recorded(tmp_path):
    clean = generate_sequence(
        tmp_path / "clean",
        SequenceSpec(
            frames=8,
            size=(W, H),
            fmt="png",
            flicker_ev_std=0.0,
            shake_px=0.0,
            drift_px_per_frame=0.0,
            rotation_deg=0.0,
            seed=2,
        ),
    )
    measured = np.array(
        [central_log2_luminance(_read_linear(tmp_path / "clean" / f.file)) for f in clean.frames]
    )
    truth = clean.column("log2_luminance")
    np.testing.assert_allclose(measured, truth, atol=0.01)
    # Smooth, accelerating sunset: -3 EV over the sequence, the last steps the largest.
    assert truth[-1] - truth[0] == pytest.approx(-3.0, abs=0.1)
    steps = np.diff(truth)
    assert np.all(steps < 0) and steps[-1] < 3 * steps[1]

    flick = generate_sequence(
        tmp_path / "flicker",
        SequenceSpec(
            frames=8,
            size=(W, H),
            fmt="png",
            flicker_ev_std=0.2,
            shake_px=0.0,
            drift_px_per_frame=0.0,
            rotation_deg=0.0,
            seed=2,
        ),
    )
    measured_f = np.array(
        [central_log2_luminance(_read_linear(tmp_path / "flicker" / f.file)) for f in flick.frames]
    )
    np.testing.assert_allclose(flick.column("log2_luminance"), truth, atol=1e-9)
    np.testing.assert_allclose(measured_f - truth, flick.column("flicker_ev"), atol=0.03)
    assert flick.column("flicker_ev").std() > 0.08


def test_shake_truth_matches_the_written_shift(tmp_path):
    import cv2

    # Fixed light, so that only the shake differs between frames.
    truth = generate_sequence(
        tmp_path,
        SequenceSpec(
            frames=4,
            size=(640, 360),
            fmt="png",
            flicker_ev_std=0.0,
            shake_px=3.0,
            drift_px_per_frame=0.5,
            rotation_deg=0.0,
            noise=0.5,
            clouds=False,
            seed=8,
            sunset_ev=0.0,
            sun_altitude_deg=(-5.0, -5.0),
        ),
    )
    ref = cv2.imread(str(tmp_path / truth.frames[0].file), cv2.IMREAD_GRAYSCALE)
    win = cv2.createHanningWindow((640, 180), cv2.CV_32F)
    for f in truth.frames[1:]:
        img = cv2.imread(str(tmp_path / f.file), cv2.IMREAD_GRAYSCALE)
        (sx, sy), _ = cv2.phaseCorrelate(
            ref[180:].astype(np.float32), img[180:].astype(np.float32), win
        )
        # Windowed phase correlation is good to about a tenth of a pixel.
        assert sx == pytest.approx(f.dx - truth.frames[0].dx, abs=0.2)
        assert sy == pytest.approx(f.dy - truth.frames[0].dy, abs=0.2)


def test_holy_grail_ramp_steps_are_in_exif_and_in_the_frames(tmp_path):
    from PIL import Image

    truth = generate_sequence(
        tmp_path,
        SequenceSpec(
            frames=12,
            size=(W, H),
            fmt="jpg",
            flicker_ev_std=0.0,
            shake_px=0.0,
            drift_px_per_frame=0.0,
            rotation_deg=0.0,
            ramp_ev=2.0,
            ramp_step_ev=1 / 3,
            seed=1,
        ),
    )
    cam = truth.column("camera_ev")
    assert cam[0] == 0.0 and cam[-1] == pytest.approx(2.0)
    assert np.allclose(np.round(cam * 3), cam * 3)  # whole 1/3 EV steps
    err = truth.column("exposure_error_ev")
    assert np.all((err <= 1e-9) & (err > -1 / 3 - 1e-9)) and err.min() < -0.1
    for f in truth.frames:
        with Image.open(tmp_path / f.file) as im:
            t = float(im.getexif().get_ifd(0x8769)[0x829A])
        assert np.log2(t * 250) == pytest.approx(f.camera_ev, abs=1e-3)
        measured = central_log2_luminance(_read_linear(tmp_path / f.file))
        assert measured - f.log2_luminance == pytest.approx(f.exposure_error_ev, abs=0.03)


def test_clouds_drifting_with_a_vertical_wind_have_no_seam():
    layer = cloud_layer(640, 360, seed=1, wind_px_per_s=(0.6, 0.4))
    for t in (0.0, 300.0, 600.0, 900.0):
        # a seam shows as one row-to-row step far above the texture's own
        steps = np.abs(np.diff(layer.alpha(t), axis=0)).mean(axis=1)
        assert steps.max() < 0.05, t


def test_sequence_spec_rejects_a_bad_format_or_frame_count():
    with pytest.raises(ValueError, match="fmt"):
        SequenceSpec(fmt="tiff")
    with pytest.raises(ValueError, match="frames"):
        SequenceSpec(frames=0)
