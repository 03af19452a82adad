"""The render's two passes over a sequence (`skylapse.processing.render` describes them):
`RenderRun.analyse` reads every shot's reference frame at reduced size into a `Plan` (gains,
stabilizing transforms, white balance, HLG grade); `RenderRun.render_pass` decodes, processes and
encodes every shot of it into every output.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

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
from skylapse.processing.render_summary import ProgressCallback, RenderSummary, StageClock
from skylapse.processing.shots import (
    frame_ev,
    recorded_tones,
    reference_index,
    relative_exposures,
    sample_shots,
)
from skylapse.processing.streaming import prefetch
from skylapse.processing.white_balance import sequence_white_balance

#: Reduction of the analysis pass: 1/2 keeps registration sub-pixel at full resolution.
ANALYSIS_SCALE = 2
#: Shots decoded ahead of the one being processed: enough to keep both decode threads busy,
#: few enough that full-resolution frames waiting in line stay out of the memory budget.
PREFETCH_DEPTH = 2


def _lens_maps(profile_path: Path | None, size: tuple[int, int]) -> lens.LensMaps | None:
    if profile_path is None:
        return None
    profile = lens.load_lens_profile(profile_path)
    return lens.lens_correction_maps(profile, size)


@dataclass
class Plan:
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


class RenderRun:
    """One render's state: the frames, their size and the output's, the options, the decode
    pool, the stage clock, the summary being filled and the progress callback.

    `analyse` is pass 1 (a `Plan`), `render_pass` pass 2 (every output of ``outputs``
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
        self.clock = StageClock(summary.stage_seconds)
        self.report: ProgressCallback = progress or (lambda stage, done, total: None)
        self.outputs = outputs or OutputPlan.for_output(Path("render.mp4"), options, size)
        # Processed at the largest output size (the source's unless asked otherwise): the
        # stabilizing warp crops the common valid area and scales it to this in one resample.
        self.out_size = self.outputs.processing_size
        self.lens_maps = _lens_maps(options.lens_profile, size)

    # -- pass 1 --------------------------------------------------------------------------------

    def analyse(self, shots: list[list[int]]) -> Plan:
        """Read every shot's reference frame at reduced size into the deflicker analysis and the
        motion tracker; shots whose reference cannot be read are skipped."""
        options, clock, summary = self.options, self.clock, self.summary
        analysis = deflicker.DeflickerAnalysis() if options.deflicker else None
        tracker = (
            stabilize.MotionTracker(mode=options.stabilize, scale=ANALYSIS_SCALE)
            if options.stabilize != "off"
            else None
        )
        refs = [reference_index(shot, self.frames) for shot in shots]
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
                    analysis.add(gray, known_ev=frame_ev(self.frames[i]))
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
        plan = Plan(kept, gains, warp)
        if kept:
            with clock("colour"):
                plan.white_balance = self._white_balance_gains(plan)
        if self.outputs.needs_hdr and kept:
            with clock("hlg"):
                plan.hlg = self._hlg_grade(plan)
        return plan

    def _hlg_grade(self, plan: Plan) -> hdr.HlgGrade:
        """The HLG branch's grade: the sequence's peak from the highlights of sampled shots
        (merged at a quarter of the size, after their gains; see `hdr.hlg_peak`), and the
        white balance's linear gains."""
        w, h = self.size
        small = (max(2, w // 4), max(2, h // 4))
        levels = []
        for n in sample_shots(len(plan.shots)):
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
            linear = hdr.merge_radiance(images, relative_exposures(shot, self.frames))
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

    def render_pass(self, plan: Plan) -> None:
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

    def _read_shot(self, plan: Plan, n: int) -> _DecodedShot:
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

    def process_shot(self, images: list[np.ndarray], n: int, plan: Plan) -> _Shot:
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

    def _hlg_signal(self, images: list[np.ndarray], n: int, plan: Plan) -> np.ndarray:
        """The HLG branch of shot ``n`` before the warp: the aligned frames merged into light
        (linearised, for one frame), lens-corrected, gained and encoded."""
        assert plan.hlg is not None
        with self.clock("hlg"):
            shot = plan.shots[n] if len(images) > 1 else plan.shots[n][:1]
            linear = hdr.merge_radiance(images, relative_exposures(shot, self.frames))
            if self.lens_maps is not None:
                linear = hdr.correct_lens_linear(linear, self.lens_maps)
            gain = float(plan.gains[n]) if self.options.deflicker else 1.0
            return plan.hlg.apply(linear, gain)

    def _geometry(self, frame: np.ndarray, n: int, plan: Plan) -> np.ndarray:
        """Stabilize, crop and scale a processed frame to the processing size (one resample)."""
        with self.clock("stabilize"):
            if plan.warp is not None:
                transforms, crop = plan.warp
                return stabilize.warp_frame(frame, transforms[n], crop, self.out_size)
            if self.out_size != self.size:
                return cv2.resize(frame, self.out_size, interpolation=cv2.INTER_AREA)
            return frame

    def _white_balance_gains(self, plan: Plan) -> colour.Gains | None:
        """The sequence's white balance (`sequence_white_balance`) from sampled shots' frames."""
        samples = [self.frames[plan.shots[n][0]].path for n in sample_shots(len(plan.shots))]
        return sequence_white_balance(self.options.white_balance, samples)
