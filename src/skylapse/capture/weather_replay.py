"""Replayed weather: an evening under an overcast or a storm, in seconds, through the real client.

``skylapse capture --weather FILE`` and ``skylapse plan --weather FILE`` read a JSON list of
OpenWeatherMap *current weather* answers (``units=metric``, exactly as the API sends them, each
with its ``dt`` timestamp, in any order). The station's own :class:`WeatherService` asks for the
weather as it always does (every ``weather.refresh_s``, keeping the last observation until it is
``stale_after_s`` old), but its HTTP requests go to an ``httpx.MockTransport`` that answers with
the latest payload whose ``dt`` is not after the clock's *now* (404 before the first one: no
observation, a clear sky). So the replay runs the same parsing, caching, staleness and
classification code as a station on the network, on a simulated clock as well as a real one.
Its cache file is in a temporary folder of its own (removed with the client), never the
station's.

The simulated camera renders the same weather (:meth:`WeatherReplay.sim_weather`): at each
frame the payload in force then gives the cloud cover, wind (speed and direction), visibility
and air temperature of `skylapse.capture.cameras.simulated.SimWeather`.

API
---
``load_weather_file(path) -> WeatherReplay``    validated; ``WeatherFileError`` names the file
                                                and the entry.
``replayed_weather(path, config, location, now, camera) -> WeatherService``   for ``capture``.
``replayed_day(path, config, location, day) -> (time -> observation | None)``  for ``plan``.
``WeatherReplay.payload_at(when)``, ``.observation_at(when)``, ``.sim_weather(when)``   pure.
``WeatherReplay.transport(now) -> httpx.MockTransport``
``WeatherReplay.service(config, location, now) -> WeatherService``
``WeatherReplay.timeline(config, location, start, end) -> (time -> observation | None)``
    what the client held minute by minute (for ``skylapse plan``).
``WeatherReplay.attach(camera)``    a simulated camera renders the replayed weather.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from skylapse.capture.cameras.base import Camera
from skylapse.capture.weather import WeatherObservation, WeatherService, parse_owm_current
from skylapse.config import LocationConfig, WeatherConfig

if TYPE_CHECKING:
    from skylapse.capture.cameras.simulated import SimWeather

#: The replay's stand-in API key (the client needs one; the mock transport ignores it).
REPLAY_KEY = "replay"


class WeatherFileError(ValueError):
    """A weather file that cannot be replayed; the message names the file and the entry."""


@dataclass(frozen=True)
class WeatherReplay:
    """Payloads sorted by their ``dt``, with their parsed observations (``fetched_at`` = ``dt``)."""

    source: str
    payloads: tuple[dict[str, Any], ...]
    observations: tuple[WeatherObservation, ...]

    def _index(self, when: dt.datetime) -> int | None:
        times = [o.observed_at for o in self.observations]
        i = bisect.bisect_right(times, when) - 1
        return None if i < 0 else i

    def payload_at(self, when: dt.datetime) -> dict[str, Any] | None:
        """The latest payload observed at or before ``when`` (aware), None before the first."""
        i = self._index(when)
        return None if i is None else self.payloads[i]

    def observation_at(self, when: dt.datetime) -> WeatherObservation | None:
        i = self._index(when)
        return None if i is None else self.observations[i]

    def sim_weather(self, when: dt.datetime) -> SimWeather:
        """What the simulated camera sees at ``when``: the payload in force then (clear and
        calm before the first)."""
        # the simulated camera's module, imported when first needed: `skylapse capture` with a
        # real camera never loads it (nor the scene it brings)
        from skylapse.capture.cameras.simulated import SimWeather

        i = self._index(when)
        if i is None:
            return SimWeather(cloud_cover=0.0, wind_speed_mps=0.0)
        payload, obs = self.payloads[i], self.observations[i]
        extra: dict[str, float] = {}
        wind = payload.get("wind") or {}
        if "deg" in wind:
            extra["wind_from_deg"] = float(wind["deg"])
        temp = (payload.get("main") or {}).get("temp")
        if temp is not None:
            extra["temperature_c"] = float(temp)
        return SimWeather.from_observation(obs, **extra)

    def transport(self, now: Callable[[], dt.datetime]) -> httpx.MockTransport:
        """An httpx transport answering every request with the payload in force at ``now()``
        (404 before the first)."""

        def handle(request: httpx.Request) -> httpx.Response:
            payload = self.payload_at(now())
            if payload is None:
                return httpx.Response(404, json={"cod": "404", "message": "no weather yet"})
            return httpx.Response(200, json=payload)

        return httpx.MockTransport(handle)

    def service(
        self, config: WeatherConfig, location: LocationConfig, now: Callable[[], dt.datetime]
    ) -> WeatherService:
        """The station's weather client (its refresh, cache and staleness rules from
        ``config``), enabled, fetching from this replay, caching in a temporary folder that is
        removed with the client."""
        cache_dir = Path(tempfile.mkdtemp(prefix="skylapse-weather-"))
        replay_config = config.model_copy(
            update={
                "enabled": True,
                "api_key": SecretStr(REPLAY_KEY),
                "cache_path": cache_dir / "weather.json",
            }
        )
        service = WeatherService(replay_config, location, transport=self.transport(now))
        weakref.finalize(service, shutil.rmtree, cache_dir, ignore_errors=True)
        return service

    def timeline(
        self,
        config: WeatherConfig,
        location: LocationConfig,
        start: dt.datetime,
        end: dt.datetime,
        step: dt.timedelta = dt.timedelta(minutes=1),
    ) -> Callable[[dt.datetime], WeatherObservation | None]:
        """What the station's client would hold, asked every ``step`` from ``start`` to
        ``end`` (aware), as a function of time (the last ask not after it; None before
        ``start``)."""
        times = [start + k * step for k in range(int((end - start) / step) + 1)]
        clock = [start]
        service = self.service(config, location, lambda: clock[0])

        async def ask() -> list[WeatherObservation | None]:
            held = []
            for t in times:
                clock[0] = t
                held.append(await service.current(t))
            return held

        held = asyncio.run(ask())

        def at(when: dt.datetime) -> WeatherObservation | None:
            i = bisect.bisect_right(times, when) - 1
            return None if i < 0 else held[i]

        return at

    def attach(self, camera: Camera) -> bool:
        """Make a simulated camera render this weather; whether it was one (a real camera
        sees the real sky)."""
        if camera.name != "simulated":  # a real camera: the simulated one stays unimported
            return False
        from skylapse.capture.cameras.simulated import SimulatedCamera

        if not isinstance(camera, SimulatedCamera):
            return False
        camera.weather = self.sim_weather
        return True


def load_weather_file(path: str | Path) -> WeatherReplay:
    """Read and validate a weather file (module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise WeatherFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise WeatherFileError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise WeatherFileError(
            f"{path}: expected a JSON list of OpenWeatherMap current-weather answers"
        )
    parsed: list[tuple[WeatherObservation, dict[str, Any]]] = []
    for i, payload in enumerate(data):
        if not isinstance(payload, dict):
            raise WeatherFileError(f"{path}: entry {i}: expected an object")
        try:
            when = dt.datetime.fromtimestamp(int(payload["dt"]), dt.UTC)
            parsed.append((parse_owm_current(payload, fetched_at=when), payload))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            missing = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise WeatherFileError(
                f"{path}: entry {i}: not an OpenWeatherMap current-weather answer ({missing})"
            ) from None
    parsed.sort(key=lambda pair: pair[0].observed_at)
    return WeatherReplay(str(path), tuple(p for _, p in parsed), tuple(o for o, _ in parsed))


def replayed_weather(
    path: str | Path,
    config: WeatherConfig,
    location: LocationConfig,
    now: Callable[[], dt.datetime],
    camera: Camera,
) -> WeatherService:
    """``skylapse capture --weather FILE``: the station's client on the file's answers at the
    clock's ``now``; a simulated ``camera`` renders the same weather."""
    replay = load_weather_file(path)
    replay.attach(camera)
    return replay.service(config, location, now)


def replayed_day(
    path: str | Path, config: WeatherConfig, location: LocationConfig, day: dt.date
) -> Callable[[dt.datetime], WeatherObservation | None]:
    """``skylapse plan --weather FILE``: what the client holds through the local ``day``."""
    replay = load_weather_file(path)
    start = dt.datetime.combine(day, dt.time(), ZoneInfo(location.timezone))
    return replay.timeline(config, location, start, start + dt.timedelta(days=1))
