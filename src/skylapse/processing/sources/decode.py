"""Decoding a frame file's pixels into the pipeline convention (`skylapse.imaging.srgb`).

JPEG, PNG and 8-/16-bit TIFF through OpenCV; DNG developed by LibRaw (rawpy) in linear light
and then encoded with the exact sRGB curve (the package's docstring states each reader's
convention).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from skylapse.imaging import srgb
from skylapse.processing.sources.formats import (
    TAIL_BYTES,
    FrameReadError,
    format_of,
    require_rawpy,
)

_REDUCED_JPEG_FLAGS = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
# Colour with the file's bit depth kept; alpha dropped, gray expanded, EXIF orientation applied.
_COLOR_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH
# OpenCV 5.0 returns scrambled samples for 16-bit TIFF with IMREAD_COLOR_RGB: decode as BGR.
_BGR_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
_GRAY_FLAGS = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH


def _read_bytes(path: Path, fmt: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrameReadError(path, str(exc)) from None
    if not data:
        raise FrameReadError(path, "empty file (0 bytes)")
    tail = data[-TAIL_BYTES:]
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        raise FrameReadError(path, "truncated: no JPEG end-of-image marker")
    if fmt == "png" and b"IEND" not in tail:
        raise FrameReadError(path, "truncated: no PNG IEND chunk")
    return np.frombuffer(data, np.uint8)


def read_frame(path: str | os.PathLike[str], keep_8bit: bool = False) -> np.ndarray:
    """Decode a frame file to the pipeline convention: uint16 (H, W, 3) RGB, sRGB-encoded.

    With ``keep_8bit`` an 8-bit file comes back as decoded (uint8), half the memory while it
    waits in a prefetch queue; `srgb.to_uint16` widens it when its turn comes.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, truncated or cannot be decoded.
    MissingRawSupportError
        For a DNG when rawpy is not installed.
    """
    path = Path(path)
    fmt = format_of(path)
    if fmt == "dng":
        return _read_dng(path, half_size=False)
    data = _read_bytes(path, fmt)
    if fmt == "tiff":
        image = cv2.imdecode(data, _BGR_FLAGS)
        if image is not None:
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
    else:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB if fmt == "jpeg" else _COLOR_FLAGS)
    if image is None:
        raise FrameReadError(path, "corrupt or truncated image data")
    if image.dtype == np.uint8:
        if keep_8bit:
            return image
        wide = np.empty(image.shape, np.uint16)
        np.multiply(image, np.uint16(257), out=wide, dtype=np.uint16)  # widen+scale, one pass
        return wide
    if image.dtype != np.uint16:
        raise FrameReadError(path, f"unsupported sample type {image.dtype}")
    return image


def _read_dng_linear(path: Path, half_size: bool) -> np.ndarray:
    """LibRaw's development of a DNG in linear light: uint16 RGB, 65535 = the white level."""
    rawpy = require_rawpy()
    try:
        with rawpy.imread(os.fspath(path)) as raw:
            rgb: np.ndarray = raw.postprocess(
                output_bps=16,
                output_color=rawpy.ColorSpace.sRGB,  # linear sRGB primaries with gamma (1, 1)
                gamma=(1.0, 1.0),  # linear: no tone curve
                use_camera_wb=True,
                no_auto_bright=True,  # per-frame auto brightening would add flicker
                adjust_maximum_thr=0.0,  # likewise the per-frame white-level guess
                half_size=half_size,
            )
            return rgb
    except (rawpy.LibRawError, OSError) as exc:
        raise FrameReadError(path, f"cannot decode DNG: {exc}") from None


@cache
def _encode_lut16() -> NDArray[np.uint16]:
    """Linear uint16 to sRGB-encoded uint16, the exact curve (`srgb.from_linear`)."""
    lut = srgb.from_linear(np.arange(srgb.MAX16 + 1) / srgb.MAX16)
    lut.setflags(write=False)
    return lut


def _read_dng(path: Path, half_size: bool) -> np.ndarray:
    """A DNG in the pipeline convention: developed linear, then sRGB-encoded by table."""
    encoded: np.ndarray = _encode_lut16()[_read_dng_linear(path, half_size)]
    return encoded


