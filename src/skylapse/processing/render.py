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
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skylapse.exif import read_skylapse_metadata
from skylapse.imaging import srgb
from skylapse.processing import (
    colour,
    deflicker,
    denoise,
    exposure_fusion,
    focus_stack,
    hdr,
    lens,
    previews,
    sources,
    stabilize,
)
from skylapse.processing.options import RenderOptions
from skylapse.processing.outputs import OutputPlan, open_sinks
from skylapse.processing.streaming import prefetch

#: Reduction of the analysis pass: 1/2 keeps registration sub-pixel at full resolution.
ANALYSIS_SCALE = 2
#: Shots decoded ahead of the one being processed: enough to keep both decode threads busy,
#: few enough that full-resolution frames waiting in line stay out of the memory budget.
PREFETCH_DEPTH = 2
#: Threads decoding frames (both passes).
DECODE_THREADS = 2

ProgressCallback = Callable[[str, int, int], None]


class RenderError(Exception):
    """A render that cannot start or finish: empty source, unwritable output, bad options."""


@dataclass
class RenderSummary:
    """What a render did: the table `skylapse render` prints at the end."""

    frames_in: int = 0
    shots_rendered: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    outputs: list[Path] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)
    output_size: tuple[int, int] = (0, 0)
    wall_seconds: float = 0.0
    exposure_correction_ev: tuple[float, float] = (0.0, 0.0)

    @property
    def frames_per_second(self) -> float:
        return self.shots_rendered / self.wall_seconds if self.wall_seconds else 0.0


