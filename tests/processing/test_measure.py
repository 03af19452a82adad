"""The bench's metrics, validated on images with known flicker and shifts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skylapse import synthetic
from skylapse.processing import measure as metrics


@pytest.fixture(scope="module")
def base_frame() -> np.ndarray:
    scene = synthetic.mountain_scene(640, 360, seed=11)
    lin = synthetic.render_frame(scene, sun_altitude_deg=-5.0)
    enc = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.clip(lin, 0, 1) ** (1 / 2.4) - 0.055)
    return np.rint(np.clip(enc, 0, 1) * 255).astype(np.uint8)


def _shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def test_register_translation_is_subpixel_accurate_under_a_brightness_change(base_frame):
    gray = cv2.cvtColor(base_frame, cv2.COLOR_RGB2GRAY)
    ref = gray[200:].astype(np.float32)
    for dx, dy in [(0.0, 0.0), (0.27, -0.13), (-1.6, 0.8), (4.3, 2.2)]:
        moved = _shift(gray, dx, dy)[200:].astype(np.float32) * 0.6 + 10  # darker, offset
        ex, ey = metrics.register_translation(ref, moved)
        assert ex == pytest.approx(dx, abs=0.04) and ey == pytest.approx(dy, abs=0.04)


def test_jitter_and_drift_of_known_shifts(base_frame):
    rng = np.random.default_rng(0)
    shifts = np.cumsum(rng.normal(0, 0.4, (12, 2)), axis=0)
    shifts[0] = 0
    frames = [_shift(base_frame, dx, dy) for dx, dy in shifts]
    res = metrics.residual_jitter_and_drift(frames)
    np.testing.assert_allclose(res.shifts, shifts, atol=0.05)
    steps = np.diff(shifts, axis=0)
    assert res.jitter_rms == pytest.approx(np.sqrt((steps**2).sum(1).mean()), abs=0.03)
    assert res.drift_max == pytest.approx(np.hypot(*shifts.T).max(), abs=0.05)
    still = metrics.residual_jitter_and_drift([base_frame] * 4)
    assert still.jitter_rms < 1e-3 and still.drift_max < 1e-3


def test_residual_flicker_measures_the_applied_gain(base_frame):
    rng = np.random.default_rng(1)
    ev = rng.normal(0, 0.1, 10)
    lin = metrics._linear_lut(8)[base_frame]
    frames = []
    for e in ev:
        v = np.clip(lin * 2.0**e, 0, 1)
        enc = np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)
        frames.append(np.rint(enc * 65535).astype(np.uint16))
    truth = np.full(10, metrics.central_log2_luminance(base_frame))
    res = metrics.residual_flicker(frames, truth)
    assert res.std == pytest.approx(ev.std(), abs=0.005)
    np.testing.assert_allclose(res.difference - res.difference.mean(), ev - ev.mean(), atol=0.01)
    # A constant offset is not flicker.
    assert metrics.residual_flicker(frames[:1] * 5, np.zeros(5)).std < 1e-9
    with pytest.raises(ValueError):
        metrics.residual_flicker(frames, truth[:3])
