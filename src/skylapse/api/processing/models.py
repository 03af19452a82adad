"""The processing API's request and response bodies, and the path parameters it checks.

Every JSON body the service sends has a model here, so the OpenAPI document describes it:
:class:`SequenceOut`, :class:`JobOut` (also the WebSocket's job events),
:class:`TimelapseOut` with its :class:`TimelapseFile` entries, and :class:`ErrorOut` for the
refusals that carry one message (401, 404, 409, 413, 429: :func:`refusal` documents them); a
422 names the field (see `skylapse.api.middleware`). The one request body is
:class:`RenderRequest` (``POST /jobs``), whose options are the render's own
(`skylapse.processing.options.ApiRenderOptions`: `RenderOptions` within the API's limits).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from skylapse.catalog import JobRow, SequenceRow
from skylapse.catalog import JobState as JobState  # a job's state, re-exported for the routes
from skylapse.processing.options import ApiRenderOptions

JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="job id")]
FileName = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="a file of the timelapse")
]

_MAX_DB_INT = 2**62  # SQLite integers are 64-bit; larger ids cannot exist


class RenderRequest(BaseModel):
    """``POST /jobs``: render one sequence (or one phase of it)."""

    model_config = ConfigDict(extra="forbid")

    sequence_id: int = Field(ge=1, le=_MAX_DB_INT, description="from GET /sequences")
    phase: str | None = Field(
        None, max_length=64, description="render only this phase (one of the sequence's phases)"
    )
    options: ApiRenderOptions = Field(
        default_factory=ApiRenderOptions,
        description="the render's options (`skylapse render`'s flags), within the API's limits: "
        "renders up to 8K UHD, no lens profile",
    )


class SequenceOut(BaseModel):
    """A sequence (`skylapse.catalog.SequenceRow.to_json`)."""

    id: int
    station: str
    camera: str
    session_id: str
    first_at: str | None
    last_at: str | None
    frames: int
    phases: list[str]
    closed_at: str | None

    @classmethod
    def from_row(cls, sequence: SequenceRow) -> SequenceOut:
        return cls.model_validate(sequence.to_json())


class JobOut(BaseModel):
    id: str
    kind: str
    state: str
    progress: float
    attempts: int
    error: str | None
    sequence_id: int | None = None
    phase: str | None = None
    params: dict[str, object]
    result: dict[str, object] | None
    correlation_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None

    @classmethod
    def from_row(cls, job: JobRow) -> JobOut:
        """A catalog job as the API shows it (`skylapse.catalog.JobRow.to_json`): its
        sequence and phase lifted out of its parameters."""
        return cls.model_validate(job.to_json())


FileKind = Literal["video", "preview", "keogram", "contact_sheet", "other"]


def file_kind(name: str) -> tuple[FileKind, str]:
    """What a render's output file is, by its name, and its media type."""
    if name.endswith(".preview.mp4"):
        return "preview", "video/mp4"
    if name.endswith(".mp4"):
        return "video", "video/mp4"
    if name.endswith(".keogram.png"):
        return "keogram", "image/png"
    if name.endswith(".contact.png"):
        return "contact_sheet", "image/png"
    return "other", "application/octet-stream"


class TimelapseFile(BaseModel):
    name: str
    kind: FileKind
    media_type: str
    size_bytes: int
    url: str = Field(description="GET it with the token; supports Range requests")
    archived: bool


class TimelapseOut(BaseModel):
    job_id: str
    sequence_id: int | None
    phase: str | None
    finished_at: str | None
    frames: int | None
    render_fps: float | None
    files: list[TimelapseFile]


class ErrorOut(BaseModel):
    """A refusal with one message (``{"detail": "no job abc"}``)."""

    detail: str


def refusal(description: str) -> dict[str, object]:
    """An entry of a route's ``responses``: a refusal with `ErrorOut` as its body."""
    return {"model": ErrorOut, "description": description}
