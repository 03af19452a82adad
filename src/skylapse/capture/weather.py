"""Weather for the capture strategy: an OpenWeatherMap client with a disk cache that never stops
capture.

The sky condition (clear, overcast, stormy) picks the capture strategy (see
:mod:`skylapse.capture.strategy`). The service asks OpenWeatherMap's *current weather* endpoint
at most every ``weather.refresh_s`` (15 min by default), keeps the last observation on disk so a
restart does not need the network, and, when a fetch fails (unreachable, HTTP error, timeout,
malformed answer), keeps using the last observation until it is ``weather.stale_after_s`` old;
after that it reports no observation and the sky is taken as clear. Nothing here raises on a
failed fetch.

API
---
``parse_owm_current(payload, fetched_at) -> WeatherObservation``   pure.
``classify_sky(observation | None, config) -> SkyCondition``       pure; None -> "clear".
``wind_ms(observation) -> float``            sustained wind or gusts, whichever is stronger.
``is_foggy(observation | None, config) -> bool``   visibility below ``fog_visibility_m``.
``WeatherService(config, location, http=None)``                  stateful client:
    ``await current(now) -> WeatherObservation | None``  cached/refreshed observation.
    ``await condition(now) -> SkyCondition``
``api_key(config) -> str | None``   from the config, else ``$OPENWEATHERMAP_API_KEY``.

Reference: https://openweathermap.org/current (fields ``clouds.all`` %, ``visibility`` m,
``wind.speed``/``wind.gust`` m/s with ``units=metric``, ``rain.1h``/``snow.1h`` mm,
``weather[0].id`` condition codes: 2xx thunderstorm, 7xx fog/haze/dust).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
import structlog

from skylapse.config import LocationConfig, WeatherConfig, reveal

log = structlog.get_logger(__name__)

SkyCondition = Literal["clear", "overcast", "stormy"]


class SkySource(Protocol):
    """Anything that tells the sky's condition at a time: `WeatherService`, or a fake in tests."""

    async def condition(self, now: dt.datetime) -> SkyCondition: ...


@runtime_checkable
class ObservationSource(SkySource, Protocol):
    """A sky source that also hands out its observation (`WeatherService`, a replay): what
    weather-driven strategies (wind, fog, cloud cover) and the learned sky need."""

    async def current(self, now: dt.datetime) -> WeatherObservation | None: ...


API_KEY_ENV = "OPENWEATHERMAP_API_KEY"


@dataclass(frozen=True)
class WeatherObservation:
    """One current-weather observation, in SI units; times are aware UTC datetimes."""

    observed_at: dt.datetime
    fetched_at: dt.datetime
    cloud_cover_pct: float
    visibility_m: float
    wind_ms: float
    wind_gust_ms: float | None
    precipitation_mm_h: float
    condition_code: int
    description: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["observed_at"] = self.observed_at.isoformat()
        d["fetched_at"] = self.fetched_at.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WeatherObservation:
        d = dict(d)
        d["observed_at"] = dt.datetime.fromisoformat(d["observed_at"])
        d["fetched_at"] = dt.datetime.fromisoformat(d["fetched_at"])
        return cls(**d)


def parse_owm_current(payload: dict[str, Any], fetched_at: dt.datetime) -> WeatherObservation:
    """An OpenWeatherMap current-weather answer (``units=metric``) to an observation.

    Missing optional blocks mean none of that (no ``rain`` = no rain); OpenWeatherMap omits
    ``visibility`` in fog-free reports at some stations, which we read as its 10 km maximum.
    Raises ``KeyError``/``TypeError``/``ValueError`` on an answer without the required fields.
    """
    weather = (payload.get("weather") or [{}])[0]
    rain = payload.get("rain") or {}
    snow = payload.get("snow") or {}
    # 1h totals in mm are the rate in mm/h; 3h totals are spread over three hours
    precip = sum(
        float(block["1h"]) if "1h" in block else float(block.get("3h", 0.0)) / 3.0
        for block in (rain, snow)
    )
    wind = payload.get("wind") or {}
    gust = wind.get("gust")
    return WeatherObservation(
        observed_at=dt.datetime.fromtimestamp(int(payload["dt"]), dt.UTC),
        fetched_at=fetched_at,
        cloud_cover_pct=float(payload["clouds"]["all"]),
        visibility_m=float(payload.get("visibility", 10000)),
        wind_ms=float(wind.get("speed", 0.0)),
        wind_gust_ms=None if gust is None else float(gust),
        precipitation_mm_h=precip,
        condition_code=int(weather.get("id", 800)),
        description=str(weather.get("description", "")),
    )


def wind_ms(obs: WeatherObservation) -> float:
    """The wind that moves clouds and shakes a mast: sustained or gusts, whichever is more."""
    return max(obs.wind_ms, obs.wind_gust_ms or 0.0)


