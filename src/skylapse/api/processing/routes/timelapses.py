"""``GET /timelapses``: finished renders and their files, with the URL of each
(`skylapse.api.processing.routes.media` serves them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query

from skylapse.api.processing.models import TimelapseFile, TimelapseOut, file_kind
from skylapse.api.processing.runtime import Runtime
from skylapse.catalog.sqlite import iso_time

router = APIRouter(tags=["timelapses"])


@router.get("/timelapses", response_model=list[TimelapseOut])
def list_timelapses(
    runtime: Runtime,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TimelapseOut]:
    """Finished renders whose files still exist, newest first, with a URL per file."""
    out = []
    for job in runtime.jobs.catalog.jobs(state="done", limit=limit):
        if job.kind != "render":
            continue
        files = []
        for rel in job.outputs:
            name = Path(rel).name
            found = runtime.locate(job, name)
            if found is None:
                continue
            kind, media_type = file_kind(name)
            files.append(
                TimelapseFile(
                    name=name,
                    kind=kind,
                    media_type=media_type,
                    size_bytes=found[0].stat().st_size,
                    url=f"/timelapses/{job.id}/{name}",
                    archived=found[1],
                )
            )
        if files:
            result = job.result or {}
            out.append(
                TimelapseOut.model_validate(
                    {
                        "job_id": job.id,
                        "sequence_id": job.sequence_id,
                        "phase": job.phase,
                        "finished_at": iso_time(job.finished_at),
                        "frames": result.get("frames"),
                        "render_fps": result.get("render_fps"),
                        "files": files,
                    }
                )
            )
    return out
