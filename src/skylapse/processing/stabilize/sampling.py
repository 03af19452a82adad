"""Bilinear sampling at exact float positions, for the tracker.

Why the tracker samples images itself rather than with ``cv2.remap`` / ``cv2.warpAffine``:
OpenCV 4.x rounds every INTER_LINEAR source position to 1/32 px (imgproc/src/imgwarp.cpp,
RemapInvoker and warpAffine: ``cvRound(x * INTER_TAB_SIZE)``, INTER_TAB_SIZE = 32), while 5.x
interpolates at the exact float position (remapLinearInvoker_* / warpAffineLinearInvoker_*,
warp_kernels.simd.hpp). Gauss-Newton, IRLS and the motion-map threshold amplify that sub-1/64 px
difference into different transforms (up to 0.06 px on the render test's sequence), so the
tracker would give other results on 4.x and 5.x. Bilinear sampling at float64 positions is the
same on both.
"""

from __future__ import annotations

import numpy as np


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (2-D, at least 2x2) at the positions ``(x, y)``, bilinear, as float64.

    Pixel centres are at integer coordinates; positions outside the image are clamped to its
    edge (``BORDER_REPLICATE``).
    """
    h, w = image.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.intp), w - 2)
    y0 = np.minimum(y.astype(np.intp), h - 2)
    fx = x - x0
    fy = y - y0
    flat = np.ascontiguousarray(image).ravel()
    i = y0 * w + x0
    top = flat.take(i) * (1 - fx) + flat.take(i + 1) * fx
    bottom = flat.take(i + w) * (1 - fx) + flat.take(i + w + 1) * fx
    sampled: np.ndarray = top * (1 - fy) + bottom * fy
    return sampled


def warp_bilinear(
    image: np.ndarray, m: np.ndarray, size: tuple[int, int], *, zero_border: bool = False
) -> np.ndarray:
    """``cv2.warpAffine(image, m, size, flags=INTER_LINEAR | WARP_INVERSE_MAP)`` at exact
    positions: output pixel ``p`` is ``image`` at ``m @ [p, 1]``, float32.

    Outside the image the edge is replicated, or with ``zero_border`` the image continues with
    zeros (``BORDER_CONSTANT``: samples within one pixel of the edge blend towards 0).
    """
    if zero_border:
        image = np.pad(image, 1)
        m = np.asarray(m, np.float64) + np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    w, h = size
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    x = np.add.outer(m[0, 1] * ys + m[0, 2], m[0, 0] * xs)
    y = np.add.outer(m[1, 1] * ys + m[1, 2], m[1, 0] * xs)
    return sample_bilinear(image, x, y).astype(np.float32)
