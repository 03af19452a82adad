"""What the processing service is told: :class:`ProcessingSettings`, and what it measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from skylapse.alerts import Notifier
from skylapse.config import (
    AlertsConfig,
    ApiConfig,
    ArchiveConfig,
    BackupConfig,
    ProcessingConfig,
    SkylapseConfig,
)

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
    """Everything `create_processing_app` needs: the configuration's own sections as they are
    (so a new field of them reaches the service without being copied here), and what is not
    configuration. `from_config` is how `skylapse serve processing` fills it.

    Sections: ``processing`` (queue, workers, ingest, renders, polling, disk thresholds,
    store retention), ``api`` (CORS origins, body limit, public docs; its port, host and
    connection limits are the server's), ``archive`` and ``backup`` (the
    ``SKYLAPSE_ARCHIVE_*`` / ``SKYLAPSE_BACKUP_*`` variables on top,
    `skylapse.config._Section.from_env`), ``alerts``.

    Not configuration: ``data_dir`` (resolved: flag, config, environment or default), the
    resolved ``token``; ``workers`` overrides ``processing.workers`` (``--workers``); ``ingest``
    False runs no ingest loop in this process; ``inbox`` (default ``DATA/inbox``);
    ``archive_dir`` where finished renders are also served from (default: the archive
    section's ``dir`` with its variable, else ``DATA/archive``); ``station``, the name alerts
    go out under; ``stale_queue_min`` (health: jobs waiting this long with no worker); the
    ``POST /jobs`` rate limit (``jobs_per_minute`` on average, ``job_burst`` at once, 429
    beyond); ``alert_notifiers`` (None: the ones the alerts section configures).
    """

    data_dir: Path
    token: str
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    workers: int | None = None
    ingest: bool = True
    inbox: Path | None = None
    archive_dir: Path | None = None
    station: str = "processing"
    stale_queue_min: float = 10.0
    jobs_per_minute: float = 20.0
    job_burst: int = 10
    alert_notifiers: list[Notifier] | None = None

    @classmethod
    def from_config(
        cls, cfg: SkylapseConfig, token: str, data_dir: Path, workers: int | None = None
    ) -> ProcessingSettings:
        """The settings of `skylapse serve processing`: the file's sections, the resolved
        data folder and token, ``--workers``; alerts go out as the MQTT node id, else
        ``<transfer.station>-processing``."""
        return cls(
            data_dir=data_dir,
            token=token,
            processing=cfg.processing,
            api=cfg.api,
            archive=cfg.archive,
            backup=cfg.backup,
            alerts=cfg.alerts,
            workers=workers,
            station=cfg.alerts.mqtt.node_id or f"{cfg.transfer.station}-processing",
        )

    @property
    def worker_threads(self) -> int:
        """Job threads in this process: ``workers`` when given, else ``processing.workers``."""
        return self.processing.workers if self.workers is None else self.workers
