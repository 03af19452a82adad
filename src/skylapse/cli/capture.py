"""The capture side of the command line: ``skylapse plan``, ``skylapse capture``, ``skylapse
frames``, ``skylapse sky``.

Argument errors (a malformed ``--duration``, ``--interval``, ``--location``, ``--start`` or
``--resolution``) raise ``typer.BadParameter``: a one-line message naming the option and exit
status 2. The parsers themselves are `skylapse.capture.plan`'s.

The weather replay (`skylapse.capture.weather_replay`, which brings the simulated camera and its
scene) is imported inside the commands that take ``--weather``, so that `skylapse serve
capture`, which loads this module, does not load it (README, "Capture footprint").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table

from skylapse import log
from skylapse.capture.cameras import CameraConfig, CameraError, make_camera
from skylapse.capture.clock import Clock, RealClock, SimulatedClock
from skylapse.capture.learning import (
    MEMORY_NAME,
    SkyMemory,
    SkyMemoryError,
    load_memory,
    memory_rows,
    reset_memory,
)
from skylapse.capture.plan import (
    day_plan,
    parse_duration,
    parse_interval,
    parse_location,
    parse_resolution,
    planned_windows,
    render_plan_table,
)
from skylapse.capture.service import (
    CATALOG_NAME,
    CaptureService,
    SessionSpec,
    SessionSummary,
    summary_lines,
)
from skylapse.capture.weather import WeatherService
from skylapse.catalog.capture import Catalog
from skylapse.cli.common import config_or_exit
from skylapse.config import LocationConfig, SkylapseConfig
from skylapse.names import check_name

_T = TypeVar("_T")
_P = ParamSpec("_P")


def _parsed(parse: Callable[[str], _T], text: str, option: str) -> _T:
    """``parse(text)``, its ValueError a usage error naming ``option``."""
    try:
        return parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _location(text: str | None, config: SkylapseConfig, timezone: str | None) -> LocationConfig:
    update: dict[str, object] = {}
    if text is not None:
        update["latitude"], update["longitude"] = _parsed(parse_location, text, "--location")
    if timezone is not None:
        try:
            LocationConfig(timezone=timezone)
        except ValueError as exc:
            raise typer.BadParameter(
                f"unknown time zone {timezone!r}", param_hint="--timezone"
            ) from exc
        update["timezone"] = timezone
    return config.location.model_copy(update=update)


def _session_name(value: str | None) -> str | None:
    """``--session`` follows the one name rule (`skylapse.names`): it becomes a folder."""
    try:
        return None if value is None else check_name(value, "session id")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _parse_start(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO-8601 time such as 2024-03-20T17:00:00+01:00",
            param_hint="--start",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _replay(load: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """A ``--weather FILE`` replay (`skylapse.capture.weather_replay`); a bad file is a
    BadParameter naming it. The replay module is imported here, when a replay is asked for: it
    brings the simulated camera, which renders the replayed weather."""
    from skylapse.capture.weather_replay import WeatherFileError

    try:
        return load(*args, **kwargs)
    except WeatherFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--weather") from None


def _sky_memory(buffer: Path) -> SkyMemory:
    """What the station at ``buffer`` learned (empty when nothing yet)."""
    try:
        return load_memory(buffer.expanduser() / MEMORY_NAME)
    except SkyMemoryError as exc:
        raise typer.BadParameter(str(exc), param_hint="--buffer") from None


def _print_summary(console: Console, summary: SessionSummary) -> None:
    table = Table(title="Capture summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_lines(summary):
        table.add_row(label, value)
    console.print(table)


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------


def plan(
    location: Annotated[
        str | None, typer.Option(help="LAT,LON, e.g. 46.55,7.98 (default: the configuration's).")
    ] = None,
    date: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today).")] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA zone for the printed times, e.g. Europe/Zurich.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Configuration YAML.")] = None,
    weather: Annotated[
        Path | None,
        typer.Option(help="Replay OpenWeatherMap current-weather answers (a JSON list)."),
    ] = None,
    buffer: Annotated[
        Path | None,
        typer.Option(help="Buffer whose learned sky the expected light uses (capture.buffer_dir)."),
    ] = None,
) -> None:
    """Print the day's capture plan: phases, intervals, strategies, expected light."""
    cfg = config_or_exit(config)
    loc = _location(location, cfg, timezone)
    if date is None:
        day = dt.datetime.now(ZoneInfo(loc.timezone)).date()
    else:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise typer.BadParameter(f"{date!r} is not YYYY-MM-DD", param_hint="--date") from None
    weather_at = None
    if weather is not None:
        from skylapse.capture.weather_replay import replayed_day

        weather_at = _replay(replayed_day, weather, cfg.weather, loc, day)
    memory = _sky_memory(buffer or cfg.capture.buffer_dir)
    console = Console()
    console.print(render_plan_table(day_plan(loc, day, cfg, weather_at, memory)))
    tz = ZoneInfo(loc.timezone)
    for w, colour in planned_windows(loc, day, cfg, weather_at):
        console.print(
            f"session {w.session_id}: {w.start.astimezone(tz):%H:%M} - "
            f"{w.end.astimezone(tz):%H:%M}"
            + (" (extended: the clouds promise colour)" if colour else ""),
            highlight=False,
        )


