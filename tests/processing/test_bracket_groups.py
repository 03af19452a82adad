"""`--brackets auto` on a capture session that brackets only in golden hour: the capture's
own EXIF record groups the shots, single frames stay single."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from skylapse.exif import exif_bytes, with_exif_jpeg
from skylapse.processing import sources
from skylapse.processing.options import RenderOptions
from skylapse.processing.shots import capture_bracket_sets, group_shots

T0 = datetime(2025, 10, 11, 16, 0, tzinfo=UTC)


def write_frame(
    folder: Path,
    name: str,
    when: datetime,
    ev_offset: float,
    bracket: dict | None,
    with_record: bool = True,
) -> None:
    level = int(np.clip(120 * 2.0**ev_offset, 0, 255))
    ok, enc = cv2.imencode(".jpg", np.full((36, 64, 3), level, np.uint8))
    assert ok
    record = {"session_id": "s1", "bracket": bracket} if with_record else None
    exif = exif_bytes(
        when, exposure_time_s=0.01 * 2.0**ev_offset, iso=100, f_number=1.8, skylapse=record
    )
    (folder / name).write_bytes(with_exif_jpeg(enc.tobytes(), exif))


def mixed_session(folder: Path, with_record: bool = True) -> None:
    """2 single frames, 2 bracket sets of 3 (-2/0/+2), then 1 single frame."""
    t = T0
    for n, shot in enumerate(("single", "single", "set", "set", "single")):
        if shot == "single":
            write_frame(folder, f"frame_{n:06d}.jpg", t, 0.0, None, with_record)
        else:
            for i, ev in enumerate((-2.0, 0.0, 2.0)):
                write_frame(
                    folder,
                    f"frame_{n:06d}_b{i}.jpg",
                    t + timedelta(seconds=i),
                    ev,
                    {"set": n, "index": i, "ev_offset": ev},
                    with_record,
                )
        t += timedelta(seconds=30)


def test_mixed_session_groups_by_the_capture_record(tmp_path):
    mixed_session(tmp_path)
    frames, skipped = sources.discover_frames(tmp_path)
    assert not skipped and len(frames) == 9
    expected = [[0], [1], [2, 3, 4], [5, 6, 7], [8]]
    assert capture_bracket_sets(frames) == expected
    assert group_shots(frames, RenderOptions(brackets="auto")) == expected
    # a fixed count still cuts consecutive runs, as asked
    assert group_shots(frames, RenderOptions(brackets=3))[0] == [0, 1, 2]


def test_without_a_capture_record_the_ev_pattern_decides(tmp_path):
    mixed_session(tmp_path, with_record=False)
    frames, _ = sources.discover_frames(tmp_path)
    assert capture_bracket_sets(frames) is None
    shots = group_shots(frames, RenderOptions(brackets="auto"))
    assert sorted(i for shot in shots for i in shot) == list(range(9))  # no frame dropped
