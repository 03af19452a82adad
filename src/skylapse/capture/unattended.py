"""Unattended operation: sessions opened and closed by the configured windows, day after day.

:func:`run_plan` drives a :class:`~skylapse.capture.service.CaptureService` through its public
calls (``open``, ``run_session``) and its sky (``service.sky``): it asks the weather, plans the
next window (`skylapse.capture.windows`: the weather may extend one, the colour rule), sleeps on
the wall clock until it is due, runs a session to the window's end and looks again. A start
inside a window resumes that window's session. Wall-clock sleeps go in chunks of at most 5 min,
so clock corrections and a stop request are seen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING

from skylapse.capture.clock import Clock, interruptible_sleep
from skylapse.capture.session import SessionSpec, SessionSummary
from skylapse.capture.windows import plan_wake_time, promises_colour
from skylapse.log import get_logger

if TYPE_CHECKING:
    from skylapse.capture.service import CaptureService

#: the capture service's lines, under its logger name wherever they are written
log = get_logger("skylapse.capture.service")


async def run_plan(
    service: CaptureService, stop: asyncio.Event, until: dt.datetime | None = None
) -> list[SessionSummary]:
    """Open and close ``service``'s sessions by the configured windows until ``until`` or
    ``stop`` is set (module docstring); the summaries of the sessions run."""
    await service.open()
    clock = service.clock
    summaries = []
    while not stop.is_set():
        now = clock.now()
        if until is not None and now >= until:
            break
        if service.weather is not None:
            await service.sky.refresh(service.weather, clock.now(), service.config.weather)
        colour = promises_colour(service.sky.observation, service.config)
        planned = plan_wake_time(service.location, now, service.config, colour)
        if planned is None:  # polar night / day without windows: look again in an hour
            await _sleep_wall(clock, now + dt.timedelta(hours=1), until, stop)
            continue
        window, wake = planned
        if wake > now:
            log.info(
                "waiting for the next window",
                session_id=window.session_id,
                opens=window.start.isoformat(),
                colour=colour,
            )
            await _sleep_wall(clock, wake, until, stop)
            continue
        end = window.end if until is None else min(window.end, until)
        summaries.append(
            await service.run_session(
                SessionSpec(session_id=window.session_id, end=end, day=window.day)
            )
        )
        # the last deadline fell before the end: let the window close before looking again
        await _sleep_wall(clock, end, until, stop)
    return summaries


async def _sleep_wall(
    clock: Clock, when: dt.datetime, until: dt.datetime | None, stop: asyncio.Event
) -> None:
    """Sleep to a wall time in chunks (so clock corrections and stop requests are seen)."""
    if until is not None:
        when = min(when, until)
    while not stop.is_set():
        remaining = (when - clock.now()).total_seconds()
        if remaining <= 0:
            return
        await interruptible_sleep(clock, min(remaining, 300.0), stop)
