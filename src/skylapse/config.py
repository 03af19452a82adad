"""Skylapse configuration: one YAML file, validated with pydantic when it is loaded.

The file has one top-level section per service part. This module defines the capture-side
sections; other parts (transfer, processing, api) add their own section model as a field of
:class:`SkylapseConfig`, with defaults, so older files keep loading.

* ``location``  where the station stands (sun position, weather).
* ``schedule``  the day's phases by sun elevation, each with its capture interval and strategy,
  and which strategy the weather substitutes in which phase.
* ``strategies`` named capture strategies (HDR, white balance, exposure bias and limits).
* ``exposure``  the exposure ramping controller's settings.
* ``weather``   the OpenWeatherMap client and the thresholds that classify the sky.
* ``capture``   the capture service: unattended session windows around sunrise and sunset, the
  local buffer, JPEG quality, JPEG and/or RAW (DNG) files, HDR, the writer queue and the
  storage manager's limits.
* ``transfer``  the processing host that frames go to (off while its host is null).
* ``alerts``    alert thresholds and notifiers (webhook, MQTT with Home Assistant discovery).

Every field has a default, so an empty file is a valid configuration; the shipped defaults live in
``skylapse/data/skylapse.yaml``. Unknown keys are errors (a misspelt key would otherwise be
silently ignored). :func:`load_config` raises :class:`ConfigError` naming the file and the dotted
path of each offending field.

Changes made over the API (``PUT /config``) are kept in an override file beside the config file,
``<stem>.override.yaml`` (`skylapse.config_store`); :func:`load_config` merges it over the file
(mappings key by key, lists and values replaced), so the config file itself, and its comments,
are never rewritten.

API
---
``load_config(path=None, *, override=None) -> SkylapseConfig``  the file (the packaged default
when ``None``) with its override file, what ``PUT /config`` saved, merged over it.
``parse_config(data, source) -> SkylapseConfig``  an already-parsed mapping (``source`` names it).
``default_config() -> SkylapseConfig``          the packaged default file.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from skylapse.names import Hostname, Name, SshUser
from skylapse.processing.options import RenderOptions

DEFAULT_CONFIG_RESOURCE = "data/skylapse.yaml"

#: The shortest API token accepted, from the config file or the environment.
MIN_TOKEN_LENGTH = 16

#: How a secret shows in JSON (``GET /config``, anything dumped with ``mode="json"``).
REDACTED = "***"

#: A secret field's type: redacted by type, wherever the configuration is shown. Its value is
#: a `pydantic.SecretStr` (``repr`` and ``str`` show ``**********``, JSON shows ``"***"``); only
#: :func:`reveal` gives the text, at the place that uses it.
Secret = Annotated[
    SecretStr, PlainSerializer(lambda _: REDACTED, return_type=str, when_used="json")
]


def reveal(secret: SecretStr | None) -> str | None:
    """A secret field's text (``None`` when unset)."""
    return None if secret is None else secret.get_secret_value()


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not validate; the message names both."""


class _Section(BaseModel):
    # every float finite: inf and nan are refused like out-of-range numbers
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Environment variables that override fields (field -> variable), for containers.
    _env_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, base: Self | None = None) -> Self:
        """``base`` (the YAML's section, else the defaults) with the set variables of
        ``_env_names`` on top, validated like the file."""
        env = os.environ if env is None else env
        given = {key: env[var] for key, var in cls._env_names.items() if env.get(var)}
        return cls(**{**(base.model_dump() if base else {}), **given})


class LocationConfig(_Section):
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


class PhaseConfig(_Section):
    """A part of the day: it holds while the sun is at or above ``from_elevation_deg`` (and below
    the previous phase's bound)."""

    name: str
    from_elevation_deg: float = Field(ge=-90, le=90)
    interval_s: float = Field(gt=0, le=3600, description="seconds between captures")
    strategy: str = Field(description="name of an entry in `strategies`")


class WeatherOverride(_Section):
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


class ScheduleConfig(_Section):
    """Phases ordered from the highest sun down; the last one must reach -90°.

    The default bounds are astral's: golden hour -4°..+6°, blue hour -6°..-4°, civil/nautical/
    astronomical twilight down to -18°.
    """

    phases: list[PhaseConfig] = Field(default_factory=lambda: list(_DEFAULT_PHASES))
    weather_overrides: dict[Literal["overcast", "stormy"], WeatherOverride] = Field(
        default_factory=lambda: {
            "stormy": WeatherOverride(
                strategy="stormy", phases=["day", "golden_hour", "blue_hour"]
            ),
            "overcast": WeatherOverride(strategy="overcast", phases=["day", "golden_hour"]),
        }
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


class StrategyConfig(_Section):
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


def _default_strategies() -> dict[str, StrategyConfig]:
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


class ExposureConfig(_Section):
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


class WeatherConfig(_Section):
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


class SessionWindowConfig(_Section):
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


class CaptureConfig(_Section):
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


class ApiConfig(_Section):
    """The services' HTTP APIs (`skylapse serve capture|processing`, see :mod:`skylapse.api`)."""

    host: str = Field("127.0.0.1", description="listen address; loopback unless you mean it")
    capture_port: int = Field(8080, ge=1, le=65535)
    processing_port: int = Field(8081, ge=1, le=65535)
    token: Secret | None = Field(
        None,
        min_length=MIN_TOKEN_LENGTH,
        description="bearer token; $SKYLAPSE_API_TOKEN takes precedence",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed cross-site; empty = CORS off"
    )
    max_body_kb: int = Field(64, ge=1, le=1024 * 1024, description="largest request body")
    public_docs: bool = Field(False, description="serve /docs and /openapi.json without token")
    header_timeout_s: float = Field(
        10.0, ge=0.1, le=300, description="close a connection whose request head takes longer"
    )
    max_connections: int = Field(
        512, ge=8, le=65536, description="open connections at most (also kept under the fd limit)"
    )


#: Ingest's default pixel limit: the largest shipped camera profile (IMX519, 16 MP: 4656 x 3496 =
#: 16,277,376 pixels, in skylapse/data/cameras/) times 1.5, so a frame's header claiming more is
#: refused before decoding (a decompression bomb). A test re-derives it from the profiles.
DEFAULT_MAX_FRAME_PIXELS = 4656 * 3496 * 3 // 2  # 24,416,064


class RetentionConfig(_Section):
    """How long ingested frames stay in the processing store (`skylapse.processing.retention`).

    A sequence's frames are deleted only once the sequence is rendered and archived (a
    whole-sequence render that saw every frame, in the archive); never before."""

    keep_days: float | None = Field(
        7.0,
        ge=0,
        le=36500,
        description="delete a sequence's frames this many days after its render was archived; "
        "null = only the watermark deletes",
    )
    watermark_pct: float = Field(
        85.0,
        ge=50,
        le=98,
        description="emergency: above this use of the store's disk, the oldest rendered and "
        "archived sequences' frames go first, 50..98 %",
    )
    margin_pct: float = Field(
        5.0, gt=0, le=25, description="emergency cleanup goes this far below the watermark"
    )
    check_every_s: float = Field(300.0, gt=0, le=86400, description="how often it is enforced")


#: The environment variable naming the processing data folder.
DATA_DIR_ENV = "SKYLAPSE_DATA_DIR"


def default_data_dir() -> Path:
    """The processing data folder when none is given: ``$SKYLAPSE_DATA_DIR``, else
    ``./skylapse-data``."""
    return Path(os.environ.get(DATA_DIR_ENV, "skylapse-data"))


class ProcessingConfig(_Section):
    """The processing service (`skylapse serve processing`, `skylapse worker`)."""

    data_dir: Path | None = Field(
        None, description="processing data folder (default $SKYLAPSE_DATA_DIR or ./skylapse-data)"
    )
    queue_url: Secret | None = Field(
        None,
        description="redis://... to share jobs between machines (default: SQLite); a secret, "
        "as it may hold the Redis password",
    )
    workers: int = Field(1, ge=0, le=64, description="job threads in the serving process")
    ingest_every_s: float = Field(5.0, gt=0, le=3600, description="inbox scan interval")
    max_frame_pixels: int = Field(
        DEFAULT_MAX_FRAME_PIXELS,
        gt=0,
        le=1 << 30,  # OpenCV's own decoding limit (OPENCV_IO_MAX_IMAGE_PIXELS)
        description="ingest quarantines a frame whose header claims more pixels, undecoded",
    )
    render_after_min: float | None = Field(
        30.0,
        gt=0,
        le=7 * 24 * 60,
        description="render a sequence once no frame came for this long; null = never",
    )
    render: RenderOptions = Field(
        default_factory=RenderOptions,
        description="options of the renders queued once a sequence's frames stop coming "
        "(render_after_min); the names of `skylapse render`'s flags",
    )
    job_poll_s: float = Field(0.5, gt=0, le=60, description="job-event polling interval")
    disk_warn_pct: float = Field(90.0, gt=0, le=100, description="health degraded above this")
    disk_fail_pct: float = Field(97.0, gt=0, le=100, description="health failing above this")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


class TransferConfig(_Section):
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


class MqttConfig(_Section):
    """An MQTT broker for alerts, with Home Assistant discovery; off while ``host`` is null."""

    host: str | None = None
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    topic_prefix: str = Field("skylapse", pattern=r"^[A-Za-z0-9_/-]+$")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_/-]+$")
    node_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="default: the transfer section's station"
    )


class AlertsConfig(_Section):
    """Alerts (`skylapse.alerts`): thresholds, debouncing and the notifiers."""

    webhook_url: Secret | None = Field(
        None, description="JSON POST target (http:// or https://); a secret, as its path often is"
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    evaluate_every_s: float = Field(10.0, gt=0, le=3600)
    clear_after_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="an episode closes after its condition stayed clear this long",
    )
    # The seed's targets (README, "Alerts"): each alert opens past its target.
    capture_latency_p99_ms: float = Field(
        50.0, gt=0, le=3_600_000, description="p99 over the last 100 frames above this"
    )
    image_quality_min: float = Field(
        0.9, ge=0, le=1, description="median of the last 10 frames below this (sustained)"
    )
    transfer_queue_max: int = Field(
        2000, ge=1, le=100_000_000, description="frames waiting for transfer"
    )
    processing_queue_max: int = Field(10, ge=1, le=1_000_000, description="jobs queued or running")
    storage_max_pct: float = Field(
        80.0, gt=0, le=100, description="use of the file system holding the data above this"
    )
    uptime_min_pct: float = Field(
        99.5, ge=0, le=100, description="system_uptime_pct (capture) below this"
    )
    uptime_window_h: float = Field(
        168.0, ge=1, le=24 * 31, description="system_uptime_pct: over the last this many hours"
    )
    job_failures: int = Field(
        3, ge=1, le=1000, description="attempts of one job that count as repeated"
    )
    # Maintenance (`skylapse.maintenance`).
    soc_temp_max_c: float = Field(80.0, ge=0, le=150, description="the Pi's SoC above this")
    disk_full_within_h: float = Field(
        72.0, gt=0, le=24 * 366, description="the buffer reaches its watermark within this"
    )
    disk_fill_window_h: float = Field(
        24.0, ge=1, le=24 * 31, description="net growth measured over this many hours"
    )
    storage_wear_max_pct: float = Field(
        80.0, ge=10, le=100, description="eMMC life_time estimate at or above this"
    )
    io_error_window_h: float = Field(
        24.0, gt=0, le=24 * 366, description="kernel storage errors this recent raise an alert"
    )
    weather_failures: int = Field(
        3, ge=1, le=10_000, description="consecutive failed weather fetches"
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")  # the URL itself is secret
        return v


class ArchiveConfig(_Section):
    """The archive: where it is, what goes in, and how long it is kept."""

    dir: Path | None = Field(None, description="archive folder (default: DATA/archive)")
    after_render: bool = Field(False, description="queue an archive job when a render finishes")
    include_frames: bool = Field(False, description="keep the source frames with the timelapse")
    max_age_days: float | None = Field(
        None, gt=0, le=36500, description="delete backed-up timelapses older than this"
    )
    max_total_gb: float | None = Field(
        None, gt=0, le=1e9, description="delete the oldest backed-up timelapses above this total"
    )

    @property
    def max_age(self) -> timedelta | None:
        return timedelta(days=self.max_age_days) if self.max_age_days else None

    @property
    def max_total_bytes(self) -> int | None:
        return int(self.max_total_gb * 1e9) if self.max_total_gb else None

    _env_names: ClassVar[dict[str, str]] = {
        "dir": "SKYLAPSE_ARCHIVE_DIR",
        "after_render": "SKYLAPSE_ARCHIVE_AFTER_RENDER",
        "include_frames": "SKYLAPSE_ARCHIVE_FRAMES",
        "max_age_days": "SKYLAPSE_ARCHIVE_MAX_AGE_DAYS",
        "max_total_gb": "SKYLAPSE_ARCHIVE_MAX_TOTAL_GB",
    }


class BackupConfig(_Section):
    """Where backups go. Backup is off while ``bucket`` is unset."""

    bucket: str | None = Field(None, description="bucket name; unset = no backup")
    prefix: str = Field("skylapse", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(None, description="S3-compatible store, e.g. MinIO's URL")
    region: str | None = None
    access_key_id: Secret | None = Field(None, description="else AWS_ACCESS_KEY_ID / AWS_PROFILE")
    secret_access_key: Secret | None = Field(None, description="else AWS_SECRET_ACCESS_KEY")
    part_size_mib: int = Field(16, ge=5, le=5120, description="multipart part size")
    max_attempts: int = Field(6, ge=1, le=50, description="tries per request")
    retry_wait_s: float = Field(1.0, gt=0, le=60, description="first backoff; doubles up to 60 s")
    timeout_s: float = Field(
        60.0, gt=0, le=3600, description="connect and read timeout per request"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bucket)

    # credentials stay in the standard AWS_* variables, which boto3 reads itself
    _env_names: ClassVar[dict[str, str]] = {
        "bucket": "SKYLAPSE_BACKUP_BUCKET",
        "prefix": "SKYLAPSE_BACKUP_PREFIX",
        "endpoint_url": "SKYLAPSE_BACKUP_ENDPOINT_URL",
        "region": "SKYLAPSE_BACKUP_REGION",
        "part_size_mib": "SKYLAPSE_BACKUP_PART_SIZE_MIB",
    }


class SkylapseConfig(_Section):
    """The whole file. Add a section by adding a field with a default model."""

    location: LocationConfig = Field(default_factory=LocationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    strategies: dict[str, StrategyConfig] = Field(default_factory=_default_strategies)
    exposure: ExposureConfig = Field(default_factory=ExposureConfig)
    weather: WeatherConfig = Field(default_factory=WeatherConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)

    @model_validator(mode="after")
    def _strategies_exist(self) -> SkylapseConfig:
        used = {p.strategy for p in self.schedule.phases}
        used |= {ov.strategy for ov in self.schedule.weather_overrides.values()}
        missing = used - set(self.strategies)
        if missing:
            raise ValueError(f"schedule names strategies not in `strategies`: {sorted(missing)}")
        return self


Model = TypeVar("Model", bound=BaseModel)


def format_validation_errors(exc: ValidationError, source: str) -> str:
    """One line per problem, ``source: dotted.field: message``, so a reader finds it at once."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {err['msg']}")
    return "\n".join(lines)


def validate_mapping(
    model: type[Model], data: Any, source: str, error: type[ValueError] = ConfigError
) -> Model:
    """Validate parsed YAML against ``model``; ``error`` names ``source`` and the field."""
    if not isinstance(data, dict):
        raise error(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(format_validation_errors(exc, source)) from exc


def parse_yaml(
    model: type[Model],
    text: str,
    source: str,
    error: type[ValueError] = ConfigError,
    *,
    empty: dict[str, Any] | None = None,
) -> Model:
    """YAML text into ``model``; an empty document becomes ``empty`` when that is given."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if data is None and empty is not None:
        data = empty
    return validate_mapping(model, data, source, error)


def read_yaml(
    model: type[Model],
    path: str | Path,
    error: type[ValueError] = ConfigError,
    *,
    empty: dict[str, Any] | None = None,
) -> Model:
    """A YAML file into ``model``: the configuration, camera profiles and lens profiles."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_yaml(model, text, str(path), error, empty=empty)


def read_yaml_mapping(path: str | Path, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """A YAML file's top-level mapping, unvalidated (an empty file is ``{}``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise error(f"{path}: (top level): expected a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, object], patch: Mapping[str, object]) -> dict[str, object]:
    """``patch`` over ``base``: mappings key by key, anything else replaced (``PUT /config`` and
    an override file over its config file merge this way)."""
    out = dict(base)
    for key, value in patch.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = deep_merge(below, value)
        else:
            out[key] = value
    return out


def parse_config(data: Any, source: str = "<config>") -> SkylapseConfig:
    """Validate an already-parsed mapping; ``source`` names it in error messages."""
    return validate_mapping(SkylapseConfig, {} if data is None else data, source)


#: What ``PUT /config`` writes its changes to (`skylapse.config_store`): ``<stem>.override.yaml``
#: beside the config file (``skylapse.yaml`` -> ``skylapse.override.yaml``), or
#: ``<data>/skylapse.override.yaml`` for a service started without ``--config``.
OVERRIDE_SUFFIX = ".override.yaml"
DEFAULT_OVERRIDE_NAME = "skylapse" + OVERRIDE_SUFFIX


def override_path_for(config_path: str | Path) -> Path:
    """The override file beside a config file: ``<dir>/<stem>.override.yaml``."""
    path = Path(config_path)
    return path.with_name(path.stem + OVERRIDE_SUFFIX)


def load_config(
    path: str | Path | None = None, *, override: str | Path | None = None
) -> SkylapseConfig:
    """Read and validate a YAML configuration file (the packaged default when ``path`` is None),
    with its override file merged over it when that exists: ``override``, else the one beside
    ``path`` (:func:`override_path_for`). The file alone must validate (errors name it), then
    the merge (errors name the override file and the field)."""
    if path is None:
        source = f"skylapse/{DEFAULT_CONFIG_RESOURCE}"
        text = resources.files("skylapse").joinpath(DEFAULT_CONFIG_RESOURCE).read_text()
        base = yaml.safe_load(text) or {}
    else:
        source, base = str(path), read_yaml_mapping(path)
        override = override if override is not None else override_path_for(path)
    config = parse_config(base, source)
    if override is None or not Path(override).exists():
        return config
    merged = deep_merge(base, read_yaml_mapping(override))
    return parse_config(merged, f"{override} (over {source})")


def default_config() -> SkylapseConfig:
    """The configuration shipped with the package (``skylapse/data/skylapse.yaml``)."""
    return load_config()
