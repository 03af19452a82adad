"""2x3 affine transforms of pixel coordinates: compose, invert, change of pixel grid.

Conventions. A transform is a 2x3 float array ``M = [A | t]`` that maps the point ``p = (x, y)``
to ``A p + t``, as ``cv2.warpAffine`` and ``cv2.invertAffineTransform`` take it; coordinates are
pixel-centre coordinates (pixel ``(i, j)`` of column ``i`` and row ``j`` is the point ``(i, j)``,
``y`` points down). Results are float64. Which grids a transform maps between (frame to
reference, template to image) is the caller's convention; these helpers only compose them.

Reference: R. Hartley and A. Zisserman, *Multiple View Geometry in Computer Vision*, 2nd ed.
(2004), section 2.4 (the affine group in homogeneous coordinates).

>>> shift = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
>>> double = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
>>> compose(double, shift).tolist()  # shift first, then double
[[2.0, 0.0, 4.0], [0.0, 2.0, -2.0]]
>>> compose(invert(shift), shift).tolist()
[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

Affine = NDArray[np.float64]


def homogeneous(m: ArrayLike) -> Affine:
    """The 3x3 matrix ``[[A, t], [0, 0, 1]]`` of a 2x3 transform."""
    out = np.eye(3)
    out[:2] = m
    return out


def compose(outer: ArrayLike, inner: ArrayLike) -> Affine:
    """The 2x3 transform ``outer ∘ inner``: apply ``inner`` first, then ``outer``."""
    composed: Affine = (homogeneous(outer) @ homogeneous(inner))[:2]
    return composed


def invert(m: ArrayLike) -> Affine:
    """The inverse of a 2x3 transform (``cv2.invertAffineTransform``, in float64)."""
    return np.asarray(cv2.invertAffineTransform(np.asarray(m, dtype=np.float64)), np.float64)


def resize_matrix(factor: float) -> Affine:
    """Pixel-centre coordinates on an image resized by ``factor`` with its edges kept aligned.

    ``x' = (x + 0.5) * factor - 0.5``: the convention of ``cv2.resize`` (``INTER_AREA``,
    ``INTER_LINEAR``) and of JPEG DCT scaling (``cv2.IMREAD_REDUCED_*``).
    """
    o = 0.5 * factor - 0.5
    return np.array([[factor, 0.0, o], [0.0, factor, o]])


def rescale(m: ArrayLike, factor: float) -> Affine:
    """A transform between two pixel grids, expressed on both grids resized by ``factor``.

    ``d ∘ m ∘ d⁻¹`` with ``d = resize_matrix(factor)``.
    """
    d = resize_matrix(factor)
    return compose(d, compose(m, invert(d)))
