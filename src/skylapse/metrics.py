"""Prometheus metrics shared by the capture and processing services.

Every metric is defined once here (name, kind, help text, labels, buckets), so that the two
services expose the same name with the same meaning. Each service builds its own
:class:`ServiceMetrics` with a private registry and registers only the metrics it fills: a
metric that a service cannot measure is absent from its ``/metrics`` rather than a constant.

The architecture's metrics:

* ``capture_latency_ms``        histogram: from a frame's deadline to the start of its exposure.
* ``focus_acquisition_time_s``  histogram: how long autofocus took at a session's start.
* ``processing_queue_depth``    gauge: jobs queued or running.
* ``storage_utilization_pct``   gauge: use of the file system holding the service's data.
* ``image_quality_score``       gauge: the quality score (0..1) of the newest frame.
* ``system_uptime_pct``         gauge: share of the time since first start that the service ran
  (see :class:`UptimeTracker`).

and ``frames_captured_total``, ``frames_transferred_total``, ``frames_failed_total{stage}``,
``render_frames_per_second`` and ``job_duration_seconds{kind,state}``; the processing store's
``store_bytes``, ``store_utilization_pct`` and ``store_frames_deleted_total{reason}``
(`skylapse.processing.retention`).

API
---
``METRICS``                                  the definitions, by name.
``ServiceMetrics(names)``                    a registry holding those metrics; ``m[name]``.
``ServiceMetrics.exposition() -> bytes``     the text format served at ``/metrics``.
``UptimeTracker(path)``                      persistent bookkeeping for ``system_uptime_pct``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
        "Milliseconds from a frame's scheduled time to the start of its exposure.",
        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
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
        "Percent of the time since the service first started that it was running.",
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
