"""EXIF in and out: how a frame carries the settings it was taken with, wherever it goes.

Frames carry the standard tags every tool reads (DateTimeOriginal with sub-seconds,
ExposureTime, ISO, FNumber, Make/Model) so that the render pipeline can undo exposure steps,
plus Skylapse's own record of the shot (session, phase, bracket, the exposure the controller
wanted) as JSON in UserComment, so that the processing side can group and render frames from
the files alone.

EXIF is inserted into already-encoded JPEG (APP1 after SOI) and PNG (an ``eXIf`` chunk) byte
streams, so adding it never re-encodes the image. A DNG (a TIFF file, written by the camera
layer) gets the same EXIF sub-IFD appended with a copy of its IFD0 that points to it
(:func:`with_exif_tiff`): the raw data is never moved, and the exposure time is the exact one
(PiDNG writes it as 1/N of a second). Reading falls back to the TIFF structure for files Pillow
does not open as images (a DNG's Bayer data).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.TiffImagePlugin import IFDRational, ImageFileDirectory_v2

EXIF_IFD = 0x8769
TAG_MAKE, TAG_MODEL, TAG_DATETIME = 0x010F, 0x0110, 0x0132
TAG_EXPOSURE_TIME, TAG_F_NUMBER, TAG_ISO = 0x829A, 0x829D, 0x8827
TAG_DATETIME_ORIGINAL, TAG_SUBSEC_ORIGINAL = 0x9003, 0x9291
TAG_OFFSET_TIME_ORIGINAL = 0x9011
TAG_USER_COMMENT = 0x9286
_ASCII_PREFIX = b"ASCII\x00\x00\x00"
_SKYLAPSE_KEY = "skylapse"


def _rational(value: float, max_denominator: int) -> IFDRational:
    f = Fraction(value).limit_denominator(max_denominator)
    return IFDRational(f.numerator, f.denominator)


def exif_bytes(
    when: datetime,
    *,
    exposure_time_s: float | None = None,
    iso: float | None = None,
    f_number: float | None = None,
    make: str = "Skylapse",
    model: str = "",
    skylapse: dict[str, Any] | None = None,
) -> bytes:
    """A TIFF/EXIF block (with the ``Exif\\0\\0`` header) for one frame."""
    exif = Image.Exif()
    exif[TAG_MAKE] = make
    if model:
        exif[TAG_MODEL] = model
    stamp = when.strftime("%Y:%m:%d %H:%M:%S")
    exif[TAG_DATETIME] = stamp
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[TAG_DATETIME_ORIGINAL] = stamp
    ifd[TAG_SUBSEC_ORIGINAL] = f"{when.microsecond:06d}"
    offset = when.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        ifd[TAG_OFFSET_TIME_ORIGINAL] = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    # a value the camera did not report (None, NaN) leaves its tag out
    if exposure_time_s is not None and math.isfinite(exposure_time_s):
        ifd[TAG_EXPOSURE_TIME] = _rational(exposure_time_s, 1_000_000)
    if f_number is not None and math.isfinite(f_number):
        ifd[TAG_F_NUMBER] = _rational(f_number, 100)
    if iso is not None and math.isfinite(iso):
        ifd[TAG_ISO] = round(iso)
    if skylapse:
        payload = json.dumps({_SKYLAPSE_KEY: skylapse}, separators=(",", ":"), default=str)
        ifd[TAG_USER_COMMENT] = _ASCII_PREFIX + payload.encode()
    return exif.tobytes()


def with_exif_jpeg(jpeg: bytes | memoryview, exif: bytes) -> bytes:
    """Insert an APP1 Exif segment right after SOI (no re-encoding).

    ``jpeg`` is any bytes-like stream (e.g. a memoryview of the encoder's buffer); the result
    is the one copy made of it (no slice is copied on the way: a 12 MP JPEG is several MB)."""
    data = memoryview(jpeg).cast("B")
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("EXIF block too large for one APP1 segment")
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return b"".join((data[:2], segment, data[2:]))


def with_exif_png(png: bytes, exif: bytes) -> bytes:
    """Insert an eXIf chunk after IHDR (PNG 1.5 extension; TIFF data without ``Exif\\0\\0``)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG stream")
    data = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    chunk = len(data).to_bytes(4, "big") + b"eXIf" + data
    chunk += zlib.crc32(b"eXIf" + data).to_bytes(4, "big")
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")


def with_exif_tiff(tiff: bytes, exif: bytes) -> bytes:
    """A TIFF stream (a DNG) with the EXIF sub-IFD of ``exif`` (an :func:`exif_bytes` block).

    The sub-IFD and a copy of IFD0 with its pointer (tag 0x8769; an existing one is replaced)
    are appended and the header is pointed at the new IFD0. IFD0's entries are copied byte for
    byte: offsets into the file (raw strips, SubIFDs, long values) stay valid since nothing that
    was there moves. IFD0's own tags (Make, Model) are the camera's and are kept.
    """
    if tiff[:4] not in _TIFF_HEADERS:
        raise ValueError("not a TIFF stream")
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd0,) = struct.unpack(order + "L", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd0 : ifd0 + 2])
    end = ifd0 + 2 + 12 * count
    if end + 4 > len(tiff):
        raise ValueError("TIFF IFD0 runs past the end of the stream")
    entries = [tiff[ifd0 + 2 + 12 * i : ifd0 + 14 + 12 * i] for i in range(count)]
    next_ifd = tiff[end : end + 4]
    block = Image.Exif()
    block.load(exif)
    sub = ImageFileDirectory_v2(tiff[:8])
    for tag, value in block.get_ifd(EXIF_IFD).items():
        sub[tag] = value
    out = bytearray(tiff)
    out += b"\0" * (len(out) % 2)  # IFDs start on a word boundary
    sub_at = len(out)
    out += sub.tobytes(sub_at)
    out += b"\0" * (len(out) % 2)
    pointer = struct.pack(order + "HHLL", EXIF_IFD, 4, 1, sub_at)  # LONG, one value
    kept = [e for e in entries if struct.unpack(order + "H", e[:2])[0] != EXIF_IFD]
    kept.append(pointer)
    kept.sort(key=lambda e: struct.unpack(order + "H", e[:2])[0])
    new_ifd0 = len(out)
    out += struct.pack(order + "H", len(kept)) + b"".join(kept) + next_ifd
    out[4:8] = struct.pack(order + "L", new_ifd0)
    return bytes(out)


