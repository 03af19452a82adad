import time

import cv2
import numpy as np
import pytest

from skylapse.capture.quality import image_quality_score, quality_components


def landscape(h=360, w=640, seed=0):
    """Sky gradient over a ridge, textured ground, and a scatter of sharp-edged shapes."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    img = np.broadcast_to(0.5 - 0.3 * y, (h, w)).copy()
    ridge = 0.55 + 0.1 * np.sin(9 * x) + 0.05 * np.sin(23 * x + 1)
    img = np.where(y > ridge, 0.12 + 0.05 * np.sin(40 * x) * np.cos(30 * y), img)
    img = img.astype(np.float32)
    for _ in range(30):
        cx, cy, r = rng.integers(0, w), rng.integers(h // 2, h), rng.integers(3, 20)
        cv2.circle(img, (int(cx), int(cy)), int(r), float(rng.uniform(0.02, 0.6)), -1)
    return cv2.GaussianBlur(img, (0, 0), 0.7)  # a good lens is not infinitely sharp


def noisy(img, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(img + sigma * rng.standard_normal(img.shape).astype(np.float32), 0, 1)


def test_good_frame_scores_high_and_each_fault_lowers_its_part():
    good = quality_components(landscape())
    assert good.score > 0.85 and good.focus > 0.8 and good.noise > 0.95
    assert good.clipping == pytest.approx(1.0)

    blurred = quality_components(cv2.GaussianBlur(landscape(), (0, 0), 3))
    assert blurred.focus < 0.3 and blurred.edge_blur_px > 2 * good.edge_blur_px
    assert blurred.score < good.score - 0.2

    grainy = quality_components(noisy(landscape(), 0.03))
    assert grainy.noise < 0.5 and grainy.noise_sigma > 0.01
    assert grainy.focus > 0.6  # noise is not mistaken for detail or for blur
    assert grainy.score < good.score - 0.1

    blown = quality_components(np.clip(landscape() * 3.0, 0, 1))
    assert blown.clipping < 0.5 and blown.score < good.score - 0.1


def test_focus_falls_monotonically_with_blur_and_ignores_contrast():
    base = landscape(seed=2)
    focus = [quality_components(cv2.GaussianBlur(base, (0, 0), s)).focus for s in (0.5, 1.5, 3)]
    assert focus[0] > focus[1] > focus[2]
    low_contrast = quality_components(0.2 + 0.25 * base)
    assert low_contrast.focus == pytest.approx(quality_components(base).focus, abs=0.15)


def test_noise_estimate_tracks_added_noise():
    base = landscape(seed=3)
    sig = [quality_components(noisy(base, s)).noise_sigma for s in (0.005, 0.01, 0.02)]
    assert sig[0] < sig[1] < sig[2]
    assert sig[2] / sig[1] == pytest.approx(2.0, rel=0.25)


def test_score_bounds_edge_cases_and_speed():
    assert 0.0 <= image_quality_score(np.zeros((90, 160), np.float32)) < 0.3  # all black
    assert 0.0 <= image_quality_score(np.ones((90, 160), np.float32)) < 0.3  # all white
    flat = quality_components(np.full((90, 160), 0.2, np.float32))
    assert flat.edge_blur_px is None and flat.focus == 1.0  # nothing to judge focus by
    with pytest.raises(ValueError):
        image_quality_score(np.zeros((9, 9, 3)))
    frame = noisy(cv2.resize(landscape(), (1920, 1080)), 0.01)
    image_quality_score(frame)
    t0 = time.perf_counter()
    image_quality_score(frame)
    assert time.perf_counter() - t0 < 0.25  # generous: ~30 ms on one core
