"""The processing API's request and response bodies, and the path parameters it checks.

Every JSON body the service sends has a model here, so the OpenAPI document describes it:
:class:`SequenceOut`, :class:`JobOut` (also the WebSocket's job events),
:class:`TimelapseOut` with its :class:`TimelapseFile` entries, and :class:`ErrorOut` for the
refusals that carry one message (401, 404, 409, 413, 429: :func:`refusal` documents them); a
422 names the field (see `skylapse.api.middleware`). The one request body is
:class:`RenderRequest` (``POST /jobs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from skylapse.processing.jobs import OutputFormat, RenderJobOptions

#: A job's state: the catalog's ``JOB_STATES`` as a type (a test checks that they agree).
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="job id")]
FileName = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="a file of the timelapse")
]

_X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
_MAX_DB_INT = 2**62  # SQLite integers are 64-bit; larger ids cannot exist
#: The largest render ``POST /jobs`` accepts: 8K UHD's pixels, no side over 8192 px.
MAX_RENDER_SIDE = 8192
MAX_RENDER_PIXELS = 7680 * 4320


def _h265_only() -> list[OutputFormat]:
    return ["h265"]


class RenderOptionsIn(RenderJobOptions):
    """Render options as the API accepts them: `RenderJobOptions`, with every free-text field
    checked up front so that a bad value is a 422 now rather than a failed job later."""

    formats: list[Literal["h265", "h264", "frames"]] = Field(
        default_factory=_h265_only, min_length=1, max_length=3
    )
    size: str | None = Field(
        None,
        max_length=16,
        description=f"2160p, 1080p, 720p or WxH; at most {MAX_RENDER_SIDE} px a side and "
        f"{MAX_RENDER_PIXELS} pixels (8K UHD)",
    )
    preset: str = Field("medium", description="x264/x265 preset, ultrafast .. placebo")
    white_balance: str | None = Field(
        None, max_length=16, description="gray-world, or a colour temperature such as 5600K"
    )
    brackets: Annotated[int, Field(ge=2, le=9)] | Literal["auto"] | None = None
    focus_stack: int | None = Field(None, ge=2, le=32)

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        from skylapse.processing.encode import parse_size

        if v is not None:
            # raises ValueError naming the accepted forms; "<N>p" as for a 16:9 source
            width, height = parse_size(v, (1920, 1080))
            if max(width, height) > MAX_RENDER_SIDE or width * height > MAX_RENDER_PIXELS:
                raise ValueError(
                    f"{width}x{height} is larger than renders may be: at most "
                    f"{MAX_RENDER_SIDE} px a side and {MAX_RENDER_PIXELS} pixels (7680x4320)"
                )
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v not in _X26X_PRESETS:
            raise ValueError(f"expected one of {', '.join(_X26X_PRESETS)}")
        return v

    @field_validator("white_balance")
    @classmethod
    def _white_balance(cls, v: str | None) -> str | None:
        if v is None or v.replace("_", "-").lower() in ("gray-world", "grey-world"):
            return v
        try:
            kelvin = float(v.lower().removesuffix("k"))
        except ValueError:
            raise ValueError("expected gray-world or a colour temperature such as 5600K") from None
        if not 1500 <= kelvin <= 15000:
            raise ValueError("colour temperature must be 1500..15000 K")
        return v


class RenderRequest(BaseModel):
    """``POST /jobs``: render one sequence (or one phase of it)."""

    model_config = ConfigDict(extra="forbid")

    sequence_id: int = Field(ge=1, le=_MAX_DB_INT, description="from GET /sequences")
    phase: str | None = Field(
        None, max_length=64, description="render only this phase (one of the sequence's phases)"
    )
    options: RenderOptionsIn = Field(default_factory=RenderOptionsIn)


class SequenceOut(BaseModel):
    id: int
    station: str
    camera: str
    session_id: str
    first_at: str | None
    last_at: str | None
    frames: int
    phases: list[str]
    closed_at: str | None


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
    def from_row(cls, job: Mapping[str, object]) -> JobOut:
        """A catalog job (`skylapse.catalog.ProcessingCatalog.job`) as the API shows it: its
        sequence and phase lifted out of its parameters."""
        params = job.get("params") or {}
        lifted = params if isinstance(params, dict) else {}
        return cls.model_validate(
            {
                **{name: job[name] for name in _JOB_COLUMNS},
                "sequence_id": lifted.get("sequence_id"),
                "phase": lifted.get("phase"),
                "params": params,
                "correlation_id": job.get("correlation_id"),
            }
        )


_JOB_COLUMNS = (
    "id",
    "kind",
    "state",
    "progress",
    "attempts",
    "error",
    "result",
    "created_at",
    "started_at",
    "finished_at",
)

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