class _StageClock:
    """Accumulates seconds per stage into the summary."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


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
        evs = [_frame_ev(f) for f in frames]
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
        info = frames[_reference_index(shot, frames)]
        try:
            tones.append(colour.Tone.from_record(_skylapse_record(info)))
        except ValueError as exc:
            raise RenderError(f"{info.path}: {exc}") from None
    return tones


def _frame_ev(info: sources.FrameInfo) -> float | None:
    if info.exposure_time_s is None:
        return None
    return deflicker.exposure_ev(info.exposure_time_s, info.iso, info.f_number)


def _reference_index(shot: Sequence[int], frames: Sequence[sources.FrameInfo]) -> int:
    """The frame of a shot whose exposure stands for it: the middle exposure of a bracket set."""
    if len(shot) == 1:
        return shot[0]
    evs = [_frame_ev(frames[i]) for i in shot]
    known = [ev for ev in evs if ev is not None]
    if len(known) == len(evs):
        order = sorted(range(len(shot)), key=known.__getitem__)
        return shot[order[len(order) // 2]]
    return shot[len(shot) // 2]


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
    with _StageClock(summary.stage_seconds)("discover"):
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
            _relative_exposures(shot, frames)

    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode") as pool:
        run = _RenderRun(frames, size, options, pool, summary, progress, outputs)
        plan = run.analyse(shots)
        if not plan.shots:
            raise RenderError(f"no readable frames in {src}")
        run.render_pass(plan)

    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _relative_exposures(shot: Sequence[int], frames: Sequence[sources.FrameInfo]) -> list[float]:
    """Each frame's exposure relative to the shot's reference frame (`hdr.relative_exposures`)."""
    reference = shot.index(_reference_index(shot, frames)) if len(shot) > 1 else 0
    try:
        return hdr.relative_exposures([_frame_ev(frames[i]) for i in shot], reference)
    except ValueError as exc:
        raise RenderError(f"--format hlg: {frames[shot[0]].path}: {exc}") from None


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


def _lens_maps(profile_path: Path | None, size: tuple[int, int]) -> lens.LensMaps | None:
    if profile_path is None:
        return None
    profile = lens.load_lens_profile(profile_path)
    return lens.lens_correction_maps(profile, size)


@dataclass
class _Plan:
    """What the analysis pass decided, one entry per shot that will be rendered."""

    shots: list[list[int]]
    gains: np.ndarray
    # the stabilizing transforms (one per shot) and their common crop, None when not stabilizing
    warp: tuple[list[np.ndarray], tuple[int, int, int, int]] | None
    # the sequence's white balance (linear gains), None to leave the colours as shot
    white_balance: colour.Gains | None = None
    # the HLG branch's grade (its peak chosen for the sequence), None without an HLG output
    hlg: hdr.HlgGrade | None = None


@dataclass
class _Shot:
    """One processed shot, at the processing size: its SDR frame (uint16 sRGB) and its HLG
    signal (uint16 BT.2020 HLG), each None when no output needs it."""

    sdr: np.ndarray | None
    hlg: np.ndarray | None


#: A decoded shot: its index and frames, or the (path, reason) of the frame that failed, and
#: the seconds spent decoding.
_DecodedShot = tuple[int, list[np.ndarray] | tuple[Path, str], float]


class _RenderRun:
    """One render's state: the frames, their size and the output's, the options, the decode
    pool, the stage clock, the summary being filled and the progress callback.

    `analyse` is pass 1 (a `_Plan`), `render_pass` pass 2 (every output of ``outputs``
    written); `process_shot` turns one decoded shot into one processed frame per branch.
    """

    def __init__(
        self,
        frames: list[sources.FrameInfo],
        size: tuple[int, int],
        options: RenderOptions,
        pool: Executor,
        summary: RenderSummary,
        progress: ProgressCallback | None = None,
        outputs: OutputPlan | None = None,
    ):
        self.frames = frames
        self.size = size
        self.options = options
        self.pool = pool
        self.summary = summary
        self.clock = _StageClock(summary.stage_seconds)
        self.report: ProgressCallback = progress or (lambda stage, done, total: None)
        self.outputs = outputs or OutputPlan.for_output(Path("render.mp4"), options, size)
        # Processed at the largest output size (the source's unless asked otherwise): the
        # stabilizing warp crops the common valid area and scales it to this in one resample.
        self.out_size = self.outputs.processing_size
        self.lens_maps = _lens_maps(options.lens_profile, size)

    # -- pass 1 --------------------------------------------------------------------------------

    def analyse(self, shots: list[list[int]]) -> _Plan:
        """Read every shot's reference frame at reduced size into the deflicker analysis and the
        motion tracker; shots whose reference cannot be read are skipped."""
        options, clock, summary = self.options, self.clock, self.summary
        analysis = deflicker.DeflickerAnalysis() if options.deflicker else None
        tracker = (
            stabilize.MotionTracker(mode=options.stabilize, scale=ANALYSIS_SCALE)
            if options.stabilize != "off"
            else None
        )
        refs = [_reference_index(shot, self.frames) for shot in shots]
        kept: list[list[int]] = []
        need_pixels = analysis is not None or tracker is not None
        for n, (shot, (i, gray, error, seconds)) in enumerate(
            zip(
                shots,
                prefetch(self.pool, self._read_reduced, refs, PREFETCH_DEPTH * 2),
                strict=True,
            )
            if need_pixels
            else ((shot, (r, None, None, 0.0)) for shot, r in zip(shots, refs, strict=True))
        ):
            summary.stage_seconds["decode (analysis)"] += seconds
            if error is not None:
                summary.skipped.extend((self.frames[j].path, error) for j in shot)
                continue
            kept.append(shot)
            if analysis is not None and gray is not None:  # None only when not need_pixels
                with clock("deflicker"):
                    analysis.add(gray, known_ev=_frame_ev(self.frames[i]))
            if tracker is not None and gray is not None:
                with clock("stabilize"):
                    tracker.add(gray)
            self.report("analysing", n + 1, len(shots))

        gains = np.ones(len(kept))
        if analysis is not None and kept:
            with clock("deflicker"):
                gains = analysis.gains()
            log_gains = np.log2(gains)
            summary.exposure_correction_ev = (float(log_gains.min()), float(log_gains.max()))
        warp = None
        if tracker is not None and kept:
            with clock("stabilize"):
                transforms = tracker.transforms()
                warp = (transforms, stabilize.common_crop(transforms, self.size))
        plan = _Plan(kept, gains, warp)
        if kept:
            with clock("colour"):
                plan.white_balance = self._white_balance_gains(plan)
        if self.outputs.needs_hdr and kept:
            with clock("hlg"):
                plan.hlg = self._hlg_grade(plan)
        return plan

    def _sample_shots(self, plan: _Plan) -> list[int]:
        """Up to nine shots spread evenly over the sequence (sequence-wide choices)."""
        count = min(9, len(plan.shots))
        return [int(n) for n in np.unique(np.linspace(0, len(plan.shots) - 1, num=count))]

    def _hlg_grade(self, plan: _Plan) -> hdr.HlgGrade:
        """The HLG branch's grade: the sequence's peak from the highlights of sampled shots
        (merged at a quarter of the size, after their gains; see `hdr.hlg_peak`), and the
        white balance's linear gains."""
        w, h = self.size
        small = (max(2, w // 4), max(2, h // 4))
        levels = []
        for n in self._sample_shots(plan):
            shot = plan.shots[n]
            try:
                images = [
                    cv2.resize(
                        sources.fit_to_size(
                            sources.read_frame(self.frames[i].path, keep_8bit=True), self.size
                        ),
                        small,
                        interpolation=cv2.INTER_AREA,
                    )
                    for i in shot
                ]
            except (sources.FrameReadError, sources.AspectMismatchError):
                continue
            linear = hdr.merge_radiance(images, _relative_exposures(shot, self.frames))
            levels.append(hdr.highlight_level(linear, float(plan.gains[n])))
        return hdr.HlgGrade(hdr.hlg_peak(levels), plan.white_balance or (1.0, 1.0, 1.0))

    def _read_reduced(self, i: int) -> tuple[int, np.ndarray | None, str | None, float]:
        """Frame ``i`` in gray at the analysis scale, or the reason it cannot be read."""
        w, h = self.size
        reduced_size = (w // ANALYSIS_SCALE, h // ANALYSIS_SCALE)
        t0 = time.perf_counter()
        try:
            gray: np.ndarray = sources.read_gray_reduced(self.frames[i].path, ANALYSIS_SCALE)
        except sources.FrameReadError as exc:
            return i, None, str(exc.reason), time.perf_counter() - t0
        if gray.shape[1::-1] != reduced_size:
            gray = cv2.resize(gray, reduced_size, interpolation=cv2.INTER_AREA)
        return i, gray, None, time.perf_counter() - t0

    # -- pass 2 --------------------------------------------------------------------------------

    def render_pass(self, plan: _Plan) -> None:
        """Decode, process, denoise, grade and encode every shot of ``plan`` into every output."""
        clock, summary, outputs = self.clock, self.summary, self.outputs
        summary.output_size = self.out_size
        grade = colour.ColourGrade(
            plan.white_balance or (1.0, 1.0, 1.0), self.options.contrast, self.options.saturation
        )
        keogram = previews.KeogramBuilder() if outputs.keogram else None
        sheet = previews.ContactSheet(len(plan.shots)) if outputs.contact_sheet else None
        tone = colour.ToneStage(
            recorded_tones(self.frames, plan.shots), ramp_frames=round(self.options.fps)
        )
        denoisers = [denoise.Denoiser(self.options.denoise) for _ in range(2)]
        emitted = 0

        with ExitStack() as stack:
            sinks = open_sinks(outputs, self.options, stack, summary.stage_seconds)
            summary.outputs.extend(output.path for output, _ in sinks)

            def emit(sdr: np.ndarray | None, hlg: np.ndarray | None) -> None:
                nonlocal emitted
                if sdr is not None and not grade.is_identity:
                    with clock("colour"):
                        sdr = grade.apply(sdr)
                for output, sink in sinks:
                    sink.put(hlg if output.hdr else sdr)  # type: ignore[arg-type]
                # the previews show the SDR frames; without any, the HLG signal as it is (what
                # an SDR screen makes of HLG: its compatibility is by design)
                preview = sdr if sdr is not None else hlg
                with clock("previews"):
                    if keogram is not None and preview is not None:
                        keogram.add(preview)
                    if sheet is not None and preview is not None:
                        sheet.add(emitted, preview)
                emitted += 1
                self.report("rendering", emitted, len(plan.shots))

            shot_numbers = range(len(plan.shots))
            for n, images, seconds in prefetch(
                self.pool, lambda n: self._read_shot(plan, n), shot_numbers, PREFETCH_DEPTH
            ):
                summary.stage_seconds["decode"] += seconds
                if isinstance(images, tuple):
                    # The file changed since the analysis pass; render on without it.
                    summary.skipped.append(images)
                    continue
                shot = self.process_shot(images, n, plan)
                if shot.sdr is not None and not tone.is_identity:
                    with clock("colour"):
                        shot.sdr = tone.apply(n, shot.sdr)
                for pair in self._denoise(denoisers, shot):
                    emit(*pair)
            for pair in self._denoise(denoisers, None):
                emit(*pair)

            with clock("encode (wait for the encoders)"):
                for _, sink in sinks:
                    sink.close()
            summary.shots_rendered = emitted

        with clock("previews"):
            if keogram is not None and outputs.keogram is not None and emitted:
                previews.write_png(outputs.keogram, srgb.to_uint8(keogram.image()))
                summary.outputs.append(outputs.keogram)
            if sheet is not None and outputs.contact_sheet is not None and emitted:
                previews.write_png(outputs.contact_sheet, srgb.to_uint8(sheet.image()))
                summary.outputs.append(outputs.contact_sheet)

    def _denoise(
        self, denoisers: list[denoise.Denoiser], shot: _Shot | None
    ) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """A processed shot's branches through their denoisers (``None``: flush them at the
        end); the shots released, as (SDR, HLG) pairs. Both see the same shots: in step."""
        released: list[list[np.ndarray] | None] = []
        with self.clock("denoise"):
            frames = (shot.sdr, shot.hlg) if shot else (None, None)
            wanted = (self.outputs.needs_sdr, self.outputs.needs_hdr)
            for denoiser, frame, used in zip(denoisers, frames, wanted, strict=True):
                if not used:
                    released.append(None)
                else:
                    released.append(denoiser.push(frame) if frame is not None else denoiser.flush())
        sdr, hlg = released
        count = len(sdr if sdr is not None else hlg or [])
        return [(sdr[k] if sdr else None, hlg[k] if hlg else None) for k in range(count)]

    def _read_shot(self, plan: _Plan, n: int) -> _DecodedShot:
        """Shot ``n``'s decoded frames, or the (path, reason) of the one that failed."""
        t0 = time.perf_counter()
        images = []
        for j in plan.shots[n]:
            path = self.frames[j].path
            try:
                frame = sources.read_frame(path, keep_8bit=True)
                images.append(sources.fit_to_size(frame, self.size, path=path))
            except sources.FrameReadError as exc:
                return n, (path, exc.reason), time.perf_counter() - t0
            except sources.AspectMismatchError as exc:
                return n, (path, str(exc)), time.perf_counter() - t0
        return n, images, time.perf_counter() - t0

    def process_shot(self, images: list[np.ndarray], n: int, plan: _Plan) -> _Shot:
        """Shot ``n``'s frames to one stabilized, gained frame per branch (SDR, HLG).

        Takes ownership of ``images`` (emptied here) and works in place where it can, so that
        no more full-resolution frames are alive at once than the stage at hand needs.
        """
        options, clock = self.options, self.clock
        # Frames wait in the prefetch queue as decoded (8-bit JPEGs at half the memory).
        images[:] = [srgb.to_uint16(image) for image in images]
        if len(images) > 1:
            with clock("fusion"):
                if options.focus_stack is not None:
                    images[:] = [
                        focus_stack.fuse_focus_stack(focus_stack.align_focus_stack(images))
                    ]
                else:
                    images[:] = exposure_fusion.align_brackets(images)
        sdr = hlg = None
        if self.outputs.needs_hdr:
            hlg = self._geometry(self._hlg_signal(images, n, plan), n, plan)
        if self.outputs.needs_sdr:
            if len(images) > 1:
                with clock("fusion"):
                    frame = exposure_fusion.fuse_exposures(images)
            else:
                frame = images[0]
            images.clear()
            if self.lens_maps is not None:
                with clock("lens"):
                    frame = lens.correct_lens(frame, self.lens_maps)
            if options.deflicker:
                with clock("deflicker"):
                    frame = deflicker.apply_gain(frame, float(plan.gains[n]), out=frame)
            sdr = self._geometry(frame, n, plan)
        images.clear()
        return _Shot(sdr, hlg)

    def _hlg_signal(self, images: list[np.ndarray], n: int, plan: _Plan) -> np.ndarray:
        """The HLG branch of shot ``n`` before the warp: the aligned frames merged into light
        (linearised, for one frame), lens-corrected, gained and encoded."""
        assert plan.hlg is not None
        with self.clock("hlg"):
            shot = plan.shots[n] if len(images) > 1 else plan.shots[n][:1]
            linear = hdr.merge_radiance(images, _relative_exposures(shot, self.frames))
            if self.lens_maps is not None:
                linear = hdr.correct_lens_linear(linear, self.lens_maps)
            gain = float(plan.gains[n]) if self.options.deflicker else 1.0
            return plan.hlg.apply(linear, gain)

    def _geometry(self, frame: np.ndarray, n: int, plan: _Plan) -> np.ndarray:
        """Stabilize, crop and scale a processed frame to the processing size (one resample)."""
        with self.clock("stabilize"):
            if plan.warp is not None:
                transforms, crop = plan.warp
                return stabilize.warp_frame(frame, transforms[n], crop, self.out_size)
            if self.out_size != self.size:
                return cv2.resize(frame, self.out_size, interpolation=cv2.INTER_AREA)
            return frame

    def _white_balance_gains(self, plan: _Plan) -> colour.Gains | None:
        """One white balance for the whole sequence: per-frame gray-world would itself
        flicker, so gray world is the median over up to nine frames spread across it."""
        wb = self.options.white_balance
        if wb is None:
            return None
        if wb.kelvin is not None:
            return colour.kelvin_gains(wb.kelvin)
        samples = []
        for n in self._sample_shots(plan):
            try:
                img = sources.read_frame(self.frames[plan.shots[n][0]].path)
            except sources.FrameReadError:
                continue
            samples.append(colour.gray_world_gains(img))
        if not samples:
            return None
        r, g, b = np.median(np.array(samples), axis=0)
        return (float(r), float(g), float(b))
