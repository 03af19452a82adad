"""What the demo measured and the summary it prints: `DemoResult`, the outputs decoded and
checked (`measure`: stream properties, the flicker estimate), and `print_demo_summary`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from skylapse.catalog import FrameRecord, JobRow
from skylapse.demo.options import DEMO_LOCATION, DemoOptions, DemoPaths
from skylapse.demo.progress import StageBoard
from skylapse.demo.stages import Received
from skylapse.processing.measure import central_log2_luminance

#: Width at which the outputs are decoded for measuring (the central region's mean is all
#: that is measured, which a reduced decode keeps).
MEASURE_WIDTH = 480


@dataclass(frozen=True)
class ExposureRange:
    """The exposures a session used, from the capture catalog."""

    ev100: tuple[float, float]  # photographic EV at ISO 100: bright scene = high EV
    exposure_s: tuple[float, float]
    gain: tuple[float, float]


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    codec: str
    profile: str | None
    pix_fmt: str | None
    size: tuple[int, int]
    tag: str
    frames: int
    seconds: float


@dataclass
class DemoResult:
    """Everything the demo did, for the summary, `--serve` and the tests."""

    options: DemoOptions
    out: Path
    session_id: str
    capture_buffer: Path
    capture_catalog: Path
    shots: int
    files_captured: int
    bracket_sets: int
    phases: list[str]
    exposure: ExposureRange
    frames_verified: int
    bytes_sent: int
    batches: int
    batches_during_capture: int
    inbox: Path
    ssh_dir: Path
    ingested: int
    quarantined: int
    data_dir: Path
    sequence_id: int
    render_job: JobRow
    archive_job: JobRow
    archive_dir: Path
    archived_files: list[Path]
    videos: dict[str, VideoInfo]
    flicker_in_ev: float
    flicker_out_ev: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    log_path: Path | None = None

    @property
    def render_stage_seconds(self) -> dict[str, float]:
        seconds = (self.render_job.result or {}).get("stage_seconds")
        return (
            {k: float(v) for k, v in seconds.items() if isinstance(v, int | float)}
            if isinstance(seconds, dict)
            else {}
        )

    @classmethod
    def of_stages(
        cls,
        options: DemoOptions,
        paths: DemoPaths,
        received: Received,
        jobs: tuple[JobRow, JobRow],
        archive_dir: Path,
        measured: Measured,
        board: StageBoard,
    ) -> DemoResult:
        """The result from what the stages returned (``jobs``: the render and archive jobs);
        ``wall_s`` and ``cpu_s`` are the caller's to set."""
        summary, records = received.summary, received.records
        return cls(
            options=options,
            out=paths.out,
            session_id=summary.session_id,
            capture_buffer=paths.buffer,
            capture_catalog=received.catalog.path,
            shots=summary.shots,
            files_captured=summary.written,
            bracket_sets=len({r.bracket_set for r in records if r.bracket_set is not None}),
            phases=list(summary.phases),
            exposure=exposure_range(records),
            frames_verified=sum(r.transfer_state == "verified" for r in records),
            bytes_sent=received.transfer.bytes_sent,
            batches=received.transfer.batches_verified,
            batches_during_capture=received.batches_during_capture,
            inbox=paths.inbox,
            ssh_dir=paths.ssh_dir,
            ingested=received.ingest.ingested,
            quarantined=len(received.ingest.quarantined),
            data_dir=paths.data_dir,
            sequence_id=received.sequence_id,
            render_job=jobs[0],
            archive_job=jobs[1],
            archive_dir=archive_dir,
            archived_files=sorted(p for p in archive_dir.rglob("*") if p.is_file()),
            videos=measured.videos,
            flicker_in_ev=measured.flicker_in_ev,
            flicker_out_ev=measured.flicker_out_ev,
            stage_seconds=dict(board.seconds),
            stage_cpu_seconds=dict(board.cpu_seconds),
            log_path=paths.log,
        )


def flicker_estimate_ev(log2_luminance: Sequence[float] | np.ndarray) -> float:
    """Frame-to-frame flicker of a brightness series (EV) without a ground truth.

    A sunset's real brightness changes slowly, so its second differences
    ``L[k+1] - 2 L[k] + L[k-1]`` are close to zero, while white flicker of standard deviation
    ``s`` gives second differences of standard deviation ``sqrt(6) s``. The estimate is therefore
    ``std(second differences) / sqrt(6)``: exact for white flicker on a linear trend, and an
    upper bound when the scene itself changes quickly (clouds, the sun going behind a ridge).
    The variate-difference method (Tintner, "The Variate Difference Method", 1940).
    """
    values = np.asarray(log2_luminance, dtype=np.float64)
    if values.size < 3:
        return float("nan")
    return float(np.diff(values, n=2).std() / math.sqrt(6.0))


