"""Deflicker on synthetic mountain sequences: textured static ground, a sky with moving bright
clouds, sensor noise, an accelerating sunset, random exposure flicker, optional shake and known
camera exposure steps. Residual flicker is measured as the benchmark does: std over frames of
(output mean log2 luminance - ground truth's) in the central region."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from skylapse.imaging import srgb
from skylapse.imaging.luma import linear_luminance
from skylapse.processing import deflicker as dfk

W, H, MARGIN = 320, 180, 12


def _scene(rng: np.random.Generator, sky: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Linear-light base image (with a margin for shake) and its sky mask."""
    wc, hc = W + 2 * MARGIN, H + 2 * MARGIN
    x = np.arange(wc)
    skyline = 0.5 * hc + 0.1 * hc * np.sin(x / wc * 5.0) + 0.04 * hc * np.sin(x / wc * 17 + 1)
    yy = np.arange(hc)[:, None]
    ground = yy >= skyline[None, :]
    fine = cv2.GaussianBlur(rng.random((hc, wc)).astype(np.float32), (0, 0), 1.5)
    coarse = cv2.GaussianBlur(rng.random((hc, wc)).astype(np.float32), (0, 0), 6.0)
    fine = (fine - fine.mean()) / fine.std()
    coarse = (coarse - coarse.mean()) / coarse.std()
    rock = np.clip(0.15 * 2 ** (0.7 * fine + 0.7 * coarse), 0.03, 0.6)
    gradient = sky * (1.2 - 0.5 * yy / hc) * np.ones((1, wc))
    return np.where(ground, rock, gradient).astype(np.float32), ~ground


