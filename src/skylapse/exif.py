"""EXIF in and out: how a frame carries the settings it was taken with, wherever it goes.

Frames carry the standard tags every tool reads (DateTimeOriginal with sub-seconds,
ExposureTime, ISO, FNumber, Make/Model) so that the render pipeline can undo exposure steps,
plus Skylapse's own record of the shot (session, phase, bracket, the exposure the controller
wanted) as JSON in UserComment, so that the processing side can group and render frames from
the files alone.

EXIF is inserted into already-encoded JPEG (APP1 after SOI) and PNG (an ``eXIf`` chunk) byte
streams, so adding it never re-encodes the image.
"""

from __future__ import annotations

import json
import math
import zlib
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

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


def with_exif_jpeg(jpeg: bytes, exif: bytes) -> bytes:
    """Insert an APP1 Exif segment right after SOI (no re-encoding)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("EXIF block too large for one APP1 segment")
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return jpeg[:2] + segment + jpeg[2:]


def with_exif_png(png: bytes, exif: bytes) -> bytes:
    """Insert an eXIf chunk after IHDR (PNG 1.5 extension; TIFF data without ``Exif\\0\\0``)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG stream")
    data = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    chunk = len(data).to_bytes(4, "big") + b"eXIf" + data
    chunk += zlib.crc32(b"eXIf" + data).to_bytes(4, "big")
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def read_skylapse_metadata(path: str | Path) -> dict[str, Any]:
    """Skylapse's own record of a frame from its UserComment; ``{}`` when there is none."""
    with Image.open(path) as im:
        ifd = im.getexif().get_ifd(EXIF_IFD)
    return _skylapse_from(ifd)


def read_frame_exif(path: str | Path) -> dict[str, Any]:
    """What :func:`exif_bytes` wrote, read back: ``captured_at`` (aware when the offset tag is
    there, else naive; None without DateTimeOriginal), ``exposure_time_s``, ``iso``,
    ``f_number``, ``model`` (None when absent) and ``skylapse`` (``{}`` when absent)."""
    with Image.open(path) as im:
        exif = im.getexif()
    ifd = exif.get_ifd(EXIF_IFD)
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
