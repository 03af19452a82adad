"""Prometheus metrics shared by the capture and processing services.

Every metric is defined once here (name, kind, help text, labels, buckets), so that the two
services expose the same name with the same meaning. Each service builds its own
:class:`ServiceMetrics` with a private registry and registers only the metrics it fills: a
metric that a service cannot measure is absent from its ``/metrics`` rather than a constant.

The architecture's metrics:

* ``capture_latency_ms``        histogram: from a frame's deadline to the start of its exposure,
  signed (a free-running sensor's frame nearest the deadline may have begun before it).
* ``focus_acquisition_time_s``  histogram: how long autofocus took at a session's start.
* ``processing_queue_depth``    gauge: jobs queued or running.
* ``storage_utilization_pct``   gauge: use of the file system holding the service's data.
* ``image_quality_score``       gauge: the quality score (0..1) of the newest frame.
* ``system_uptime_pct``         gauge: capture: the share of scheduled capture time (session
  windows and sessions) of the last ``alerts.uptime_window_h`` in which the station captured:
  the camera answered and frames were stored on schedule (see :class:`ScheduledUptime`);
  processing: the share of the time since its first start that the service ran (see
  :class:`UptimeTracker`).

and ``frames_captured_total``, ``frames_transferred_total``, ``frames_failed_total{stage}``,
``render_frames_per_second`` and ``job_duration_seconds{kind,state}``; the processing store's
``store_bytes``, ``store_utilization_pct`` and ``store_frames_deleted_total{reason}``
(`skylapse.processing.retention`).

API
---
``METRICS``                                  the definitions, by name.
``ServiceMetrics(names)``                    a registry holding those metrics; ``m[name]``.
``ServiceMetrics.exposition() -> bytes``     the text format served at ``/metrics``.
``ServiceMetrics.typed(name, Counter)``      one metric as its kind, for type-checked callers.
``UptimeTracker(path)``                      ``system_uptime_pct`` of the processing service.
``ScheduledUptime(path, scheduled_spans)``   ``system_uptime_pct`` of the capture station.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

# The ``*_created`` series (a timestamp per metric) would double the scrape for no use here.
disable_created_metrics()

#: The Content-Type of :meth:`ServiceMetrics.exposition`.
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class MetricSpec:
    """One metric's definition; ``name`` is what Prometheus shows (counters add ``_total``)."""

    name: str
    kind: type[MetricWrapperBase]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


_SPECS = [
    MetricSpec(
        "capture_latency_ms",
        Histogram,
        "Milliseconds from a frame's scheduled time to the start of its exposure as the camera "
        "reports it (else to the call); negative when the exposure began before that time: a "
        "streaming sensor (picamera2) keeps the frame starting nearest it, within half a frame.",
        # le=0: the frames whose exposure began at or before their time (no negative bounds:
        # the client would drop _sum)
        buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    ),
    MetricSpec(
        "focus_acquisition_time_s",
        Histogram,
        "Seconds autofocus took to settle at the start of a capture session.",
        buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    ),
    MetricSpec(
        "processing_queue_depth",
        Gauge,
        "Processing jobs queued or running.",
    ),
    MetricSpec(
        "storage_utilization_pct",
        Gauge,
        "Percent of the file system holding the service's data that is in use.",
    ),
    MetricSpec(
        "store_bytes",
        Gauge,
        "Bytes of ingested frames in the processing store (not yet deleted by retention).",
    ),
    MetricSpec(
        "store_utilization_pct",
        Gauge,
        "Percent of the file system holding the processing store that is in use.",
    ),
    MetricSpec(
        "store_frames_deleted",
        Counter,
        "Frames retention deleted from the processing store, by reason (age, watermark).",
        labels=("reason",),
    ),
    MetricSpec(
        "image_quality_score",
        Gauge,
        "Quality score (0 worst .. 1 best: exposure, clipping, sharpness) of the newest frame.",
    ),
    MetricSpec(
        "system_uptime_pct",
        Gauge,
        "Capture: percent of the scheduled capture time of the last week (alerts.uptime_window_h)"
        " in which the station captured (camera answering, frames stored on schedule)."
        " Processing: percent of the time since the service first started that it was running.",
    ),
    MetricSpec(
        "frames_captured",
        Counter,
        "Frames captured and written durably to the station's buffer.",
    ),
    MetricSpec(
        "frames_transferred",
        Counter,
        "Frames transferred: verified by the receiver (capture side) or ingested (processing).",
    ),
    MetricSpec(
        "frames_failed",
        Counter,
        "Frames that failed, by stage (capture, write, transfer, ingest).",
        labels=("stage",),
    ),
    MetricSpec(
        "transfer_queue_depth",
        Gauge,
        "Frames in the station's buffer not yet verified by the processing host.",
    ),
    MetricSpec(
        "transfer_bytes_sent",
        Counter,
        "Bytes of frames the processing host has verified.",
    ),
    MetricSpec(
        "transfer_failures",
        Counter,
        "Failed transfer attempts (a batch that did not arrive or did not verify).",
    ),
    MetricSpec(
        "transfer_last_success_timestamp_seconds",
        Gauge,
        "Unix time of the last batch the processing host verified.",
    ),
    MetricSpec(
        "render_frames_per_second",
        Gauge,
        "Output frames per second of wall time of the most recently finished render job.",
    ),
    MetricSpec(
        "job_duration_seconds",
        Histogram,
        "Wall time of finished processing jobs, by kind and final state.",
        labels=("kind", "state"),
        buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    ),
]

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


