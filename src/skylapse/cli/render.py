"""`skylapse render`: any folder of frames into a timelapse, with a progress bar and a summary.

The flags are `RenderOptions`' fields (``--format`` is ``formats``) and take their defaults
from it; the values are validated once, by the model, and a bad one is a usage error naming
its flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from skylapse.cli.common import bad_parameter, console, fail
from skylapse.processing.options import RenderOptions

if TYPE_CHECKING:
    from skylapse.processing.render import RenderSummary

#: `skylapse render`'s defaults: the render's own, as text.
_RENDER_DEFAULTS = RenderOptions().model_dump(mode="json")


class _RichProgress:
    """Adapts the pipeline's progress callback to a rich progress bar, one task per stage."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def render(
    src: Annotated[str, typer.Argument(help="A folder of frames, or a glob such as 'day1/*.jpg'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The video to write (OUT.mp4).")],
    format: Annotated[
        list[str],
        typer.Option(
            "--format",
            help="FORMAT[@SIZE], all from one pass: h265 (Main10), h264 (web preview, "
            "OUT.preview.mp4 beside another video), frames (OUT.frames/), hlg (HDR: BT.2100 "
            "HLG, OUT.hlg.mp4 beside an h265); e.g. h265@2160p,h264@720p. Repeat or "
            "comma-separate.",
        ),
    ] = _RENDER_DEFAULTS["formats"],
    size: Annotated[
        str | None,
        typer.Option(
            help="2160p, 1080p, 720p or WxH for outputs without @SIZE; default: the source's."
        ),
    ] = _RENDER_DEFAULTS["size"],
    fps: Annotated[float, typer.Option(help="Frames per second of the video.")] = _RENDER_DEFAULTS[
        "fps"
    ],
    crf: Annotated[
        int | None,
        typer.Option(help="Encoder quality (lower is better); default 28 H.265, 23 H.264."),
    ] = _RENDER_DEFAULTS["crf"],
    preset: Annotated[
        str, typer.Option(help="Encoder preset, ultrafast .. veryslow.")
    ] = _RENDER_DEFAULTS["preset"],
    deflicker: Annotated[
        bool, typer.Option(help="Remove exposure flicker, keeping real trends like a sunset.")
    ] = _RENDER_DEFAULTS["deflicker"],
    stabilize: Annotated[
        str,
        typer.Option(help="tripod: lock the scene in place; smooth: keep pans, remove shake; off."),
    ] = _RENDER_DEFAULTS["stabilize"],
    smooth: Annotated[
        bool, typer.Option("--smooth", help="Same as --stabilize smooth (for pans and sliders).")
    ] = False,
    denoise: Annotated[
        str, typer.Option(help="temporal (motion-adaptive, default), spatial or off.")
    ] = _RENDER_DEFAULTS["denoise"],
    white_balance: Annotated[
        str | None, typer.Option(help="gray-world, or a colour temperature such as 5600K.")
    ] = _RENDER_DEFAULTS["white_balance"],
    contrast: Annotated[
        float, typer.Option(help="Contrast, 1.0 leaves it as shot.")
    ] = _RENDER_DEFAULTS["contrast"],
    saturation: Annotated[
        float, typer.Option(help="Saturation, 1.0 leaves it as shot.")
    ] = _RENDER_DEFAULTS["saturation"],
    lens_profile: Annotated[
        Path | None, typer.Option(help="YAML lens profile: distortion and vignetting to correct.")
    ] = _RENDER_DEFAULTS["lens_profile"],
    brackets: Annotated[
        str | None,
        typer.Option(
            help="capture: fuse the bracket sets the capture recorded in EXIF (a folder "
            "without them renders frame by frame); auto: also from the EXIF exposures' "
            "pattern; N: sets of N frames; off."
        ),
    ] = _RENDER_DEFAULTS["brackets"],
    focus_stack: Annotated[
        int | None, typer.Option(help="Fuse focus stacks of N frames by local contrast.", min=2)
    ] = _RENDER_DEFAULTS["focus_stack"],
    frames_format: Annotated[
        str, typer.Option(help="png (16-bit) or jpg for --format frames.")
    ] = _RENDER_DEFAULTS["frames_format"],
    keogram: Annotated[
        bool, typer.Option(help="Write OUT.keogram.png (a column per frame).")
    ] = _RENDER_DEFAULTS["keogram"],
    contact_sheet: Annotated[bool, typer.Option(help="Write OUT.contact.png.")] = _RENDER_DEFAULTS[
        "contact_sheet"
    ],
) -> None:
    """Render a folder of frames into a deflickered, stabilized timelapse."""
    given = {
        "formats": format,
        "size": size,
        "fps": fps,
        "crf": crf,
        "preset": preset,
        "deflicker": deflicker,
        "stabilize": "smooth" if smooth else stabilize,
        "denoise": denoise,
        "white_balance": white_balance,
        "contrast": contrast,
        "saturation": saturation,
        "lens_profile": lens_profile,
        "brackets": brackets,
        "focus_stack": focus_stack,
        "frames_format": frames_format,
        "keogram": keogram,
        "contact_sheet": contact_sheet,
    }
    try:
        options = RenderOptions.model_validate(given)
    except ValidationError as exc:
        raise bad_parameter(exc, {"formats": "--format"}) from None
    from skylapse.processing.render import RenderError
    from skylapse.processing.render import render as run_render

    try:
        with _progress_bar() as bar:
            summary = run_render(src, output, options, progress=_RichProgress(bar))
    except (RenderError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    print_summary(summary)


def print_summary(summary: RenderSummary) -> None:
    """The table printed after a render: frames, skips and why, time per stage, outputs."""
    table = Table(title="Render summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("frames in", str(summary.frames_in))
    table.add_row("frames rendered", str(summary.shots_rendered))
    table.add_row("frames skipped", str(len(summary.skipped)))
    for path, reason in summary.skipped:
        table.add_row("", f"{path}: {reason}")
    w, h = summary.output_size
    sw, sh = summary.source_size
    table.add_row("size", f"{sw}x{sh} -> {w}x{h}")
    lo, hi = summary.exposure_correction_ev
    table.add_row("deflicker range", f"{lo:+.2f} .. {hi:+.2f} EV")
    for stage, seconds in summary.stage_seconds.items():
        table.add_row(f"time: {stage}", f"{seconds:.2f} s")
    table.add_row(
        "wall time", f"{summary.wall_seconds:.2f} s ({summary.frames_per_second:.1f} fps)"
    )
    for path in summary.outputs:
        table.add_row("output", f"{path} ({_size_of(path)})")
    console.print(table)


def _size_of(path: Path) -> str:
    total: float
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    elif path.exists():
        total = path.stat().st_size
    else:
        return "missing"
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GB"
