"""One capture event ("shot": a frame or a bracket) and what is recorded about each of its frames.

The loop decides a :class:`Shot` before the deadline and takes it at the deadline; after the
exposure, :func:`frame_record` and :func:`frame_exif_fields` (pure) turn each frame's metadata
and analysis into its catalog row and the ``skylapse`` EXIF block written into its JPEG.

Correlation ids: each session run has one (``correlation_id``, 16 hex digits, kept in the
session's catalog settings so a resumed session keeps it) and each frame one derived from it,
``<correlation_id>-<frame number, 6 digits>`` with ``-b<index>`` for a bracket's frames
(:meth:`Shot.frame_id`). Both go into the frame's EXIF record and catalog row, so the transfer,
ingest and render logs name the frame by the same id as the capture log (README, "Following one
frame through the logs").

A frame's row and EXIF record also carry the weather the shot was decided under
(:func:`weather_record`: ``cloud_cover_pct``, ``wind_ms``, ``visibility_m``, ``fast_clouds``,
``fog``; null without an observation) and the strategy's tone (``tone``: ``shadow_lift``,
``contrast``, ``dehaze``), which the render's colour stage applies
(`skylapse.processing.colour.Tone.from_record`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from skylapse.capture.analysis import FrameAnalysis
from skylapse.capture.cameras.base import (
    Camera,
    CameraCapability,
    CaptureSettings,
    FrameMetadata,
)
from skylapse.capture.exposure import ExposureSettings
from skylapse.capture.sensors import lux_estimate
from skylapse.capture.strategy import CaptureChoice, tone_record
from skylapse.capture.weather import wind_ms
from skylapse.catalog.capture import FrameRecord
from skylapse.catalog.sqlite import JsonObject, iso_time


@dataclass(frozen=True)
class Shot:
    """Everything one capture event's frames are recorded with.

    ``folder`` is relative to the buffer; ``elev_now`` / ``elev_next`` are the sun's elevation
    (degrees) at this and the next deadline; ``latency_ms`` is deadline to exposure start
    (None for a manual frame, which has no deadline).
    """

    session_id: str
    folder: Path
    number: int
    settings: ExposureSettings
    choice: CaptureChoice
    elev_now: float
    elev_next: float
    scheduled_at: dt.datetime
    latency_ms: float | None
    manual: bool = False
    correlation_id: str = ""  # the session's (module docstring)

    def file_name(self, index: int, bracketed: bool) -> str:
        """``frame_000123.jpg``, or ``frame_000123_b<index>.jpg`` within a bracket."""
        suffix = f"_b{index}" if bracketed else ""
        return f"frame_{self.number:06d}{suffix}.jpg"

    def frame_id(self, index: int, bracketed: bool) -> str:
        """``<session correlation id>-000123``, or ``…-000123-b<index>`` within a bracket."""
        suffix = f"-b{index}" if bracketed else ""
        return f"{self.correlation_id}-{self.number:06d}{suffix}"


def weather_record(choice: CaptureChoice) -> JsonObject | None:
    """The observation a shot was decided under and what it made of it; None without one."""
    obs = choice.weather
    if obs is None:
        return None
    return {
        "cloud_cover_pct": obs.cloud_cover_pct,
        "wind_ms": wind_ms(obs),
        "visibility_m": obs.visibility_m,
        "observed_at": iso_time(obs.observed_at),
        "fast_clouds": choice.fast_clouds,
        "fog": choice.fog,
    }


def _tone(shot: Shot) -> JsonObject:
    """The strategy's tone hints for the render (`skylapse.capture.strategy.tone_record`)."""
    return {name: value for name, value in tone_record(shot.choice.strategy).items()}


def _evs(shot: Shot, md: FrameMetadata) -> tuple[float, float]:
    """(wanted, achieved) exposure EV, log2(t * gain), of one frame."""
    return shot.settings.wanted_ev + md.ev_offset, math.log2(md.exposure_time_s * md.analogue_gain)


