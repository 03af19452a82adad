"""`skylapse demo`: the whole system on this machine, on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skylapse.capture.plan import parse_resolution
from skylapse.cli.common import console, fail


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "demo-output"
    ),
    serve: Annotated[
        bool, typer.Option("--serve", help="Afterwards, serve the APIs and dashboard (Ctrl-C).")
    ] = False,
    resolution: Annotated[
        str | None, typer.Option(help="The simulated camera's frames, WxH (960x540).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Size of the videos: 1080p (default), 720p or WxH.")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option(help="Length of the evening session (90).", min=5, max=600)
    ] = None,
    frames_scale: Annotated[
        float | None,
        typer.Option(
            help="More (>1) or fewer (<1) frames than the demo's ~155 shots: divides "
            "the capture intervals.",
            min=0.01,
            max=10,
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Encoder preset, ultrafast .. veryslow (veryfast).")
    ] = None,
) -> None:
    """Run the whole system on this machine with nothing configured: capture an evening on the
    simulated camera, transfer it with rsync over SSH, ingest, render, archive, and summarise.
    """
    from skylapse.demo import DemoError, DemoOptions, print_demo_summary, run_demo, serve_demo

    defaults = DemoOptions(out=out)  # what an option not given keeps
    try:
        wh = None if resolution is None else parse_resolution(resolution)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--resolution") from None
    options = DemoOptions(
        out=out,
        resolution=defaults.resolution if wh is None else wh,
        size=defaults.size if size is None else size,
        minutes=defaults.minutes if minutes is None else minutes,
        frames_scale=defaults.frames_scale if frames_scale is None else frames_scale,
        preset=defaults.preset if preset is None else preset,
    )
    try:
        result = run_demo(options, console)
    except DemoError as exc:
        raise fail(str(exc), 1) from None
    print_demo_summary(result, console)
    if serve:
        serve_demo(result, console)
