"""Luminance: the Rec. 709 weighting of linear RGB, and the brightness measure built on it.

Conventions. The weights apply to *linear* light: sRGB has the primaries and white point of
BT.709, so ``K_R R + K_G G + K_B B`` of linear sRGB is its relative luminance ``Y`` (CIE 1931,
1.0 = the white of the display). Applied to the encoded ``R'G'B'`` instead, the same
coefficients give BT.709's luma ``Y'``, which the video encoder's colour matrix uses.

Images taken in are either integer sRGB-encoded (``uint8`` or ``uint16``, decoded with
:func:`skylapse.imaging.srgb.to_linear`) or floating point and linear already (used as given);
``(H, W, 3)`` is RGB, ``(H, W)`` is grey and taken to be luminance. Luminance is weighted in
float32 (the weights rounded to float32), the precision of the pipeline's analysis images.

References: ITU-R BT.709-6 (2015), part 1, item 3.2 (the luminance equation); IEC
61966-2-1:1999 (sRGB, whose primaries are BT.709's).

>>> KR + KG + KB
1.0
>>> grey = np.full((4, 4, 3), 0.25, np.float32)
>>> round(float(central_log2_luminance(grey)), 6)
-2.0
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from skylapse.imaging import srgb

#: Rec. 709 luminance coefficients of linear R, G and B.
KR, KG, KB = 0.2126, 0.7152, 0.0722
#: The coefficients as a read-only float64 vector ``(K_R, K_G, K_B)``.
WEIGHTS: NDArray[np.float64] = np.array([KR, KG, KB], dtype=np.float64)
WEIGHTS.setflags(write=False)
_WEIGHTS32: NDArray[np.float32] = WEIGHTS.astype(np.float32)
_WEIGHTS32.setflags(write=False)


def luminance(rgb: NDArray[np.floating]) -> NDArray[np.floating]:
    """Relative luminance of linear RGB whose last axis is ``(R, G, B)``.

    The result has the input's shape without its last axis, and its floating type (float32
    in, float32 out; float64 in, float64 out).
    """
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected linear RGB with a last axis of 3, got shape {rgb.shape}")
    y: NDArray[np.floating] = rgb @ _WEIGHTS32
    return y


def linear_luminance(image: np.ndarray) -> NDArray[np.floating]:
    """Relative luminance ``(H, W)`` of an image, RGB ``(H, W, 3)`` or grey ``(H, W)``.

    ``uint8``/``uint16`` images are sRGB-encoded and give float32; floating images are linear
    light and keep their type. A grey sRGB image is decoded as if it were an sRGB grey, which
    is exact for neutral tones (e.g. the JPEG luma of ``cv2.IMREAD_REDUCED_GRAYSCALE_4``).
    """
    lin: NDArray[np.floating]
    if image.dtype in (np.uint8, np.uint16):
        lin = srgb.to_linear(image)
    elif np.issubdtype(image.dtype, np.floating):
        lin = image
    else:
        raise TypeError(f"expected uint8/uint16 sRGB or floating linear light, got {image.dtype}")
    if lin.ndim == 3 and lin.shape[2] == 3:
        return luminance(lin)
    if lin.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return lin


def central_region(image: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The central ``fraction`` (per axis) of an image: a view, its bounds rounded to pixels."""
    h, w = image.shape[:2]
    y0, y1 = round(h * (1 - fraction) / 2), round(h * (1 + fraction) / 2)
    x0, x1 = round(w * (1 - fraction) / 2), round(w * (1 + fraction) / 2)
    return image[y0:y1, x0:x1]


def central_log2_luminance(image: np.ndarray, fraction: float = 0.5) -> float:
    """log2 of the mean linear luminance of the central ``fraction`` (per axis) of an image.

    The brightness that the ground truth of :mod:`skylapse.testing` is stated in and that the
    flicker metrics compare: the log of the mean (not the mean of the log), so that dark pixels
    and noise do not dominate; the centre, because stabilizers crop and rescale. ``image`` as
    :func:`linear_luminance` takes it; a black region gives log2(1e-12).
    """
    lum = linear_luminance(central_region(image, fraction))
    return float(np.log2(max(float(lum.mean()), 1e-12)))
