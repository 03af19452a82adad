"""Keogram and contact sheet (skylapse.processing.previews)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from skylapse.processing.previews import (
    ContactSheet,
    KeogramBuilder,
    centre_band,
    keogram,
    pick_indices,
    write_png,
)
from skylapse.processing.sources import read_frame

H, W = 180, 320


def _frame(i: int, seed: int = 0) -> np.ndarray:
    """A frame whose every column differs (so a wrong band shows) and that changes with i."""
    rng = np.random.default_rng(seed + i)
    return rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)


def test_centre_band_is_the_mean_of_the_central_columns() -> None:
    frame = _frame(0)
    band = centre_band(frame, 5)
    expected = frame[:, 158:163].astype(np.float64).mean(axis=1)
    assert band.shape == (H, 3) and band.dtype == np.uint16
    assert np.abs(band - expected).max() <= 0.5 + 1e-2
    # Default band: odd and narrow (1 px at 320 wide, 9 px at 1920).
    np.testing.assert_array_equal(centre_band(frame), frame[:, 160])
    wide = np.zeros((4, 1920, 3), np.uint16)
    wide[:, 956:965] = 65535  # exactly the 9 central columns
    assert centre_band(wide).min() == 65535
    wide[:, 956] = 0
    assert centre_band(wide).max() == round(65535 * 8 / 9)
    np.testing.assert_array_equal(centre_band(np.full((2, 8, 3), 200, np.uint8)), 200 * 257)


def test_keogram_column_i_is_frame_i_centre_band() -> None:
    builder = KeogramBuilder(band_width=7, aspect=None)
    frames = [_frame(i) for i in range(15)]
    for frame in frames:
        builder.add(frame)
    image = builder.image()
    assert image.shape == (H, 15, 3) and image.dtype == np.uint16
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(image[:, i], centre_band(frame, 7))


def test_keogram_aspect_widens_short_and_shortens_long_sequences() -> None:
    rng = np.random.default_rng(1)
    short = [rng.integers(0, 65536, (H, 3), dtype=np.uint16) for _ in range(12)]
    image = keogram(short, aspect=2.0)
    assert image.shape == (H, 2 * H, 3)  # 12 columns stretched to 360, height kept
    for j in range(image.shape[1]):  # every output column is exactly one frame's column
        np.testing.assert_array_equal(image[:, j], short[j * 12 // 360])
    assert {tuple(image[0, j]) for j in range(30)} == {tuple(short[0][0])}  # first 30 = frame 0

    tall = [np.full((1080, 3), i * 50, np.uint16) for i in range(1000)]
    image = keogram(tall, aspect=2.0)
    assert image.shape == (500, 1000, 3)  # 1000 frames: half as tall as wide
    np.testing.assert_array_equal(image[:, 300], np.full((500, 3), 300 * 50))
    with pytest.raises(ValueError):
        keogram([])


def test_pick_indices_are_even_and_include_the_ends() -> None:
    assert pick_indices(100, 5) == [0, 25, 50, 74, 99]
    assert pick_indices(3, 30) == [0, 1, 2]
    assert pick_indices(1, 30) == [0]
    picks = pick_indices(2000, 30)
    assert len(picks) == 30 and picks[0] == 0 and picks[-1] == 1999
    gaps = np.diff(picks)
    assert gaps.max() - gaps.min() <= 1


def test_contact_sheet_grid_and_tiles() -> None:
    n = 50
    sheet = ContactSheet(n, columns=4, rows=3, thumb_width=80)
    assert len(sheet.picks) == 12 and sheet.picks[0] == 0 and sheet.picks[-1] == n - 1
    frames = {}
    for i in range(n):
        frame = np.full((H, W, 3), (i * 1000, 30000, 65535 - i * 1000), np.uint16)
        if sheet.wants(i):
            frames[i] = frame
        sheet.add(i, frame)
    assert set(sheet.thumbnails) == set(sheet.picks)  # only the picks are kept
    image = sheet.image(labels=False)
    th = 45  # 80 * 180 / 320
    assert image.shape == (4 + 3 * (th + 4), 4 + 4 * (80 + 4), 3)
    for index in (0, n - 1, sheet.picks[5]):
        x, y = sheet.tile_origin(index)
        tile = image[y : y + th, x : x + 80]
        expected = np.rint(frames[index][0, 0] / 257) * 257  # 8-bit thumbnails, uint16 sheet
        assert image.dtype == np.uint16
        np.testing.assert_array_equal(tile, np.broadcast_to(expected, tile.shape))
    assert sheet.tile_origin(n - 1) == (4 + 3 * 84, 4 + 2 * (th + 4))  # last tile, last cell
    # Labels are drawn inside their tile and only there.
    labelled = sheet.image(labels=True)
    changed = np.any(labelled != image, axis=2)
    assert changed.any()
    x, y = sheet.tile_origin(0)
    assert changed[y : y + th, x : x + 80].any()
    tiles = np.zeros_like(changed)
    for index in sheet.picks:
        x, y = sheet.tile_origin(index)
        tiles[y : y + th, x : x + 80] = True
    assert not (changed & ~tiles).any()


def test_contact_sheet_small_sequences_and_missing_frames() -> None:
    sheet = ContactSheet(3, columns=6, rows=5, thumb_width=64)
    assert (sheet.columns, sheet.rows) == (3, 1)
    sheet.add(0, _frame(0))
    sheet.add(2, _frame(2))  # frame 1 failed to decode: its tile stays background
    image = sheet.image(labels=False)
    assert image.shape == (4 + 36 + 4, 4 + 3 * 68, 3)
    x, y = sheet.tile_origin(1)
    assert (image[y : y + 36, x : x + 64] == 24 * 257).all()
    thumb = cv2.resize(_frame(2), (64, 36), interpolation=cv2.INTER_AREA)
    x, y = sheet.tile_origin(2)
    assert np.abs(image[y : y + 36, x : x + 64].astype(int) - thumb).max() <= 129


def test_write_png_is_atomic_and_readable(tmp_path: Path) -> None:
    image = keogram([centre_band(_frame(i)) for i in range(10)], aspect=None)
    write_png(tmp_path / "keogram.png", image)
    assert [p.name for p in tmp_path.iterdir()] == ["keogram.png"]
    np.testing.assert_array_equal(read_frame(tmp_path / "keogram.png"), image)  # 16-bit PNG
