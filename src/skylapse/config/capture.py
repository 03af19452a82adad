"""The station's sections: what the capture service reads.

* ``location``   where the station stands (sun position, weather).
* ``schedule``   the day's phases by sun elevation, each with its capture interval and strategy,
  and which strategy the weather substitutes in which phase.
* ``strategies`` named capture strategies (HDR, white balance, exposure bias and limits).
* ``exposure``   the exposure ramping controller's settings.
* ``weather``    the OpenWeatherMap client and the thresholds that classify the sky.
* ``capture``    the capture service: unattended session windows around sunrise and sunset, the
  local buffer, JPEG quality, JPEG and/or RAW (DNG) files, HDR, the writer queue and the
  storage manager's limits.
* ``transfer``   the processing host that frames go to (off while its host is null).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from skylapse.config.base import Secret, Section
from skylapse.names import Hostname, Name, SshUser


class LocationConfig(Section):
    """Where the station stands. The time zone is an IANA name, used for the printed plan."""

    latitude: float = Field(46.55, ge=-90, le=90, description="degrees, north positive")
    longitude: float = Field(7.98, ge=-180, le=180, description="degrees, east positive")
    elevation_m: float = Field(2000.0, ge=-500, le=9000, description="metres above sea level")
    timezone: str = Field("UTC", description="IANA time zone name, e.g. Europe/Zurich")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class PhaseConfig(Section):
    """A part of the day: it holds while the sun is at or above ``from_elevation_deg`` (and below
    the previous phase's bound)."""

    name: str
    from_elevation_deg: float = Field(ge=-90, le=90)
    interval_s: float = Field(gt=0, le=3600, description="seconds between captures")
    strategy: str = Field(description="name of an entry in `strategies`")


class WeatherOverride(Section):
    """Under this sky condition, use ``strategy`` instead of the phase's own in ``phases``."""

    strategy: str
    phases: list[str]


_DEFAULT_PHASES = [
    PhaseConfig(name="day", from_elevation_deg=6, interval_s=30, strategy="day"),
    PhaseConfig(name="golden_hour", from_elevation_deg=-4, interval_s=10, strategy="golden_hour"),
    PhaseConfig(name="blue_hour", from_elevation_deg=-6, interval_s=15, strategy="blue_hour"),
    PhaseConfig(name="twilight", from_elevation_deg=-18, interval_s=30, strategy="night"),
    PhaseConfig(name="night", from_elevation_deg=-90, interval_s=60, strategy="night"),
]


#: The sky conditions (`skylapse.capture.weather.SkyCondition` but clear) under which the
#: schedule may substitute a strategy.
OverriddenSky = Literal["overcast", "stormy"]


def _default_weather_overrides() -> dict[OverriddenSky, WeatherOverride]:
    return {
        "stormy": WeatherOverride(strategy="stormy", phases=["day", "golden_hour", "blue_hour"]),
        "overcast": WeatherOverride(strategy="overcast", phases=["day", "golden_hour"]),
    }


class ScheduleConfig(Section):
    """Phases ordered from the highest sun down; the last one must reach -90°.

    The default bounds are astral's: golden hour -4°..+6°, blue hour -6°..-4°, civil/nautical/
    astronomical twilight down to -18°.
    """

    phases: list[PhaseConfig] = Field(default_factory=lambda: list(_DEFAULT_PHASES))
    weather_overrides: dict[OverriddenSky, WeatherOverride] = Field(
        default_factory=_default_weather_overrides
    )

    @model_validator(mode="after")
    def _ordered_and_complete(self) -> ScheduleConfig:
        bounds = [p.from_elevation_deg for p in self.phases]
        if not bounds:
            raise ValueError("at least one phase is needed")
        if any(a <= b for a, b in itertools.pairwise(bounds)):
            raise ValueError("phases must be ordered by strictly falling from_elevation_deg")
        if bounds[-1] > -90:
            raise ValueError("the last phase must start at -90 so every sun elevation has a phase")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError("phase names must be unique")
        for cond, ov in self.weather_overrides.items():
            unknown = set(ov.phases) - set(names)
            if unknown:
                raise ValueError(f"weather_overrides.{cond} names unknown phases {sorted(unknown)}")
        return self


class StrategyConfig(Section):
    """How frames are taken in a phase or weather.

    Exposure fields steer the controller. The weather fields act on the observation the
    strategy was chosen under: ``fast_cloud_interval_s`` replaces the phase's interval while the
    wind (sustained or gusts) is at least ``fast_cloud_wind_ms``; ``wind_max_exposure_s`` is the
    shutter cap for wind (exposure time beyond it only once ``max_gain`` is used up, up to
    ``max_exposure_s``, so a dark stormy blue hour still reaches its target). The tone fields
    (``shadow_lift``, ``contrast``, ``dehaze``) are recorded in every frame's EXIF, and the
    render's colour stage applies them (`skylapse.processing.colour.Tone`).
    """

    hdr: bool = False
    bracket_ev: list[Annotated[float, Field(ge=-8, le=8)]] = Field(
        default_factory=lambda: [-2.0, 0.0, 2.0], min_length=1, max_length=9
    )
    white_balance: Literal["auto"] | int = Field(
        "auto",
        description="'auto', or a fixed colour temperature in kelvin (keeps the light's "
        "colour instead of neutralising it)",
    )
    exposure_bias_ev: float = Field(0.0, ge=-3, le=3, description="added to the level target")
    max_exposure_s: float = Field(
        30.0, gt=0, le=600, description="longest exposure in this strategy"
    )
    max_gain: float = Field(16.0, ge=1, le=256, description="highest analogue gain (1 = base ISO)")
    highlight_clip_max: float = Field(
        0.01,
        ge=0,
        le=1,
        description="fraction of clipped pixels tolerated before the controller "
        "pulls exposure down",
    )
    shadow_lift: float = Field(
        0.0, ge=0, le=1, description="render: raise the shadows (0 = none, 1 = the most)"
    )
    contrast: float = Field(
        1.0, gt=0, le=3, description="render: mid-tone contrast about mid-grey (1 = unchanged)"
    )
    dehaze: float = Field(
        0.0,
        ge=0,
        le=0.95,
        description="render: fraction of the haze veil removed (dark channel prior; 0 = off)",
    )
    fast_cloud_wind_ms: float | None = Field(
        None, gt=0, le=100, description="wind at which clouds count as fast; null = never"
    )
    fast_cloud_interval_s: float | None = Field(
        None, gt=0, le=3600, description="capture interval while clouds move fast"
    )
    wind_max_exposure_s: float | None = Field(
        None, gt=0, le=600, description="shutter cap for wind: gain first beyond it"
    )

    @field_validator("white_balance")
    @classmethod
    def _kelvin_range(cls, v: str | int) -> str | int:
        if isinstance(v, int) and not 1500 <= v <= 15000:
            raise ValueError("white balance must be 'auto' or 1500..15000 K")
        return v

    @model_validator(mode="after")
    def _weather_fields_agree(self) -> StrategyConfig:
        if (self.fast_cloud_wind_ms is None) != (self.fast_cloud_interval_s is None):
            raise ValueError("fast_cloud_wind_ms and fast_cloud_interval_s go together")
        if self.wind_max_exposure_s is not None and self.wind_max_exposure_s > self.max_exposure_s:
            raise ValueError("wind_max_exposure_s must not exceed max_exposure_s")
        return self


def default_strategies() -> dict[str, StrategyConfig]:
    """The ``strategies`` section's default: one strategy per default phase and weather."""
    return {
        "day": StrategyConfig(max_exposure_s=1 / 30),
        "golden_hour": StrategyConfig(hdr=True, white_balance=5500, max_exposure_s=1.0),
        "blue_hour": StrategyConfig(white_balance=4300, max_exposure_s=15.0, max_gain=4.0),
        "overcast": StrategyConfig(
            shadow_lift=0.25,
            contrast=1.2,
            dehaze=0.4,
            exposure_bias_ev=0.3,
            highlight_clip_max=0.03,
            max_exposure_s=0.5,
        ),
        "stormy": StrategyConfig(
            exposure_bias_ev=-0.5,
            highlight_clip_max=0.002,
            max_exposure_s=4.0,
            wind_max_exposure_s=1 / 250,
            max_gain=8.0,
            contrast=1.15,
            fast_cloud_wind_ms=8.0,
            fast_cloud_interval_s=5.0,
        ),
        "night": StrategyConfig(white_balance=4000, max_exposure_s=30.0, max_gain=16.0),
    }


class ExposureConfig(Section):
    """The ramping controller (see :mod:`skylapse.capture.exposure`)."""

    aperture_f: float = Field(1.8, gt=0, le=64, description="the lens's fixed f-number")
    target_log2_luma: float = Field(
        -2.47,
        ge=-16,
        le=0,
        description="day target of the centre-weighted mean log2 linear luminance "
        "(-2.47 = 18 % grey)",
    )
    night_darken_ev: float = Field(
        1.25, ge=1.0, le=1.5, description="how much darker the night level is than the day"
    )
    night_ramp_deg: tuple[
        Annotated[float, Field(ge=-90, le=90)], Annotated[float, Field(ge=-90, le=90)]
    ] = Field(
        (-4.0, -14.0), description="sun elevations over which the target eases from day to night"
    )
    max_step_ev: float = Field(1 / 3, gt=0, le=2, description="largest change between frames")
    max_rate_ev_per_min: float = Field(1.0, gt=0, le=60, description="largest change per minute")
    target_slew_ev_per_min: float = Field(
        0.25,
        gt=0,
        le=60,
        description="how fast the level target follows a change of strategy bias or "
        "highlight protection",
    )
    scene_smoothing: float = Field(
        0.3, gt=0, le=1, description="weight of the newest frame in the scene-brightness estimate"
    )
    interval_margin_s: float = Field(
        2.0, ge=0, le=3600, description="an exposure ends at least this long before the next frame"
    )
    min_exposure_s: float = Field(1e-4, gt=0, le=1)
    clip_level: float = Field(0.98, gt=0, le=1, description="linear level counted as clipped")
    learn: bool = Field(
        True,
        description="learn the site's sky (offset from the sky table per sun-elevation bin) "
        "after each session and use it as the feed-forward",
    )
    learn_weight: float = Field(
        0.5, gt=0, le=1, description="weight of the newest session in what was learned"
    )

    @field_validator("night_ramp_deg")
    @classmethod
    def _ramp_falls(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] > v[1]:
            raise ValueError("night_ramp_deg must go from a higher to a lower elevation")
        return v


class WeatherConfig(Section):
    """OpenWeatherMap client and the thresholds that turn an observation into a sky condition."""

    enabled: bool = True
    api_key: Secret | None = Field(None, description="falls back to $OPENWEATHERMAP_API_KEY")
    base_url: str = "https://api.openweathermap.org/data/2.5/weather"
    refresh_s: float = Field(900.0, gt=0, le=86400, description="how often to fetch")
    stale_after_s: float = Field(
        3 * 3600.0, gt=0, le=7 * 86400, description="older observations are dropped: clear sky"
    )
    timeout_s: float = Field(10.0, gt=0, le=300)
    cache_path: Path = Path("~/.cache/skylapse/weather.json")
    overcast_cloud_pct: float = Field(85.0, ge=0, le=100)
    overcast_visibility_m: float = Field(
        2000.0, ge=0, le=100_000, description="haze/fog below this"
    )
    stormy_wind_ms: float = Field(
        12.0, ge=0, le=200, description="sustained wind or gusts above this"
    )
    stormy_precip_mm_h: float = Field(2.0, ge=0, le=1000)
    fog_visibility_m: float = Field(
        1000.0,
        ge=0,
        le=100_000,
        description="fog below this: no autofocus, the lens keeps its last good focus",
    )


class SessionWindowConfig(Section):
    """An unattended session: from ``before_min`` before to ``after_min`` after the day's
    sunrise or sunset (skipped on days without that event, e.g. polar day or night)."""

    name: Name = Field(max_length=55, description="used in the session id (YYYYMMDD-name)")
    around: Literal["sunrise", "sunset"]
    before_min: float = Field(60.0, ge=0, le=720)
    after_min: float = Field(60.0, ge=0, le=720)
    colour_extend_min: float = Field(
        0.0,
        ge=0,
        le=240,
        description="added on the dark side (before sunrise, after sunset) when the weather "
        "promises colour (capture.colour_cloud_pct)",
    )


def _default_windows() -> list[SessionWindowConfig]:
    return [
        SessionWindowConfig(
            name="sunrise", around="sunrise", before_min=60, after_min=60, colour_extend_min=20
        ),
        SessionWindowConfig(
            name="sunset", around="sunset", before_min=90, after_min=90, colour_extend_min=30
        ),
    ]


_CAMERA_SPEC = r"^(auto|simulated|picamera2(:\d+)?|usb(:\S+)?|replay:.+)$"


class CaptureConfig(Section):
    """The capture service (see :mod:`skylapse.capture.service`)."""

    windows: list[SessionWindowConfig] = Field(default_factory=_default_windows)
    colour_cloud_pct: tuple[
        Annotated[float, Field(ge=0, le=100)], Annotated[float, Field(ge=0, le=100)]
    ] = Field(
        (30.0, 75.0),
        description="cloud cover band (low, high %) that promises colour: windows extend",
    )
    buffer_dir: Path = Field(Path("~/skylapse/buffer"), description="the local frame buffer")
    jpeg_quality: int = Field(92, ge=1, le=100)
    jpeg: bool = Field(True, description="keep each frame as JPEG (false needs raw: true)")
    raw: bool = Field(
        False,
        description="also keep each frame's RAW sensor data as DNG (taken at the service's start)",
    )
    hdr: bool = Field(True, description="take brackets where the strategy asks for HDR")
    autofocus: bool = Field(True, description="autofocus at session start when the camera can")
    writer_queue: int = Field(
        8, ge=1, le=256, description="frames waiting to be encoded and written, at most"
    )
    writer_queue_mb: int = Field(
        64,
        ge=8,
        le=4096,
        description="pixels of the frames waiting to be written, at most (MB; a larger frame "
        "still goes alone): 64 keeps one 12 MP frame ahead of the next",
    )
    retention_h: float = Field(
        48.0, gt=0, le=24 * 366, description="keep verified frames this long"
    )
    watermark_pct: float = Field(
        80.0, ge=50, le=98, description="emergency cleanup above this disk usage, 50..98 %"
    )
    keep_untransferred_h: float = Field(
        12.0,
        ge=1,
        le=720,
        description="emergency cleanup never deletes an untransferred frame this recent",
    )
    storage_check_s: float = Field(
        300.0, gt=0, le=86400, description="how often storage is enforced"
    )
    unattended: bool = Field(
        True,
        description="`skylapse serve capture` opens and closes sessions by the windows on its own",
    )
    camera: str = Field(
        "auto",
        pattern=_CAMERA_SPEC,
        description="auto, simulated, picamera2[:N], usb[:DEVICE] or replay:DIR",
    )
    resolution: tuple[int, int] | None = Field(
        None, description="[width, height] of captured frames; null = the camera profile's"
    )

    @field_validator("resolution")
    @classmethod
    def _sane_resolution(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not (16 <= v[0] <= 16384 and 16 <= v[1] <= 16384):
            raise ValueError("width and height must be 16..16384 pixels")
        return v

    @field_validator("colour_cloud_pct")
    @classmethod
    def _band_rises(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] <= v[1]:
            raise ValueError("colour_cloud_pct must be [low, high] with low <= high")
        return v

    @model_validator(mode="after")
    def _keeps_something(self) -> CaptureConfig:
        if not (self.jpeg or self.raw):
            raise ValueError("jpeg and raw are both false: at least one must be true")
        return self

    @model_validator(mode="after")
    def _unique_windows(self) -> CaptureConfig:
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError("capture window names must be unique")
        return self


class TransferConfig(Section):
    """Moving frames to the processing host (`skylapse.transfer`); off while ``host`` is null."""

    host: Hostname | None = Field(None, description="processing host; null = no transfers")
    port: int = Field(22, ge=1, le=65535)
    user: SshUser | None = None
    key_file: Path | None = Field(None, description="SSH private key of this station")
    known_hosts: Path | None = Field(None, description="known_hosts file holding the host's key")
    inbox: str = Field("/srv/skylapse/inbox", description="absolute inbox folder on the host")
    station: Name = Field("station", description="this station's folder in the inbox")
    batch_size: int = Field(50, ge=1, le=10000)
    bandwidth_limit_kbps: int | None = Field(
        None, ge=1, le=100_000_000, description="rsync --bwlimit"
    )
    poll_s: float = Field(5.0, gt=0, le=3600, description="queue polling interval")
    alert_after_s: float = Field(
        3600.0, gt=0, le=30 * 86400, description="alert when failing this long"
    )
