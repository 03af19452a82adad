"""``GET /timelapses/{job_id}/{file_name}``: one file of a finished render, with HTTP range
requests (206) so that players can seek.

``<video>`` and ``<img>`` elements cannot send headers, so the app includes this router with
the media token dependency: the token may also come as ``?token=``
(`skylapse.api.auth.media_auth`). Files are served only by name from the job's own outputs
(`ProcessingRuntime.locate`).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from skylapse.api.processing.models import FileName, JobId, file_kind, refusal
from skylapse.api.processing.runtime import Runtime

router = APIRouter(tags=["timelapses"])


@router.get(
    "/timelapses/{job_id}/{file_name}",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}, "image/png": {}}},
        206: {"description": "the requested byte range"},
        404: refusal("no such job or file"),
        416: {"description": "range not satisfiable"},
    },
)
def get_timelapse_file(job_id: JobId, file_name: FileName, runtime: Runtime) -> FileResponse:
    """One output file of a finished render; honours ``Range`` (206) so players can seek."""
    job = runtime.jobs.catalog.job(job_id)
    found = None
    if job is not None and job.kind == "render" and job.state == "done":
        found = runtime.locate(job, file_name)
    if found is None:
        raise HTTPException(404, detail=f"no file {file_name!r} for job {job_id}")
    return FileResponse(
        found[0],
        media_type=file_kind(file_name)[1],
        content_disposition_type="inline",
        filename=file_name,
    )
