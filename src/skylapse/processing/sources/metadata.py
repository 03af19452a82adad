"""A frame file's header: its size, capture time and exposure, read without decoding pixels.

Truncation checks are cheap: a JPEG must end with its EOI marker (within the last KiB; a camera
losing power mid-write leaves it out), a PNG with its IEND chunk, and a TIFF's strips/tiles must
lie inside the file. Bit errors inside otherwise complete files are not detected.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from skylapse.processing.sources.formats import (
    TAIL_BYTES,
    FrameReadError,
    FrameTooLargeError,
    format_of,
    require_rawpy,
)

# EXIF tags (numbers from the EXIF 2.32 specification).
_TAG_ORIENTATION = 0x0112
_TAG_DATETIME = 0x0132
_TAG_EXIF_IFD = 0x8769
_TAG_EXPOSURE_TIME = 0x829A
_TAG_F_NUMBER = 0x829D
_TAG_ISO = 0x8827
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_DATETIME_DIGITIZED = 0x9004
_TAG_EXPOSURE_BIAS = 0x9204
_TAG_SUBSEC = 0x9290
_TAG_SUBSEC_ORIGINAL = 0x9291
_TAG_SUBSEC_DIGITIZED = 0x9292
# TIFF data layout tags, for the truncation check.
_TAG_STRIP_OFFSETS, _TAG_STRIP_BYTES = 273, 279
_TAG_TILE_OFFSETS, _TAG_TILE_BYTES = 324, 325
_TAG_SUB_IFDS = 330


@dataclass(frozen=True)
class FrameInfo:
    """Header metadata of one frame file; sizes are after EXIF orientation, i.e. as decoded."""

    path: Path
    captured_at: datetime | None
    exposure_time_s: float | None
    iso: float | None
    f_number: float | None
    exposure_bias_ev: float | None
    width: int
    height: int
    fmt: str  # "jpeg" | "png" | "tiff" | "dng"

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def probe_frame(path: str | os.PathLike[str]) -> FrameInfo:
    """Header metadata of one frame file, without decoding its pixels.

    Raises
    ------
    FrameReadError
        For an unsupported suffix or an unreadable, truncated or empty file;
        :class:`FrameTooLargeError` if Pillow refuses the header as a decompression bomb.
    MissingRawSupportError
        For a DNG when rawpy is not installed.
    """
    path = Path(path)
    fmt = format_of(path)
    if fmt == "dng":
        require_rawpy()
    return read_header(path, fmt)


def read_header(path: Path, fmt: str) -> FrameInfo:
    """`probe_frame` of a file whose format ``fmt`` is known (and rawpy checked for a DNG)."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise FrameReadError(path, "empty file (0 bytes)")
        if fmt == "dng":
            return _probe_dng(path)
        with Image.open(path) as im:
            width, height = im.size
            if fmt == "jpeg":
                _check_tail(path, size, b"\xff\xd9", "JPEG end-of-image marker")
            elif fmt == "png":
                _check_tail(path, size, b"IEND", "PNG IEND chunk")
            elif fmt == "tiff":
                if not isinstance(im, TiffImagePlugin.TiffImageFile):  # e.g. a PNG named .tif
                    raise FrameReadError(path, f"not a TIFF file ({im.format} data)")
                _check_tiff_extent(path, im.tag_v2, size)
                # Pillow already swaps im.size for rotated TIFFs; use the stored dimensions.
                width, height = im.tag_v2.get(256, width), im.tag_v2.get(257, height)
            # PNG's getexif() would decode the pixels when the eXIf chunk is absent.
            if fmt == "png" and "exif" not in im.info:
                exif: Image.Exif | None = None
            else:
                exif = im.getexif()
            return _frame_info(path, fmt, width, height, exif)
    except FrameReadError:
        raise
    except UnidentifiedImageError:
        raise FrameReadError(path, "not a recognisable image") from None
    except Image.DecompressionBombError as exc:
        raise FrameTooLargeError(path, f"implausibly large image: {exc}") from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise FrameReadError(path, f"unreadable header: {exc}") from None


def _check_tail(path: Path, size: int, marker: bytes, what: str) -> None:
    with open(path, "rb") as fh:
        fh.seek(max(0, size - TAIL_BYTES))
        tail = fh.read()
    if marker not in tail:
        raise FrameReadError(path, f"truncated: no {what} at the end of the file")


