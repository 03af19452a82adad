"""What the capture service tells its subscribers, as typed events.

:meth:`skylapse.capture.service.CaptureService.subscribe` hands out a queue of these frozen
dataclasses; consumers read their attributes. ``to_json()`` is the event as the capture API's
WebSocket sends it (``{"type": ..., ...}``; the dashboard reads these keys)::

    FrameWritten      {"type": "frame", "session_id", "record": FRAME + "image_url"}
    SessionStarted    {"type": "session_started", "session_id"}
    DeadlinesSkipped  {"type": "skipped", "session_id", "count"}
    SessionStopped    {"type": "session_stopped", "session": SUMMARY}

FRAME is `skylapse.catalog.capture.FrameRecord.to_json`, SUMMARY
`skylapse.capture.session.SessionSummary.to_json`.
"""

from __future__ import annotations

from dataclasses import dataclass

from skylapse.capture.session import SessionSummary
from skylapse.catalog.capture import FrameRecord


def frame_image_url(frame_id: int | None) -> str:
    """Where the capture API serves a frame's JPEG."""
    return f"/frames/{frame_id}/image"


@dataclass(frozen=True)
class FrameWritten:
    """A frame's file and catalog row are in place (each frame of a bracket is one event)."""

    session_id: str
    record: FrameRecord

    @property
    def first_of_shot(self) -> bool:
        """A single frame, or the first of a bracket (what per-shot measurements count)."""
        return self.record.bracket_index in (None, 0)

    def to_json(self) -> dict[str, object]:
        record = {**self.record.to_json(), "image_url": frame_image_url(self.record.id)}
        return {"type": "frame", "session_id": self.session_id, "record": record}


@dataclass(frozen=True)
class SessionStarted:
    """A session's loop began (before autofocus and its first deadline)."""

    session_id: str

    def to_json(self) -> dict[str, object]:
        return {"type": "session_started", "session_id": self.session_id}


@dataclass(frozen=True)
class DeadlinesSkipped:
    """The loop ran so late that ``count`` deadlines were skipped to stay on the grid."""

    session_id: str
    count: int

    def to_json(self) -> dict[str, object]:
        return {"type": "skipped", "session_id": self.session_id, "count": self.count}


@dataclass(frozen=True)
class SessionStopped:
    """A session ended (stopped, finished or failed); ``summary`` is what it did."""

    summary: SessionSummary

    @property
    def session_id(self) -> str:
        return self.summary.session_id

    def to_json(self) -> dict[str, object]:
        return {"type": "session_stopped", "session": self.summary.to_json()}


CaptureEvent = FrameWritten | SessionStarted | DeadlinesSkipped | SessionStopped
