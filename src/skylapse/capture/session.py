"""Sessions on paper: what a session should do, what it did, and its deadline grid (all pure).

``SessionSpec``, ``SessionSummary``, ``DeadlineSchedule``, ``summary_lines(summary)``,
``SessionError``, ``FrameNotStored``; the capture service (`skylapse.capture.service`) runs them.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np

from skylapse.catalog.sqlite import iso_time

#: A deadline missed by less than this fraction of the interval is still taken, late, and its real
#: latency recorded; one missed by more is skipped (and counted) so frames stay on the grid.
LATE_TOLERANCE_FRACTION = 0.25


class SessionError(RuntimeError):
    """A session request that cannot be honoured (one is already running, unknown id...)."""


class FrameNotStored(RuntimeError):
    """``capture_now`` took frames that could not be written; the message says why."""


class DeadlineSchedule:
    """Capture deadlines ``anchor + k * interval`` on a monotonic clock (no cumulative drift).

    :meth:`advance` moves to the next deadline; with a new interval it first re-anchors at the
    current deadline, so a phase change neither loses nor bunches frames. If the next deadline
    has already passed by more than ``tolerance_fraction`` of the interval, it jumps to the first
    deadline after ``now`` and returns how many were skipped.
    """

    def __init__(
        self, start: float, interval_s: float, tolerance_fraction: float = LATE_TOLERANCE_FRACTION
    ):
        if interval_s <= 0:
            raise ValueError("the interval must be positive")
        self.anchor = start
        self.interval = interval_s
        self.tolerance_fraction = tolerance_fraction
        self.k = 0
        self.skipped = 0

    @property
    def deadline(self) -> float:
        return self.anchor + self.k * self.interval

    def advance(self, now: float, interval_s: float | None = None) -> int:
        if interval_s is not None and interval_s != self.interval:
            if interval_s <= 0:
                raise ValueError("the interval must be positive")
            self.anchor, self.k, self.interval = self.deadline, 0, interval_s
        self.k += 1
        skipped = 0
        if now > self.deadline + self.tolerance_fraction * self.interval:
            future = math.floor((now - self.anchor) / self.interval) + 1
            skipped = future - self.k
            self.k = future
        self.skipped += skipped
        return skipped


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass(frozen=True)
class SessionSpec:
    """What a session should do. ``interval_s=None`` follows the plan's phase intervals; the
    session ends at ``duration_s`` after its start, at wall time ``end``, after ``max_frames``
    or when stopped, whichever comes first."""

    session_id: str | None = None  # None: YYYYMMDD-HHMMSS of the start; an existing id resumes
    interval_s: float | None = None
    duration_s: float | None = None
    end: dt.datetime | None = None
    max_frames: int | None = None
    hdr: bool | None = None  # None: config.capture.hdr
    day: dt.date | None = None  # folder date; None: the start's local date

    def end_monotonic(self, mono0: float, wall0: dt.datetime) -> float:
        """When the session ends on the monotonic clock, for a start at ``mono0`` (monotonic)
        and ``wall0`` (wall time): the earlier of ``duration_s`` and ``end``; inf without
        either (then ``max_frames`` or a stop ends it)."""
        end_mono = math.inf
        if self.duration_s is not None:
            end_mono = mono0 + self.duration_s
        if self.end is not None:
            end_mono = min(end_mono, mono0 + (self.end - wall0).total_seconds())
        return end_mono


@dataclass
class SessionSummary:
    """What a session did; also the live counters while it runs."""

    session_id: str
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    shots: int = 0  # capture events (a bracket counts once)
    files: int = 0  # frames handed to the writer (each bracket frame counts)
    written: int = 0
    failed: int = 0
    skipped_deadlines: int = 0
    first_frame_number: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    exposure_s: tuple[float, float] | None = None
    gain: tuple[float, float] | None = None
    ev: tuple[float, float] | None = None
    phases: list[str] = field(default_factory=list)
    focus_acquisition_time_s: float | None = None
    lens_position: float | None = None
    focus_method: str | None = None  # libcamera_af | contrast_search | fixed

    def latency_ms(self, q: float) -> float | None:
        return _percentile(self.latencies_ms, q)

    def note_exposure(self, exposure_s: float, gain: float) -> None:
        if not (math.isfinite(exposure_s) and exposure_s > 0 and math.isfinite(gain)):
            return  # the camera did not report it (e.g. a replayed JPEG without EXIF)
        ev = math.log2(exposure_s * gain)
        for name, v in (("exposure_s", exposure_s), ("gain", gain), ("ev", ev)):
            cur = getattr(self, name)
            setattr(self, name, (v, v) if cur is None else (min(cur[0], v), max(cur[1], v)))

    def to_json(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "started_at": iso_time(self.started_at),
            "ended_at": iso_time(self.ended_at),
            "shots": self.shots,
            "files": self.files,
            "written": self.written,
            "failed": self.failed,
            "skipped_deadlines": self.skipped_deadlines,
            "latency_ms_p50": self.latency_ms(50),
            "latency_ms_p99": self.latency_ms(99),
            "latency_ms_max": max(self.latencies_ms) if self.latencies_ms else None,
            "exposure_s": self.exposure_s,
            "gain": self.gain,
            "ev": self.ev,
            "phases": self.phases,
            "focus_acquisition_time_s": self.focus_acquisition_time_s,
            "lens_position": self.lens_position,
            "focus_method": self.focus_method,
        }


def summary_lines(summary: SessionSummary) -> list[tuple[str, str]]:
    """(label, value) rows for printing a session summary."""

    def rng(v: tuple[float, float] | None, fmt: str) -> str:
        return "—" if v is None else f"{fmt.format(v[0])} .. {fmt.format(v[1])}"

    p50, p99 = summary.latency_ms(50), summary.latency_ms(99)
    rows = [
        ("session", summary.session_id),
        (
            "frames",
            f"{summary.shots} shots, {summary.written} files written"
            + (f", {summary.failed} failed" if summary.failed else ""),
        ),
        ("skipped deadlines", str(summary.skipped_deadlines)),
        ("capture latency", "—" if p50 is None else f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"),
        ("exposure", rng(summary.exposure_s, "{:.5g} s")),
        ("gain", rng(summary.gain, "{:.2f}")),
        ("exposure EV (log2 t·g)", rng(summary.ev, "{:+.2f}")),
        ("phases", ", ".join(summary.phases) or "—"),
    ]
    if summary.focus_acquisition_time_s is not None:
        rows.append(
            (
                "autofocus",
                f"lens {summary.lens_position:.3f} dpt in {summary.focus_acquisition_time_s:.2f} s",
            )
        )
    return rows