class ServiceMetrics:
    """The metrics one service exposes, in a registry of its own (not the global one).

    A private registry keeps two services (or two apps in one test process) from clashing
    over the same names.
    """

    def __init__(self, names: Iterable[str]):
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, MetricWrapperBase] = {}
        for name in names:
            spec = METRICS.get(name)
            if spec is None:
                raise KeyError(f"unknown metric {name!r}; defined: {sorted(METRICS)}")
            if spec.kind is Histogram and spec.buckets:
                self._metrics[name] = Histogram(
                    spec.name, spec.help, spec.labels, registry=self.registry, buckets=spec.buckets
                )
            else:
                self._metrics[name] = spec.kind(
                    spec.name, spec.help, spec.labels, registry=self.registry
                )

    def __getitem__(self, name: str) -> MetricWrapperBase:
        return self._metrics[name]

    def counter(self, name: str) -> Counter:
        """The metric ``name``, which must be a counter (TypeError otherwise)."""
        return self.typed(name, Counter)

    def gauge(self, name: str) -> Gauge:
        """The metric ``name``, which must be a gauge (TypeError otherwise)."""
        return self.typed(name, Gauge)

    def histogram(self, name: str) -> Histogram:
        """The metric ``name``, which must be a histogram (TypeError otherwise)."""
        return self.typed(name, Histogram)

    def typed(self, name: str, kind: type[_Metric]) -> _Metric:
        """The metric ``name`` as the ``kind`` it is (`Counter`, `Gauge`, `Histogram`), for
        type-checked callers; a TypeError when it is another kind."""
        metric = self._metrics[name]
        if not isinstance(metric, kind):
            raise TypeError(f"metric {name!r} is a {type(metric).__name__}, not a {kind.__name__}")
        return metric

    def __contains__(self, name: str) -> bool:
        return name in self._metrics

    @property
    def names(self) -> list[str]:
        return list(self._metrics)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)


