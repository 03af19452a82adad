"""Finding a sequence's frame files and putting them in capture order.

Ordering rule
-------------
Frames are ordered by capture time: EXIF DateTimeOriginal + SubSecTimeOriginal (falling back to
DateTimeDigitized, then DateTime), ties broken by natural file-name order ("f2" before "f10").
A frame without a timestamp is placed right after the file that precedes it in natural name
order (it inherits that file's time for sorting; if no earlier file has a time, the next one's).
So a sequence without any EXIF is in plain natural name order, and a stray frame whose EXIF was
lost stays between its neighbours by name. ``FrameInfo.captured_at`` remains ``None`` for it.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from skylapse.processing.sources.formats import (
    SUPPORTED_SUFFIXES,
    FrameReadError,
    require_rawpy,
)
from skylapse.processing.sources.metadata import FrameInfo, read_header


@dataclass(frozen=True)
class SkippedFile:
    """A file that looked like a frame but was left out, and why."""

    path: Path
    reason: str


class Discovery(NamedTuple):
    frames: list[FrameInfo]
    skipped: list[SkippedFile]


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

    The accepted ``src`` forms are in `skylapse.processing.sources`, the ordering rule above.
    Files with an unsupported suffix given explicitly (or matched by a glob) are reported as
    skipped.

    Raises
    ------
    FileNotFoundError
        If ``src`` is neither a glob, nor an existing folder or file.
    MissingRawSupportError
        If there are DNG files and rawpy is not installed.
    """
    paths = sorted(_candidates(src), key=natural_key)
    if any(p.suffix.lower() == ".dng" for p in paths):
        require_rawpy()
    frames: list[FrameInfo] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            skipped.append(SkippedFile(path, f"unsupported file type {path.suffix!r}"))
            continue
        try:
            frames.append(read_header(path, fmt))
        except FrameReadError as exc:
            skipped.append(SkippedFile(path, exc.reason))
    twins = raw_twins(f.path for f in frames)  # only readable DNGs stand for their twins
    skipped += [SkippedFile(p, f"its DNG {dng.name} is the frame") for p, dng in twins.items()]
    frames = [f for f in frames if f.path not in twins]
    return Discovery(_capture_order(frames), skipped)


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
