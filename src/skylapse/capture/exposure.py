"""Exposure ramping from day to night and back: metering, and a feed-forward controller.

Why not ordinary auto-exposure: a per-frame AE that jumps to its target whenever the level leaves
a deadband (:class:`StepAndHoldExposure`, kept here as the reference) makes every jump a visible
flicker, and through twilight, where the light falls about 0.3 EV per minute near -6°, it jumps
every few frames. This controller instead *predicts* the next frame's light and moves there in
small steps:

1. **Meter** each frame in log space (:func:`meter`): the centre-weighted mean of log2 linear
   luminance (a geometric mean, so a bright sky does not dominate) and the clipped fraction.
2. **Estimate the scene** in EV100: the metered level minus the exposure that made it, minus the
   camera's calibration ``log2(0.18 / N^2)`` (an 18 % grey frame at the incident-meter exposure).
   Its *offset* from the clear-sky table (:mod:`skylapse.sky`) (clouds, the scene's albedo) is
   compared with the *prior*, what the station learned about its sky at that sun elevation
   (`skylapse.capture.learning`; none: 0), and the difference is smoothed by an exponential
   moving average. Because the estimate does not depend on the exposure used, the loop has no
   feedback gain to oscillate with. Every reliable frame's offset is kept in ``samples`` so the
   station can learn from the session.
3. **Feed forward**: next frame's light = the table at the sun's *next* elevation + the prior
   there + the smoothed difference. The first frame of a session uses the prior alone.
4. **Target** the day level, eased down by 1..1.5 EV (``night_darken_ev``) over
   ``night_ramp_deg`` with a smoothstep, plus the strategy's bias and a highlight-protection term
   (integrated while more than ``highlight_clip_max`` of the frame clips, released slowly with
   hysteresis); bias and protection changes are slew-limited.
5. **Step-limit** the change to ``min(max_step_ev, max_rate_ev_per_min * interval)`` and split the
   exposure into time first (up to the strategy's limit and the interval minus a margin, shared by
   the HDR brackets) and then analogue gain (up to the strategy's ``max_gain``). A strategy with
   a shutter cap for wind (``wind_max_exposure_s``) stops the time there and uses gain first;
   only once the gain is used up does the time grow again, to the hard limit.

Every :class:`ExposureSettings` carries the exposure the controller *wanted* (before step and
hardware limits) next to the one achieved; ``error_ev = wanted_ev - ev`` is what the deflicker
stage may correct in post.

References: holy-grail ramping as practised with LRTimelapse/qDslrDashboard (small steps, night
level kept darker than day); sky brightness from USNO Circular 171 via :mod:`skylapse.sky`.

API
---
``meter(frame_linear_luma, clip_level=0.98) -> Metering``                pure.
``camera_calibration_log2(aperture_f) -> float``                         pure.
``target_level(config, sun_elevation_deg) -> float``                    pure (day..night ease).
``split_exposure(exposure_ev, interval_s, config, strategy) -> (t, gain, limit)``  pure.
``ExposureController(config, strategy, prior=None)``:
    ``.next_settings(metering | None, sun_elevation_now, sun_elevation_next, interval_s,
    strategy=None, taken_with=None) -> ExposureSettings``
``StepAndHoldExposure(config, strategy, deadband_ev=0.5)``: the same interface, the reference AE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from skylapse import sky
from skylapse.config import ExposureConfig, StrategyConfig

#: Metering works on an image this wide at most; the level of a 64-px thumbnail is the level.
METER_WIDTH = 64
#: log2 of the darkest linear level metered (below it is read noise, not light).
LOG2_FLOOR = -16.0
#: Frames whose metering is this saturated (either way) do not update the scene estimate.
UNRELIABLE_FRACTION = 0.25


@dataclass(frozen=True)
class Metering:
    """What :func:`meter` reads from a frame (linear luminance, 1.0 = sensor white)."""

    log2_mean: float  # centre-weighted mean of log2 luminance
    clipped_fraction: float  # at or above the clip level
    dark_fraction: float  # at or below 2**LOG2_FLOOR * 16 (lost in the noise)


@cache
def _centre_weights(h: int, w: int) -> np.ndarray:
    # Gaussian centre weighting (sigma = 1/3 of each side) on a floor, normalised to sum 1
    y = (np.arange(h) + 0.5) / h - 0.5
    x = (np.arange(w) + 0.5) / w - 0.5
    g = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * (1 / 3) ** 2))
    wts = 0.25 + g
    wts = (wts / wts.sum()).astype(np.float32)
    wts.setflags(write=False)
    return wts


def meter(frame_linear_luma: np.ndarray, clip_level: float = 0.98) -> Metering:
    """Meter a frame's linear luminance (H x W, values 0..1) in log space.

    The level is the centre-weighted mean of log2 luminance over an area-averaged thumbnail
    (``METER_WIDTH`` wide), i.e. a weighted geometric mean. Clipping is counted on every 4th pixel
    of every 4th row at full resolution, where a thumbnail would average it away.
    """
    luma = np.asarray(frame_linear_luma, dtype=np.float32)
    if luma.ndim != 2:
        raise ValueError(f"expected a 2-D luminance image, got shape {luma.shape}")
    h, w = luma.shape
    if w > METER_WIDTH:
        tw = METER_WIDTH
        th = max(1, round(h * tw / w))
        thumb = cv2.resize(luma, (tw, th), interpolation=cv2.INTER_AREA)
    else:
        thumb = luma
    logs = np.log2(np.maximum(thumb, 2.0**LOG2_FLOOR))
    level = float((logs * _centre_weights(*thumb.shape)).sum())
    sub = luma[::4, ::4]
    return Metering(
        log2_mean=level,
        clipped_fraction=float(np.count_nonzero(sub >= clip_level)) / sub.size,
        dark_fraction=float(np.count_nonzero(sub <= 2.0 ** (LOG2_FLOOR + 4))) / sub.size,
    )


def camera_calibration_log2(aperture_f: float) -> float:
    """``log2(level) - EV100 - log2(t * gain)`` for this lens: 18 % grey at the incident-meter
    exposure ``t = N^2 / 2^EV100`` (ISO 100 = gain 1)."""
    return math.log2(0.18) - 2.0 * math.log2(aperture_f)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def target_level(config: ExposureConfig, sun_elevation_deg: float) -> float:
    """The wanted log2 level before strategy bias: day level, eased to ``night_darken_ev`` darker
    between the two ``night_ramp_deg`` elevations (smoothstep, so the ramp starts and ends flat)."""
    hi, lo = config.night_ramp_deg
    night = _smoothstep((hi - sun_elevation_deg) / (hi - lo))
    return config.target_log2_luma - config.night_darken_ev * night


def split_exposure(
    exposure_ev: float, interval_s: float, config: ExposureConfig, strategy: StrategyConfig
) -> tuple[float, float, str]:
    """Exposure ``log2(t * gain)`` to (time, gain, what limited it): time first, then gain.

    The time is capped by the strategy's ``max_exposure_s`` (for the longest HDR bracket) and by
    the interval minus ``interval_margin_s`` (for all brackets together). With a shutter cap for
    wind (``wind_max_exposure_s``) the time stops there first and gain is raised; only an
    exposure that ``max_gain`` cannot reach at the cap gets a longer time (motion blur is better
    than a frame several EV dark). ``limit`` is "" when the exposure was met, else
    "min_exposure" or "max_gain".
    """
    brackets = strategy.bracket_ev if strategy.hdr and strategy.bracket_ev else [0.0]
    longest = 2.0 ** max(brackets)
    budget = sum(2.0**b for b in brackets)
    max_t = min(
        strategy.max_exposure_s / longest, max(interval_s - config.interval_margin_s, 0.0) / budget
    )
    max_t = max(max_t, config.min_exposure_s)
    soft_t = max_t
    if strategy.wind_max_exposure_s is not None:
        soft_t = max(min(max_t, strategy.wind_max_exposure_s / longest), config.min_exposure_s)
    total = 2.0**exposure_ev
    t = min(max(total, config.min_exposure_s), soft_t)
    gain = min(max(total / t, 1.0), strategy.max_gain)
    if t * gain < total and soft_t < max_t:  # gain used up at the wind cap: time after all
        t = min(total / strategy.max_gain, max_t)
        gain = strategy.max_gain
    achieved = math.log2(t * gain)
    limit = ""
    if achieved > exposure_ev + 1e-9:
        limit = "min_exposure"
    elif achieved < exposure_ev - 1e-9:
        limit = "max_gain"
    return t, gain, limit


@dataclass(frozen=True)
class ExposureSettings:
    """The settings a frame is taken with, and what the controller wanted for it."""

    exposure_s: float
    gain: float
    wanted_ev: float  # log2(t * gain) the controller wanted, before step and hardware limits
    limited_by: str = ""  # "", "step", "min_exposure" or "max_gain"

    @property
    def ev(self) -> float:
        """The exposure achieved, ``log2(exposure_s * gain)``."""
        return math.log2(self.exposure_s * self.gain)

    @property
    def error_ev(self) -> float:
        """Wanted minus achieved exposure, in EV: a post gain of ``2**error_ev`` corrects it."""
        return self.wanted_ev - self.ev


class ExposureController:
    """Feed-forward exposure ramping; a pure state machine (no I/O, no clock).

    Call :meth:`next_settings` once per frame with the metering of the frame just taken (None for
    the first frame: the sky model and the prior alone decide) and the sun's elevation now and
    at the next frame. ``taken_with`` overrides the settings the frame is assumed to have used
    (default: the ones this controller returned last), for cameras that round what they are
    asked for. ``prior(sun_elevation_deg)`` is the expected offset of the scene from the
    clear-sky table, in EV (what the station learned; None: 0); the owner may replace it between
    frames (``controller.prior = ...``) when the weather changes.
    """

    def __init__(
        self,
        config: ExposureConfig,
        strategy: StrategyConfig,
        prior: Callable[[float], float] | None = None,
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.prior = prior
        self._calibration = camera_calibration_log2(config.aperture_f)
        self._residual_ev: float | None = None  # scene minus (table + prior), smoothed
        self._bias_ev = strategy.exposure_bias_ev  # eased strategy bias
        self._protect_ev = 0.0  # highlight protection, <= 0
        self._last: ExposureSettings | None = None
        #: (sun elevation, scene minus clear-sky table in EV) of every reliably metered frame
        self.samples: list[tuple[float, float]] = []

    def _prior_ev(self, sun_elevation_deg: float) -> float:
        return 0.0 if self.prior is None else float(self.prior(sun_elevation_deg))

    def scene_offset_ev(self, sun_elevation_deg: float) -> float:
        """The expected difference between the scene and the clear-sky table at an elevation,
        EV: the prior there plus the smoothed difference metering found from it."""
        residual = 0.0 if self._residual_ev is None else self._residual_ev
        return self._prior_ev(sun_elevation_deg) + residual

    def _update_estimates(
        self,
        m: Metering,
        elev_now: float,
        taken: ExposureSettings,
        strategy: StrategyConfig,
        slew: float,
    ) -> None:
        saturated = max(m.clipped_fraction, m.dark_fraction) > UNRELIABLE_FRACTION
        if not saturated:
            scene_ev = m.log2_mean - taken.ev - self._calibration
            offset = scene_ev - float(sky.ev100(elev_now))
            self.samples.append((elev_now, offset))
            residual = offset - self._prior_ev(elev_now)
            a = self.config.scene_smoothing
            self._residual_ev = (
                residual
                if self._residual_ev is None
                else ((1 - a) * self._residual_ev + a * residual)
            )
        # highlight protection: integrate down while clipping, release slowly (hysteresis)
        clip_max = strategy.highlight_clip_max
        if m.clipped_fraction > clip_max:
            step = min(self.config.max_step_ev, 4 * slew) if saturated else slew
            self._protect_ev = max(self._protect_ev - step, -3.0)
        elif m.clipped_fraction < clip_max / 4:
            self._protect_ev = min(self._protect_ev + slew / 2, 0.0)

    def next_settings(
        self,
        metering: Metering | None,
        sun_elevation_now: float,
        sun_elevation_next: float,
        interval_s: float,
        strategy: StrategyConfig | None = None,
        taken_with: ExposureSettings | None = None,
    ) -> ExposureSettings:
        """The settings for the next frame, ``interval_s`` from now."""
        cfg = self.config
        if strategy is not None:
            self.strategy = strategy
        strategy = self.strategy
        minutes = interval_s / 60.0
        slew = cfg.target_slew_ev_per_min * minutes
        taken = taken_with or self._last
        if metering is not None and taken is not None:
            self._update_estimates(metering, sun_elevation_now, taken, strategy, slew)

        # ease the strategy bias toward its new value
        db = strategy.exposure_bias_ev - self._bias_ev
        self._bias_ev += max(-slew, min(slew, db))

        scene_next = float(sky.ev100(sun_elevation_next)) + self.scene_offset_ev(sun_elevation_next)
        level = target_level(cfg, sun_elevation_next) + self._bias_ev + self._protect_ev
        wanted = level - scene_next - self._calibration

        ev = wanted
        limited = ""
        if taken is not None:
            cap = min(cfg.max_step_ev, cfg.max_rate_ev_per_min * minutes)
            ev = taken.ev + max(-cap, min(cap, wanted - taken.ev))
            limited = "step" if abs(ev - wanted) > 1e-9 else ""
        t, gain, hw_limit = split_exposure(ev, interval_s, cfg, strategy)
        self._last = ExposureSettings(t, gain, wanted, hw_limit or limited)
        return self._last


class StepAndHoldExposure:
    """The common per-frame auto-exposure, kept as the reference the bench compares against.

    It holds its exposure while the metered level stays within ``deadband_ev`` of the target and
    jumps the whole way to the target when it leaves it (no prediction, no step limit). Same
    target, metering and time-then-gain split as :class:`ExposureController`.
    """

    def __init__(
        self, config: ExposureConfig, strategy: StrategyConfig, deadband_ev: float = 0.5
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.deadband_ev = deadband_ev
        self._calibration = camera_calibration_log2(config.aperture_f)
        self._last: ExposureSettings | None = None

    def next_settings(
        self,
        metering: Metering | None,
        sun_elevation_now: float,
        sun_elevation_next: float,
        interval_s: float,
        strategy: StrategyConfig | None = None,
        taken_with: ExposureSettings | None = None,
    ) -> ExposureSettings:
        """Hold, or jump to the target when the last frame's level left the deadband."""
        if strategy is not None:
            self.strategy = strategy
        level = target_level(self.config, sun_elevation_now) + self.strategy.exposure_bias_ev
        taken = taken_with or self._last
        if taken is None or metering is None:
            # first frame: the incident-meter exposure for the clear-sky table
            ev = level - float(sky.ev100(sun_elevation_now)) - self._calibration
        else:
            error = level - metering.log2_mean
            ev = taken.ev + error if abs(error) > self.deadband_ev else taken.ev
        t, gain, limit = split_exposure(ev, interval_s, self.config, self.strategy)
        self._last = ExposureSettings(t, gain, ev, limit)
        return self._last
