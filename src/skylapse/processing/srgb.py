"""The pipeline's frame convention and the sRGB transfer curve.

Every stage of the render pipeline passes frames as ``uint16`` arrays of shape ``(H, W, 3)``,
RGB order, sRGB-encoded (display-referred) over the full 0..65535 range. Sixteen bits keep
10-bit encodes and 16-bit TIFF/DNG sources free of banding, while staying half the size of
float32 so that a bounded window of frames fits the memory budget.

Photometric work (exposure gains, exposure fusion, white balance) must happen in linear light;
these helpers convert through 65536-entry lookup tables, which is several times faster than
evaluating the curve per pixel.

Reference: IEC 61966-2-1:1999 (sRGB).
"""

from __future__ import annotations

from functools import cache

import numpy as np

MAX16 = 65535


def decode(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light in [0, 1] (the exact piecewise curve)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def encode(v: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to sRGB-encoded values in [0, 1]; input is clipped to [0, 1]."""
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


@cache
def _linear_lut16() -> np.ndarray:
    lut = decode(np.arange(MAX16 + 1) / MAX16).astype(np.float32)
    lut.setflags(write=False)
    return lut


def to_linear(frame: np.ndarray) -> np.ndarray:
    """A uint16 sRGB frame to float32 linear light in [0, 1]."""
    if frame.dtype != np.uint16:
        raise TypeError(f"expected a uint16 frame, got {frame.dtype}")
    return _linear_lut16()[frame]


def from_linear(linear: np.ndarray) -> np.ndarray:
    """Float linear light (clipped to [0, 1]) to a uint16 sRGB frame."""
    return np.rint(encode(linear) * MAX16).astype(np.uint16)


def gain_lut(gain: float) -> np.ndarray:
    """A 65536-entry table that multiplies linear light by ``gain`` on uint16 sRGB values.

    Applying an exposure correction this way (``lut[frame]``) costs one gather per sample and
    never leaves the 16-bit domain; highlights that the gain pushes past white clip to white.
    """
    lin = _linear_lut16().astype(np.float64) * gain
    return np.rint(encode(lin) * MAX16).astype(np.uint16)


def to_uint16(frame: np.ndarray) -> np.ndarray:
    """Any 8- or 16-bit image to the pipeline's uint16 range (8-bit values are scaled by 257)."""
    if frame.dtype == np.uint16:
        return frame
    if frame.dtype == np.uint8:
        return frame.astype(np.uint16) * np.uint16(257)
    raise TypeError(f"unsupported sample type {frame.dtype}; expected uint8 or uint16")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """A uint16 pipeline frame to 8 bits, rounding to nearest."""
    if frame.dtype != np.uint16:
        raise TypeError(f"expected a uint16 frame, got {frame.dtype}")
    return ((frame.astype(np.uint32) + 128) // 257).astype(np.uint8)


def luma(frame: np.ndarray) -> np.ndarray:
    """Linear relative luminance (Rec. 709 / sRGB primaries) of a uint16 sRGB frame, float32."""
    lin = to_linear(frame)
    return lin @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
