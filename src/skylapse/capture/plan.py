"""The day's capture plan: phases, intervals, HDR, expected light; printable with rich.

``skylapse plan --location LAT,LON [--date D]`` shows this: for each stretch of one phase, when it
runs (local time), the sun's elevation range, the capture interval and the strategy (HDR on/off,
white balance) under a clear sky, the expected light (clear-sky EV100 range from
:mod:`skylapse.sky`) and the number of frames. Weather can substitute overcast or stormy
strategies at run time; without weather the planned strategy is the clear-sky one.

With ``weather`` (``skylapse plan --weather FILE``: a replay through the station's weather
client, `skylapse.capture.weather_replay`) each stretch takes the observation at its middle: the
sky condition, the strategy and interval that condition and wind give, and the cloud cover's
dimming in the expected light; the session windows take the colour extension the weather
promises (`skylapse.capture.windows`). With ``memory`` (what the station learned,
`skylapse.capture.learning`) the expected light adds the learned offset for the sun's direction.

API
---
``parse_location(text) -> (latitude, longitude)``        "LAT,LON" as typed on the command line.
``parse_duration(text) -> seconds``                      "1h30m", "100m", "90s", "2h", "1d", "45".
``parse_interval(text) -> seconds | None``               "auto" (None: the plan's) or a duration.
``parse_resolution(text) -> (width, height)``            "1920x1080".
``day_plan(location, day, config, weather=None, memory=None) -> DayPlan``   pure (astral, no I/O).
``planned_windows(location, day, config, weather=None) -> list[(SessionWindow, colour)]``  pure.
``render_plan_table(plan) -> rich.table.Table``          for ``rich.console.Console().print``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table

from skylapse import sky
from skylapse.capture.learning import SkyMemory, direction
from skylapse.capture.strategy import choose_capture
from skylapse.capture.sun import SunEvents, phase_segments, sun_elevation, sun_events
from skylapse.capture.weather import WeatherObservation, classify_sky
from skylapse.capture.windows import SessionWindow, day_windows, promises_colour
from skylapse.config import LocationConfig, SkylapseConfig

#: The weather at a time (None: no observation): a replay through the client, or a forecast.
WeatherAt = Callable[[dt.datetime], WeatherObservation | None]
_MINUTE = dt.timedelta(minutes=1)


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
    sky: str = "clear"  # the condition the strategy was chosen for
    cloud_cover_pct: float | None = None  # the observation's, None without weather


@dataclass(frozen=True)
class DayPlan:
    location: LocationConfig
    day: dt.date
    rows: list[PlanRow]
    events: SunEvents
    with_weather: bool = False
    learned_bins: int = 0  # bins of the learned sky in the expected light (0: the table alone)

    @property
    def total_frames(self) -> int:
        return sum(r.frames for r in self.rows)


def _expected_ev(elevation: float, prior: Callable[[float], float] | None) -> float:
    """Expected EV100: the clear-sky table plus the expected offset (learned and clouds)."""
    return float(sky.ev100(elevation)) + (0.0 if prior is None else prior(elevation))


def day_plan(
    location: LocationConfig,
    day: dt.date,
    config: SkylapseConfig,
    weather: WeatherAt | None = None,
    memory: SkyMemory | None = None,
) -> DayPlan:
    """The plan for the local ``day`` at ``location`` with the configured schedule, under the
    ``weather`` (module docstring; None: a clear sky) and with what was learned (``memory``)."""
    rows = []
    for seg in phase_segments(location, day, config.schedule.phases):
        mid_elev = (seg.min_elevation_deg + seg.max_elevation_deg) / 2
        obs = None if weather is None else weather(seg.start + seg.duration / 2)
        condition = classify_sky(obs, config.weather)
        choice = choose_capture(config, mid_elev, condition, obs)
        wb = choice.strategy.white_balance
        cover = None if obs is None else obs.cloud_cover_pct
        mid = seg.start + seg.duration / 2
        way = direction(sun_elevation(location, mid), sun_elevation(location, mid + _MINUTE))
        prior = (memory or SkyMemory()).prior(way, cover)
        rows.append(
            PlanRow(
                start=seg.start,
                end=seg.end,
                phase=seg.phase.name,
                min_elevation_deg=seg.min_elevation_deg,
                max_elevation_deg=seg.max_elevation_deg,
                interval_s=choice.interval_s,
                strategy=choice.strategy_name,
                hdr=choice.strategy.hdr,
                white_balance=wb if isinstance(wb, str) else f"{wb} K",
                ev100_min=_expected_ev(seg.min_elevation_deg, prior),
                ev100_max=_expected_ev(seg.max_elevation_deg, prior),
                frames=math.ceil(seg.duration.total_seconds() / choice.interval_s),
                sky=condition,
                cloud_cover_pct=cover,
            )
        )
    learned = 0 if memory is None else len(memory.bins)
    return DayPlan(location, day, rows, sun_events(location, day), weather is not None, learned)


def planned_windows(
    location: LocationConfig,
    day: dt.date,
    config: SkylapseConfig,
    weather: WeatherAt | None = None,
) -> list[tuple[SessionWindow, bool]]:
    """The day's session windows and whether the weather at the earliest start each could have
    (its colour extension) promises colour and so extends it (the rule of
    `skylapse.capture.windows`)."""
    plain = day_windows(location, day, config)
    if weather is None:
        return [(w, False) for w in plain]
    widest = {w.name: w for w in day_windows(location, day, config, colour=True)}
    out = []
    for w in plain:
        colour = promises_colour(weather(widest[w.name].start), config)
        out.append((widest[w.name] if colour else w, colour))
    return out


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
    columns = [
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
    ]
    if plan.with_weather:
        columns[5:5] = [("sky", "left"), ("clouds", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in plan.rows:
        cells = [
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
        ]
        if plan.with_weather:
            clouds = "—" if r.cloud_cover_pct is None else f"{r.cloud_cover_pct:.0f} %"
            cells[5:5] = [r.sky, clouds]
        table.add_row(*cells)
    ev = plan.events
    weather = (
        "strategies under the replayed weather"
        if plan.with_weather
        else "clear-sky strategies (weather may substitute overcast/stormy at run time)"
    )
    learned = (
        f"; expected light with the learned sky ({plan.learned_bins} bins)"
        if plan.learned_bins
        else ""
    )
    table.caption = (
        f"sunrise {_hm(ev.sunrise)}, sunset {_hm(ev.sunset)}, civil dusk {_hm(ev.civil_dusk)}; "
        f"{plan.total_frames} frames; {weather}{learned}"
    )
    return table
