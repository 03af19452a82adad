"""The capture service's request and response bodies: the OpenAPI document is built from these.

Conventions: times are ISO 8601 strings with an offset and microseconds (as the catalog stores
them); ``null`` means "not known" or "none yet". Response models built from other modules'
JSON (the service's status, the catalog's rows) forbid unknown fields, so a field added there
fails the tests until it is described here, instead of vanishing from the answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool

from skylapse.alerts import Severity
from skylapse.capture.weather import SkyCondition
from skylapse.catalog import FrameRecord
from skylapse.config import LocationConfig, SkylapseConfig
from skylapse.names import NAME_PATTERN, Name

#: The largest id or offset SQLite takes (larger ones are refused with 422, not a 500).
MAX_DB_INT = 2**62

FrameId = Annotated[int, PathParam(ge=1, le=MAX_DB_INT, description="frame id")]
SessionId = Annotated[str, PathParam(pattern=NAME_PATTERN)]
Time = Annotated[str, Field(description="ISO 8601 with an offset")]
Range = tuple[float, float]
#: How the camera focuses (`skylapse.capture.cameras.base`: ``FOCUS_*``).
FocusMethod = Annotated[
    Literal["libcamera_af", "contrast_search", "fixed"],
    Field(
        description="libcamera's AF algorithm, Skylapse's contrast search over a lens that "
        "moves, or a lens that stays where it is"
    ),
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ----------------------------------------------------------------------------------


class CaptureRequest(BaseModel):
    """``POST /capture``."""

    model_config = ConfigDict(extra="forbid")

    bracket: StrictBool = Field(False, description="take the strategy's bracket set (HDR) instead")


class SessionRequest(BaseModel):
    """``POST /sessions``: all optional; the session ends at whichever limit comes first."""

    model_config = ConfigDict(extra="forbid")

    session_id: Name | None = Field(None, description="an existing id resumes that session")
    interval_s: float | None = Field(
        None, gt=0, le=3600, description="fixed interval; null follows the plan"
    )
    duration_s: float | None = Field(None, gt=0, le=7 * 86400)
    max_frames: int | None = Field(None, ge=1, le=10_000_000)
    hdr: StrictBool | None = Field(None, description="null: capture.hdr")


# -- frames ------------------------------------------------------------------------------------


class Bracket(_Out):
    set: int = Field(description="the bracket set's number")
    index: int | None = Field(description="0 for the set's first frame")
    ev_offset: float | None


class Frame(_Out):
    """A frame's catalog record (`skylapse.catalog.FrameRecord.to_json`) and its image's URL."""

    id: int
    path: str = Field(description="relative to the buffer")
    captured_at: Time
    scheduled_at: Time | None
    session_id: str | None
    sha256: str
    size_bytes: int
    exposure_time_s: float | None
    analogue_gain: float | None
    iso: float | None
    aperture: float | None
    lens_position: float | None
    white_balance: Range | None = Field(description="red and blue gains")
    sensor_temp_c: float | None
    bracket_set: int | None
    bracket_index: int | None
    ev_offset: float | None
    bracket: Bracket | None = Field(description="null for a single frame")
    exposure_error_ev: float | None
    focus_score: float | None
    quality_score: float | None
    latency_ms: float | None = Field(description="from the scheduled time to the exposure")
    phase: str | None
    strategy: str | None
    extra: dict[str, JsonValue]
    transfer_state: str = Field(description="pending, sent, verified or quarantined")
    transfer_attempts: int
    transferred_at: Time | None
    deleted_at: Time | None
    deleted_reason: str | None
    image_url: str = Field(description="GET it (with the token) for the JPEG")

    @classmethod
    def from_record(cls, record: FrameRecord) -> Frame:
        """A catalog record as the API shows it."""
        return cls.model_validate({**record.to_json(), "image_url": image_url(record.id)})


def image_url(frame_id: int | None) -> str:
    """Where ``GET /frames/{id}/image`` serves a frame."""
    return f"/frames/{frame_id}/image"


class CaptureResult(_Out):
    """``POST /capture``: the frames written (several for a bracket set)."""

    frames: list[Frame]


class FramePage(_Out):
    """``GET /frames``: one page, oldest first."""

    frames: list[Frame]
    limit: int
    offset: int
    next_offset: int | None = Field(description="the next page's offset; null on the last")


# -- sessions ----------------------------------------------------------------------------------


class SessionSummary(_Out):
    """What a session did (`skylapse.capture.service.SessionSummary`); live while it runs."""

    session_id: str
    started_at: Time
    ended_at: Time | None
    shots: int = Field(description="capture events; a bracket set counts once")
    files: int = Field(description="frames handed to the writer")
    written: int
    failed: int
    skipped_deadlines: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    latency_ms_max: float | None
    exposure_s: Range | None = Field(description="[min, max]")
    gain: Range | None = Field(description="[min, max]")
    ev: Range | None = Field(description="[min, max]")
    phases: list[str]
    focus_acquisition_time_s: float | None
    lens_position: float | None
    focus_method: FocusMethod | None


class SessionRow(_Out):
    """``GET /sessions``: a session as the catalog records it."""

    id: str
    started_at: Time
    ended_at: Time | None
    camera: str | None
    settings: str | None = Field(description="the session's settings, as JSON text")


# -- status ------------------------------------------------------------------------------------


class Window(_Out):
    """A session window of the unattended plan: ``[start, end)``."""

    session_id: str
    start: Time
    end: Time
    open: bool = Field(description="now is inside it")


class ScheduleWindow(Window):
    name: str


class WriterStats(_Out):
    written: int
    failed: int
    queue_depth: int
    max_queue_depth: int
    writer_waits: int
    write_ms_p50: float
    write_ms_max: float


class StorageStatus(_Out):
    utilization_pct: float
    watermark_pct: float = Field(description="emergency cleanup above this")
    deleted: dict[str, int] = Field(description="frames deleted since the start, by reason")


class FrameCounts(_Out):
    stored: int
    awaiting_transfer: int


class TransferStatus(_Out):
    enabled: Literal[True]
    host: str
    queue_depth: int
    frames_sent: int
    batches_verified: int
    failures: int
    last_success: Time | None
    failing_for_s: float
    last_error: str | None


class ActiveAlert(_Out):
    """An open alert episode."""

    alert: str
    severity: Severity
    component: str
    title: str
    detail: str
    episode: int
    opened_at: Time


class Status(_Out):
    """``GET /status``: what the station is doing now (also the WebSocket's status messages)."""

    state: Literal["capturing", "idle"]
    now: Time
    session: SessionSummary | None = Field(description="the running session, else the last")
    sky: SkyCondition
    camera: str = Field(description="name:profile")
    camera_ok: bool
    camera_error: str | None
    camera_notice: str | None = Field(
        description="set when the camera stands in for a missing one (the simulated camera)"
    )
    focus_method: FocusMethod
    lens_position: float | None
    focus_acquisition_time_s: float | None
    last_frame_at: Time | None
    sun_elevation_deg: float
    phase: str
    strategy: str
    interval_s: float
    unattended: bool
    window: Window | None = Field(description="the current or next session window")
    writer: WriterStats
    storage: StorageStatus
    frames: FrameCounts
    transfer: TransferStatus | None = Field(description="null when no transfer host is set")
    alerts: list[ActiveAlert]


class SessionStarted(_Out):
    """``POST /sessions``."""

    session_id: str
    status: Status


# -- schedule ----------------------------------------------------------------------------------


class PlanPhase(_Out):
    """One stretch of the day under one phase."""

    start: Time
    end: Time
    phase: str
    min_elevation_deg: float
    max_elevation_deg: float
    interval_s: float
    strategy: str
    hdr: bool
    white_balance: str
    ev100_min: float | None = Field(description="null: unbounded")
    ev100_max: float | None = Field(description="null: unbounded")
    frames: int


class SunTimes(_Out):
    """The day's sun events; null when one does not happen that day."""

    astronomical_dawn: Time | None
    nautical_dawn: Time | None
    civil_dawn: Time | None
    sunrise: Time | None
    noon: Time | None
    sunset: Time | None
    civil_dusk: Time | None
    nautical_dusk: Time | None
    astronomical_dusk: Time | None


class Schedule(_Out):
    """``GET /schedule``: the day's plan, its windows and the phase now."""

    date: str = Field(description="YYYY-MM-DD")
    timezone: str
    location: LocationConfig
    now: Time
    sun_elevation_deg: float
    phase: str
    strategy: str
    interval_s: float
    total_frames: int
    phases: list[PlanPhase]
    windows: list[ScheduleWindow]
    sun: SunTimes


# -- configuration -----------------------------------------------------------------------------


class ConfigChange(_Out):
    """``PUT /config``: the fields that changed (dotted paths) and the configuration now."""

    changed: list[str]
    config: SkylapseConfig
    saved_to: str | None = Field(
        description="the override file the change was saved to (null: kept in memory only)"
    )


# -- WebSocket ---------------------------------------------------------------------------------


class PreviewMessage(_Out):
    """The newest frame, at most 640 px wide, as a WebSocket message."""

    type: Literal["preview"] = "preview"
    frame_at: Time
    session_id: str | None = Field(description="the running session's, else null")
    width: int
    height: int
    content_type: Literal["image/jpeg"] = "image/jpeg"
    jpeg_base64: str
