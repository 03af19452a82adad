"""``/jobs``: list, read, queue, cancel and retry render jobs.

``POST /jobs`` takes renders up to 8K UHD (`ApiRenderOptions`: `MAX_RENDER_PIXELS`, no side over
`MAX_RENDER_SIDE`) and at most ``job_burst`` at once and ``jobs_per_minute`` on average
(`ProcessingRuntime.job_rate`); beyond that it answers 429 with ``Retry-After``. Every change
wakes the job watcher, so WebSocket clients hear of it at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from skylapse.api.common import invalid
from skylapse.api.middleware import request_correlation_id
from skylapse.api.processing.models import JobId, JobOut, JobState, RenderRequest, refusal
from skylapse.api.processing.runtime import ProcessingRuntime, Runtime
from skylapse.log import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["jobs"])


def _require_job(runtime: ProcessingRuntime, job_id: str) -> JobOut:
    job = runtime.jobs.catalog.job(job_id)
    if job is None:
        raise HTTPException(404, detail=f"no job {job_id}")
    return JobOut.from_row(job)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    runtime: Runtime,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """Jobs, newest first."""
    return [JobOut.from_row(j) for j in runtime.jobs.catalog.jobs(state=state, limit=limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: refusal("no such job")})
def get_job(job_id: JobId, runtime: Runtime) -> JobOut:
    return _require_job(runtime, job_id)


@router.post(
    "/jobs",
    response_model=JobOut,
    status_code=202,
    responses={
        413: refusal("the request body is too large"),
        429: refusal("too many render jobs; retry after Retry-After s"),
    },
)
def submit_job(body: RenderRequest, request: Request, runtime: Runtime) -> JobOut:
    """Queue a render of a sequence; the job carries this request's correlation id."""
    jobs = runtime.jobs
    sequence = jobs.catalog.sequence(body.sequence_id)
    if sequence is None:
        raise invalid("sequence_id", f"no sequence {body.sequence_id}")
    if body.phase is not None and body.phase not in sequence.phases:
        raise invalid(
            "phase",
            f"sequence {body.sequence_id} has no phase {body.phase!r}; "
            f"it has {list(sequence.phases)}",
        )
    runtime.job_rate.check("render jobs")
    job_id = jobs.submit_render(
        body.sequence_id,
        body.options,
        phase=body.phase,
        correlation=request_correlation_id(request),
    )
    log.info("render requested", job=job_id, sequence=body.sequence_id)
    runtime.watcher.nudge()
    return _require_job(runtime, job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={
        404: refusal("no such job"),
        409: refusal("the job already finished"),
    },
)
def cancel_job(job_id: JobId, runtime: Runtime) -> JobOut:
    job = _require_job(runtime, job_id)
    if job.state not in ("queued", "running"):
        raise HTTPException(
            409,
            detail=f"job {job_id} is {job.state}; only queued or running jobs can be cancelled",
        )
    out = JobOut.from_row(runtime.jobs.cancel(job_id))
    runtime.watcher.nudge()
    return out


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    responses={
        404: refusal("no such job"),
        409: refusal("the job is not failed or cancelled"),
    },
)
def retry_job(job_id: JobId, runtime: Runtime) -> JobOut:
    _require_job(runtime, job_id)
    try:
        out = JobOut.from_row(runtime.jobs.retry(job_id))
    except ValueError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    runtime.watcher.nudge()
    return out
