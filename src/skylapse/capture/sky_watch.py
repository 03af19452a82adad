"""The sky as the capture service sees it: observed by the weather source, and learned.

:class:`SkyWatch` keeps the last sky condition (``clear`` until a source says otherwise) and,
from a source that gives one, the last :class:`~skylapse.capture.weather.WeatherObservation`;
:meth:`SkyWatch.refresh` asks the source again, and a failure is logged and keeps both as they
were (weather never stops capture). The service refreshes at a session's start, from the loop as a
background task, and before the unattended plan picks a window.

The learned side is the station's memory (`skylapse.capture.learning`): :meth:`SkyWatch.prior`
is the exposure controller's feed-forward for the sun's direction and the observed cloud cover,
and :meth:`SkyWatch.learn` folds a closed session's metered offsets into the memory file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from skylapse.capture.exposure import ExposureController
from skylapse.capture.learning import StationMemory
from skylapse.capture.weather import (
    ObservationSource,
    SkyCondition,
    SkySource,
    WeatherObservation,
    classify_sky,
)
from skylapse.config import ExposureConfig, WeatherConfig
from skylapse.log import get_logger

#: the capture service's lines, under its logger name wherever they are written
log = get_logger("skylapse.capture.service")


class SkyWatch:
    """The observed sky and the station's learned sky (module docstring)."""

    def __init__(self, memory: StationMemory) -> None:
        self.memory = memory
        self.condition: SkyCondition = "clear"
        self.observation: WeatherObservation | None = None

    async def refresh(self, source: SkySource, now: dt.datetime, config: WeatherConfig) -> None:
        """The sky condition, and the observation when the source gives one."""
        try:
            if isinstance(source, ObservationSource):
                self.observation = await source.current(now)
                self.condition = classify_sky(self.observation, config)
            else:
                self.condition = await source.condition(now)
        except Exception as exc:  # weather never stops capture
            log.warning("weather failed", error=f"{type(exc).__name__}: {exc}")

    def prior(
        self, elev_now: float, elev_next: float, exposure: ExposureConfig
    ) -> Callable[[float], float] | None:
        """The learned feed-forward for the sun's direction and the observed cloud cover (None
        unless ``exposure.learn``)."""
        obs = self.observation
        cover = None if obs is None else obs.cloud_cover_pct
        return self.memory.prior(elev_now, elev_next, cover) if exposure.learn else None

    def learn(
        self,
        controller: ExposureController | None,
        cloud_covers: list[float],
        exposure: ExposureConfig,
        lens_position: float | None,
        now: dt.datetime,
    ) -> None:
        """Fold a closed session's metered offsets (``controller``'s samples, the cloud cover
        observed at each shot) and the last good focus into the memory."""
        if controller is not None and exposure.learn:
            self.memory.learn_session(controller.samples, cloud_covers, exposure.learn_weight, now)
        elif lens_position is not None:
            self.memory.save()
