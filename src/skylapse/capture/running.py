"""A session being run: its state, and how it is opened (new or resumed).

:func:`open_session` names the session (``spec.session_id``, else ``YYYYMMDD-HHMMSS`` of the
start), places it at ``<YYYY-MM-DD>/<session_id>`` (relative to the buffer), opens its catalog
row and returns the :class:`RunningSession` the capture service's loop runs. A session with an
existing id resumes: numbering continues after the highest frame found on disk or in the catalog
(:func:`next_frame_number`), so nothing is overwritten, and it keeps its first start and its
correlation id (`skylapse.capture.shot`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from skylapse.capture.cameras.base import Camera
from skylapse.capture.exposure import ExposureController, ExposureSettings
from skylapse.capture.session import SessionSpec, SessionSummary
from skylapse.capture.strategy import CaptureChoice
from skylapse.catalog.capture import FrameCatalog
from skylapse.catalog.sqlite import JsonObject
from skylapse.config import LocationConfig
from skylapse.log import get_logger, new_correlation_id

#: the capture service's lines, under its logger name wherever they are written
log = get_logger("skylapse.capture.service")

_FRAME_NAME = re.compile(r"frame_(\d{6,})(?:_b\d+)?\.(?:jpg|dng)$")


@dataclass
class RunningSession:
    """One session's live state; ``folder`` is relative to the buffer."""

    spec: SessionSpec
    summary: SessionSummary
    folder: Path  # relative to the buffer
    next_number: int
    correlation_id: str  # of this session; each frame's id derives from it (`Shot.frame_id`)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    settings: ExposureSettings | None = None  # the last settings used (for capture_now)
    controller: ExposureController | None = None  # the loop's (its samples are learned from)
    cloud_covers: list[float] = field(default_factory=list)  # observed, one per shot

    def note_shot(
        self, settings: ExposureSettings, choice: CaptureChoice, latency_ms: float
    ) -> None:
        """A shot taken at its deadline with ``settings``, ``latency_ms`` after it."""
        summary = self.summary
        self.next_number += 1
        self.settings = settings
        summary.shots += 1
        summary.latencies_ms.append(latency_ms)
        if choice.phase not in summary.phases:
            summary.phases.append(choice.phase)
        if choice.weather is not None:
            self.cloud_covers.append(choice.weather.cloud_cover_pct)


def next_frame_number(buffer: Path, folder: Path, catalog: FrameCatalog, session_id: str) -> int:
    """One past the highest frame number on disk or in the catalog for this session."""
    numbers = [
        int(m.group(1))
        for p in (buffer / folder).glob("frame_*")
        if (m := _FRAME_NAME.search(p.name))
    ]
    numbers += [
        int(m.group(1))
        for path in catalog.session_paths(session_id)
        if (m := _FRAME_NAME.search(path))
    ]
    return max(numbers, default=-1) + 1


def open_session(
    spec: SessionSpec,
    *,
    now: dt.datetime,
    day: dt.date,
    buffer: Path,
    catalog: FrameCatalog,
    camera: Camera,
    location: LocationConfig,
    hdr: bool,
) -> RunningSession:
    """Open (or resume) the session ``spec`` asks for at ``now``, filed under ``day`` (module
    docstring); ``hdr``: whether it brackets, recorded in its catalog settings."""
    sid = spec.session_id or now.strftime("%Y%m%d-%H%M%S")
    folder = Path(day.isoformat()) / sid
    number = next_frame_number(buffer, folder, catalog, sid)
    known = catalog.session(sid)
    started = known.started_at if known is not None else now  # resuming: the first start
    # the session's correlation id (`skylapse.capture.shot`); a resumed session keeps it
    cid = str((known.settings.get("correlation_id") if known else None) or new_correlation_id())
    settings: JsonObject = {
        "interval_s": spec.interval_s or "auto",
        "hdr": hdr,
        "location": location.model_dump(),
        "resumed_at_frame": number,
        "correlation_id": cid,
        "focus_method": camera.focus_method,
    }
    camera_name = f"{camera.name}:{camera.profile.name}"
    catalog.open_session(sid, started, camera_name, settings)
    summary = SessionSummary(sid, now, first_frame_number=number, focus_method=camera.focus_method)
    log.info(
        "session opened",
        session_id=sid,
        resumed=number > 0,
        first_frame=number,
        correlation_id=cid,
    )
    return RunningSession(spec, summary, folder, number, cid)
