"""Fitting a frame to its sequence's size: scaled when only the size differs, refused when the
aspect ratio does."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

_ASPECT_TOLERANCE = 0.01


class AspectMismatchError(ValueError):
    """A frame whose aspect ratio differs from the sequence's, so it cannot simply be scaled."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        frame_size: tuple[int, int],
        size: tuple[int, int],
    ) -> None:
        self.path = None if path is None else Path(path)
        self.frame_size = frame_size
        self.size = size
        name = "a frame" if path is None else str(path)
        super().__init__(
            f"{name} is {frame_size[0]}x{frame_size[1]}, whose aspect ratio differs from the "
            f"sequence's {size[0]}x{size[1]}; remove it or crop it to the same aspect"
        )


def fit_to_size(
    frame: np.ndarray, size: tuple[int, int], path: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Scale ``frame`` to ``size = (width, height)`` if it has the same aspect ratio.

    Frames already at ``size`` are returned as they are. Shrinking uses area averaging
    (``cv2.INTER_AREA``, alias-free), enlarging bicubic interpolation. Aspect ratios may differ
    by up to 1 % (sensor crops such as 4056x3040 vs 4032x3024, or odd sizes rounded to even).

    Raises
    ------
    AspectMismatchError
        If the aspect ratios differ by more; the message names ``path``.
    """
    height, width = frame.shape[:2]
    out_w, out_h = int(size[0]), int(size[1])
    if (width, height) == (out_w, out_h):
        return frame
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"invalid target size {size}")
    aspect_change = (width * out_h) / (height * out_w)
    if abs(aspect_change - 1.0) > _ASPECT_TOLERANCE:
        raise AspectMismatchError(path, (width, height), (out_w, out_h))
    shrinking = out_w * out_h < width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(frame, (out_w, out_h), interpolation=interpolation)
