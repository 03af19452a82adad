"""Which capture strategy applies now: the sun's phase, then the weather's override and what the
strategy does with the weather.

Strategies (golden hour, blue hour, overcast, stormy, night, day) and the phase intervals are
configuration (``strategies``, ``schedule`` in the YAML), so this module only looks them up: the
phase comes from the sun's elevation, its interval and strategy from ``schedule.phases``, and an
overcast or stormy sky substitutes the strategy named in ``schedule.weather_overrides`` when the
current phase is listed there. The interval is the phase's, except while the clouds move fast:
a strategy with ``fast_cloud_interval_s`` uses it (when shorter) while the observed wind (sustained
or gusts) is at least its ``fast_cloud_wind_ms``. Fog (`skylapse.capture.weather.is_foggy`) is
carried on the choice for the loop (no autofocus hunting).

API
---
``choose_capture(config, sun_elevation_deg, sky="clear", weather=None) -> CaptureChoice``  pure.
``tone_record(strategy) -> dict``   the tone hints a frame carries for the render's colour stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from skylapse.capture.sun import phase_for_elevation
from skylapse.capture.weather import SkyCondition, WeatherObservation, is_foggy, wind_ms
from skylapse.config import SkylapseConfig, StrategyConfig


@dataclass(frozen=True)
class CaptureChoice:
    """What the capture loop does next: phase, interval, and the strategy (by name and value),
    with the observation it was chosen under (None: no weather) and what that observation made
    of it (``fast_clouds``: the interval is the strategy's fast-cloud one; ``fog``)."""

    phase: str
    interval_s: float
    strategy_name: str
    strategy: StrategyConfig
    sky: SkyCondition
    weather: WeatherObservation | None = None
    fast_clouds: bool = False
    fog: bool = False


def choose_capture(
    config: SkylapseConfig,
    sun_elevation_deg: float,
    sky: SkyCondition = "clear",
    weather: WeatherObservation | None = None,
) -> CaptureChoice:
    """The phase for the sun's elevation, the strategy the sky condition asks for in it, and
    the interval the strategy takes under the observed wind."""
    phase = phase_for_elevation(sun_elevation_deg, config.schedule.phases)
    name = phase.strategy
    override = config.schedule.weather_overrides.get(sky) if sky != "clear" else None
    if override is not None and phase.name in override.phases:
        name = override.strategy
    strategy = config.strategies[name]
    interval = phase.interval_s
    fast = (
        weather is not None
        and strategy.fast_cloud_wind_ms is not None
        and strategy.fast_cloud_interval_s is not None
        and wind_ms(weather) >= strategy.fast_cloud_wind_ms
        and strategy.fast_cloud_interval_s < interval
    )
    if fast:
        assert strategy.fast_cloud_interval_s is not None
        interval = strategy.fast_cloud_interval_s
    fog = is_foggy(weather, config.weather)
    return CaptureChoice(phase.name, interval, name, strategy, sky, weather, fast, fog)


def tone_record(strategy: StrategyConfig) -> dict[str, float]:
    """``{"shadow_lift", "contrast", "dehaze"}``: the tone a frame asks the render to apply
    (`skylapse.processing.colour.Tone.from_record` reads it back)."""
    return {
        "shadow_lift": strategy.shadow_lift,
        "contrast": strategy.contrast,
        "dehaze": strategy.dehaze,
    }
