"""The camera path: affine transforms as smooth-able parameters, and their smoothing.

``"smooth"`` stabilization keeps deliberate pans and slider moves and removes only shake: the
tripod-mode transforms (frame -> first frame) are turned into parameters, smoothed over time, and
each frame is moved back along the smoothed path (:func:`smooth_trajectory`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skylapse.imaging.affine import compose, invert


def _params(m: np.ndarray) -> np.ndarray:
    """Affine matrix to smooth-able parameters: translation, rotation, log-scale, shear terms."""
    a, b, tx = m[0]
    c, d, ty = m[1]
    angle = np.arctan2(c - b, a + d)
    scale = np.log(np.sqrt(abs(a * d - b * c)))
    return np.array([tx, ty, angle, scale, a - d, b + c])


def _from_params(p: np.ndarray) -> np.ndarray:
    tx, ty, angle, log_scale, s1, s2 = p
    # invert _params: a + d = 2 r cos, c - b = 2 r sin, a - d = s1, b + c = s2
    k = np.exp(log_scale)
    cs, sn = np.cos(angle), np.sin(angle)
    # solve for r so that det matches: det = r^2 - (s1^2 + s2^2)/4
    r = np.sqrt(k * k + (s1 * s1 + s2 * s2) / 4)
    a = r * cs + s1 / 2
    d = r * cs - s1 / 2
    c = r * sn + s2 / 2
    b = -r * sn + s2 / 2
    return np.array([[a, b, tx], [c, d, ty]])


def smooth_trajectory(transforms: Sequence[np.ndarray], radius: float) -> list[np.ndarray]:
    """Stabilizing transforms that keep intentional camera motion and remove only shake.

    ``transforms`` are tripod-mode transforms (frame -> first frame). Their parameters
    (translation, rotation, log-scale, shear) are smoothed by a centred Gaussian-weighted local
    *linear* regression of standard deviation ``radius`` frames (a LOESS-style filter, Cleveland
    1979), which reproduces a constant-speed pan exactly, also at the ends of the sequence, where
    a plain moving average would lag. The result for frame ``t`` is ``S_t^-1 ∘ M_t``: the frame
    is brought to the reference and then moved back along the smoothed path ``S_t``.
    """
    ms = [np.asarray(m, dtype=np.float64) for m in transforms]
    n = len(ms)
    if n == 0:
        return []
    p = np.array([_params(m) for m in ms])
    p[:, 2] = np.unwrap(p[:, 2])
    t = np.arange(n, dtype=np.float64)
    half = int(np.ceil(3 * radius))
    smoothed = np.empty_like(p)
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        tt = t[lo:hi] - i
        w = np.exp(-0.5 * (tt / max(radius, 1e-9)) ** 2)
        # weighted linear fit; intercept is the smoothed value at i
        s0, s1, s2 = w.sum(), w @ tt, w @ (tt * tt)
        y = p[lo:hi]
        b0, b1 = w @ y, (w * tt) @ y
        det = s0 * s2 - s1 * s1
        smoothed[i] = (s2 * b0 - s1 * b1) / det if det > 1e-12 * s0 * s0 else b0 / s0
    return [compose(invert(_from_params(smoothed[i])), ms[i]) for i in range(n)]
