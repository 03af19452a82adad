"""A per-frame image quality score in 0..1 from clipping, focus and noise (pure functions).

Exported by the capture service as the metric ``image_quality_score``: a sudden fall flags a
fogged or dewy lens (focus), a failing exposure (clipping) or a night frame pushed too far
(noise). Work happens on the perceptually spaced square root of linear luminance, at most
``MAX_WIDTH`` pixels wide.

* **Noise**: Immerkær's Laplacian-difference operator, with the median absolute response instead
  of the mean so that edges and texture do not count as noise (J. Immerkær, "Fast noise variance
  estimation", CVIU 64(2), 1996; robust variant as in Donoho's MAD estimator).
* **Focus**: edge blur from the ratio of gradient magnitudes before and after a Gaussian blur of
  known width, on the strongest edges only (for a Gaussian-blurred step edge of width ``s`` the
  peak gradient falls by ``sqrt(s^2 + 2^2) / s`` under a 2-px blur), so it is independent of the
  scene's contrast and barely affected by noise (cf. the re-blur approach of Crété-Roffet et al.,
  "The blur effect", SPIE 6492, 2007).
* **Clipping**: the fractions of the frame at sensor white and lost in black.

API
---
``quality_components(frame_linear_luma) -> QualityComponents``  (clipping, focus, noise, score)
``image_quality_score(frame_linear_luma) -> float``               the combined score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MAX_WIDTH = 960
CLIP_LEVEL = 0.98
BLACK_LEVEL = 1.0 / 1024
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_REBLUR_SIGMA = 2.0
# noise (std of sqrt-luminance) at which the noise score starts falling, and where it reaches 0
_NOISE_GOOD, _NOISE_BAD = 0.004, 0.05
# edge blur (px, as measured by the re-blur ratio) at which the focus score is 1
_BLUR_GOOD_PX = 1.5


@dataclass(frozen=True)
class QualityComponents:
    """Each part in 0..1 (1 = good), the measurements behind them, and the combined score."""

    clipping: float
    focus: float
    noise: float
    noise_sigma: float  # std of sqrt(luminance)
    edge_blur_px: float | None  # None when the frame has no edges to judge
    score: float


def _gradient_magnitude(img: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Central-difference gradient magnitude, in a new array; ``scratch`` (float32, ``img``'s
    shape, not ``img`` itself) takes the vertical derivative on the way, and is overwritten."""
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, dst=scratch, ksize=1, scale=0.5)
    return cv2.magnitude(gx, gy, gx)  # into gx: one image buffer fewer at once


def noise_sigma(encoded: np.ndarray) -> float:
    """Robust Immerkær noise estimate (std) of an image."""
    resp = np.abs(cv2.filter2D(encoded, cv2.CV_32F, _IMMERKAER)[1:-1:2, 1:-1:2])
    # the operator's response to white noise of std s has std 6 s; |N(0, 1)| has median 0.6745
    return float(np.median(resp)) / 0.6745 / 6.0


def edge_blur_px(encoded: np.ndarray, sigma_noise: float, *, consume: bool = False) -> float | None:
    """Width (Gaussian sigma, px) of the strongest edges, or None when there are too few.

    With ``consume`` (float32 ``encoded`` that the caller no longer needs) ``encoded`` is
    overwritten as scratch space: four image buffers are live at once instead of five (the
    same values either way)."""
    scratch = np.empty_like(encoded, dtype=np.float32)
    g0 = _gradient_magnitude(encoded, scratch)
    blurred = cv2.GaussianBlur(encoded, (0, 0), _REBLUR_SIGMA, dst=scratch)
    reuse = encoded if consume and encoded.dtype == np.float32 else None
    gb = _gradient_magnitude(blurred, reuse)
    del blurred, scratch, reuse
    sample = gb[::2, ::2].ravel()
    k = int(sample.size * 0.98)
    threshold = max(float(np.partition(sample, k)[k]), 3.0 * sigma_noise, 1e-4)
    mask = gb >= threshold
    if np.count_nonzero(mask) < 20:
        return None
    ratio = float(g0[mask].mean() / gb[mask].mean())
    return _REBLUR_SIGMA / math.sqrt(max(ratio * ratio - 1.0, 1e-6))


def quality_components(
    frame_linear_luma: np.ndarray, *, consume: bool = False
) -> QualityComponents:
    """Score a frame's linear luminance (H x W, 0..1): clipping, focus, noise and combined.

    With ``consume`` the luminance (when float32 already) is overwritten as scratch space, one
    image buffer fewer at once; the scores are the same either way (README: capture
    footprint)."""
    luma: np.ndarray = np.asarray(frame_linear_luma, dtype=np.float32)
    if luma.ndim != 2:
        raise ValueError(f"expected a 2-D luminance image, got shape {luma.shape}")
    h, w = luma.shape
    own = consume  # whether luma may be overwritten
    if w > MAX_WIDTH:
        own = True
        luma = cv2.resize(
            luma, (MAX_WIDTH, max(1, round(h * MAX_WIDTH / w))), interpolation=cv2.INTER_AREA
        )
    sub = luma[::2, ::2]
    high = float(np.count_nonzero(sub >= CLIP_LEVEL)) / sub.size
    low = float(np.count_nonzero(sub <= BLACK_LEVEL)) / sub.size
    clipping = max(0.0, 1.0 - high / 0.1 - low / 0.5)

    encoded = np.maximum(luma, 0.0, out=luma if own else None)
    del luma, sub
    cv2.sqrt(encoded, encoded)
    sigma = noise_sigma(encoded)
    noise = 1.0 - math.log(max(sigma, _NOISE_GOOD) / _NOISE_GOOD) / math.log(
        _NOISE_BAD / _NOISE_GOOD
    )
    noise = min(max(noise, 0.0), 1.0)

    blur = edge_blur_px(encoded, sigma, consume=True)
    del encoded
    focus = 1.0 if blur is None else min(1.0, (_BLUR_GOOD_PX / blur) ** 2)

    # weighted geometric mean: any one part near zero pulls the score down
    parts = ((clipping, 0.4), (focus, 0.3), (noise, 0.3))
    score = math.exp(sum(wt * math.log(max(p, 1e-6)) for p, wt in parts))
    return QualityComponents(clipping, focus, noise, sigma, blur, score)


def image_quality_score(frame_linear_luma: np.ndarray, *, consume: bool = False) -> float:
    """The combined quality score in 0..1 (see :func:`quality_components`)."""
    return quality_components(frame_linear_luma, consume=consume).score
