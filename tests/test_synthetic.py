"""Tests of the synthetic mountain scene and sequence generator."""

from __future__ import annotations

import numpy as np
import pytest

from skylapse import sky, synthetic

W, H = 320, 180


@pytest.fixture(scope="module")
def scene() -> synthetic.MountainScene:
    return synthetic.mountain_scene(W, H, seed=3)


def test_scene_is_deterministic_for_a_seed_and_differs_between_seeds(scene):
    again = synthetic.mountain_scene(W, H, seed=3)
    other = synthetic.mountain_scene(W, H, seed=4)
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
        frame = synthetic.render_frame(scene, sun_altitude_deg=alt)
        assert frame.dtype == np.float32 and frame.shape == (H, W, 3)
        mean_log = synthetic.central_log2_luminance(frame)
        assert -4.5 < mean_log < -1.0  # mean luminance between 0.045 and 0.5
        assert frame.max() < 1.0
    metered = synthetic.render_frame(scene, sun_altitude_deg=10.0)
    ev = float(sky.ev100(10.0))
    under = synthetic.render_frame(scene, sun_altitude_deg=10.0, exposure_ev=ev + 2.0)
    np.testing.assert_allclose(under * 4.0, metered, rtol=1e-5, atol=1e-7)


def test_sky_is_warm_at_sunset_and_blue_in_the_blue_hour():
    horizon = H * 0.6
    golden = synthetic.sky_radiance(W, H, 1.0, horizon_row=horizon)
    blue = synthetic.sky_radiance(W, H, -6.0, horizon_row=horizon)
    low_rows = slice(int(horizon) - 20, int(horizon) - 5)
    g = golden[low_rows].mean(axis=(0, 1))
    b = blue[low_rows].mean(axis=(0, 1))
    assert g[0] > 1.5 * g[2]  # red over blue near the horizon at sunset
    assert b[2] > 1.3 * b[0]  # blue over red in the blue hour
    # The zenith is darker than the horizon by day.
    day = synthetic.sky_radiance(W, H, 30.0, horizon_row=horizon)
    assert day[0].mean() < day[low_rows].mean()


def test_clouds_drift_with_the_wind():
    layer = synthetic.cloud_layer(W, H, seed=1, coverage=0.5, wind_px_per_s=(2.0, 0.0),
                                  evolve_s=1e9)
    a0, a1 = layer.alpha(0.0), layer.alpha(4.0)
    assert a0.shape == (H, W) and a0.min() >= 0.0 and a0.max() <= 1.0
    cloudy = (layer.alpha(0.0)[: H // 2] > 0.05).mean()
    assert 0.15 < cloudy < 0.9
    # After 4 s at 2 px/s the pattern has moved 8 px right: compare with a shifted copy.
    moved = np.abs(a1[:, 8:] - a0[:, :-8]).mean()
    still = np.abs(a1 - a0).mean()
    assert moved < 0.2 * still


def test_render_with_clouds_changes_only_the_sky(scene):
    layer = synthetic.cloud_layer(W, H, seed=2, coverage=0.6, horizon_row=scene.horizon_row)
    clear = synthetic.render_frame(scene, 100.0, sun_altitude_deg=5.0)
    cloudy = synthetic.render_frame(scene, 100.0, sun_altitude_deg=5.0, clouds=layer)
    diff = np.abs(cloudy - clear).sum(axis=2)
    assert diff[scene.sky_mask == 1.0].mean() > 0.01
    assert diff[scene.sky_mask == 0.0].max() < 1e-6
