"""The render pipeline: a folder of frames in, a deflickered, stabilized timelapse out.

This is the imperative shell around the pure stages in this package. It streams the sequence
twice and never holds it in memory:

1. **Analysis pass.** Every shot's reference frame is read at reduced resolution (cheap: JPEG
   decodes at 1/2 or 1/4 scale through DCT scaling) and fed to the deflicker analysis and the
   motion tracker, which keep a few numbers per frame. Afterwards the per-frame exposure gains,
   the stabilizing transforms and the common crop of the whole sequence are known.
2. **Render pass.** Frames are decoded at full resolution a few ahead on a thread pool, then
   fused (HDR brackets, focus stacks), lens-corrected, gained, warped (stabilize + crop + scale in
   one resample), given the tone its capture recorded (`colour.ToneStage`: the weather's shadow
   lift, contrast and dehaze), temporally denoised over a window of neighbours, colour-adjusted,
   and handed to the encoders, each on its own thread behind a bounded queue.

Every output (`skylapse.processing.outputs`: ``--format h265@2160p,h264@720p,...``) is fed from
that one pass: the frames are processed once at the largest size asked for and each output is
scaled from the same processed frame. The SDR outputs take the fused, sRGB-encoded frames; an
HLG output (``hlg``) takes a second branch of the same shot built from scene-linear light
(`skylapse.processing.hdr`: bracket sets merged into radiance, the same deflicker gains, the
sequence's HLG peak chosen at the end of the analysis pass), warped and denoised like the first.
The recorded tone is an SDR grade: the HLG branch keeps the scene's light as it was.

A shot is what becomes one output frame: one frame, or one bracket / focus set.

Here: `render` (checks, discovery, the shots, the decode pool). The passes are
`skylapse.processing.render_passes`, the shots and what the capture recorded about them
`skylapse.processing.shots`, the sequence's white balance `skylapse.processing.white_balance`,
the error, summary and stage clock `skylapse.processing.render_summary`.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skylapse.processing import sources
from skylapse.processing.options import RenderOptions
from skylapse.processing.outputs import OutputPlan
from skylapse.processing.render_passes import RenderRun
from skylapse.processing.render_summary import (
    ProgressCallback,
    RenderError,
    RenderSummary,
    StageClock,
)
from skylapse.processing.shots import group_shots, relative_exposures

# A render's API: the function, the error it raises and the summary it returns.
__all__ = ["ProgressCallback", "RenderError", "RenderSummary", "render"]

#: Threads decoding frames (both passes).
DECODE_THREADS = 2


def _check_output(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise RenderError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RenderError(f"cannot write {out}: folder {parent} is not writable")
    if out.is_dir():
        raise RenderError(f"cannot write {out}: it is a folder")


def render(
    src: str | Path,
    out: str | Path,
    options: RenderOptions | None = None,
    progress: ProgressCallback | None = None,
) -> RenderSummary:
    """Render the frames found at ``src`` (folder or glob) into ``out`` and its siblings.

    Raises `RenderError` when nothing can be rendered. Unreadable or mismatched frames are
    skipped and listed in the summary; files in ``src`` are only ever read.
    """
    options = options or RenderOptions()
    out = Path(out)
    t_start = time.perf_counter()
    summary = RenderSummary()

    _check_output(out)
    with StageClock(summary.stage_seconds)("discover"):
        try:
            frames, skipped = sources.discover_frames(src)
        except (FileNotFoundError, sources.MissingRawSupportError) as exc:
            raise RenderError(str(exc)) from None
    summary.frames_in = len(frames) + len(skipped)
    summary.skipped.extend((s.path, s.reason) for s in skipped)
    if not frames:
        raise RenderError(f"no readable frames in {src}")

    size = _sequence_size(frames)
    frames = _drop_mismatched(frames, size, summary)
    summary.source_size = size
    shots = group_shots(frames, options)
    outputs = OutputPlan.for_output(out, options, size)
    if outputs.needs_hdr:  # every bracket set's exposures known, before anything is written
        for shot in shots:
            relative_exposures(shot, frames)

    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode") as pool:
        run = RenderRun(frames, size, options, pool, summary, progress, outputs)
        plan = run.analyse(shots)
        if not plan.shots:
            raise RenderError(f"no readable frames in {src}")
        run.render_pass(plan)

    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _sequence_size(frames: Sequence[sources.FrameInfo]) -> tuple[int, int]:
    """The size most frames have (a few odd ones out are scaled or refused, not the rest)."""
    return Counter((f.width, f.height) for f in frames).most_common(1)[0][0]


def _drop_mismatched(
    frames: list[sources.FrameInfo], size: tuple[int, int], summary: RenderSummary
) -> list[sources.FrameInfo]:
    kept = []
    w, h = size
    for f in frames:
        if (f.width, f.height) != size and not math.isclose(
            f.width / f.height, w / h, rel_tol=0.01
        ):
            summary.skipped.append(
                (f.path, f"aspect of {f.width}x{f.height} differs from the sequence's {w}x{h}")
            )
            continue
        kept.append(f)
    return kept
