"""Gaussian image pyramids and the coordinates of their levels.

Conventions. Level 0 is the image itself; level ``l + 1`` is ``cv2.pyrDown`` of level ``l``:
blurred by the 5-tap binomial kernel ``[1, 4, 6, 4, 1] / 16`` and decimated by two, its size
``((w + 1) // 2, (h + 1) // 2)``. ``cv2.pyrDown`` centres output pixel ``i`` on input pixel
``2 i``, so in pixel-centre coordinates a point ``x`` of level 0 is ``x / 2**l`` on level ``l``
(:func:`level_matrix`); a 2x3 transform between two level-0 grids is carried to level ``l`` and
back by :func:`to_level` and :func:`from_level`.

Reference: P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code", IEEE
Trans. Communications 31(4), 1983 (the Gaussian pyramid and its generating kernel).

>>> [p.shape for p in gaussian_pyramid(np.zeros((9, 16), np.float32), 3)]
[(9, 16), (5, 8), (3, 4)]
>>> shift = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, -2.0]])
>>> to_level(shift, 1).tolist()
[[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike

from skylapse.imaging.affine import Affine, compose, invert


def gaussian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` images, ``image`` first, each the ``cv2.pyrDown`` of the one before.

    The levels keep ``image``'s type and channels; level 0 is ``image`` itself (not a copy).
    """
    if levels < 1:
        raise ValueError(f"a pyramid has at least one level, not {levels}")
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    return pyramid


def level_matrix(level: int) -> Affine:
    """The 2x3 map from level-0 pixel-centre coordinates to those of pyramid level ``level``."""
    s = 0.5**level
    return np.array([[s, 0.0, 0.0], [0.0, s, 0.0]])


def to_level(m: ArrayLike, level: int) -> Affine:
    """A transform between two level-0 grids, expressed between their pyramid level ``level``."""
    d = level_matrix(level)
    return compose(d, compose(m, invert(d)))


def from_level(m: ArrayLike, level: int) -> Affine:
    """A transform between two grids of pyramid level ``level``, expressed between level 0."""
    d = level_matrix(level)
    return compose(invert(d), compose(m, d))
