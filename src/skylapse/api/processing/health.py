"""The processing service's ``GET /health`` checks (the endpoint itself is the shared one in
`skylapse.api.common`): queue, disk, catalog, workers, ingest, store (retention) and alerts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from huey import RedisHuey

from skylapse.api.common import Check, disk_check
from skylapse.api.processing.background import IngestLoop
from skylapse.api.processing.runtime import ProcessingRuntime
from skylapse.processing.jobs import BackgroundConsumer, JobService


def health_checks(runtime: ProcessingRuntime) -> dict[str, Callable[[], Check]]:
    """The named checks, each reading the runtime's state when ``/health`` is asked."""
    settings = runtime.settings
    return {
        "queue": lambda: check_queue(runtime.jobs),
        "disk": lambda: disk_check(
            runtime.data_dir, settings.processing.disk_warn_pct, settings.processing.disk_fail_pct
        ),
        "catalog": lambda: check_catalog(runtime.jobs),
        "workers": lambda: check_workers(runtime.jobs, runtime.consumer, settings.stale_queue_min),
        "ingest": lambda: check_ingest(runtime.ingest_loop),
        "store": runtime.retention.check,
        "alerts": runtime.alerts.health,
    }


def check_catalog(jobs: JobService) -> Check:
    depth = jobs.catalog.queue_depth()
    return Check(status="ok", detail=f"{depth} jobs queued or running")


def check_queue(jobs: JobService) -> Check:
    backend = "redis" if isinstance(jobs.huey, RedisHuey) else "sqlite"
    pending = jobs.huey.pending_count()
    return Check(status="ok", detail=f"{pending} tasks waiting in the {backend} queue")


def check_workers(
    jobs: JobService, consumer: BackgroundConsumer | None, stale_queue_min: float
) -> Check:
    """This process's worker threads when it has any; else whether jobs wait for
    ``stale_queue_min`` minutes with none running (no `skylapse worker` process at work)."""
    if consumer is not None:
        alive, total = consumer.threads_alive()
        if alive == total:
            return Check(status="ok", detail=f"{alive} in-process worker threads")
        status = "degraded" if alive else "failing"
        return Check(status=status, detail=f"{alive} of {total} worker threads alive")
    queued = jobs.catalog.jobs(state="queued", limit=1000)
    running = jobs.catalog.jobs(state="running", limit=1000)
    if queued and not running:
        oldest = min(j.created_at for j in queued)
        waited = (datetime.now(UTC) - oldest).total_seconds() / 60
        if waited >= stale_queue_min:
            return Check(
                status="degraded",
                detail=f"{len(queued)} jobs waiting for {waited:.0f} min and none running: "
                "is a `skylapse worker` process running?",
            )
    return Check(
        status="ok",
        detail=f"no in-process workers; {len(running)} jobs running in worker processes",
    )


def check_ingest(ingest_loop: IngestLoop | None) -> Check:
    if ingest_loop is None:
        return Check(status="ok", detail="ingest loop disabled in this process")
    return ingest_loop.check()
