"""Which capture strategy applies now: the sun's phase, then the weather's override.

Strategies (golden hour, blue hour, overcast, stormy, night, day) and the phase intervals are
configuration (``strategies``, ``schedule`` in the YAML), so this module only looks them up: the
phase comes from the sun's elevation, its interval and strategy from ``schedule.phases``, and an
overcast or stormy sky substitutes the strategy named in ``schedule.weather_overrides`` when the
current phase is listed there. The interval always stays the phase's.

API
---
``choose_capture(config, sun_elevation_deg, sky="clear") -> CaptureChoice``   pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from skylapse.capture.sun import phase_for_elevation
from skylapse.capture.weather import SkyCondition
from skylapse.config import SkylapseConfig, StrategyConfig


@dataclass(frozen=True)
class CaptureChoice:
    """What the capture loop does next: phase, interval, and the strategy (by name and value)."""

    phase: str
    interval_s: float
    strategy_name: str
    strategy: StrategyConfig
    sky: SkyCondition


def choose_capture(
    config: SkylapseConfig, sun_elevation_deg: float, sky: SkyCondition = "clear"
) -> CaptureChoice:
    """The phase for the sun's elevation and the strategy the sky condition asks for in it."""
    phase = phase_for_elevation(sun_elevation_deg, config.schedule.phases)
    name = phase.strategy
    override = config.schedule.weather_overrides.get(sky) if sky != "clear" else None
    if override is not None and phase.name in override.phases:
        name = override.strategy
    return CaptureChoice(phase.name, phase.interval_s, name, config.strategies[name], sky)