def capture(
    camera: Annotated[
        str, typer.Option(help="auto, simulated, replay:DIR, picamera2[:N] or usb[:DEVICE].")
    ] = "auto",
    location: Annotated[
        str | None, typer.Option(help="LAT,LON (default: the configuration's).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="ISO-8601 start (simulated clock: where time begins; real clock: wait until)."
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            help="How long to capture, e.g. 100m, 90s, 2h, 1d (with --plan: how long to run)."
        ),
    ] = None,
    interval: Annotated[
        str, typer.Option(help="Seconds between frames, e.g. 30s, or 'auto' to follow the plan.")
    ] = "auto",
    clock: Annotated[
        str, typer.Option(help="real, or simulated (time jumps: an evening runs in seconds).")
    ] = "real",
    buffer: Annotated[
        Path | None, typer.Option(help="Local frame buffer (default: capture.buffer_dir).")
    ] = None,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan", help="Unattended: sessions open and close by the plan, day after day."
        ),
    ] = False,
    config: Annotated[Path | None, typer.Option(help="Configuration YAML.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated camera.")] = 0,
    resolution: Annotated[
        str | None, typer.Option(help="WIDTHxHEIGHT (default: the camera profile's).")
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            help="Session id; an existing one is resumed (default: from the start time).",
            callback=_session_name,
        ),
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone for day folders.")] = None,
    log_level: Annotated[str, typer.Option(help="JSON logs on stderr at this level.")] = "warning",
    weather: Annotated[
        Path | None,
        typer.Option(
            help="Replay OpenWeatherMap current-weather answers (a JSON list) through the "
            "weather client; a simulated camera renders that weather."
        ),
    ] = None,
) -> None:
    """Capture a session (or, with --plan, every planned session) into the local buffer."""
    log.configure(log_level.upper())
    cfg = config_or_exit(config)
    loc = _location(location, cfg, timezone)
    cfg = cfg.model_copy(update={"location": loc})
    seconds = _parsed(parse_duration, duration, "--duration") if duration is not None else None
    interval_s = _parsed(parse_interval, interval, "--interval")
    size = _parsed(parse_resolution, resolution, "--resolution") if resolution is not None else None
    when = _parse_start(start)
    if clock not in ("real", "simulated"):
        raise typer.BadParameter(f"{clock!r} is not real or simulated", param_hint="--clock")
    if clock == "simulated" and seconds is None:
        raise typer.BadParameter(
            "a simulated clock needs --duration (it would never end)", param_hint="--duration"
        )
    the_clock: Clock = (
        SimulatedClock(when or dt.datetime.now(dt.UTC)) if clock == "simulated" else RealClock()
    )
    try:
        cam = make_camera(camera, the_clock, loc, seed)
    except (CameraError, ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--camera") from None
    folder = (buffer or cfg.capture.buffer_dir).expanduser()
    sky_source = None
    if weather is not None:
        from skylapse.capture.weather_replay import replayed_weather

        sky_source = _replay(replayed_weather, weather, cfg.weather, loc, the_clock.now, cam)
    elif clock == "real" and cfg.weather.enabled:
        sky_source = WeatherService(cfg.weather, loc)
    console = Console()

    make_service = partial(  # made inside the capture's event loop
        CaptureService,
        cam,
        buffer=folder,
        config=cfg,
        clock=the_clock,
        camera_config=CameraConfig(resolution=size),
        weather=sky_source,
    )
    spec = SessionSpec(session_id=session, interval_s=interval_s, duration_s=seconds)
    start_at = when if clock == "real" else None
    try:
        summaries = asyncio.run(_run(make_service, the_clock, console, start_at, spec, plan=plan))
    except CameraError as exc:
        console.print(f"[bold red]error:[/] camera: {exc}", highlight=False)
        raise typer.Exit(1) from None
    for s in summaries:
        _print_summary(console, s)
    if plan:
        console.print(f"{len(summaries)} sessions", highlight=False)


async def _run(
    make_service: Callable[[], CaptureService],
    clock: Clock,
    console: Console,
    start_at: dt.datetime | None,
    session: SessionSpec,
    *,
    plan: bool,
) -> list[SessionSummary]:
    """Wait until ``start_at`` (a real clock's start), then capture ``session``, or with
    ``plan`` every planned session for the session's duration (None: until stopped)."""
    service = make_service()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # not possible off the main thread (tests) or on some platforms
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, service.stop_plan)
    try:
        if start_at is not None:
            wait = (start_at - clock.now()).total_seconds()
            if wait > 0:
                console.print(f"waiting {wait:.0f} s until {start_at.isoformat()}")
                await clock.sleep(wait)
        if plan:
            seconds = session.duration_s
            until = clock.now() + dt.timedelta(seconds=seconds) if seconds else None
            return await service.run_plan(until=until)
        await service.open()
        return [await service.run_session(session)]
    finally:
        await service.close()


