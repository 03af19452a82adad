"""Drifting clouds: :func:`cloud_layer` makes a :class:`CloudLayer`, fractal clouds that drift
with the wind and slowly evolve; ``layer.alpha(t)`` is their opacity at time ``t`` seconds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from skylapse.scene.noise import fractal_noise


@dataclass(frozen=True)
class CloudLayer:
    """Fractal clouds drifting with the wind; see :func:`cloud_layer`.

    Two periodic noise textures (coarse resolution) drift at slightly different speeds and are
    cross-faded with weights ``cos, sin`` of ``t / evolve_s`` so the clouds change shape slowly
    while keeping their statistics. ``alpha(t)`` returns their opacity at full resolution.
    """

    texture_a: np.ndarray
    texture_b: np.ndarray
    width: int
    height: int
    scale: int
    wind_px_per_s: tuple[float, float]
    evolve_s: float
    threshold: float
    softness: float
    horizon_row: float

    def alpha(self, t: float) -> np.ndarray:
        """Cloud opacity ``float32 (height, width)`` in [0, 1] at time ``t`` (seconds)."""
        sh, sw = self.texture_a.shape
        out_h = math.ceil(self.height / self.scale)
        out_w = math.ceil(self.width / self.scale)
        wx, wy = (v / self.scale for v in self.wind_px_per_s)
        phase = t / self.evolve_s

        def sample(tex: np.ndarray, speed: float) -> np.ndarray:
            m = np.array([[1.0, 0.0, wx * t * speed], [0.0, 1.0, wy * t * speed]])
            return cv2.warpAffine(
                tex, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
            )

        density = sample(self.texture_a, 1.0) * math.cos(phase) + sample(
            self.texture_b, 0.8
        ) * math.sin(phase)
        a = np.clip((density - self.threshold) / self.softness, 0.0, 1.0)
        # Clouds thin out toward the horizon (they are seen edge-on and hazy there).
        rows = (np.arange(out_h, dtype=np.float32) + 0.5) * self.scale
        fade = np.clip((self.horizon_row - rows) / (0.25 * self.height), 0.0, 1.0)
        a *= (0.3 + 0.7 * fade)[:, None]
        del sh, sw
        return cv2.resize(a, (self.width, self.height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def cloud_layer(
    width: int,
    height: int,
    seed: int = 0,
    *,
    coverage: float = 0.4,
    wind_px_per_s: tuple[float, float] = (0.6, 0.0),
    evolve_s: float = 1800.0,
    horizon_row: float | None = None,
) -> CloudLayer:
    """Fractal clouds for a ``width x height`` frame; ``coverage`` is the cloudy fraction.

    ``wind_px_per_s`` is the drift in full-resolution pixels per second; ``evolve_s`` the time
    over which the clouds change shape. The texture is periodic, so any ``t`` is valid.
    """
    if not 0.0 <= coverage <= 1.0:
        raise ValueError("coverage must be in [0, 1]")
    rng = np.random.default_rng([seed, 7])
    # Coarse grid: about 384 texture pixels across the frame, whatever its size, so the clouds
    # have the same look (about three large cells across) at every resolution.
    scale = max(1, round(width / 384))
    tex_w = 1024  # periodic; divisible by every octave's cell count
    tex_h = max(8, math.ceil(height / scale) + 8)

    def texture() -> np.ndarray:
        tex = fractal_noise(tex_h, tex_w, rng, cells=8, octaves=7, persistence=0.55, wrap_x=True)
        # Periodic across the width by construction; mirrored below itself to be periodic down
        # the height too, so wind with a vertical component wraps without a seam.
        return np.ascontiguousarray(np.vstack([tex, tex[::-1]]))

    a, b = texture(), texture()
    q = min(max(1.0 - coverage, 1e-3), 1 - 1e-3)
    threshold = NormalDist().inv_cdf(q)
    return CloudLayer(
        texture_a=a,
        texture_b=b,
        width=width,
        height=height,
        scale=scale,
        wind_px_per_s=wind_px_per_s,
        evolve_s=evolve_s,
        threshold=float(threshold),
        softness=0.8,
        horizon_row=float(0.6 * height if horizon_row is None else horizon_row),
    )
