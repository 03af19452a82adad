"""Focus measure and contrast-detection autofocus.

``focus_score`` is the variance of the Laplacian (LAPV, Pech-Pacheco et al. 2000), which the
survey of Pertuz, Puig & Garcia (2013, "Analysis of focus measure operators for
shape-from-focus", Pattern Recognition 46) ranks among the most discriminating and cheapest
operators. It is computed on the luma of the central window only, where a landscape camera's
subject (the ridge line) is, reduced to about 640 px wide, and costs ~2 ms on a 1080p frame.

``contrast_autofocus`` searches the lens position coarse-then-fine: a coarse sweep over the
whole travel finds the peak's neighbourhood, a fine sweep between the coarse neighbours of the
best position narrows it, and a Gaussian fitted through the best fine sample and its neighbours
(a parabola in log score) places the peak between samples. Focus curves are close to Gaussian
near their peak, so the fit lands within a fraction of the fine step.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Windows wider than this are reduced (area average) by an integer factor before the Laplacian.
ANALYSIS_WIDTH = 640
#: Rows of the window converted to float32 at a time by the reduction (bounds its memory).
_STRIP_ROWS = 32


def _area_reduce(crop: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block of ``crop`` (a trailing partial block is
    left out), in float32, a strip of rows at a time: the window is never copied whole to float
    (at 12 MP a full float32 copy of the central half would be 36 MB)."""
    rows, cols = crop.shape[0] // factor, crop.shape[1] // factor
    out = np.empty((rows, cols, *crop.shape[2:]), np.float32)
    step = max(1, _STRIP_ROWS // factor)  # output rows per strip
    for r in range(0, rows, step):
        n = min(step, rows - r)
        strip = crop[r * factor : (r + n) * factor, : cols * factor].astype(np.float32)
        # an integer scale: INTER_AREA is the exact block mean
        out[r : r + n] = cv2.resize(strip, (cols, n), interpolation=cv2.INTER_AREA)
    return out


def focus_score(pixels: np.ndarray, window: float = 0.5) -> float:
    """Variance of the Laplacian of the central ``window`` fraction of a frame's luma.

    Windows wider than ``ANALYSIS_WIDTH`` are first reduced by an integer area-average factor:
    pixel noise is white, so at full resolution it dominates the Laplacian's variance and
    flattens the focus curve; averaging k x k pixels divides its variance by k² while a lens
    blur of a pixel or more survives. It also makes scores comparable across resolutions.
    Accepts uint8/uint16 RGB or grey frames; values are normalised to [0, 1] first so that the
    score does not depend on the sample type. Higher is sharper.
    """
    h, w = pixels.shape[:2]
    ch, cw = max(3, int(h * window)), max(3, int(w * window))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = pixels[y0 : y0 + ch, x0 : x0 + cw]
    scale = 1.0 / (65535.0 if crop.dtype == np.uint16 else 255.0 if crop.dtype == np.uint8 else 1.0)
    factor = math.ceil(cw / ANALYSIS_WIDTH)
    # reduce first, then weigh: both are linear, and the reduction bounds the float copies
    small = _area_reduce(crop, factor) if factor > 1 else crop.astype(np.float32)
    small *= np.float32(scale)
    # Rec. 601 weights on the encoded values: a contrast measure, not a photometric one
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    return float(lap.var())


@dataclass(frozen=True)
class FocusResult:
    """The chosen lens position, its (interpolated) score and every (position, score) tried."""

    lens_position: float
    score: float
    evaluations: list[tuple[float, float]] = field(default_factory=list)
    found: bool = True  # False: no contrast peak (night, fog); the fallback position was used


def _gaussian_peak(xs: list[float], ys: list[float], i: int) -> tuple[float, float]:
    """Vertex of the parabola through log(score) at samples i-1, i, i+1 (evenly spaced)."""
    if i <= 0 or i >= len(xs) - 1 or min(ys[i - 1 : i + 2]) <= 0:
        return xs[i], ys[i]
    la, lb, lc = (math.log(v) for v in ys[i - 1 : i + 2])
    denom = la - 2 * lb + lc
    if denom >= 0:  # not a maximum (flat or convex): keep the sample
        return xs[i], ys[i]
    step = xs[i + 1] - xs[i]
    delta = 0.5 * (la - lc) / denom  # in samples, within (-0.5, 0.5) for a true local max
    delta = max(-0.5, min(0.5, delta))
    return xs[i] + delta * step, math.exp(lb - 0.25 * (la - lc) * delta)


async def contrast_autofocus(
    measure: Callable[[float], Awaitable[float]],
    lens_min: float,
    lens_max: float,
    coarse_steps: int = 9,
    fine_steps: int = 7,
    fallback: float | None = None,
    min_peak_ratio: float = 1.25,
) -> FocusResult:
    """Coarse-then-fine contrast search of the lens position in ``[lens_min, lens_max]``.

    ``measure(position)`` moves the lens, takes a frame and returns its focus score. The fine
    sweep spans the two coarse intervals around the best coarse sample, so with the default odd
    step counts it re-uses three coarse samples: 13 measurements in all. With ``fallback``, a
    coarse sweep whose best score is not ``min_peak_ratio`` above its median has no peak, and
    the fallback position is returned with ``found=False``.
    """
    if not lens_max > lens_min:
        raise ValueError("lens_max must exceed lens_min")
    tried: dict[float, float] = {}

    async def at(position: float) -> float:
        key = round(position, 9)
        if key not in tried:
            tried[key] = await measure(position)
        return tried[key]

    coarse = list(np.linspace(lens_min, lens_max, coarse_steps))
    coarse_scores = [await at(p) for p in coarse]
    if fallback is not None and max(coarse_scores) < min_peak_ratio * float(
        np.median(coarse_scores)
    ):
        # No peak worth the name: in the dark or in fog the score is noise, and chasing it
        # would park the lens anywhere. A landscape camera is then best at its fallback
        # (infinity), and the next session in better light focuses again.
        return FocusResult(
            float(fallback), float(np.median(coarse_scores)), sorted(tried.items()), found=False
        )
    best = int(np.argmax(coarse_scores))
    lo = coarse[max(best - 1, 0)]
    hi = coarse[min(best + 1, len(coarse) - 1)]
    fine = list(np.linspace(lo, hi, fine_steps))
    fine_scores = [await at(p) for p in fine]
    j = int(np.argmax(fine_scores))
    position, score = _gaussian_peak(fine, fine_scores, j)
    position = min(max(position, lens_min), lens_max)
    return FocusResult(float(position), float(score), sorted(tried.items()))
