"""The simulated lens: defocus blur, so contrast autofocus has a real peak to find.

The blur is a Gaussian whose sigma grows with the distance of the lens position from the
profile's calibrated infinity position (the scene is at infinity), on top of a small constant
lens softness (:data:`LENS_SOFTNESS_PX`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Optical softness of the simulated lens in focus (Gaussian sigma, output pixels).
LENS_SOFTNESS_PX = 0.6


def defocus_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px; large sigmas blur a downscaled copy (same result, ~10x
    cheaper, since the blurred image has no detail the downscale could lose)."""
    if sigma < 0.3:
        return image
    if sigma <= 4.0:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape[:2]
    f = max(1, int(sigma // 2))
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), math.sqrt(max(sigma**2 - (0.5 * f) ** 2, 1.0)) / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