def _clouds(rng: np.random.Generator, n_frames: int, count: int = 12):
    """A function frame -> cloud opacity: soft blobs drifting right across the sky."""
    wc, hc = W + 2 * MARGIN, H + 2 * MARGIN
    cx = rng.uniform(0, 1.6, count) * wc
    cy = rng.uniform(0.05, 0.4, count) * hc
    r = rng.uniform(0.09, 0.16, count) * wc
    v = rng.uniform(0.6, 1.4, count) * 1.5 * wc / n_frames
    step = 4  # soft blobs: evaluate on a coarse grid, then interpolate
    yy, xx = (g * step for g in np.mgrid[0 : hc // step + 1, 0 : wc // step + 1].astype(np.float32))

    def opacity(i: int) -> np.ndarray:
        a = np.zeros(xx.shape, np.float32)
        for k in range(count):
            x0 = (cx[k] + v[k] * i) % (1.6 * wc) - 0.3 * wc
            d2 = ((xx - x0) ** 2 + ((yy - cy[k]) * 1.6) ** 2) / r[k] ** 2
            a = np.maximum(a, np.exp(-(d2**2)))
        return cv2.resize(a, (wc, hc), interpolation=cv2.INTER_LINEAR)

    return opacity


def _encode(linear: np.ndarray) -> np.ndarray:
    return np.repeat(srgb.from_linear(linear)[..., None], 3, axis=2)


def make_sequence(
    n: int = 120,
    flicker: float = 0.08,
    shake: float = 0.0,
    seed: int = 0,
    sunset_ev: float = -2.0,
    camera_ev: np.ndarray | None = None,
    cloud: float = 1.0,
    sky: float = 0.25,
):
    """Yields (observed uint16 frame, ground-truth uint16 frame, cloud cover) per frame."""
    rng = np.random.default_rng(seed)
    base, sky_mask = _scene(rng, sky)
    opacity = _clouds(rng, n)
    t = np.arange(n) / (n - 1)
    trend = sunset_ev * (np.exp(2.5 * t) - 1) / (np.exp(2.5) - 1)  # accelerating
    errors = rng.normal(0.0, flicker, n)
    cam = np.zeros(n) if camera_ev is None else camera_ev
    centre = ((W + 2 * MARGIN) / 2, (H + 2 * MARGIN) / 2)
    for i in range(n):
        a = opacity(i) * sky_mask
        scene = base * (1 - a) + cloud * a
        m = cv2.getRotationMatrix2D(centre, rng.normal(0, 0.1) if shake else 0.0, 1.0)
        m[:, 2] += rng.normal(0, shake, 2) - MARGIN if shake else -MARGIN
        view = cv2.warpAffine(scene, m, (W, H), flags=cv2.INTER_LINEAR)
        truth = view * 2 ** (trend[i] + cam[i])
        noisy = truth * 2 ** errors[i]
        noisy = noisy + rng.normal(0, 0.01, noisy.shape).astype(np.float32) * np.sqrt(noisy)
        cover = float(np.mean(a[MARGIN:-MARGIN, MARGIN:-MARGIN] > 0.3))
        yield _encode(noisy), _encode(truth), cover


def _central_log_luminance(frame: np.ndarray) -> float:
    lum = linear_luminance(frame[H // 6 : -H // 6, W // 6 : -W // 6])
    return float(np.mean(np.log2(np.maximum(lum, 1e-4))))


def run_deflicker(frames, known_ev=None, analysis_scale: int = 2, **kwargs):
    """Both passes; returns (residual flicker, residual without correction, outputs' logs)."""
    frames = list(frames)
    analysis = dfk.DeflickerAnalysis(**kwargs)
    for i, (obs, _, _) in enumerate(frames):
        reduced = cv2.resize(
            obs, (W // analysis_scale, H // analysis_scale), interpolation=cv2.INTER_AREA
        )
        analysis.add(reduced, None if known_ev is None else known_ev[i])
    gains = analysis.gains()
    out = np.array(
        [
            _central_log_luminance(dfk.apply_gain(o, g))
            for (o, _, _), g in zip(frames, gains, strict=True)
        ]
    )
    raw = np.array([_central_log_luminance(o) for o, _, _ in frames])
    truth = np.array([_central_log_luminance(t) for _, t, _ in frames])
    return float(np.std(out - truth)), float(np.std(raw - truth)), out, truth, analysis


@pytest.fixture(scope="module")
def cloudy_sequence():
    return list(make_sequence(seed=1))


@pytest.fixture(scope="module")
def cloudy_result(cloudy_sequence):
    return run_deflicker(cloudy_sequence)


def test_exposure_ev_counts_stops_of_image_brightness():
    assert dfk.exposure_ev(1.0) == 0.0
    assert dfk.exposure_ev(1 / 100, iso=200, f_number=2.0) == pytest.approx(
        math.log2(1 / 100) + 1 - 2
    )
    assert dfk.exposure_ev(2 / 100) - dfk.exposure_ev(1 / 100) == pytest.approx(1.0)
    assert dfk.exposure_ev(0.01, f_number=4) - dfk.exposure_ev(0.01, f_number=2.8) < 0
    with pytest.raises(ValueError):
        dfk.exposure_ev(0.0)


def test_apply_gain_matches_the_exact_linear_light_table():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 65536, (90, 160, 3), dtype=np.uint16)
    frame[0, :, :] = np.arange(160 * 3).reshape(160, 3) * 13  # cover the toe and the knee
    for gain, tol in [
        (0.9, 2),
        (1.1, 2),
        (0.71, 25),
        (1.41, 25),
        (0.5, 110),
        (2.0, 110),
        (2.7, 0),
        (0.3, 0),
    ]:
        if abs(math.log2(gain)) > 1:  # tables cached per 1/1000 EV
            gain = 2.0 ** (round(math.log2(gain) * 1000) / 1000)
        exact = srgb.gain_lut(gain)[frame]
        out = dfk.apply_gain(frame, gain)
        assert out.dtype == np.uint16 and out.shape == frame.shape
        assert np.abs(out.astype(int) - exact).max() <= tol, gain
    same = dfk.apply_gain(frame, 1.0)
    assert same is not frame and np.array_equal(same, frame)
    out = np.empty_like(frame)
    assert dfk.apply_gain(frame, 0.8, out=out) is out
    assert np.abs(out.astype(int) - srgb.gain_lut(0.8)[frame]).max() <= 25
    with pytest.raises(ValueError):
        dfk.apply_gain(frame, 0.8, out=np.empty((2, 2, 3), np.uint16))  # wrong shape


def test_smoother_keeps_an_accelerating_trend_without_running_ahead():
    n = 200
    t = np.arange(n) / (n - 1)
    trend = -3.0 * (np.exp(2.5 * t) - 1) / (np.exp(2.5) - 1)
    quadratic = -3.0 * t**2
    # the null space is the quadratics: kept exactly, ends included
    np.testing.assert_allclose(dfk.smooth_log_exposure(quadratic), quadratic, atol=1e-6)
    assert np.abs(dfk.smooth_log_exposure(trend, robust_iterations=0) - trend).max() < 0.01
    rng = np.random.default_rng(3)
    errs, forward_errs = [], []
    for _ in range(10):
        noisy = trend + rng.normal(0, 0.08, n)
        errs.append(dfk.smooth_log_exposure(noisy) - trend)
        # a 5-frame forward window (ffmpeg deflicker's default size) for comparison
        padded = np.concatenate([noisy, np.repeat(noisy[-1], 4)])
        forward = np.convolve(padded, np.ones(5) / 5, mode="valid")[:n]
        forward_errs.append(forward - trend)
    errs, forward_errs = np.array(errs), np.array(forward_errs)
    assert np.std(errs, axis=1).mean() < 0.016  # 0.08 EV flicker -> ~0.011
    assert np.std(forward_errs, axis=1).mean() > 0.035
    # zero phase: no lead or lag on the steepest (last) quarter, where the forward one leads
    late = slice(150, 195)
    assert abs(errs[:, late].mean()) < 0.01
    assert forward_errs[:, late].mean() < -0.05


def test_robust_offset_ignores_a_large_minority_of_changed_blocks():
    rng = np.random.default_rng(0)
    ratios = np.concatenate([0.3 + rng.normal(0, 0.01, 60), rng.uniform(0.5, 2.0, 40)])
    assert dfk.robust_log_offset(ratios, np.ones(100)) == pytest.approx(0.3, abs=0.01)
    assert math.isnan(dfk.robust_log_offset(ratios, np.zeros(100)))


def test_flicker_removed_and_trend_kept_under_moving_clouds(cloudy_sequence, cloudy_result):
    cover = np.mean([c for _, _, c in cloudy_sequence])
    assert 0.3 <= cover <= 0.45  # clouds cover 30-40% of the frame
    residual, uncorrected, out, truth, _ = cloudy_result
    print(f"clouds: residual {residual:.4f} EV, uncorrected {uncorrected:.4f} EV")
    assert uncorrected > 0.06
    assert residual < 0.02
    # the -2 EV sunset is kept (it is not flattened as if it were flicker)
    assert out[-1] - out[0] == pytest.approx(truth[-1] - truth[0], abs=0.06)


def test_a_whole_frame_mean_is_biased_by_clouds_where_blocks_are_not(
    cloudy_sequence, cloudy_result
):
    means = []
    for obs, _, _ in cloudy_sequence:
        means.append(math.log2(float(linear_luminance(obs).mean())))
    naive_gains = np.exp2(dfk.smooth_log_exposure(np.array(means)) - np.array(means))
    out = [
        _central_log_luminance(dfk.apply_gain(o, g))
        for (o, _, _), g in zip(cloudy_sequence, naive_gains, strict=True)
    ]
    truth = [_central_log_luminance(t) for _, t, _ in cloudy_sequence]
    naive_residual = float(np.std(np.subtract(out, truth)))
    residual = cloudy_result[0]
    print(f"whole-frame mean: residual {naive_residual:.4f} EV, blocks: {residual:.4f} EV")
    assert naive_residual > 1.5 * residual


def test_robust_to_camera_shake():
    frames = list(make_sequence(seed=2, shake=1.5))
    residual, uncorrected, *_ = run_deflicker(frames)
    print(f"shake 1.5 px: residual {residual:.4f} EV, uncorrected {uncorrected:.4f} EV")
    assert residual < 0.02


def test_clipped_regions_are_ignored():
    # a burnt-out sky (clouds and sky well past white) over 40% of the frame
    frames = list(make_sequence(n=60, seed=4, sky=1.3, cloud=2.0, sunset_ev=0.0))
    lum_logs, valid = dfk.block_log_luminance(frames[0][0])
    assert 0.3 < 1 - valid.mean() < 0.6  # the clipped blocks are flagged
    assert np.isfinite(lum_logs).all()
    *_, analysis = run_deflicker(frames, cutoff_frames=30)
    # judged on the unclipped ground (the clipped sky cannot show a gain)
    ground = (slice(int(0.8 * H), None), slice(None))
    out = [
        np.log2(linear_luminance(dfk.apply_gain(o[ground], g))).mean()
        for (o, _, _), g in zip(frames, analysis.gains(), strict=True)
    ]
    truth = [np.log2(linear_luminance(t[ground])).mean() for _, t, _ in frames]
    raw = [np.log2(linear_luminance(o[ground])).mean() for o, _, _ in frames]
    residual, uncorrected = np.std(np.subtract(out, truth)), np.std(np.subtract(raw, truth))
    print(f"clipped sky: residual {residual:.4f} EV, uncorrected {uncorrected:.4f} EV")
    assert uncorrected > 0.06
    assert residual < 0.025  # 60 frames: the smoother averages fewer of them


def test_known_exposure_steps_are_undone_not_kept_as_jumps():
    # holy-grail ramp: the sun sets (-2 EV), the camera opens 1/3 EV every 40 frames
    n = 120
    camera = np.floor(np.arange(n) / 40) / 3
    frames = list(make_sequence(n=n, seed=5, flicker=0.04, camera_ev=camera, cloud=0.7))
    known = [dfk.exposure_ev(1 / 200 * 2**c) for c in camera]
    _, _, out, truth, analysis = run_deflicker(frames, known_ev=known)
    steps = np.flatnonzero(np.diff(camera)) + 1
    assert np.abs(np.diff(truth))[steps - 1].min() > 0.25  # the steps are in the input ...
    # ... and in the measurement, which must not read them as scene changes
    assert np.abs(np.diff(analysis.measured))[steps - 1].min() > 0.25
    jumps = np.abs(np.diff(out))
    # what the ramp stands for: the same sunset under a continuous camera ramp
    ramp = np.arange(n) / 120 - 1 / 6 + 1 / 240
    np.testing.assert_allclose(dfk.camera_ramp(camera), ramp, atol=1e-9)
    deviation = out - (truth - camera + ramp)
    deviation -= deviation.mean()
    *_, blind_out, _, _ = run_deflicker(frames, known_ev=None)
    blind = blind_out - (truth - camera + ramp)
    blind -= blind.mean()
    print(
        f"ramp: largest output jump {jumps.max():.4f} EV; deviation from the intended ramp "
        f"std {np.std(deviation):.4f} / max {np.abs(deviation).max():.4f} EV with EXIF, "
        f"std {np.std(blind):.4f} / max {np.abs(blind).max():.4f} EV without"
    )
    assert jumps.max() < 0.04
    assert np.std(deviation) < 0.012 and np.abs(deviation).max() < 0.04
    assert np.std(blind) > 3 * np.std(deviation)


def test_analysis_accepts_grey_uint8_and_float_luminance():
    rng = np.random.default_rng(0)
    lin = np.clip(rng.random((72, 128)).astype(np.float32) * 0.5 + 0.05, 0, 1)
    grey8 = np.rint(srgb.encode(lin) * 255).astype(np.uint8)
    a8, af = dfk.DeflickerAnalysis(), dfk.DeflickerAnalysis()
    for g in (1.0, 1.2, 0.8):
        a8.add(np.rint(srgb.encode(lin * g) * 255).astype(np.uint8))
        af.add(lin * g)
    np.testing.assert_allclose(np.diff(af.measured), np.log2([1.2, 0.8 / 1.2]), atol=1e-4)
    np.testing.assert_allclose(np.diff(a8.measured), np.log2([1.2, 0.8 / 1.2]), atol=0.01)
    assert grey8.ndim == 2 and len(a8) == 3 and a8.gains().shape == (3,)
    with pytest.raises(TypeError):
        dfk.DeflickerAnalysis().add(lin.astype(np.int32))


def test_short_sequences_and_unmeasurable_frames_get_finite_gains():
    rng = np.random.default_rng(0)
    lit = rng.uniform(0.1, 0.5, (36, 64)).astype(np.float32)
    for n in (1, 2, 3, 5):
        analysis = dfk.DeflickerAnalysis()
        for i in range(n):
            analysis.add(lit * 2 ** (0.1 * (-1) ** i))
        gains = analysis.gains()
        assert gains.shape == (n,) and np.all(np.isfinite(gains)) and np.all(gains > 0)
    # a black frame in the middle cannot be measured: it keeps gain 1 (no EXIF), others fine
    analysis = dfk.DeflickerAnalysis()
    for i in range(40):
        frame = np.zeros_like(lit) if i == 20 else lit * 2 ** rng.normal(0, 0.08)
        analysis.add(frame)
    assert math.isnan(analysis.measured[20])
    gains = analysis.gains()
    assert gains[20] == pytest.approx(1.0)
    assert np.all(np.isfinite(gains))
    corrected = analysis.measured + np.log2(gains)
    assert np.nanstd(corrected) < 0.5 * np.nanstd(analysis.measured)
    assert np.nanmax(np.abs(np.diff(corrected))) < 0.01  # frame to frame: smooth


def test_whittaker_solver_matches_a_dense_solution():
    rng = np.random.default_rng(0)
    for n in (4, 7, 48, 301):
        y = rng.normal(0, 0.1, n).cumsum()
        w = rng.uniform(0.2, 1.0, n)
        w[n // 2] = 0.0
        for cutoff in (8.0, 80.0):
            lam = 1.0 / (2.0 * math.sin(math.pi / cutoff)) ** 6
            d = np.diff(np.eye(n), 3, axis=0)
            dense = np.linalg.solve(np.diag(w) + lam * d.T @ d, w * y)
            smooth = dfk.smooth_log_exposure(y, cutoff, weights=w, robust_iterations=0)
            np.testing.assert_allclose(smooth, dense, atol=1e-6)


def test_automatic_smoothing_does_not_follow_white_flicker():
    rng = np.random.default_rng(11)
    for n in (200, 1000):
        t = np.arange(n) / (n - 1)
        for trend in (np.zeros(n), -2.0 * t**2):
            for _ in range(5):
                flicker = rng.normal(0, 0.08, n)
                left = dfk.smooth_log_exposure(trend + flicker) - trend
                assert np.std(left - left.mean()) < 0.08 / 4  # ~0.008-0.015 measured
    # short: a period-40 wobble cannot be told from a trend, so judged on average
    reductions = []
    for _ in range(10):
        flicker = rng.normal(0, 0.08, 60)
        left = dfk.smooth_log_exposure(flicker)
        reductions.append(0.08 / np.std(left - left.mean()))
    assert np.mean(reductions) > 4


def test_short_fast_sunset_is_followed_without_an_error_ramp():
    # 48 frames, -2 EV accelerating: a fixed 80-frame cutoff is a global quadratic here
    frames = list(make_sequence(n=48, seed=7, sunset_ev=-2.0))
    residual, uncorrected, out, truth, _ = run_deflicker(frames)
    stiff, *_ = run_deflicker(frames, cutoff_frames=80)
    print(
        f"48 fast frames: residual {residual:.4f} EV (fixed 80: {stiff:.4f}), "
        f"uncorrected {uncorrected:.4f} EV"
    )
    assert uncorrected > 0.06
    assert residual < 0.025 and residual < 0.7 * stiff
    error = (out - truth) - np.mean(out - truth)
    assert np.abs(error[:6]).max() < 0.05  # no ramp of error at the start


def test_long_slow_sunset_is_still_smoothed_hard():
    frames = list(make_sequence(n=200, seed=8, sunset_ev=-3.0))
    residual, uncorrected, out, truth, _ = run_deflicker(frames)
    stiff, *_ = run_deflicker(frames, cutoff_frames=80)
    print(
        f"200 slow frames: residual {residual:.4f} EV (fixed 80: {stiff:.4f}), "
        f"uncorrected {uncorrected:.4f} EV"
    )
    assert uncorrected > 0.06
    assert residual < 0.011 and residual <= stiff + 0.001
    # the -3 EV sunset is kept, ends included (10-frame means: each frame keeps its noise)
    kept = out[-10:].mean() - out[:10].mean()
    assert kept == pytest.approx(truth[-10:].mean() - truth[:10].mean(), abs=0.04)  # 0.038


def test_pure_flicker_on_a_constant_scene():
    frames = list(make_sequence(n=80, seed=9, sunset_ev=0.0))
    residual, uncorrected, *_ = run_deflicker(frames)
    print(f"constant scene: residual {residual:.4f} EV, uncorrected {uncorrected:.4f} EV")
    assert uncorrected > 0.06
    assert residual < 0.015


@pytest.mark.parametrize("ev", [0.0, 0.12, -0.3, 1.5])
def test_apply_gain_in_place_equals_out_of_place(ev):
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 65536, size=(90, 160, 3), dtype=np.uint16)
    expected = dfk.apply_gain(frame, 2.0**ev)
    work = frame.copy()
    assert dfk.apply_gain(work, 2.0**ev, out=work) is work
    np.testing.assert_array_equal(work, expected)