class UptimeTracker:
    """Keeps ``system_uptime_pct``: running time over time since the service's first start.

    A small JSON file in the service's data folder holds the first start, the seconds counted
    as up and the last heartbeat. A heartbeat adds the time since the previous one, unless the
    gap is longer than ``max_gap_s`` (the process was down, or the machine slept): the down time
    between a crash and the next start is then not counted as up.
    """

    def __init__(self, path: str | Path, *, max_gap_s: float = 60.0, clock=time.time):
        self.path = Path(path)
        self.max_gap_s = max_gap_s
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        state = self._load()
        self.first_start = state.get("first_start", now)
        self.up_s = float(state.get("up_s", 0.0))
        self._last = now  # the time between the last heartbeat of a previous run and now is down
        self._save(now)

    def _load(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save(self, now: float) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps({"first_start": self.first_start, "up_s": self.up_s, "last_heartbeat": now})
        )
        os.replace(tmp, self.path)

    def heartbeat(self) -> float:
        """Count the time since the last heartbeat as up, persist, and return the percentage."""
        with self._lock:
            now = self._clock()
            gap = now - self._last
            if 0 < gap <= self.max_gap_s:
                self.up_s += gap
            self._last = now
            self._save(now)
            return self.percent(now)

    def percent(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        span = now - self.first_start
        if span <= 0:
            return 100.0
        # The running stretch since the last heartbeat counts as up too.
        up = self.up_s + min(max(now - self._last, 0.0), self.max_gap_s)
        return max(0.0, min(100.0, 100.0 * up / span))


#: Scheduled spans ``[(start, end), ...]`` (Unix times) within a stretch the process was down.
ScheduledSpans = Callable[[float, float], list[tuple[float, float]]]


class ScheduledUptime:
    """The capture station's ``system_uptime_pct``: of the scheduled capture time in the last
    ``window_s``, the share in which the station captured.

    *Scheduled* capture time is time inside a session window of the plan (unattended) or inside
    a running session; the station *captured* through it while the camera answered and frames
    were stored on schedule. The runtime judges both at each :meth:`heartbeat` (every few
    seconds), which adds the time since the previous heartbeat to that hour's tally: as
    scheduled when scheduled, and as captured when it captured too. A longer gap than
    ``max_gap_s`` (the service was down, the machine off or hung) counts as not captured for
    its scheduled part, which ``scheduled_spans(start, end)`` gives (the plan's windows).
    No scheduled time at all reads 100 %.

    Hourly tallies for the last ``keep_s`` live in a small JSON file beside the buffer
    (``{"hours": {"<unix hour>": [scheduled_s, captured_s]}, "last_heartbeat": t}``), written
    at most every ``save_every_s`` (flash wear) and at :meth:`save`. Times are Unix seconds on
    ``clock`` (the real clock).
    """

    def __init__(
        self,
        path: str | Path,
        scheduled_spans: ScheduledSpans,
        *,
        window_s: float = 7 * 86400,
        keep_s: float = 31 * 86400,
        max_gap_s: float = 60.0,
        save_every_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.scheduled_spans = scheduled_spans
        self.window_s = window_s
        self.keep_s = keep_s
        self.max_gap_s = max_gap_s
        self.save_every_s = save_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self.hours: dict[int, list[float]] = {}
        last = None
        try:
            state = json.loads(self.path.read_text())
            self.hours = {int(h): [float(v[0]), float(v[1])] for h, v in state["hours"].items()}
            last = float(state["last_heartbeat"])
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass  # no file, or another format: start afresh
        now = clock()
        if last is not None and now - last > 0:
            self._add_gap(last, now)  # down from the last heartbeat of the previous run
        self._last = now
        self._saved = -math.inf
        self.save()

    def _tally(self, at: float, scheduled_s: float, captured_s: float) -> None:
        tally = self.hours.setdefault(int(at // 3600), [0.0, 0.0])
        tally[0] += scheduled_s
        tally[1] += captured_s

    def _add_gap(self, start: float, end: float) -> None:
        """The scheduled part of ``[start, end]`` as scheduled and not captured, by hour."""
        start = max(start, end - self.keep_s)
        for a, b in self.scheduled_spans(start, end):
            a, b = max(a, start), min(b, end)
            while a < b:
                cut = min(b, (a // 3600 + 1) * 3600)
                self._tally(a, cut - a, 0.0)
                a = cut

    def heartbeat(self, scheduled: bool, captured: bool) -> float:
        """Count the time since the last heartbeat by the state now; returns the percentage."""
        with self._lock:
            now = self._clock()
            gap = now - self._last
            if gap > self.max_gap_s:
                self._add_gap(self._last, now)
            elif gap > 0 and scheduled:
                self._tally(now, gap, gap if captured else 0.0)
            self._last = now  # a clock stepped back counts from the new time
            if now - self._saved >= self.save_every_s:
                self._save(now)
        return self.percent()

    def totals(self, window_s: float | None = None) -> tuple[float, float]:
        """(scheduled, captured) seconds in the last ``window_s`` (default: ``window_s``)."""
        since = int((self._clock() - (window_s or self.window_s)) // 3600)
        with self._lock:
            tallies = [v for h, v in self.hours.items() if h >= since]
        return sum(v[0] for v in tallies), sum(v[1] for v in tallies)

    def percent(self) -> float:
        scheduled, captured = self.totals()
        return 100.0 if scheduled <= 0 else max(0.0, min(100.0, 100.0 * captured / scheduled))

    def save(self) -> None:
        with self._lock:
            self._save(self._clock())

    def _save(self, now: float) -> None:
        oldest = int((now - self.keep_s) // 3600)
        self.hours = {h: v for h, v in self.hours.items() if h >= oldest}
        state = {
            "hours": {str(h): [round(v[0], 3), round(v[1], 3)] for h, v in self.hours.items()},
            "last_heartbeat": self._last,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)
        self._saved = now
