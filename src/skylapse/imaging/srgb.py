"""The pipeline's frame convention and the sRGB transfer curve.

Every stage of the render pipeline passes frames as ``uint16`` arrays of shape ``(H, W, 3)``,
RGB order, sRGB-encoded (display-referred) over the full 0..65535 range. Sixteen bits keep
10-bit encodes and 16-bit TIFF/DNG sources free of banding, while staying half the size of
float32 so that a bounded window of frames fits the memory budget. The cameras of the capture
service deliver the same convention (8-bit ISP output is widened by :func:`to_uint16`).

Photometric work (exposure gains, exposure fusion, white balance) must happen in linear light;
these helpers convert through lookup tables (65536 entries for 16 bits), which is several times
faster than evaluating the curve per pixel. Luminance (the Rec. 709 weighting of linear RGB) is
in :mod:`skylapse.imaging.luma`.

Reference: IEC 61966-2-1:1999 (sRGB), section 5.2 (the piecewise transfer function).

Types: results are ``NDArray[<dtype>]``; frames taken in are plain ``np.ndarray`` with the dtype
checked at run time, because OpenCV's stubs do not carry dtypes through its functions.

>>> round(float(decode(0.5)), 4), round(float(encode(0.214)), 4)
(0.214, 0.5)
>>> int(to_uint16(np.array([255], np.uint8))[0]), int(to_uint8(np.array([65535], np.uint16))[0])
(65535, 255)
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

MAX16 = 65535


def decode(v: ArrayLike) -> NDArray[np.float64]:
    """sRGB-encoded values in [0, 1] to linear light in [0, 1] (the exact piecewise curve)."""
    x = np.asarray(v, dtype=np.float64)
    linear: NDArray[np.float64] = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return linear


def encode(v: ArrayLike) -> NDArray[np.float64]:
    """Linear light in [0, 1] to sRGB-encoded values in [0, 1]; input is clipped to [0, 1]."""
    x = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)
    encoded: NDArray[np.float64] = np.where(
        x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055
    )
    return encoded


@cache
def linear_lut(bits: int) -> NDArray[np.float32]:
    """The read-only table from ``bits``-bit sRGB codes (8 or 16) to float32 linear light.

    Entry ``v`` is ``decode(v / (2**bits - 1))``; index it with an image of that bit depth.
    """
    if bits not in (8, 16):
        raise ValueError(f"sRGB tables are for 8- or 16-bit codes, not {bits}")
    lut = decode(np.arange(2**bits) / (2**bits - 1)).astype(np.float32)
    lut.setflags(write=False)
    return lut


def to_linear(image: np.ndarray) -> NDArray[np.float32]:
    """A uint8 or uint16 sRGB image (any shape) to float32 linear light in [0, 1]."""
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 or uint16 sRGB image, got {image.dtype}")
    linear: NDArray[np.float32] = linear_lut(8 * image.dtype.itemsize)[image]
    return linear


def from_linear(linear: ArrayLike) -> NDArray[np.uint16]:
    """Float linear light (clipped to [0, 1]) to a uint16 sRGB frame."""
    return np.rint(encode(linear) * MAX16).astype(np.uint16)


def gain_lut(gain: float) -> NDArray[np.uint16]:
    """A 65536-entry table that multiplies linear light by ``gain`` on uint16 sRGB values.

    Applying an exposure correction this way (``lut[frame]``) costs one gather per sample and
    never leaves the 16-bit domain; highlights that the gain pushes past white clip to white.
    """
    lin = linear_lut(16).astype(np.float64) * gain
    return np.rint(encode(lin) * MAX16).astype(np.uint16)


def to_uint16(frame: np.ndarray) -> NDArray[np.uint16]:
    """Any 8- or 16-bit image to the pipeline's uint16 range (8-bit values are scaled by 257)."""
    if frame.dtype == np.uint16:
        return frame.astype(np.uint16, copy=False)  # the same array: only its static type narrows
    if frame.dtype == np.uint8:
        return frame.astype(np.uint16) * np.uint16(257)
    raise TypeError(f"unsupported sample type {frame.dtype}; expected uint8 or uint16")


def to_uint8(frame: np.ndarray) -> NDArray[np.uint8]:
    """A uint16 pipeline frame to 8 bits, rounding to nearest."""
    if frame.dtype != np.uint16:
        raise TypeError(f"expected a uint16 frame, got {frame.dtype}")
    return ((frame.astype(np.uint32) + 128) // 257).astype(np.uint8)
