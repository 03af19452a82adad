"""Where frames come from: finding a sequence on disk, its metadata, and decoding frames.

This is the input edge of the render pipeline (the imperative shell around the pure stages).

API
---
``discover_frames(src) -> Discovery(frames, skipped)``
    ``src`` is a folder (its supported files, not recursive, dotfiles ignored), a glob
    (``"/data/cam1/2024-06-*/*.jpg"``; ``**`` recurses) or a single file. Supported: JPEG, PNG,
    8-/16-bit TIFF and DNG (DNG needs ``rawpy``: ``pip install 'skylapse[raw]'``).
    Only headers are read (no pixel decoding), so 2,000 files take well under a second or two.
    ``frames`` is a list of :class:`FrameInfo` in capture order; ``skipped`` lists
    :class:`SkippedFile` (path + reason) for zero-byte, unreadable, truncated or unsupported
    files: bad files are reported, never raised. ``Discovery`` is a NamedTuple, so
    ``frames, skipped = discover_frames(src)`` works. A JPEG, PNG or TIFF with a DNG of the same
    name beside it (a RAW+JPEG pair, as a station with ``capture.raw`` takes) is the same shot:
    the DNG is the frame, the other is listed in ``skipped`` (``raw_twins``).

``raw_twins(paths) -> {path: dng}``
    The files of ``paths`` that a DNG of the same folder and name stands for.

``probe_frame(path) -> FrameInfo``
    The header metadata of one file, as ``discover_frames`` reads it (no pixel decoding), for a
    caller that must check a frame's size before decoding it. Raises :class:`FrameReadError`,
    or its subclass :class:`FrameTooLargeError` when Pillow's own decompression-bomb guard
    (``PIL.Image.MAX_IMAGE_PIXELS``, refusing twice that many pixels) turns the header down.

``read_frame(path) -> ndarray``
    Full-resolution frame in the pipeline convention (:mod:`skylapse.imaging.srgb`):
    uint16 (H, W, 3) RGB, sRGB-encoded. 8-bit sources are scaled by 257, 16-bit TIFF/PNG kept,
    grayscale expanded to three channels, alpha dropped, EXIF orientation applied, DNG
    demosaiced by LibRaw (rawpy) in linear light (no gamma: black level subtracted, white level
    at 65535, the as-shot white balance, the DNG's colour matrix to linear sRGB, *no* per-frame
    auto-brightening, which would flicker) and then encoded with the exact sRGB curve. Raises
    :class:`FrameReadError` for corrupt or truncated files.

``read_linear(path) -> ndarray``
    The frame as float32 (H, W, 3) linear light in [0, 1]: a DNG straight from LibRaw's linear
    output (all of the sensor's bits, none of a tone curve's rounding), other files through the
    sRGB decoding curve. Its exposure is the one ``FrameInfo`` reports (``exposure_time_s``,
    ``iso``, ``f_number``: for a Skylapse DNG the exact values of its EXIF sub-IFD, which win
    over IFD0's, where PiDNG rounds the exposure time to 1/N s).

``read_gray_reduced(path, factor=4, linear=True) -> ndarray``
    Fast reduced-resolution grayscale for the analysis pass, float32 of shape
    ``(ceil(H / factor), ceil(W / factor))``. JPEG uses libjpeg's DCT-domain scaling
    (``cv2.IMREAD_REDUCED_GRAYSCALE_N``: the decoder skips most of the inverse DCT work); other
    formats are decoded and shrunk with ``cv2.INTER_AREA``. The gray value is the BT.601 luma of
    the sRGB-encoded samples (what a JPEG stores as Y), so every format gives the same number for
    the same picture. With ``linear=True`` (default) it is passed through the sRGB decoding
    curve: an approximation of linear relative luminance in [0, 1] that is exact for neutral
    colours, which is what deflicker statistics need. ``linear=False`` gives the encoded luma in
    [0, 1] (better suited to feature/motion estimation).

``fit_to_size(frame, size, path=None) -> ndarray``
    Scales a frame of another size to the sequence's ``(width, height)``, or raises
    :class:`AspectMismatchError` (naming the file) if the aspect ratios differ by more than 1 %.

Ordering rule
-------------
Frames are ordered by capture time: EXIF DateTimeOriginal + SubSecTimeOriginal (falling back to
DateTimeDigitized, then DateTime), ties broken by natural file-name order ("f2" before "f10").
A frame without a timestamp is placed right after the file that precedes it in natural name
order (it inherits that file's time for sorting; if no earlier file has a time, the next one's).
So a sequence without any EXIF is in plain natural name order, and a stray frame whose EXIF was
lost stays between its neighbours by name. ``FrameInfo.captured_at`` remains ``None`` for it.

Truncation checks are cheap: a JPEG must end with its EOI marker (within the last KiB; a camera
losing power mid-write leaves it out), a PNG with its IEND chunk, and a TIFF's strips/tiles must
lie inside the file. Bit errors inside otherwise complete files are not detected.
"""

from __future__ import annotations

import glob
import math
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from skylapse.imaging import srgb

__all__ = [
    "SUPPORTED_SUFFIXES",
    "AspectMismatchError",
    "Discovery",
    "FrameInfo",
    "FrameReadError",
    "FrameTooLargeError",
    "MissingRawSupportError",
    "SkippedFile",
    "discover_frames",
    "fit_to_size",
    "probe_frame",
    "raw_twins",
    "read_frame",
    "read_gray_reduced",
    "read_linear",
]

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dng": "dng",
}

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
_TAIL_BYTES = 1024
_ASPECT_TOLERANCE = 0.01


