"""The capture side of the command line: ``skylapse plan``, ``skylapse capture``, ``skylapse
frames``. Plain typer-annotated functions, registered on the app in :mod:`skylapse.cli`.

Argument errors (a malformed ``--duration``, ``--interval``, ``--location``, ``--start`` or
``--resolution``) raise ``typer.BadParameter``: a one-line message naming the option and exit
status 2.

Helpers (pure): ``parse_duration("1h30m") -> seconds``, ``parse_interval("auto" | "30s")``,
``parse_resolution("320x180")``, ``make_camera(spec, clock, location, seed)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from skylapse.capture.cameras import Camera, CameraConfig, CameraError, CameraFactory
from skylapse.capture.clock import Clock, RealClock, SimulatedClock
from skylapse.capture.plan import day_plan, parse_location, render_plan_table
from skylapse.capture.service import (
    CATALOG_NAME,
    CaptureService,
    SessionSpec,
    SessionSummary,
    summary_lines,
)
from skylapse.capture.windows import day_windows
from skylapse.catalog.capture import Catalog
from skylapse.config import ConfigError, LocationConfig, SkylapseConfig, load_config
from skylapse.names import check_name

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(text: str, option: str = "--duration") -> float:
    """``"100m"``, ``"90s"``, ``"2h"``, ``"1d"``, ``"1h30m"`` (or bare seconds) to seconds > 0."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        seconds = float(t)
    else:
        parts = _DURATION.findall(t)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != t.replace(" ", ""):
            raise typer.BadParameter(
                f"{text!r} is not a duration; use e.g. 90s, 100m, 2h, 1d or 1h30m",
                param_hint=option,
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r} must be longer than zero", param_hint=option)
    return seconds


def parse_interval(text: str) -> float | None:
    """``"auto"`` (follow the plan: None) or a duration in seconds."""
    if text.strip().lower() == "auto":
        return None
    return parse_duration(text, "--interval")


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise typer.BadParameter(
            f"{text!r} is not WIDTHxHEIGHT (e.g. 1920x1080)", param_hint="--resolution"
        )
    return int(m.group(1)), int(m.group(2))


def _location(text: str | None, config: SkylapseConfig, timezone: str | None) -> LocationConfig:
    update: dict[str, object] = {}
    if text is not None:
        try:
            update["latitude"], update["longitude"] = parse_location(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--location") from None
    if timezone is not None:
        try:
            LocationConfig(timezone=timezone)
        except ValueError as exc:
            raise typer.BadParameter(
                f"unknown time zone {timezone!r}", param_hint="--timezone"
            ) from exc
        update["timezone"] = timezone
    return config.location.model_copy(update=update)


def _config(path: Path | None) -> SkylapseConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None


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


def make_camera(spec: str, clock: Clock, location: LocationConfig, seed: int) -> Camera:
    """``auto``, ``simulated``, ``replay:DIR``, ``picamera2[:N]``, ``usb[:DEVICE]``."""
    name, _, arg = spec.partition(":")
    if name in ("auto", "simulated"):  # the simulated camera (and its scene) may be used
        from skylapse.capture.cameras.simulated import Location

        site = Location(location.latitude, location.longitude, location.elevation_m)
        if name == "auto":
            return CameraFactory.auto_detect_camera(clock=clock, location=site, seed=seed)
        return CameraFactory.create("simulated", clock=clock, location=site, seed=seed)
    if name == "replay":
        if not arg:
            raise CameraError("use replay:DIR")
        return CameraFactory.create("replay", clock=clock, folder=arg)
    if name == "usb":
        return CameraFactory.create(
            "usb", clock=clock, **({"device": int(arg) if arg.isdigit() else arg} if arg else {})
        )
    if name == "picamera2":
        return CameraFactory.create(
            "picamera2", clock=clock, **({"camera_num": int(arg)} if arg else {})
        )
    return CameraFactory.create(name, clock=clock)


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
) -> None:
    """Print the day's capture plan: phases, intervals, strategies, expected light."""
    cfg = _config(config)
    loc = _location(location, cfg, timezone)
    if date is None:
        from zoneinfo import ZoneInfo

        day = dt.datetime.now(ZoneInfo(loc.timezone)).date()
    else:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise typer.BadParameter(f"{date!r} is not YYYY-MM-DD", param_hint="--date") from None
    console = Console()
    console.print(render_plan_table(day_plan(loc, day, cfg)))
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(loc.timezone)
    for w in day_windows(loc, day, cfg):
        console.print(
            f"session {w.session_id}: {w.start.astimezone(tz):%H:%M} - "
            f"{w.end.astimezone(tz):%H:%M}",
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
) -> None:
    """Capture a session (or, with --plan, every planned session) into the local buffer."""
    from skylapse import log

    log.configure(log_level.upper())
    cfg = _config(config)
    loc = _location(location, cfg, timezone)
    cfg = cfg.model_copy(update={"location": loc})
    seconds = parse_duration(duration) if duration is not None else None
    interval_s = parse_interval(interval)
    size = parse_resolution(resolution)
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
    weather = None
    if clock == "real" and cfg.weather.enabled:
        from skylapse.capture.weather import WeatherService

        weather = WeatherService(cfg.weather, loc)
    console = Console()

    async def run() -> list[SessionSummary]:
        service = CaptureService(
            cam,
            buffer=folder,
            config=cfg,
            clock=the_clock,
            camera_config=CameraConfig(resolution=size),
            weather=weather,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # not possible off the main thread (tests) or on some platforms
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, service.stop_plan)
        try:
            if when is not None and clock == "real":
                wait = (when - the_clock.now()).total_seconds()
                if wait > 0:
                    console.print(f"waiting {wait:.0f} s until {when.isoformat()}")
                    await the_clock.sleep(wait)
            if plan:
                until = the_clock.now() + dt.timedelta(seconds=seconds) if seconds else None
                return await service.run_plan(until=until)
            await service.open()
            return [
                await service.run_session(
                    SessionSpec(session_id=session, interval_s=interval_s, duration_s=seconds)
                )
            ]
        finally:
            await service.close()

    try:
        summaries = asyncio.run(run())
    except CameraError as exc:
        console.print(f"[bold red]error:[/] camera: {exc}", highlight=False)
        raise typer.Exit(1) from None
    for s in summaries:
        _print_summary(console, s)
    if plan:
        console.print(f"{len(summaries)} sessions", highlight=False)


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
