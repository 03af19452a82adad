"""JPEG helpers of the capture API: the live preview and frames reduced on the fly.

Pixels are RGB (uint16 sRGB frames from the camera, uint8 from a decoded file); OpenCV's BGR
order stays inside these functions.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from skylapse.imaging import srgb

#: ``GET /frames/{id}/image?size=``: named widths (``full`` = the file as stored).
IMAGE_SIZES = {"thumb": 320, "preview": 960, "full": None}
#: The WebSocket preview's largest width.
PREVIEW_WIDTH = 640

Pixels = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]


def preview_jpeg(pixels: Pixels, width: int = PREVIEW_WIDTH, quality: int = 80) -> bytes:
    """A uint16 sRGB frame as an 8-bit JPEG at most ``width`` pixels wide (area averaging)."""
    h, w = pixels.shape[:2]
    small = (
        cv2.resize(pixels, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        if w > width
        else pixels
    )
    rgb8 = srgb.to_uint8(small) if small.dtype == np.uint16 else small
    bgr = cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR) if rgb8.ndim == 3 else rgb8
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def resized_jpeg(path: Path, width: int, quality: int = 85) -> bytes:
    """A stored JPEG reduced to ``width`` pixels wide; libjpeg's DCT scaling does most of the
    reduction while decoding (``IMREAD_REDUCED_*``), area averaging the rest."""
    with Image.open(path) as probe:  # reads the header only
        full_w = probe.size[0]
    data = np.fromfile(path, dtype=np.uint8)
    flag = cv2.IMREAD_COLOR
    for factor, reduced in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    ):
        if full_w / factor >= width:
            flag = reduced
            break
    image = cv2.imdecode(data, flag)
    if image is None:
        raise ValueError(f"{path.name} is not a readable image")
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(
            image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA
        )
    ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return out.tobytes()


def buffer_file(buffer: Path, relative: str) -> Path | None:
    """``buffer / relative`` when it resolves to a file inside the buffer, else None."""
    root = buffer.resolve()
    try:
        resolved = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved
