"""An injectable clock, so the capture service can run a whole sunset in seconds.

Everything in the capture service that asks "what time is it" or waits goes through a
:class:`Clock`. On the station that is :class:`RealClock`; in tests and in the demo it is a
:class:`SimulatedClock`, whose ``sleep`` advances simulated time at once instead of waiting, so
an evening of 0.5 s-interval captures runs as fast as the frames can be rendered. A
:class:`ShiftedClock` runs in real time from a chosen instant: a test or bench whose service
waits for real (threads, HTTP) still sees the sun where it wants it, whatever the hour it runs at.

Times are timezone-aware UTC ``datetime`` objects (astral and EXIF both need an absolute time).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the capture service needs from time: the current instant and a way to wait."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps backwards (for measuring intervals)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (on a simulated clock: advance time by that much, immediately)."""
        ...


class RealClock:
    """Wall-clock time and real ``asyncio.sleep``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """A clock that only moves when told to: ``sleep`` and ``advance`` jump forward instantly.

    ``sleep`` still yields to the event loop once, so that concurrent tasks interleave in the same
    order as they would in real time.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._elapsed = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` (negative values are refused)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += timedelta(seconds=seconds)
        self._elapsed += seconds

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not earlier than now)."""
        self.advance((when.astimezone(UTC) - self._now).total_seconds())

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


async def interruptible_sleep(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    """Sleep ``seconds`` on ``clock``, or less if ``stop`` is set meanwhile."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sleeper, stopper):
        task.cancel()


class ShiftedClock(RealClock):
    """Real time and real waits, but ``now()`` starts at ``start``: the wall clock moved to a
    chosen instant (a daylight test run at night still captures daylight exposures)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ShiftedClock needs a timezone-aware start time")
        self._start, self._m0 = start.astimezone(UTC), time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._m0)
