"""The frame files the pipeline reads, told by suffix, and the errors of reading them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dng": "dng",
}

#: The tail of a file searched for its end marker (a JPEG's EOI, a PNG's IEND chunk).
TAIL_BYTES = 1024


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


def format_of(path: Path) -> str:
    """The format of a frame file by its suffix (a value of `SUPPORTED_SUFFIXES`).

    Raises
    ------
    FrameReadError
        For a suffix the pipeline does not read.
    """
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise FrameReadError(path, f"unsupported file type {path.suffix!r}")
    return fmt


def require_rawpy() -> Any:
    """The ``rawpy`` module, or :class:`MissingRawSupportError` when it is not installed."""
    try:
        import rawpy
    except ImportError as exc:  # the optional [raw] extra
        raise MissingRawSupportError() from exc
    return rawpy