def _check_tiff_extent(path: Path, tags: Any, size: int) -> None:
    """Raise if the strips or tiles listed in one TIFF IFD run past the end of the file."""
    if tags is None:
        return
    for off_tag, len_tag in (
        (_TAG_STRIP_OFFSETS, _TAG_STRIP_BYTES),
        (_TAG_TILE_OFFSETS, _TAG_TILE_BYTES),
    ):
        offsets, lengths = tags.get(off_tag), tags.get(len_tag)
        if offsets is None or lengths is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        lengths = lengths if isinstance(lengths, tuple) else (lengths,)
        end = max(int(o) + int(n) for o, n in zip(offsets, lengths, strict=False))
        if end > size:
            raise FrameReadError(
                path, f"truncated: image data runs to byte {end} but the file has {size}"
            )


def _probe_dng(path: Path) -> FrameInfo:
    rawpy = require_rawpy()
    try:
        with rawpy.imread(os.fspath(path)) as raw:  # opens and parses; does not decode
            sizes = raw.sizes
    except (rawpy.LibRawError, OSError) as exc:
        raise FrameReadError(path, f"not a readable DNG: {exc}") from None
    width, height = sizes.width, sizes.height
    if sizes.flip in (5, 6):
        width, height = height, width
    try:
        exif, image_ifds = _read_tiff_ifds(path)
    except (OSError, ValueError, SyntaxError, struct.error):
        exif, image_ifds = None, []
    file_size = path.stat().st_size
    for ifd in image_ifds:  # the raw data lives in IFD0 or a SubIFD
        _check_tiff_extent(path, ifd, file_size)
    return _frame_info(path, "dng", width, height, exif, apply_orientation=False)


def _read_tiff_ifds(path: Path) -> tuple[dict[int, Any], list[Any]]:
    """Tags of IFD0 merged with its EXIF sub-IFD, and the image IFDs (IFD0 + SubIFDs) of a
    TIFF-structured file such as a DNG, read by seeking (the pixel data is never read)."""
    tags: dict[int, Any] = {}
    with open(path, "rb") as fh:
        header = fh.read(8)

        def load(offset: int) -> TiffImagePlugin.ImageFileDirectory_v2:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(header)
            fh.seek(offset)
            ifd.load(fh)
            return ifd

        ifd0 = load(TiffImagePlugin.ImageFileDirectory_v2(header).next)
        tags.update(ifd0)
        image_ifds = [ifd0]
        sub_offsets = ifd0.get(_TAG_SUB_IFDS) or ()
        for offset in sub_offsets if isinstance(sub_offsets, tuple) else (sub_offsets,):
            image_ifds.append(load(int(offset)))
        if exif_offset := tags.get(_TAG_EXIF_IFD):
            tags.update(load(int(exif_offset)))
    return tags, image_ifds


def _frame_info(
    path: Path,
    fmt: str,
    width: int,
    height: int,
    exif: Image.Exif | dict[int, Any] | None,
    apply_orientation: bool = True,
) -> FrameInfo:
    tags: dict[int, Any] = {}
    if isinstance(exif, Image.Exif):
        tags.update(exif)
        if _TAG_EXIF_IFD in exif:
            tags.update(exif.get_ifd(_TAG_EXIF_IFD))
    elif exif is not None:
        tags = exif
    if apply_orientation and tags.get(_TAG_ORIENTATION) in (5, 6, 7, 8):
        width, height = height, width  # cv2 applies the rotation when decoding
    captured = (
        _exif_datetime(tags.get(_TAG_DATETIME_ORIGINAL), tags.get(_TAG_SUBSEC_ORIGINAL))
        or _exif_datetime(tags.get(_TAG_DATETIME_DIGITIZED), tags.get(_TAG_SUBSEC_DIGITIZED))
        or _exif_datetime(tags.get(_TAG_DATETIME), tags.get(_TAG_SUBSEC))
    )
    return FrameInfo(
        path=path,
        captured_at=captured,
        exposure_time_s=_exif_float(tags.get(_TAG_EXPOSURE_TIME)),
        iso=_exif_float(tags.get(_TAG_ISO)),
        f_number=_exif_float(tags.get(_TAG_F_NUMBER)),
        exposure_bias_ev=_exif_float(tags.get(_TAG_EXPOSURE_BIAS)),
        width=int(width),
        height=int(height),
        fmt=fmt,
    )


def _exif_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ").strip() or None


def _exif_datetime(value: Any, subsec: Any) -> datetime | None:
    text = _exif_text(value)
    if text is None:
        return None
    try:
        stamp = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # e.g. the blank "    :  :     :  :  " some cameras write
    digits = _exif_text(subsec)
    if digits and digits.isdigit():
        stamp = stamp.replace(microsecond=int((digits + "000000")[:6]))
    return stamp


def _exif_float(value: Any) -> float | None:
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None
