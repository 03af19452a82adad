"""Procedural noise for the scene: fractal (fBm) value noise in 2-D and 1-D, and a smoothstep.

Fractal value noise after Perlin ("An image synthesizer", SIGGRAPH 1985) and Musgrave et al.
("Texturing and Modeling", 2003): each octave is a grid of Gaussian values resized by OpenCV, so
a field is deterministic for a generator's state and cheap even at 1080p.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def fractal_noise(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    cells: float = 4.0,
    octaves: int = 6,
    persistence: float = 0.5,
    wrap_x: bool = False,
) -> np.ndarray:
    """Fractal (fBm) value noise, ``float32 (height, width)``, zero mean and unit std.

    Each octave is a grid of Gaussian values, ``cells`` across the width, upsampled by
    ``cv2.resize`` (bicubic); octaves double the frequency and scale by ``persistence``.
    With ``wrap_x`` the field is periodic across the width (for clouds that drift forever):
    the grids are padded circularly before resizing, so ``width`` should be divisible by
    ``cells * 2**(octaves-1)`` for an exact period.
    """
    out = np.zeros((height, width), np.float32)
    amp = 1.0
    for octave in range(octaves):
        nx = max(2, round(cells * 2**octave))
        ny = max(2, math.ceil(nx * height / width) + 1)
        grid = rng.standard_normal((ny, nx), dtype=np.float32)
        if wrap_x:
            pad = 2
            padded = np.concatenate([grid[:, -pad:], grid, grid[:, :pad]], axis=1)
            px = width / nx
            big_w = round(px * (nx + 2 * pad))
            layer = cv2.resize(padded, (big_w, height), interpolation=cv2.INTER_CUBIC)
            start = round(px * pad)
            layer = layer[:, start : start + width]
        else:
            layer = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.scaleAdd(layer, amp, out, dst=out)
        amp *= persistence
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def fractal_profile(
    width: int,
    rng: np.random.Generator,
    *,
    cells: float = 3.0,
    octaves: int = 7,
    persistence: float = 0.55,
) -> np.ndarray:
    """One-dimensional fractal noise of ``width`` samples (zero mean, unit std), for skylines."""
    x = np.arange(width, dtype=np.float64)
    out = np.zeros(width)
    amp = 1.0
    for octave in range(octaves):
        n = max(2, round(cells * 2**octave)) + 1
        knots = rng.standard_normal(n)
        # Cosine interpolation between knots: smooth but cheap.
        pos = x / (width - 1) * (n - 1)
        i0 = np.minimum(pos.astype(int), n - 2)
        f = pos - i0
        w = (1 - np.cos(np.pi * f)) / 2
        out += amp * ((1 - w) * knots[i0] + w * knots[i0 + 1])
        amp *= persistence
    out -= out.mean()
    return out / max(out.std(), 1e-9)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Hermite smoothstep ``3x² - 2x³`` of ``x`` clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