def exposure_range(records: Sequence[FrameRecord]) -> ExposureRange:
    """EV100, exposure time and gain ranges of the frames (all bracket frames included).

    EV100 = log2(N^2 / t) - log2(gain): the exposure value a light meter at ISO 100 would give
    for the settings (gain 1 = ISO 100)."""
    rows = [
        (r.exposure_time_s, r.analogue_gain or 1.0, r.aperture or 1.0)
        for r in records
        if r.exposure_time_s
    ]
    if not rows:
        raise ValueError("no frame has exposure settings")
    t = np.array([r[0] for r in rows])
    g = np.array([r[1] for r in rows])
    n = np.array([r[2] for r in rows])
    ev = np.log2(n**2 / t) - np.log2(g)
    return ExposureRange(
        (float(ev.min()), float(ev.max())),
        (float(t.min()), float(t.max())),
        (float(g.min()), float(g.max())),
    )


def reference_frames(records: Sequence[FrameRecord]) -> list[FrameRecord]:
    """One frame per shot in capture order: the frame itself, or a bracket set's 0 EV frame."""
    refs = [r for r in records if r.bracket_set is None or abs(r.ev_offset or 0.0) < 1e-6]
    return sorted(refs, key=lambda r: (r.captured_at, r.path))


def _measure_video(path: Path, levels: bool = True) -> tuple[VideoInfo, np.ndarray]:
    """The stream's properties and (with ``levels``) each frame's central log2 luminance.

    With ``levels`` every frame is decoded; without, only the first (it decodes at all) and the
    frame count is the container's."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        cc = stream.codec_context
        w, h = stream.width, stream.height
        mw = min(MEASURE_WIDTH, w)
        mh = max(2, round(h * mw / w / 2) * 2)
        values, frames = [], 0
        for frame in container.decode(stream):
            frames += 1
            if not levels:
                frames = max(stream.frames, frames)
                break
            values.append(
                central_log2_luminance(
                    frame.to_ndarray(format="rgb48le", width=mw, height=mh, interpolation="AREA")
                )
            )
        seconds = (
            float(stream.duration * stream.time_base)
            if stream.duration and stream.time_base
            else 0.0
        )
        info = VideoInfo(
            path, cc.name, cc.profile, cc.pix_fmt, (w, h), stream.codec_tag, frames, seconds
        )
    return info, np.array(values)


def _input_levels(buffer: Path, refs: Sequence[FrameRecord]) -> np.ndarray:
    """Central log2 luminance of the captured frames, decoded at 1/4 scale (DCT scaling)."""
    levels = []
    for r in refs:
        bgr = cv2.imread(str(buffer / r.path), cv2.IMREAD_REDUCED_COLOR_4)
        if bgr is not None:
            levels.append(central_log2_luminance(np.ascontiguousarray(bgr[..., ::-1])))
    return np.array(levels)


@dataclass(frozen=True)
class Measured:
    """The outputs decoded: each video's stream (``h265``, ``h264``) and the flicker estimate
    of the output and of the captured frames."""

    videos: dict[str, VideoInfo]
    flicker_in_ev: float
    flicker_out_ev: float


def measure(
    board: StageBoard, archive_dir: Path, buffer: Path, records: Sequence[FrameRecord]
) -> Measured:
    """Stage 6: decode the archived videos and the captured frames and measure them."""
    with board.stage("measure", 3.0) as update:
        update(0, "decoding timelapse.mp4")
        h265, levels = _measure_video(archive_dir / "timelapse.mp4")
        update(1, "decoding timelapse.preview.mp4")
        h264, _ = _measure_video(archive_dir / "timelapse.preview.mp4", levels=False)
        update(2, "captured frames")
        flicker_in = flicker_estimate_ev(_input_levels(buffer, reference_frames(records)))
        flicker_out = flicker_estimate_ev(levels)
    return Measured({"h265": h265, "h264": h264}, flicker_in, flicker_out)


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _shutter(seconds: float) -> str:
    return f"1/{1 / seconds:.0f} s" if seconds < 0.5 else f"{seconds:.2g} s"


def print_demo_summary(result: DemoResult, console: Console) -> None:
    """Where everything is, and the summary table (frames, exposures, flicker, times)."""
    console.print(_where_table(result))
    table = Table(title="Demo summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    _add_work_rows(table, result)
    _add_time_rows(table, result)
    console.print(table)


def _where_table(result: DemoResult) -> Table:
    out = result.out

    def rel(path: Path) -> Path:
        return path.relative_to(out.parent) if path.is_relative_to(out.parent) else path

    where = Table(title="Where everything is", show_header=False, title_justify="left")
    where.add_column(style="bold")
    where.add_column()
    for label, path in (
        ("capture buffer", result.capture_buffer),
        ("capture catalog", result.capture_catalog),
        ("ssh keys, sshd_config", result.ssh_dir),
        ("inbox (received)", result.inbox),
        ("processing data", result.data_dir),
        ("job queue", result.data_dir / "queue.db"),
        ("timelapse (archived)", result.archive_dir),
        ("logs", result.log_path),
    ):
        if path is not None:
            where.add_row(label, str(rel(path)))
    for path in result.archived_files:
        where.add_row("", f"{path.name} ({_size(path)})")
    return where


def _add_work_rows(table: Table, result: DemoResult) -> None:
    """What was captured, transferred, ingested, rendered and measured."""
    singles = result.shots - result.bracket_sets
    table.add_row(
        "session",
        f"{result.session_id} at {DEMO_LOCATION.latitude:.2f} N "
        f"{DEMO_LOCATION.longitude:.2f} E, simulated camera and clock",
    )
    table.add_row(
        "frames captured",
        f"{result.files_captured} files in {result.shots} shots: "
        f"{result.bracket_sets} HDR bracket sets, {singles} single frames",
    )
    table.add_row("phases", ", ".join(p.replace("_", " ") for p in result.phases))
    ex = result.exposure
    table.add_row(
        "exposure range",
        f"EV100 {ex.ev100[1]:.1f} .. {ex.ev100[0]:.1f} "
        f"({ex.ev100[1] - ex.ev100[0]:.1f} stops; shutter {_shutter(ex.exposure_s[0])}"
        f" .. {_shutter(ex.exposure_s[1])}, gain {ex.gain[0]:.2f} .. {ex.gain[1]:.2f})",
    )
    table.add_row(
        "transferred",
        f"{result.frames_verified} frames verified in "
        f"{result.batches} batches, {result.batches_during_capture} of them during "
        f"the capture ({result.bytes_sent / 1e6:.1f} MB, rsync over ssh)",
    )
    table.add_row("ingested", f"{result.ingested} frames, {result.quarantined} quarantined")
    rr = result.render_job.result or {}
    table.add_row(
        "rendered",
        f"{rr.get('frames')} frames at {rr.get('render_fps')} fps, "
        f"deflicker {_ev_range(rr.get('exposure_correction_ev'))}",
    )
    for codec, info in result.videos.items():
        profile = f" {info.profile}" if info.profile else ""
        table.add_row(
            f"video {codec}",
            f"{info.codec}{profile} {info.pix_fmt} "
            f"{info.size[0]}x{info.size[1]} '{info.tag}', {info.frames} frames, "
            f"{info.seconds:.1f} s",
        )
    table.add_row(
        "flicker (estimate)",
        f"{result.flicker_out_ev:.3f} EV in the output vs {result.flicker_in_ev:.3f} "
        "EV as captured",
    )
    table.add_row(
        "",
        "no ground truth for a simulated session: std of the second differences "
        "of the central 50 % brightness / sqrt(6); clouds and the sun count too",
    )


def _add_time_rows(table: Table, result: DemoResult) -> None:
    """Each stage's wall and CPU time, the render's own stages, the total."""
    after = {
        "capture": ", transfer and ingest running alongside",
        "transfer": " more after the capture ended",
        "ingest": " more after the transfer ended",
    }
    for stage, seconds in result.stage_seconds.items():
        cpu = result.stage_cpu_seconds.get(stage)
        table.add_row(
            f"time: {stage}",
            f"{seconds:.1f} s{after.get(stage, '')}"
            + (f" (CPU {cpu:.1f} s)" if cpu is not None else ""),
        )
        if stage == "render":
            parts = ", ".join(
                f"{part} {s:.1f}"
                for part, s in sorted(result.render_stage_seconds.items(), key=lambda kv: -kv[1])
            )
            table.add_row("", f"render stages (s, threads overlap): {parts}")
    table.add_row("total", f"{result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU")


def _ev_range(values: object) -> str:
    """A render result's ``exposure_correction_ev`` ([lowest, highest] correction, EV)."""
    if not isinstance(values, list) or not values:
        return "—"
    return f"{values[0]:+.2f} .. {values[1]:+.2f} EV"
