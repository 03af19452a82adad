"""Unattended session windows: when the station captures, day after day (pure, no I/O).

A window is a span around the day's sunrise or sunset (``capture.windows`` in the
configuration; by default sunrise ± 1 h and sunset ± 1.5 h). ``skylapse capture --plan`` opens a
session for each window and closes it at the window's end. The session id is derived from the
window's local date and name, so a restart inside a window finds the same id, the same folder
and resumes it instead of starting over.

API
---
``SessionWindow``                                      one window: name, day, start, end, id.
``day_windows(location, day, config) -> list[SessionWindow]``   the local day's windows, sorted.
``current_or_next_window(location, now, config) -> SessionWindow | None``
    the window containing ``now``, else the next one to start (None if none within 3 days,
    e.g. a polar night with no sunrise or sunset window).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from skylapse.capture.sun import sun_events
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


def day_windows(
    location: LocationConfig, day: dt.date, config: SkylapseConfig
) -> list[SessionWindow]:
    """The configured windows of the local ``day``; a window whose event does not happen that
    day is left out."""
    events = sun_events(location, day)
    out = []
    for w in config.capture.windows:
        event = events.sunrise if w.around == "sunrise" else events.sunset
        if event is None:
            continue
        out.append(
            SessionWindow(
                w.name,
                day,
                (event - dt.timedelta(minutes=w.before_min)).astimezone(dt.UTC),
                (event + dt.timedelta(minutes=w.after_min)).astimezone(dt.UTC),
            )
        )
    return sorted(out, key=lambda s: s.start)


def current_or_next_window(
    location: LocationConfig, now: dt.datetime, config: SkylapseConfig
) -> SessionWindow | None:
    """The window that contains ``now`` (aware), or else the next one to open."""
    today = now.astimezone(ZoneInfo(location.timezone)).date()
    candidates: list[SessionWindow] = []
    for offset in (-1, 0, 1, 2, 3):
        candidates += day_windows(location, today + dt.timedelta(days=offset), config)
    for w in sorted(candidates, key=lambda s: s.start):
        if w.end > now:
            return w
    return None
