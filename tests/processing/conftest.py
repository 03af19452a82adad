"""Fixtures shared by the processing tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


def _to_32nds(v: np.ndarray) -> np.ndarray:
    return (np.round(np.asarray(v, np.float64) * 32) / 32).astype(np.float32)


@pytest.fixture
def opencv4(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``cv2`` behave as OpenCV 4.x where 4.x and 5.x differ in what skylapse relies on.

    - ``remap`` and ``warpAffine`` sample at source positions rounded to 1/32 px (4.x:
      ``INTER_TAB_SIZE`` fixed-point positions; 5.x interpolates at the exact position).
    - ``phaseCorrelate`` with a window multiplies its inputs by the window in place when their
      size is already DFT-optimal (4.x aliases them; 5.x windows into new buffers).

    Built on the installed version's exact sampling, so on either version it reproduces 4.x.
    """
    real_remap, real_phase_correlate = cv2.remap, cv2.phaseCorrelate

    def remap(src, map1, map2, interpolation, *args, **kwargs):
        if map1.dtype == np.float32 and map2 is not None and map2.dtype == np.float32:
            map1, map2 = _to_32nds(map1), _to_32nds(map2)
        return real_remap(src, map1, map2, interpolation, *args, **kwargs)

    def warp_affine(
        src, m, dsize, dst=None, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, **kw
    ):
        m = np.asarray(m, np.float64)
        if not flags & cv2.WARP_INVERSE_MAP:
            m = cv2.invertAffineTransform(m)
        xs, ys = np.meshgrid(np.arange(dsize[0], dtype=np.float64), np.arange(dsize[1]))
        x = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        y = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        out = real_remap(
            src, _to_32nds(x), _to_32nds(y), flags & cv2.INTER_MAX, borderMode=borderMode, **kw
        )
        if dst is not None:
            dst[...] = out
            return dst
        return out

    def phase_correlate(src1, src2, window=None):
        result = real_phase_correlate(src1.copy(), src2.copy(), window)
        if window is not None and all(cv2.getOptimalDFTSize(n) == n for n in src1.shape):
            src1 *= window
            src2 *= window
        return result

    monkeypatch.setattr(cv2, "remap", remap)
    monkeypatch.setattr(cv2, "warpAffine", warp_affine)
    monkeypatch.setattr(cv2, "phaseCorrelate", phase_correlate)