def read_linear(path: str | os.PathLike[str]) -> NDArray[np.float32]:
    """A frame as float32 (H, W, 3) linear light in [0, 1] (`skylapse.processing.sources`)."""
    path = Path(path)
    if format_of(path) == "dng":
        linear: NDArray[np.float32] = _read_dng_linear(path, half_size=False).astype(np.float32)
        linear *= np.float32(1.0 / srgb.MAX16)
        return linear
    return srgb.to_linear(read_frame(path))


def read_gray_reduced(
    path: str | os.PathLike[str], factor: int = 4, linear: bool = True
) -> NDArray[np.float32]:
    """Reduced-resolution float32 grayscale of a frame, for the analysis pass.

    The result has shape ``(ceil(H / factor), ceil(W / factor))`` (libjpeg's rounding) and holds
    BT.601 luma of the sRGB-encoded samples in [0, 1], passed through the sRGB decoding curve
    when ``linear`` (an approximation of linear luminance; exact for neutral tones).

    JPEGs are decoded with libjpeg's DCT scaling (Wallace, "The JPEG still picture compression
    standard", 1991: an N/8-scaled inverse DCT yields the block averages directly), several
    times faster than a full decode; other formats are decoded fully and area-averaged.
    """
    if factor not in _REDUCED_JPEG_FLAGS:
        raise ValueError(f"factor must be 1, 2, 4 or 8, got {factor}")
    path = Path(path)
    fmt = format_of(path)
    if fmt == "jpeg":
        gray = cv2.imdecode(_read_bytes(path, fmt), _REDUCED_JPEG_FLAGS[factor])
        if gray is None:
            raise FrameReadError(path, "corrupt or truncated image data")
    else:
        if fmt == "dng":
            half = factor >= 2  # LibRaw's half-size mode skips demosaicing: 2x2 CFA -> 1 pixel
            rgb = _read_dng(path, half_size=half)
            full = rgb.shape[1] * (1 + half), rgb.shape[0] * (1 + half)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        else:
            gray = cv2.imdecode(_read_bytes(path, fmt), _GRAY_FLAGS)
            if gray is None:
                raise FrameReadError(path, "corrupt or truncated image data")
            full = gray.shape[1], gray.shape[0]
        gray = _shrink_like_libjpeg(gray, full, factor)
    reduced: NDArray[np.float32] = _gray_lut(gray.dtype, linear)[gray]
    return reduced


def _shrink_like_libjpeg(gray: np.ndarray, full: tuple[int, int], factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks on libjpeg's grid: block j covers pixels
    [j*factor, (j+1)*factor), the last partial block edge-extended, so the result has
    ceil(size / factor) samples and lines up with a DCT-scaled JPEG decode."""
    out_w, out_h = -(-full[0] // factor), -(-full[1] // factor)
    if (gray.shape[1], gray.shape[0]) == (out_w, out_h):
        return gray
    step_x, step_y = full[0] / gray.shape[1], full[1] / gray.shape[0]  # 2 for half-size DNG
    pad_w = round(out_w * factor / step_x) - gray.shape[1]
    pad_h = round(out_h * factor / step_y) - gray.shape[0]
    if pad_w > 0 or pad_h > 0:
        gray = cv2.copyMakeBorder(gray, 0, max(pad_h, 0), 0, max(pad_w, 0), cv2.BORDER_REPLICATE)
    return cv2.resize(gray, (out_w, out_h), interpolation=cv2.INTER_AREA)


_GRAY_LUTS: dict[tuple[str, bool], np.ndarray] = {}


def _gray_lut(dtype: np.dtype, linear: bool) -> NDArray[np.float32]:
    key = (np.dtype(dtype).str, linear)
    lut = _GRAY_LUTS.get(key)
    if lut is None:
        if dtype == np.uint8:
            levels = np.arange(256) / 255.0
        elif dtype == np.uint16:
            levels = np.arange(65536) / 65535.0
        else:
            raise TypeError(f"unsupported gray sample type {dtype}")
        lut = (srgb.decode(levels) if linear else levels).astype(np.float32)
        lut.setflags(write=False)
        _GRAY_LUTS[key] = lut
    return lut
