"""The day's capture plan: phases, intervals, HDR, expected light; printable with rich.

``skylapse plan --location LAT,LON [--date D]`` shows this: for each stretch of one phase, when it
runs (local time), the sun's elevation range, the capture interval and the strategy (HDR on/off,
white balance) under a clear sky, the expected light (clear-sky EV100 range from
:mod:`skylapse.sky`) and the number of frames. Weather can substitute overcast or stormy
strategies at run time; the planned strategy is the clear-sky one.

API
---
``parse_location(text) -> (latitude, longitude)``        "LAT,LON" as typed on the command line.
``parse_duration(text) -> seconds``                      "1h30m", "100m", "90s", "2h", "1d", "45".
``parse_interval(text) -> seconds | None``               "auto" (None: the plan's) or a duration.
``parse_resolution(text) -> (width, height)``            "1920x1080".
``day_plan(location, day, config) -> DayPlan``           pure computation (astral, no I/O).
``render_plan_table(plan) -> rich.table.Table``          for ``rich.console.Console().print``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

from rich.table import Table

from skylapse import sky
from skylapse.capture.strategy import choose_capture
from skylapse.capture.sun import SunEvents, phase_segments, sun_events
from skylapse.config import LocationConfig, SkylapseConfig


def parse_location(text: str) -> tuple[float, float]:
    """``"46.55,7.98"`` to ``(46.55, 7.98)``; raises ValueError with a readable message."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ValueError(f"expected LAT,LON, got {text!r}")
    lat, lon = float(parts[0]), float(parts[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"latitude must be in -90..90 and longitude in -180..180, got {text!r}")
    return lat, lon


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(text: str) -> float:
    """``"100m"``, ``"90s"``, ``"2h"``, ``"1d"``, ``"1h30m"`` (or bare seconds) to seconds > 0;
    raises ValueError with a readable message."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        seconds = float(t)
    else:
        parts = _DURATION.findall(t)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != t.replace(" ", ""):
            raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 100m, 2h, 1d or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


def parse_interval(text: str) -> float | None:
    """``"auto"`` (follow the plan: None) or a duration in seconds (`parse_duration`)."""
    if text.strip().lower() == "auto":
        return None
    return parse_duration(text)


def parse_resolution(text: str) -> tuple[int, int]:
    """``"1920x1080"`` to ``(1920, 1080)``, each side at least 16; raises ValueError."""
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise ValueError(f"{text!r} is not WIDTHxHEIGHT (e.g. 1920x1080)")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class PlanRow:
    """One stretch of the day under one phase."""

    start: dt.datetime
    end: dt.datetime
    phase: str
    min_elevation_deg: float
    max_elevation_deg: float
    interval_s: float
    strategy: str
    hdr: bool
    white_balance: str
    ev100_min: float
    ev100_max: float
    frames: int


@dataclass(frozen=True)
class DayPlan:
    location: LocationConfig
    day: dt.date
    rows: list[PlanRow]
    events: SunEvents

    @property
    def total_frames(self) -> int:
        return sum(r.frames for r in self.rows)


def day_plan(location: LocationConfig, day: dt.date, config: SkylapseConfig) -> DayPlan:
    """The plan for the local ``day`` at ``location`` with the configured schedule."""
    rows = []
    for seg in phase_segments(location, day, config.schedule.phases):
        mid_elev = (seg.min_elevation_deg + seg.max_elevation_deg) / 2
        choice = choose_capture(config, mid_elev)
        wb = choice.strategy.white_balance
        rows.append(
            PlanRow(
                start=seg.start,
                end=seg.end,
                phase=seg.phase.name,
                min_elevation_deg=seg.min_elevation_deg,
                max_elevation_deg=seg.max_elevation_deg,
                interval_s=seg.phase.interval_s,
                strategy=seg.phase.strategy,
                hdr=choice.strategy.hdr,
                white_balance=wb if isinstance(wb, str) else f"{wb} K",
                ev100_min=float(sky.ev100(seg.min_elevation_deg)),
                ev100_max=float(sky.ev100(seg.max_elevation_deg)),
                frames=math.ceil(seg.duration.total_seconds() / seg.phase.interval_s),
            )
        )
    return DayPlan(location, day, rows, sun_events(location, day))


def _hm(t: dt.datetime | None) -> str:
    return "—" if t is None else t.strftime("%H:%M")


def render_plan_table(plan: DayPlan) -> Table:
    """A rich table of the plan; its caption lists sunrise, sunset and the frame total."""
    loc = plan.location
    title = (
        f"Capture plan {plan.day.isoformat()} at {loc.latitude:.4f}, {loc.longitude:.4f} "
        f"({loc.elevation_m:.0f} m, {loc.timezone})"
    )
    table = Table(title=title)
    for col, justify in (
        ("from", "left"),
        ("to", "left"),
        ("phase", "left"),
        ("sun °", "right"),
        ("interval", "right"),
        ("strategy", "left"),
        ("HDR", "center"),
        ("WB", "left"),
        ("light EV100", "right"),
        ("frames", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in plan.rows:
        table.add_row(
            _hm(r.start),
            _hm(r.end),
            r.phase,
            f"{r.min_elevation_deg:+.1f}..{r.max_elevation_deg:+.1f}",
            f"{r.interval_s:g} s",
            r.strategy,
            "on" if r.hdr else "off",
            r.white_balance,
            f"{r.ev100_min:.1f}..{r.ev100_max:.1f}",
            str(r.frames),
        )
    ev = plan.events
    table.caption = (
        f"sunrise {_hm(ev.sunrise)}, sunset {_hm(ev.sunset)}, civil dusk {_hm(ev.civil_dusk)}; "
        f"{plan.total_frames} frames; clear-sky strategies (weather may substitute "
        f"overcast/stormy at run time)"
    )
    return table
