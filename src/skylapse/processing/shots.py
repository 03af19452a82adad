"""Shots: what becomes one output frame (one frame, or one bracket / focus set), and what the
capture recorded about each: its bracket sets and its tone.

A shot's reference frame is the one whose exposure stands for it (the middle exposure of a
bracket set); its exposure in EV is `deflicker.exposure_ev` of the frame's EXIF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skylapse.exif import read_skylapse_metadata
from skylapse.processing import colour, deflicker, exposure_fusion, hdr, sources
from skylapse.processing.options import RenderOptions
from skylapse.processing.render_summary import RenderError


def group_shots(frames: Sequence[sources.FrameInfo], options: RenderOptions) -> list[list[int]]:
    """Split the ordered frames into shots: single frames, bracket sets or focus sets.

    ``brackets="capture"`` (the default) fuses the sets the capture recorded and leaves every
    other frame single; with ``focus_stack`` it gives way to the focus stacks (any other
    ``brackets`` with ``focus_stack`` is an error).
    """
    if options.brackets not in (None, "capture") and options.focus_stack is not None:
        raise RenderError("--brackets and --focus-stack cannot be combined")
    if options.focus_stack is not None:
        n = options.focus_stack
        return [list(range(i, min(i + n, len(frames)))) for i in range(0, len(frames), n)]
    if options.brackets == "capture":
        return capture_bracket_sets(frames) or [[i] for i in range(len(frames))]
    if options.brackets is not None:
        if options.brackets == "auto":
            recorded = capture_bracket_sets(frames)
            if recorded is not None:
                return recorded
        evs = [frame_ev(f) for f in frames]
        if options.brackets == "auto":
            known = [ev for ev in evs if ev is not None]
            if len(known) != len(evs):
                raise RenderError("--brackets auto needs EXIF exposure values on every frame")
            return exposure_fusion.group_brackets(known, None)
        return exposure_fusion.group_brackets([ev or 0.0 for ev in evs], options.brackets)
    return [[i] for i in range(len(frames))]


def capture_bracket_sets(frames: Sequence[sources.FrameInfo]) -> list[list[int]] | None:
    """Shots as the capture service took them, from its record in each frame's EXIF (session
    and bracket set number), or None when no frame has that record.

    A station brackets only in some phases (golden hour), so a session mixes single frames
    and bracket sets, which no fixed period of the EV pattern describes; the capture's own
    record does, exactly. Frames without a bracket record are single shots.
    """
    keys: list[tuple[object, object] | None] = []
    for f in frames:
        meta = _skylapse_record(f)
        bracket = meta.get("bracket")
        keys.append(
            (meta.get("session_id"), bracket.get("set"))
            if isinstance(bracket, dict) and "set" in bracket
            else None
        )
    if all(k is None for k in keys):
        return None
    shots: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is not None and shots and keys[shots[-1][-1]] == key:
            shots[-1].append(i)
        else:
            shots.append([i])
    return shots


def _skylapse_record(info: sources.FrameInfo) -> dict[str, Any]:
    """The capture's own record in a frame's EXIF; ``{}`` when there is none or it is unreadable."""
    if info.fmt not in ("jpeg", "png", "tiff", "dng"):
        return {}
    try:
        return read_skylapse_metadata(info.path)
    except (OSError, ValueError, SyntaxError):  # no or unreadable EXIF
        return {}


def recorded_tones(
    frames: Sequence[sources.FrameInfo], shots: Sequence[Sequence[int]]
) -> list[colour.Tone | None]:
    """The tone each shot's capture recorded (its reference frame's), None where none was."""
    tones = []
    for shot in shots:
        info = frames[reference_index(shot, frames)]
        try:
            tones.append(colour.Tone.from_record(_skylapse_record(info)))
        except ValueError as exc:
            raise RenderError(f"{info.path}: {exc}") from None
    return tones


def frame_ev(info: sources.FrameInfo) -> float | None:
    """A frame's exposure in EV from its EXIF (`deflicker.exposure_ev`); None without an
    exposure time."""
    if info.exposure_time_s is None:
        return None
    return deflicker.exposure_ev(info.exposure_time_s, info.iso, info.f_number)


def reference_index(shot: Sequence[int], frames: Sequence[sources.FrameInfo]) -> int:
    """The frame of a shot whose exposure stands for it: the middle exposure of a bracket set."""
    if len(shot) == 1:
        return shot[0]
    evs = [frame_ev(frames[i]) for i in shot]
    known = [ev for ev in evs if ev is not None]
    if len(known) == len(evs):
        order = sorted(range(len(shot)), key=known.__getitem__)
        return shot[order[len(order) // 2]]
    return shot[len(shot) // 2]


def relative_exposures(shot: Sequence[int], frames: Sequence[sources.FrameInfo]) -> list[float]:
    """Each frame's exposure relative to the shot's reference frame (`hdr.relative_exposures`)."""
    reference = shot.index(reference_index(shot, frames)) if len(shot) > 1 else 0
    try:
        return hdr.relative_exposures([frame_ev(frames[i]) for i in shot], reference)
    except ValueError as exc:
        raise RenderError(f"--format hlg: {frames[shot[0]].path}: {exc}") from None


def sample_shots(count: int) -> list[int]:
    """Up to nine of ``count`` shots spread evenly over the sequence (its sequence-wide
    choices: the white balance, the HLG peak)."""
    sampled = min(9, count)
    return [int(n) for n in np.unique(np.linspace(0, count - 1, num=sampled))]