class FrameReadError(Exception):
    """A frame file that cannot be decoded (corrupt, truncated, not an image)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read frame {self.path}: {reason}")


class FrameTooLargeError(FrameReadError):
    """A frame whose header claims more pixels than Pillow's decompression-bomb guard allows."""


class MissingRawSupportError(ImportError):
    """DNG input was requested but the optional ``rawpy`` dependency is not installed."""

    def __init__(self) -> None:
        super().__init__("DNG frames need the optional rawpy package: pip install 'skylapse[raw]'")


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


@dataclass(frozen=True)
class SkippedFile:
    """A file that looked like a frame but was left out, and why."""

    path: Path
    reason: str


class Discovery(NamedTuple):
    frames: list[FrameInfo]
    skipped: list[SkippedFile]


# --------------------------------------------------------------------------------------------
# Discovery


def natural_key(path: Path) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value ("img2" < "img10"), case-insensitively."""
    parts: list[Any] = []
    for part in path.parts:
        for i, chunk in enumerate(re.split(r"(\d+)", part.casefold())):
            parts.append((0, int(chunk), chunk) if i % 2 else (1, 0, chunk))
    return tuple(parts)


def _candidates(src: str | os.PathLike[str]) -> list[Path]:
    text = os.fspath(src)
    if glob.has_magic(text):
        found = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
        return [p for p in found if p.is_file()]
    path = Path(text).expanduser()
    if path.is_dir():
        return [
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES
        ]
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such folder or file: {path}")


def _require_rawpy() -> Any:
    try:
        import rawpy
    except ImportError as exc:  # the optional [raw] extra
        raise MissingRawSupportError() from exc
    return rawpy


def raw_twins(paths: Iterable[str | os.PathLike[str]]) -> dict[Path, Path]:
    """The files of ``paths`` that a DNG in the same folder with the same name (case aside)
    stands for, each mapped to that DNG: a RAW+JPEG pair is one shot, and its DNG is the frame.

    >>> raw_twins(["a/f1.jpg", "a/f1.dng", "a/f2.jpg", "b/f2.DNG"])
    {PosixPath('a/f1.jpg'): PosixPath('a/f1.dng')}
    """
    given = [Path(p) for p in paths]
    dngs = {
        (p.parent, p.stem.casefold()): p
        for p in given
        if SUPPORTED_SUFFIXES.get(p.suffix.lower()) == "dng"
    }
    return {
        p: dngs[(p.parent, p.stem.casefold())]
        for p in given
        if SUPPORTED_SUFFIXES.get(p.suffix.lower()) not in (None, "dng")
        and (p.parent, p.stem.casefold()) in dngs
    }


def discover_frames(src: str | os.PathLike[str]) -> Discovery:
    """Find the frames of a sequence and read their header metadata, in capture order.

    See the module docstring for the accepted ``src`` forms and the ordering rule. Files with an
    unsupported suffix given explicitly (or matched by a glob) are reported as skipped.

    Raises
    ------
    FileNotFoundError
        If ``src`` is neither a glob, nor an existing folder or file.
    MissingRawSupportError
        If there are DNG files and rawpy is not installed.
    """
    paths = sorted(_candidates(src), key=natural_key)
    if any(p.suffix.lower() == ".dng" for p in paths):
        _require_rawpy()
    frames: list[FrameInfo] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            skipped.append(SkippedFile(path, f"unsupported file type {path.suffix!r}"))
            continue
        try:
            frames.append(_probe(path, fmt))
        except FrameReadError as exc:
            skipped.append(SkippedFile(path, exc.reason))
    twins = raw_twins(f.path for f in frames)  # only readable DNGs stand for their twins
    skipped += [SkippedFile(p, f"its DNG {dng.name} is the frame") for p, dng in twins.items()]
    frames = [f for f in frames if f.path not in twins]
    return Discovery(_capture_order(frames), skipped)


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
    fmt = _fmt_of(path)
    if fmt == "dng":
        _require_rawpy()
    return _probe(path, fmt)


def _capture_order(frames_in_name_order: list[FrameInfo]) -> list[FrameInfo]:
    """Stable sort by capture time; untimed frames inherit their name-predecessor's time."""
    times = [f.captured_at for f in frames_in_name_order]
    effective: list[datetime | None] = []
    last: datetime | None = None
    for t in times:
        last = t if t is not None else last
        effective.append(last)
    first_known = next((t for t in times if t is not None), None)
    if first_known is None:
        return list(frames_in_name_order)
    keys = [(t if t is not None else first_known, rank) for rank, t in enumerate(effective)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [frames_in_name_order[i] for i in order]


def _probe(path: Path, fmt: str) -> FrameInfo:
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
        fh.seek(max(0, size - _TAIL_BYTES))
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
    rawpy = _require_rawpy()
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


# --------------------------------------------------------------------------------------------
# Decoding


def _read_bytes(path: Path, fmt: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrameReadError(path, str(exc)) from None
    if not data:
        raise FrameReadError(path, "empty file (0 bytes)")
    tail = data[-_TAIL_BYTES:]
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        raise FrameReadError(path, "truncated: no JPEG end-of-image marker")
    if fmt == "png" and b"IEND" not in tail:
        raise FrameReadError(path, "truncated: no PNG IEND chunk")
    return np.frombuffer(data, np.uint8)


def _fmt_of(path: Path) -> str:
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise FrameReadError(path, f"unsupported file type {path.suffix!r}")
    return fmt


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
    fmt = _fmt_of(path)
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
    rawpy = _require_rawpy()
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
    """A frame as float32 (H, W, 3) linear light in [0, 1] (module docstring)."""
    path = Path(path)
    if _fmt_of(path) == "dng":
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
    fmt = _fmt_of(path)
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


# --------------------------------------------------------------------------------------------
# Size


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
