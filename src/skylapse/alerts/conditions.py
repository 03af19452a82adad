"""The alert conditions both services share over plain numbers and the processing service's
over its catalog; the capture service's own are in `skylapse.api.capture.health`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from skylapse.alerts.manager import AlertCondition

if TYPE_CHECKING:
    from skylapse.catalog import ProcessingCatalog


def processing_conditions(
    catalog: ProcessingCatalog,
    alerts: Any,
    failed_window: timedelta = timedelta(hours=24),
    *,
    store_at_risk: Callable[[], str | None] | None = None,
) -> list[AlertCondition]:
    """The processing service's conditions over its catalog (`ProcessingCatalog`), with the
    thresholds of an ``alerts`` config section (read at each evaluation); with
    ``store_at_risk`` (`StoreRetention.at_risk`: why, or None) also
    ``unrendered_frames_at_risk``: the store is past its watermark and only frames not yet
    rendered and archived are left, which retention never deletes."""

    def job_failing(active: bool) -> tuple[bool, str]:
        limit = alerts.job_failures
        since = datetime.now(UTC) - failed_window
        bad = []
        for job in catalog.jobs(limit=200):
            if job.attempts < limit:
                continue
            retrying = job.state in ("queued", "running") and job.error
            failed = (
                job.state == "failed" and job.finished_at is not None and job.finished_at >= since
            )
            if retrying or failed:
                bad.append(job)
        detail = "; ".join(
            f"{j.kind} job {j.id} {j.state} after {j.attempts} attempts: {j.error}" for j in bad[:3]
        )
        return bool(bad), detail

    def queue_depth(active: bool) -> tuple[bool, str]:
        depth = catalog.queue_depth()
        limit = alerts.processing_queue_max
        return depth > (0.8 * limit if active else limit), (
            f"{depth} jobs queued or running (target at most {limit})"
        )

    clear = alerts.clear_after_s
    conditions = [
        AlertCondition(
            "job_failing_repeatedly",
            "A processing job fails repeatedly",
            "critical",
            "workers",
            job_failing,
            clear_after_s=clear,
        ),
        AlertCondition(
            "processing_queue_depth",
            "Processing queue too deep",
            "warning",
            "queue",
            queue_depth,
            clear_after_s=clear,
        ),
    ]
    if store_at_risk is not None:
        at_risk = store_at_risk

        def store(active: bool) -> tuple[bool, str]:
            detail = at_risk()
            return detail is not None, detail or ""

        conditions.append(
            AlertCondition(
                "unrendered_frames_at_risk",
                "Processing store full of frames not yet rendered",
                "critical",
                "store",
                store,
                clear_after_s=clear,
            )
        )
    return conditions


def storage_condition(
    usage_pct: Callable[[], float],
    alerts: Callable[[], Any],
    what: str = "the data folder",
    clear_after_s: float = 60.0,
) -> AlertCondition:
    """``storage_utilization``: the use of the file system holding ``what`` above the
    ``storage_max_pct`` of ``alerts()`` (the current ``alerts`` section, read at each
    evaluation), clearing 5 points under it. Both services raise it."""

    def check(active: bool) -> tuple[bool, str]:
        pct = usage_pct()
        limit = alerts().storage_max_pct
        return pct > (limit - 5 if active else limit), (
            f"{pct:.1f} % of the file system holding {what} used (target at most {limit:g} %)"
        )

    return AlertCondition(
        "storage_utilization",
        "Storage use above target",
        "warning",
        "disk",
        check,
        clear_after_s=clear_after_s,
    )
