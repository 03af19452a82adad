"""Preview images of a whole sequence: a keogram and a contact sheet, built while streaming.

Both keep only a few kilobytes per frame, so they can ride along the render pass without
holding the sequence in memory. Frames come in, and the preview images go out, in the pipeline
convention (uint16 (H, W, 3) RGB, sRGB-encoded; ``srgb.to_uint8`` before writing an 8-bit PNG);
contact-sheet thumbnails are kept at 8 bits, which is all a thumbnail needs.

API
---
``centre_band(frame, band_width=None) -> (H, 3) uint16``
    The frame's central vertical line, averaged over a narrow band of columns (default
    ~0.5 % of the width, odd) to tame noise and single-pixel detail.
``keogram(columns, aspect=2.0) -> (H', N', 3) uint16``
    Columns side by side, one per frame, so time runs left to right: the classic auroral
    "keogram" (Eather, Mende & Judge, 1976) and a quick way to see a day's light, clouds and
    exposure jumps. With ``aspect=None`` the raw image (column i = frame i) is returned;
    otherwise short sequences are widened (each column repeated, crisp) and long ones made
    shorter (rows area-averaged) towards a ``aspect``:1 picture.
``KeogramBuilder(band_width=None, aspect=2.0)``
    ``add(frame)`` per frame, ``image()`` at the end.
``ContactSheet(n_total, columns=6, rows=5, thumb_width=320)``
    Picks up to ``columns * rows`` evenly spaced frame indices (always the first and the last),
    ``add(index, frame, label=None)`` keeps a thumbnail only for those (``wants(index)`` says
    which), ``image(labels=True)`` renders the grid with each tile's label (default
    ``#<frame number>``; pass e.g. the capture time) drawn by ``cv2.putText``.
``write_png(path, image)``
    Atomic PNG write (temp file + rename), see :func:`skylapse.processing.encode.write_image`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from skylapse.imaging import srgb
from skylapse.processing.encode import write_image

__all__ = ["ContactSheet", "KeogramBuilder", "centre_band", "keogram", "write_png"]

_BACKGROUND = 24  # dark gray between and behind tiles
_GUTTER = 4


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint16 (H, W, 3) frame, got {frame.dtype} {frame.shape}")


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return srgb.to_uint8(image) if image.dtype == np.uint16 else image


def _as_uint16(image: np.ndarray) -> np.ndarray:
    return srgb.to_uint16(image)


def default_band_width(width: int) -> int:
    """An odd band of about 0.5 % of the frame width (9 px at 1920), at least 1."""
    return 2 * (width // 400) + 1


def centre_band(frame: np.ndarray, band_width: int | None = None) -> np.ndarray:
    """Mean of the ``band_width`` columns around the frame's centre: an (H, 3) uint16 column."""
    _check_frame(frame)
    width = frame.shape[1]
    band = default_band_width(width) if band_width is None else int(band_width)
    band = max(1, min(band, width))
    x0 = min(width // 2 - band // 2, width - band)  # centred on column width // 2
    column: NDArray[np.float32] = frame[:, x0 : x0 + band].mean(axis=1, dtype=np.float32)
    if frame.dtype == np.uint8:
        column *= 257.0
    return np.clip(np.rint(column), 0, srgb.MAX16).astype(np.uint16)


def keogram(
    columns: Sequence[np.ndarray], aspect: float | None = 2.0, min_height: int = 270
) -> np.ndarray:
    """Put per-frame (H, 3) columns side by side into a keogram image (uint16 RGB, like them).

    With ``aspect=None`` the result is (H, N, 3) with column i from frame i. Otherwise the
    height becomes ``N / aspect`` clamped to [min(H, min_height), H] (rows area-averaged, never
    enlarged) and the width ``max(N, height * aspect)`` (columns repeated, nearest neighbour,
    so each frame stays a crisp stripe).
    """
    if len(columns) == 0:
        raise ValueError("a keogram needs at least one column")
    heights = {c.shape[0] for c in columns}
    if len(heights) != 1:
        raise ValueError(f"columns differ in height: {sorted(heights)}")
    image = np.ascontiguousarray(np.stack(columns, axis=1))
    if aspect is None:
        return image
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    height, count = image.shape[:2]
    out_h = int(min(height, max(min(height, min_height), round(count / aspect))))
    out_w = int(max(count, round(out_h * aspect)))
    if out_h != height:
        image = cv2.resize(image, (count, out_h), interpolation=cv2.INTER_AREA)
    if out_w != count:
        # Column j shows frame floor(j * count / out_w): an exact nearest-neighbour stretch.
        image = image[:, (np.arange(out_w) * count) // out_w]
    return np.ascontiguousarray(image)


class KeogramBuilder:
    """Collects one centre column per frame while streaming; ``image()`` renders the keogram."""

    def __init__(self, band_width: int | None = None, aspect: float | None = 2.0) -> None:
        self.band_width = band_width
        self.aspect = aspect
        self.columns: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        column = centre_band(frame, self.band_width)
        if self.columns and column.shape[0] != self.columns[0].shape[0]:
            column = cv2.resize(
                column[:, None], (1, self.columns[0].shape[0]), interpolation=cv2.INTER_AREA
            )[:, 0]
        self.columns.append(column)

    def __len__(self) -> int:
        return len(self.columns)

    def image(self) -> np.ndarray:
        return keogram(self.columns, self.aspect)


def pick_indices(n_total: int, count: int) -> list[int]:
    """``count`` evenly spaced indices in [0, n_total), always including the first and last."""
    if n_total <= 0:
        return []
    count = max(1, min(count, n_total))
    if count == 1:
        return [0]
    return sorted({round(i * (n_total - 1) / (count - 1)) for i in range(count)})


class ContactSheet:
    """A grid of thumbnails of evenly spaced frames, collected while streaming."""

    def __init__(
        self, n_total: int, columns: int = 6, rows: int = 5, thumb_width: int = 320
    ) -> None:
        if columns < 1 or rows < 1 or thumb_width < 8:
            raise ValueError("columns and rows must be >= 1 and thumb_width >= 8")
        self.n_total = int(n_total)
        self.picks = pick_indices(self.n_total, columns * rows)
        self._slot = {index: slot for slot, index in enumerate(self.picks)}
        self.columns = max(1, min(columns, len(self.picks)))
        self.rows = max(1, math.ceil(len(self.picks) / self.columns))
        self.thumb_width = int(thumb_width)
        self.thumb_height: int | None = None
        self.thumbnails: dict[int, np.ndarray] = {}
        self.labels: dict[int, str] = {}

    def wants(self, index: int) -> bool:
        return index in self._slot

    def add(self, index: int, frame: np.ndarray, label: str | None = None) -> None:
        """Keep a thumbnail of frame ``index`` if it is one of the picks (cheap otherwise)."""
        if index not in self._slot:
            return
        _check_frame(frame)
        if self.thumb_height is None:
            self.thumb_height = max(1, round(self.thumb_width * frame.shape[0] / frame.shape[1]))
        thumb = cv2.resize(
            frame, (self.thumb_width, self.thumb_height), interpolation=cv2.INTER_AREA
        )
        self.thumbnails[index] = _as_uint8(thumb)
        self.labels[index] = f"#{index + 1}" if label is None else label

    def tile_origin(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of frame ``index``'s tile in ``image()``."""
        slot = self._slot[index]
        row, col = divmod(slot, self.columns)
        th = self.thumb_height or round(self.thumb_width * 9 / 16)
        return (_GUTTER + col * (self.thumb_width + _GUTTER), _GUTTER + row * (th + _GUTTER))

    def image(self, labels: bool = True) -> np.ndarray:
        """The sheet as a uint16 RGB image; tiles of frames that never arrived stay background."""
        th = self.thumb_height or round(self.thumb_width * 9 / 16)
        sheet = np.full(
            (
                _GUTTER + self.rows * (th + _GUTTER),
                _GUTTER + self.columns * (self.thumb_width + _GUTTER),
                3,
            ),
            _BACKGROUND,
            np.uint8,
        )
        scale = max(0.35, self.thumb_width / 640)
        thickness = max(1, round(scale * 2))
        for index, thumb in self.thumbnails.items():
            x, y = self.tile_origin(index)
            sheet[y : y + th, x : x + self.thumb_width] = thumb
            if labels and self.labels[index]:
                origin = (x + round(6 * scale) + 2, y + th - round(8 * scale) - 2)
                for colour, width in (((0, 0, 0), thickness + 2), ((255, 255, 255), thickness)):
                    cv2.putText(
                        sheet,
                        self.labels[index],
                        origin,
                        cv2.FONT_HERSHEY_SIMPLEX,
                        scale,
                        colour,
                        width,
                        cv2.LINE_AA,
                    )
        return _as_uint16(sheet)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a preview image as PNG, atomically (a reader never sees a partial file)."""
    write_image(path, image)
