"""The sun for a station: its elevation at any moment, the day's named events, and the phases.

Sun positions and event times come from astral (NOAA solar equations). A *phase* (day, golden
hour, blue hour, twilight, night; see ``schedule.phases`` in the configuration) is decided by the
sun's elevation alone, so the capture loop and the printed plan agree by construction, and polar
days and nights (where astral has no sunrise or sunset) need no special case: the segments of a
day are found by sampling the elevation every minute and bisecting each change of phase to the
second.

API
---
``observer(location) -> astral.Observer``
``sun_elevation(location, when) -> float``          degrees, refraction included.
``sun_events(location, day) -> SunEvents``           astral's events; ``None`` where the sun never
                                                     reaches that elevation on that day.
``phase_for_elevation(elevation_deg, phases) -> PhaseConfig``
``phase_segments(location, day, phases) -> list[PhaseSegment]``  the local day split by phase.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from zoneinfo import ZoneInfo

from astral import Observer, SunDirection
from astral import sun as astral_sun

from skylapse.config import LocationConfig, PhaseConfig

T = TypeVar("T")


def observer(location: LocationConfig) -> Observer:
    """The astral observer for a configured location."""
    return Observer(location.latitude, location.longitude, location.elevation_m)


def sun_elevation(location: LocationConfig, when: dt.datetime) -> float:
    """The sun's apparent elevation in degrees at ``when`` (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return astral_sun.elevation(observer(location), when)


@dataclass(frozen=True)
class SunEvents:
    """A local day's sun events (aware datetimes in the location's zone); None if they do not
    happen that day. Golden and blue hours are ``(start, end)`` pairs."""

    astronomical_dawn: dt.datetime | None
    nautical_dawn: dt.datetime | None
    civil_dawn: dt.datetime | None
    sunrise: dt.datetime | None
    noon: dt.datetime
    sunset: dt.datetime | None
    civil_dusk: dt.datetime | None
    nautical_dusk: dt.datetime | None
    astronomical_dusk: dt.datetime | None
    morning_golden_hour: tuple[dt.datetime, dt.datetime] | None
    evening_golden_hour: tuple[dt.datetime, dt.datetime] | None
    morning_blue_hour: tuple[dt.datetime, dt.datetime] | None
    evening_blue_hour: tuple[dt.datetime, dt.datetime] | None


def _or_none(fn: Callable[[], T]) -> T | None:
    # astral raises ValueError when the sun never reaches the elevation that day
    try:
        return fn()
    except ValueError:
        return None


def sun_events(location: LocationConfig, day: dt.date) -> SunEvents:
    """Astral's sunrise/sunset, twilights, golden and blue hours for ``day`` at ``location``."""
    obs, tz = observer(location), ZoneInfo(location.timezone)
    rising, setting = SunDirection.RISING, SunDirection.SETTING

    def dawn(dep: float) -> dt.datetime | None:
        return _or_none(lambda: astral_sun.dawn(obs, day, dep, tz))

    def dusk(dep: float) -> dt.datetime | None:
        return _or_none(lambda: astral_sun.dusk(obs, day, dep, tz))

    return SunEvents(
        astronomical_dawn=dawn(18),
        nautical_dawn=dawn(12),
        civil_dawn=dawn(6),
        sunrise=_or_none(lambda: astral_sun.sunrise(obs, day, tz)),
        noon=astral_sun.noon(obs, day, tz),
        sunset=_or_none(lambda: astral_sun.sunset(obs, day, tz)),
        civil_dusk=dusk(6),
        nautical_dusk=dusk(12),
        astronomical_dusk=dusk(18),
        morning_golden_hour=_or_none(lambda: astral_sun.golden_hour(obs, day, rising, tz)),
        evening_golden_hour=_or_none(lambda: astral_sun.golden_hour(obs, day, setting, tz)),
        morning_blue_hour=_or_none(lambda: astral_sun.blue_hour(obs, day, rising, tz)),
        evening_blue_hour=_or_none(lambda: astral_sun.blue_hour(obs, day, setting, tz)),
    )


def phase_for_elevation(elevation_deg: float, phases: Sequence[PhaseConfig]) -> PhaseConfig:
    """The first phase (highest sun first) whose lower bound the elevation reaches."""
    for phase in phases:
        if elevation_deg >= phase.from_elevation_deg:
            return phase
    return phases[-1]


@dataclass(frozen=True)
class PhaseSegment:
    """An unbroken stretch of one phase: ``[start, end)``, and the sun's range within it."""

    phase: PhaseConfig
    start: dt.datetime
    end: dt.datetime
    min_elevation_deg: float
    max_elevation_deg: float
    rising: bool  # the sun's motion at the segment's middle

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start


def phase_segments(
    location: LocationConfig,
    day: dt.date,
    phases: Sequence[PhaseConfig],
    step: dt.timedelta = dt.timedelta(minutes=1),
) -> list[PhaseSegment]:
    """Split the local day (midnight to midnight in the location's zone) into phase segments.

    Phase changes are located to within a second by bisection between the minute samples; a phase
    shorter than ``step`` that starts and ends between two samples can be missed.
    """
    obs, tz = observer(location), ZoneInfo(location.timezone)
    start = dt.datetime.combine(day, dt.time(), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)

    def elev(t: dt.datetime) -> float:
        return astral_sun.elevation(obs, t)

    def name(t: dt.datetime) -> str:
        return phase_for_elevation(elev(t), phases).name

    # sample, then bisect each change of phase to one second
    times: list[dt.datetime] = []
    t = start
    while t < end:
        times.append(t)
        t += step
    times.append(end)
    bounds = [start]
    for a, b in itertools.pairwise(times):
        if name(a) != name(b):
            lo, hi, n_lo = a, b, name(a)
            while hi - lo > dt.timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if name(mid) == n_lo else (lo, mid)
            bounds.append(hi.replace(microsecond=0))
    bounds.append(end)

    segments: list[PhaseSegment] = []
    by_name = {p.name: p for p in phases}
    for s, e in itertools.pairwise(bounds):
        if e <= s:
            continue
        inside = [s + (e - s) * k / 8 for k in range(9)]
        els = [elev(x) for x in inside]
        mid = s + (e - s) / 2
        rising = elev(mid + dt.timedelta(minutes=1)) > elev(mid - dt.timedelta(minutes=1))
        segments.append(PhaseSegment(by_name[name(mid)], s, e, min(els), max(els), rising))
    return segments
