"""Unattended session windows: when the station captures, day after day (pure, no I/O).

A window is a span around the day's sunrise or sunset (``capture.windows`` in the
configuration; by default sunrise ± 1 h and sunset ± 1.5 h). ``skylapse capture --plan`` opens a
session for each window and closes it at the window's end. The session id is derived from the
window's local date and name, so a restart inside a window finds the same id, the same folder
and resumes it instead of starting over.

Colour extension (the rule): a window grows by its ``colour_extend_min`` on its dark side (before
sunrise, after sunset: where the afterglow lights clouds from below) when the weather promises
colour (:func:`promises_colour`): the latest observation's cloud cover lies within
``capture.colour_cloud_pct`` (default 30-75 %: broken cloud to catch the light, not a closed
deck), nothing falls from it, and the sky is not stormy. The observation at the time the plan
looks for its next window decides: the unattended plan wakes at the earliest start a window
could have (its extended start) and asks again; a session keeps the end it opened with. No
observation (no weather, or stale) means no extension.

API
---
``SessionWindow``                                      one window: name, day, start, end, id.
``day_windows(location, day, config) -> list[SessionWindow]``   the local day's windows, sorted.
``current_or_next_window(location, now, config, colour=False) -> SessionWindow | None``
    the window containing ``now``, else the next one to start (None if none within 3 days,
    e.g. a polar night with no sunrise or sunset window).
``promises_colour(observation | None, config) -> bool``   the colour-extension rule's weather test.
``plan_wake_time(location, now, config, colour) -> (window, wake) | None``  what the plan waits for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from skylapse.capture.sun import sun_events
from skylapse.capture.weather import WeatherObservation, classify_sky
from skylapse.config import LocationConfig, SkylapseConfig


@dataclass(frozen=True)
class SessionWindow:
    """``[start, end)`` around one sun event on the local ``day``."""

    name: str
    day: dt.date
    start: dt.datetime
    end: dt.datetime

    @property
    def session_id(self) -> str:
        """Stable across restarts: ``YYYYMMDD-name``."""
        return f"{self.day:%Y%m%d}-{self.name}"

    def contains(self, when: dt.datetime) -> bool:
        return self.start <= when < self.end


def promises_colour(obs: WeatherObservation | None, config: SkylapseConfig) -> bool:
    """Cloud cover within ``capture.colour_cloud_pct``, no precipitation, not stormy."""
    if obs is None:
        return False
    lo, hi = config.capture.colour_cloud_pct
    return (
        lo <= obs.cloud_cover_pct <= hi
        and obs.precipitation_mm_h == 0
        and classify_sky(obs, config.weather) != "stormy"
    )


def day_windows(
    location: LocationConfig, day: dt.date, config: SkylapseConfig, colour: bool = False
) -> list[SessionWindow]:
    """The configured windows of the local ``day``, extended on their dark side when
    ``colour`` (module docstring); a window whose event does not happen that day is left out."""
    events = sun_events(location, day)
    out = []
    for w in config.capture.windows:
        event = events.sunrise if w.around == "sunrise" else events.sunset
        if event is None:
            continue
        before, after = w.before_min, w.after_min
        if colour and w.around == "sunrise":
            before += w.colour_extend_min
        elif colour:
            after += w.colour_extend_min
        out.append(
            SessionWindow(
                w.name,
                day,
                (event - dt.timedelta(minutes=before)).astimezone(dt.UTC),
                (event + dt.timedelta(minutes=after)).astimezone(dt.UTC),
            )
        )
    return sorted(out, key=lambda s: s.start)


def current_or_next_window(
    location: LocationConfig, now: dt.datetime, config: SkylapseConfig, colour: bool = False
) -> SessionWindow | None:
    """The window that contains ``now`` (aware), or else the next one to open."""
    today = now.astimezone(ZoneInfo(location.timezone)).date()
    candidates: list[SessionWindow] = []
    for offset in (-1, 0, 1, 2, 3):
        candidates += day_windows(location, today + dt.timedelta(days=offset), config, colour)
    for w in sorted(candidates, key=lambda s: s.start):
        if w.end > now:
            return w
    return None


def plan_wake_time(
    location: LocationConfig, now: dt.datetime, config: SkylapseConfig, colour: bool
) -> tuple[SessionWindow, dt.datetime] | None:
    """The window the plan is in or waits for under today's ``colour`` promise, and when to
    look again: ``now`` when it is open, else the earliest start it could have (extended), so
    a promise made by then still opens it early; else its own start."""
    window = current_or_next_window(location, now, config, colour)
    if window is None or window.start <= now:
        return None if window is None else (window, now)
    widest = current_or_next_window(location, now, config, colour=True)
    if widest is not None and widest.session_id == window.session_id and widest.start > now:
        return window, min(widest.start, window.start)
    return window, window.start