def frame_record(
    shot: Shot,
    index: int,
    bracketed: bool,
    md: FrameMetadata,
    analysis: FrameAnalysis,
    environment: dict[str, float],
) -> FrameRecord:
    """The catalog row of frame ``index`` of a shot (hash and size are the writer's)."""
    wanted, achieved = _evs(shot, md)
    metering = analysis.metering
    return FrameRecord(
        path=str(shot.folder / shot.file_name(index, bracketed)),
        captured_at=md.timestamp,
        sha256="",
        size_bytes=0,
        session_id=shot.session_id,
        scheduled_at=shot.scheduled_at,
        exposure_time_s=md.exposure_time_s,
        analogue_gain=md.analogue_gain,
        iso=md.iso,
        aperture=md.aperture_f,
        lens_position=md.lens_position,
        white_balance=md.white_balance_gains,
        sensor_temp_c=md.sensor_temperature_c,
        bracket_set=shot.number if bracketed else None,
        bracket_index=index if bracketed else None,
        ev_offset=md.ev_offset if bracketed else None,
        exposure_error_ev=wanted - achieved,
        focus_score=md.focus_score,
        quality_score=analysis.quality_score,
        latency_ms=shot.latency_ms,
        phase=shot.choice.phase,
        strategy=shot.choice.strategy_name,
        extra={
            "frame_id": shot.frame_id(index, bracketed),
            "correlation_id": shot.correlation_id,
            "frame_number": shot.number,
            "wanted_ev": wanted,
            "achieved_ev": achieved,
            "limited_by": shot.settings.limited_by,
            "sun_elevation_deg": shot.elev_now,
            "sun_elevation_next_deg": shot.elev_next,
            "sky": shot.choice.sky,
            "weather": weather_record(shot.choice),
            "tone": _tone(shot),
            "metered_log2": metering.log2_mean,
            "clipped_fraction": metering.clipped_fraction,
            "lux": round(lux_estimate(metering.log2_mean, md.ev100), 4),
            **environment,
            "manual": shot.manual,
        },
    )


def frame_exif_fields(
    shot: Shot, index: int, bracketed: bool, md: FrameMetadata, analysis: FrameAnalysis
) -> JsonObject:
    """The ``skylapse`` block of frame ``index``'s EXIF (`skylapse.exif`)."""
    wanted, achieved = _evs(shot, md)
    bracket: JsonObject | None = (
        {"set": shot.number, "index": index, "ev_offset": md.ev_offset} if bracketed else None
    )
    return {
        "session_id": shot.session_id,
        "correlation_id": shot.correlation_id,
        "frame_id": shot.frame_id(index, bracketed),
        "frame_number": shot.number,
        "phase": shot.choice.phase,
        "strategy": shot.choice.strategy_name,
        "scheduled_at": iso_time(shot.scheduled_at),
        "bracket": bracket,
        "wanted_ev": wanted,
        "achieved_ev": achieved,
        "exposure_error_ev": wanted - achieved,
        "focus_score": md.focus_score,
        "quality_score": analysis.quality_score,
        "camera": md.camera,
        "lens_position": md.lens_position,
        "sun_elevation_deg": shot.elev_now,
        "sky": shot.choice.sky,
        "weather": weather_record(shot.choice),
        "tone": _tone(shot),
        "latency_ms": shot.latency_ms,
    }


def camera_settings(
    camera: Camera,
    settings: ExposureSettings,
    choice: CaptureChoice,
    dng: Path | None,
    lens_position: float | None,
) -> CaptureSettings:
    """What ``camera`` is told for a shot: exposure time and gain where it takes them manually
    (else None: its own auto exposure), the strategy's colour temperature, the lens position
    to hold (None: its own focus) and where to write the DNG (None: no DNG)."""
    manual_t = camera.supports_capability(CameraCapability.MANUAL_EXPOSURE)
    manual_g = camera.supports_capability(CameraCapability.MANUAL_GAIN)
    wb = choice.strategy.white_balance
    # a fixed colour temperature where the device takes one; a camera that takes only
    # (red, blue) gains (the simulated one renders at its daylight balance, ~5500 K) keeps
    # its own white balance
    kelvin = (
        float(wb)
        if isinstance(wb, int) and camera.supports_capability(CameraCapability.COLOUR_TEMPERATURE)
        else None
    )
    return CaptureSettings(
        exposure_time_s=settings.exposure_s if manual_t else None,
        analogue_gain=settings.gain if manual_g else None,
        colour_temperature_k=kelvin,
        lens_position=lens_position,
        dng_path=dng,
    )
