"""The services' sections: the HTTP APIs, processing, alerts, the archive and backups.

* ``api``         both services' HTTP APIs (listen address, ports, token, CORS, limits).
* ``processing``  the processing service: data folder, job queue, ingest, the renders queued
  when a sequence ends (``processing.render``, the schema of `skylapse.processing.options`) and
  ``processing.retention``.
* ``alerts``      alert thresholds and notifiers (webhook, MQTT with Home Assistant discovery).
* ``archive``     where timelapses are archived and how long they are kept.
* ``backup``      the S3-compatible store that archives are copied to.

`skylapse.processing.options` is the only processing module imported here (pydantic only), so
the capture side, which loads the whole configuration, loads no render code.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from skylapse.config.base import Secret, Section
from skylapse.processing.options import RenderOptions

#: The shortest API token accepted, from the config file or the environment.
MIN_TOKEN_LENGTH = 16


class ApiConfig(Section):
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


class RetentionConfig(Section):
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


class ProcessingConfig(Section):
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


class MqttConfig(Section):
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


class AlertsConfig(Section):
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


class ArchiveConfig(Section):
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


class BackupConfig(Section):
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
