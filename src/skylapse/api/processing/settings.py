"""What the processing service is told: :class:`ProcessingSettings`, and what it measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from skylapse.alerts import Notifier
from skylapse.api.common import DEFAULT_MAX_BODY_BYTES
from skylapse.config import (
    DEFAULT_MAX_FRAME_PIXELS,
    AlertsConfig,
    ArchiveConfig,
    BackupConfig,
    RetentionConfig,
)
from skylapse.processing.options import RenderOptions

#: The archive folder when ``ProcessingSettings.archive_dir`` is unset (else ``DATA/archive``).
ARCHIVE_DIR_ENV = "SKYLAPSE_ARCHIVE_DIR"

#: What the processing service measures (see `skylapse.metrics`); the capture-only metrics
#: (frames captured, focus acquisition) are the capture service's.
PROCESSING_METRICS = (
    "processing_queue_depth",
    "storage_utilization_pct",
    "system_uptime_pct",
    "capture_latency_ms",
    "image_quality_score",
    "frames_transferred",
    "frames_failed",
    "render_frames_per_second",
    "job_duration_seconds",
    "store_bytes",
    "store_utilization_pct",
    "store_frames_deleted",
)


@dataclass
class ProcessingSettings:
    """Everything `create_processing_app` needs; `skylapse serve processing` fills it from the
    config file, the environment and the command line."""

    data_dir: Path
    token: str
    queue_url: str | None = None
    workers: int = 0
    inbox: Path | None = None
    archive_dir: Path | None = None
    ingest_every_s: float | None = 5.0
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # config processing.max_frame_pixels
    render_after_min: float | None = 30.0
    render: RenderOptions = field(default_factory=RenderOptions)  # config processing.render
    job_poll_s: float = 0.5
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    public_docs: bool = False
    disk_warn_pct: float = 90.0
    disk_fail_pct: float = 97.0
    stale_queue_min: float = 10.0
    archive: ArchiveConfig | None = None  # config `archive` section; None: env only
    backup: BackupConfig | None = None  # config `backup` section; None: env only
    alerts: AlertsConfig | None = None  # a config `alerts` section; None: defaults
    retention: RetentionConfig | None = None  # config processing.retention; None: defaults
    alert_notifiers: list[Notifier] | None = None  # None: the ones the alerts section configures
    station: str = "processing"
    jobs_per_minute: float = 20.0  # POST /jobs: this many a minute on average ...
    job_burst: int = 10  # ... and this many at once (429 beyond)
    extra: dict[str, object] = field(default_factory=dict)