def frames(
    buffer: Annotated[Path, typer.Option(help="The local frame buffer (holds catalog.sqlite).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array, one object per frame.")
    ] = False,
    include_deleted: Annotated[
        bool, typer.Option(help="Also list frames retention or cleanup deleted.")
    ] = False,
) -> None:
    """List the frames in the capture catalog."""
    path = buffer.expanduser() / CATALOG_NAME
    if not path.is_file():
        raise typer.BadParameter(f"no catalog at {path}", param_hint="--buffer")
    records = Catalog(path).frames(include_deleted=include_deleted)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in records], indent=1))
        return
    table = Table(title=f"{len(records)} frames in {buffer}")
    for col in (
        "path",
        "captured",
        "exposure",
        "gain",
        "lens",
        "bracket",
        "phase",
        "quality",
        "latency",
        "transfer",
    ):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.path,
            r.captured_at.isoformat(timespec="milliseconds"),
            f"{r.exposure_time_s:.5g} s" if r.exposure_time_s else "—",
            f"{r.analogue_gain:.2f}" if r.analogue_gain else "—",
            f"{r.lens_position:.2f}" if r.lens_position is not None else "—",
            f"{r.bracket_set}/{r.bracket_index}" if r.bracket_set is not None else "",
            r.phase or "",
            f"{r.quality_score:.2f}" if r.quality_score is not None else "—",
            f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "—",
            r.transfer_state,
        )
    Console().print(table)


def sky(
    buffer: Annotated[
        Path | None, typer.Option(help="The local frame buffer (default: capture.buffer_dir).")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Forget everything learned.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The stored memory as JSON.")] = False,
    config: Annotated[Path | None, typer.Option(help="Configuration YAML.")] = None,
) -> None:
    """Show what the station learned about its sky (per sun-elevation bin), or --reset it."""
    folder = (buffer or config_or_exit(config).capture.buffer_dir).expanduser()
    path = folder / MEMORY_NAME
    if reset:
        gone = reset_memory(path)
        typer.echo(f"forgot the learned sky ({path})" if gone else f"nothing learned at {path}")
        return
    memory = _sky_memory(folder)
    if as_json:
        typer.echo(memory.model_dump_json(indent=1))
        return
    table = Table(title=f"Learned sky at {path}")
    for col in ("sun", "elevation °", "offset EV", "clouds", "frames", "sessions", "updated"):
        table.add_column(col)
    for row in memory_rows(memory):
        table.add_row(*row)
    focus = memory.last_good_focus
    table.caption = "last good focus: " + ("—" if focus is None else f"{focus:.3f} dpt")
    Console().print(table)