def _exif_of(path: str | Path) -> tuple[Any, Any]:
    """(IFD0, EXIF sub-IFD) tags of an image; a TIFF Pillow cannot open as an image (a DNG's
    Bayer data) is read as plain TIFF structure."""
    try:
        with Image.open(path) as im:
            exif = im.getexif()
        return exif, exif.get_ifd(EXIF_IFD)
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            header = f.read(8)
            if header[:4] not in _TIFF_HEADERS:
                raise

            size = os.fstat(f.fileno()).st_size
            order = "<" if header[:2] == b"II" else ">"

            def load(offset: int) -> ImageFileDirectory_v2:
                # the IFD must lie inside the file (a cut-off one would only make Pillow warn)
                f.seek(offset)
                count = f.read(2)
                if offset < 8 or len(count) < 2:
                    raise ValueError(f"{path}: TIFF IFD at {offset} is outside the file")
                if offset + 6 + 12 * struct.unpack(order + "H", count)[0] > size:
                    raise ValueError(f"{path}: TIFF IFD at {offset} runs past the end")
                ifd = ImageFileDirectory_v2(header)
                f.seek(offset)
                ifd.load(f)
                return ifd

            ifd0 = load(ImageFileDirectory_v2(header).next)
            offset = ifd0.get(EXIF_IFD)
            return ifd0, (load(int(offset)) if offset else {})


def read_skylapse_metadata(path: str | Path) -> dict[str, Any]:
    """Skylapse's own record of a frame from its UserComment; ``{}`` when there is none."""
    return _skylapse_from(_exif_of(path)[1])


def read_frame_exif(path: str | Path) -> dict[str, Any]:
    """What :func:`exif_bytes` wrote, read back: ``captured_at`` (aware when the offset tag is
    there, else naive; None without DateTimeOriginal), ``exposure_time_s``, ``iso``,
    ``f_number``, ``model`` (None when absent) and ``skylapse`` (``{}`` when absent)."""
    exif, ifd = _exif_of(path)
    captured = None
    stamp = ifd.get(TAG_DATETIME_ORIGINAL)
    if isinstance(stamp, str):
        try:
            captured = datetime.strptime(stamp.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            captured = None
    if captured is not None:
        sub = str(ifd.get(TAG_SUBSEC_ORIGINAL, "")).strip("\x00 ")
        if sub.isdigit():
            captured = captured.replace(microsecond=int((sub + "000000")[:6]))
        offset = str(ifd.get(TAG_OFFSET_TIME_ORIGINAL, "")).strip("\x00 ")
        if offset:
            captured = datetime.fromisoformat(f"{captured.isoformat()}{offset}")

    def number(tag: int) -> float | None:
        value = ifd.get(tag)
        return None if value is None else float(value)

    model = exif.get(TAG_MODEL)
    return {
        "captured_at": captured,
        "exposure_time_s": number(TAG_EXPOSURE_TIME),
        "iso": number(TAG_ISO),
        "f_number": number(TAG_F_NUMBER),
        "model": model.strip("\x00 ") if isinstance(model, str) else None,
        "skylapse": _skylapse_from(ifd),
    }


def _skylapse_from(ifd: Any) -> dict[str, Any]:
    raw = ifd.get(TAG_USER_COMMENT)
    if not raw:
        return {}
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "ignore")
    text = raw[len(_ASCII_PREFIX) :] if raw.startswith(_ASCII_PREFIX) else raw
    try:
        value = json.loads(text.decode("utf-8", "ignore").strip("\x00 "))
    except json.JSONDecodeError:
        return {}
    return value.get(_SKYLAPSE_KEY, {}) if isinstance(value, dict) else {}
