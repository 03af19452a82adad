"""The world the simulated camera stands in: where (:class:`Location`), the sun there
(:func:`sun_position`, astral's NOAA algorithm with refraction) and the weather it sees
(:class:`SimWeather`, or a function of time giving it, e.g. a replayed OpenWeatherMap file:
`skylapse.capture.weather_replay`).

The weather lights the scene (``skylapse.scene.render_frame``): cloud cover darkens it
(Kasten & Czeplak, −2 EV under a full overcast) and flattens it, its clouds drift with the wind
(speed and direction projected across the view, :data:`CLOUD_DISTANCE_M` away), storm winds
move and reshape them fast (beyond :data:`CALM_WIND_MPS`), fog (a visibility under 10 km)
veils it; the air temperature warms the sensor (dark current).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import astral
import astral.sun

#: Distance of the cloud deck along the line of sight, for turning wind speed into pixels.
CLOUD_DISTANCE_M = 4000.0
#: Up to this wind the clouds evolve at the cloud layer's own pace; faster winds speed it up.
CALM_WIND_MPS = 6.0


@dataclass(frozen=True)
class Location:
    """Where the simulated camera stands (degrees, metres)."""

    latitude: float = 46.55
    longitude: float = 7.98
    elevation_m: float = 2000.0


@dataclass(frozen=True)
class SimWeather:
    """The weather the simulated camera sees. ``wind_from_deg`` is meteorological (from)."""

    cloud_cover: float = 0.3
    wind_speed_mps: float = 6.0
    wind_from_deg: float = 270.0
    temperature_c: float = 5.0
    visibility_m: float = 10_000.0  # meteorological; 10 km and more is clear air

    @classmethod
    def from_observation(cls, obs: Any, **overrides: float) -> SimWeather:
        """From a ``skylapse.capture.weather.WeatherObservation`` (cloud_cover_pct, wind_ms,
        visibility_m, clear air when absent); what it lacks (wind direction, temperature) comes
        from ``overrides`` or the defaults."""
        values = {
            "cloud_cover": float(obs.cloud_cover_pct) / 100.0,
            "wind_speed_mps": float(obs.wind_ms),
            "visibility_m": float(getattr(obs, "visibility_m", cls.visibility_m)),
            **overrides,
        }
        return cls(**values)


WeatherSource = SimWeather | Callable[[datetime], SimWeather]


def sun_position(location: Location, when: datetime) -> tuple[float, float]:
    """(altitude, azimuth) of the sun in degrees, with refraction (astral, NOAA algorithm)."""
    obs = astral.Observer(location.latitude, location.longitude, location.elevation_m)
    return (float(astral.sun.elevation(obs, when)), float(astral.sun.azimuth(obs, when)))