def is_foggy(obs: WeatherObservation | None, config: WeatherConfig) -> bool:
    """Visibility below ``fog_visibility_m``: contrast autofocus would hunt on a grey veil."""
    return obs is not None and obs.visibility_m < config.fog_visibility_m


def classify_sky(obs: WeatherObservation | None, config: WeatherConfig) -> SkyCondition:
    """Stormy (thunder, heavy precipitation, strong wind), overcast (heavy cloud, haze, any
    precipitation), else clear. No observation means clear: the planner's default sky."""
    if obs is None:
        return "clear"
    wind = wind_ms(obs)
    if (
        200 <= obs.condition_code < 300
        or obs.precipitation_mm_h >= config.stormy_precip_mm_h
        or wind >= config.stormy_wind_ms
    ):
        return "stormy"
    if (
        obs.cloud_cover_pct >= config.overcast_cloud_pct
        or obs.visibility_m < config.overcast_visibility_m
        or obs.precipitation_mm_h > 0
        or 700 <= obs.condition_code < 800
    ):
        return "overcast"
    return "clear"


def api_key(config: WeatherConfig) -> str | None:
    """The configured API key, else the environment's ``OPENWEATHERMAP_API_KEY``."""
    return reveal(config.api_key) or os.environ.get(API_KEY_ENV) or None


class WeatherService:
    """Fetches at most every ``refresh_s``, caches on disk, and degrades to the last observation.

    ``http`` may be an ``httpx.AsyncClient`` to share (tests, connection reuse); otherwise one is
    made per fetch, over ``transport`` when given (a replay: `skylapse.capture.weather_replay`).
    Times come from the caller (``now``), so a simulated clock drives it too.
    """

    def __init__(
        self,
        config: WeatherConfig,
        location: LocationConfig,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.location = location
        self._http = http
        self._transport = transport
        self._cache_path = Path(config.cache_path).expanduser()
        self._last: WeatherObservation | None = self._load_cache()
        # a cached observation counts as the last attempt: a restart does not refetch at once
        self._last_attempt: dt.datetime | None = self._last.fetched_at if self._last else None
        self.failures = 0  # consecutive failed fetches, for the health endpoint

    def _load_cache(self) -> WeatherObservation | None:
        try:
            return WeatherObservation.from_json(json.loads(self._cache_path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("weather.cache_unreadable", path=str(self._cache_path), error=str(exc))
            return None

    def _save_cache(self, obs: WeatherObservation) -> None:
        try:
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            # write-then-rename so a power cut never leaves half a file
            fd, tmp = tempfile.mkstemp(dir=self._cache_path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(obs.to_json(), f)
            os.replace(tmp, self._cache_path)
        except OSError as exc:
            log.warning("weather.cache_write_failed", path=str(self._cache_path), error=str(exc))

    async def _fetch(self, now: dt.datetime) -> WeatherObservation:
        key = api_key(self.config)
        if key is None:
            raise LookupError(f"no API key (weather.api_key or ${API_KEY_ENV})")
        params: dict[str, str | float] = {
            "lat": self.location.latitude,
            "lon": self.location.longitude,
            "appid": key,
            "units": "metric",
        }
        if self._http is not None:
            resp = await self._http.get(
                self.config.base_url, params=params, timeout=self.config.timeout_s
            )
        else:
            async with httpx.AsyncClient(
                timeout=self.config.timeout_s, transport=self._transport
            ) as client:
                resp = await client.get(self.config.base_url, params=params)
        resp.raise_for_status()
        return parse_owm_current(resp.json(), fetched_at=now)

    def _fresh_enough(self, now: dt.datetime) -> WeatherObservation | None:
        last = self._last
        if last is None:
            return None
        age = (now - last.observed_at).total_seconds()
        return last if age <= self.config.stale_after_s else None

    async def current(self, now: dt.datetime) -> WeatherObservation | None:
        """The observation to use at ``now`` (aware datetime); None when there is none fresh."""
        if not self.config.enabled:
            return None
        last_try = self._last_attempt
        if last_try is None or (now - last_try).total_seconds() >= self.config.refresh_s:
            self._last_attempt = now
            try:
                obs = await self._fetch(now)
            except (httpx.HTTPError, LookupError, ValueError, KeyError, TypeError) as exc:
                # a failed fetch never stops capture: keep the last observation until stale
                self.failures += 1
                log.warning(
                    "weather.fetch_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    failures=self.failures,
                )
            else:
                self.failures = 0
                self._last = obs
                self._save_cache(obs)
        return self._fresh_enough(now)

    async def condition(self, now: dt.datetime) -> SkyCondition:
        """The sky condition at ``now``; clear when no fresh observation exists."""
        return classify_sky(await self.current(now), self.config)
