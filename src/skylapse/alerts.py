"""Alerts: named conditions over a service's state, sent once per episode to the log, ``/health``
and notifiers (a JSON webhook, MQTT with Home Assistant discovery).

An :class:`AlertCondition` is a check that says whether something is wrong now. The
:class:`AlertManager` evaluates every condition periodically; an *episode* opens when a condition
has held for ``raise_after_s`` and closes when it has stayed clear for ``clear_after_s``
(debounce in time). Checks also receive whether their episode is open, so a numeric condition can
clear at a lower threshold than it opens at (hysteresis): a latency hovering around its target
then makes one episode, not one alert per frame. Each episode sends exactly two notifications:
``firing`` when it opens and ``resolved`` when it closes.

Notifiers never block the caller: the webhook posts from its own thread with a bounded queue and
a bounded number of retries; the MQTT client publishes from paho's network thread and reconnects
by itself. A notifier that fails is logged, never raised into the service.

Notification payload (webhook body; MQTT attributes)::

    {"alert": "camera_not_answering", "state": "firing" | "resolved",
     "severity": "critical" | "warning", "service": "capture", "station": "peak-1",
     "component": "camera", "title": "Camera not answering", "detail": "...",
     "episode": 3, "opened_at": "2024-03-20T18:02:11.123456+00:00",
     "resolved_at": null | "...", "duration_s": null | 93.2}

MQTT topics (``<p>`` = topic prefix, ``<n>`` = node id): ``<p>/<n>/status`` (``online`` /
``offline``, retained, the last will), ``<p>/<n>/alert/<alert>/state`` (``ON``/``OFF``,
retained), ``<p>/<n>/alert/<alert>/attributes`` (the JSON above, retained), and for each
condition the retained Home Assistant discovery document at
``<discovery>/binary_sensor/<n>_<alert>/config`` (device class ``problem``).

API
---
``AlertCondition(name, title, severity, component, check, raise_after_s, clear_after_s)``
``AlertManager(service, station, conditions, notifiers).evaluate() -> list[AlertEvent]``,
``.active()``, ``.health() -> Check``, ``await .run(every_s)``, ``.close()``.
``WebhookNotifier(url)``, ``MqttNotifier(host, port, topic_prefix, ...)``.
``notifiers_from_config(config, station) -> list``;
``processing_conditions(catalog, alerts_section, store_at_risk=None) -> list[AlertCondition]``;
``storage_condition(usage_pct, alerts, what) -> AlertCondition``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

from skylapse.config import reveal
from skylapse.log import get_logger

if TYPE_CHECKING:
    from skylapse.catalog import ProcessingCatalog

log = get_logger(__name__)

Severity = Literal["critical", "warning"]

#: A check gets whether its episode is open (for hysteresis) and says (active now, detail).
CheckFn = Callable[[bool], tuple[bool, str]]


@dataclass(frozen=True)
class AlertCondition:
    """One named thing that can go wrong (see the module docstring)."""

    name: str
    title: str
    severity: Severity
    component: str
    check: CheckFn
    raise_after_s: float = 0.0
    clear_after_s: float = 60.0


@dataclass
class AlertEvent:
    """An episode opening (``firing``) or closing (``resolved``): what notifiers receive."""

    alert: str
    state: Literal["firing", "resolved"]
    severity: Severity
    service: str
    station: str
    component: str
    title: str
    detail: str
    episode: int
    opened_at: datetime
    resolved_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "state": self.state,
            "severity": self.severity,
            "service": self.service,
            "station": self.station,
            "component": self.component,
            "title": self.title,
            "detail": self.detail,
            "episode": self.episode,
            "opened_at": self.opened_at.isoformat(timespec="microseconds"),
            "resolved_at": (
                self.resolved_at.isoformat(timespec="microseconds") if self.resolved_at else None
            ),
            "duration_s": (
                round((self.resolved_at - self.opened_at).total_seconds(), 3)
                if self.resolved_at
                else None
            ),
        }


class Notifier(Protocol):
    def start(self, conditions: Sequence[AlertCondition]) -> None: ...
    def notify(self, event: AlertEvent) -> None: ...
    def close(self) -> None: ...


@dataclass
class _State:
    active: bool = False  # an episode is open
    since: float | None = None  # when the raw condition last changed to its current value
    raw: bool = False
    detail: str = ""
    episode: int = 0
    opened_at: datetime | None = None


@dataclass
class AlertManager:
    """Evaluates conditions, keeps episodes, logs and notifies once per episode."""

    service: str
    station: str
    conditions: Sequence[AlertCondition]
    notifiers: Sequence[Notifier] = ()
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    history: deque = field(default_factory=lambda: deque(maxlen=100))

    def __post_init__(self) -> None:
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError("alert condition names must be unique")
        self._states = {c.name: _State() for c in self.conditions}
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Let the notifiers announce the conditions (Home Assistant discovery)."""
        if not self._started:
            self._started = True
            for notifier in self.notifiers:
                _safely(notifier.start, self.conditions)

    def evaluate(self) -> list[AlertEvent]:
        """Run every check once; returns the episodes that opened or closed now."""
        events = []
        with self._lock:
            now = self.monotonic()
            for cond in self.conditions:
                st = self._states[cond.name]
                try:
                    raw, detail = cond.check(st.active)
                except Exception as exc:  # a broken check must not hide the others
                    log.warning("alert check failed", alert=cond.name, error=repr(exc))
                    continue
                if raw != st.raw or st.since is None:
                    st.raw, st.since = raw, now
                if raw:
                    st.detail = detail
                held = now - st.since
                if raw and not st.active and held >= cond.raise_after_s:
                    st.active, st.episode, st.opened_at = True, st.episode + 1, self.wall()
                    events.append(self._event(cond, st, "firing"))
                elif not raw and st.active and held >= cond.clear_after_s:
                    st.active = False
                    events.append(self._event(cond, st, "resolved", detail))
        for event in events:
            self._announce(event)
        return events

    def _event(
        self,
        cond: AlertCondition,
        st: _State,
        state: Literal["firing", "resolved"],
        detail: str | None = None,
    ) -> AlertEvent:
        assert st.opened_at is not None
        return AlertEvent(
            alert=cond.name,
            state=state,
            severity=cond.severity,
            service=self.service,
            station=self.station,
            component=cond.component,
            title=cond.title,
            detail=detail if detail is not None else st.detail,
            episode=st.episode,
            opened_at=st.opened_at,
            resolved_at=self.wall() if state == "resolved" else None,
        )

    def _announce(self, event: AlertEvent) -> None:
        self.history.append(event)
        fields = {k: v for k, v in event.to_json().items() if k not in ("alert", "state")}
        if event.state == "firing":
            emit = log.error if event.severity == "critical" else log.warning
            emit("alert firing", alert=event.alert, **fields)
        else:
            log.info("alert resolved", alert=event.alert, **fields)
        for notifier in self.notifiers:
            _safely(notifier.notify, event)

    def active(self) -> list[dict[str, Any]]:
        """The open episodes, JSON-ready (for ``/status`` and ``/health``)."""
        out = []
        with self._lock:
            for cond in self.conditions:
                st = self._states[cond.name]
                if st.active and st.opened_at is not None:
                    out.append(
                        {
                            "alert": cond.name,
                            "severity": cond.severity,
                            "component": cond.component,
                            "title": cond.title,
                            "detail": st.detail,
                            "episode": st.episode,
                            "opened_at": st.opened_at.isoformat(timespec="microseconds"),
                        }
                    )
        return out

    def component_alerts(self, component: str) -> list[dict[str, Any]]:
        return [a for a in self.active() if a["component"] == component]

    def health(self):
        """A ``/health`` check: failing with a critical episode open, degraded with a warning."""
        from skylapse.api.common import Check

        active = self.active()
        if not active:
            return Check(
                status="ok", detail=f"no alerts ({len(self.conditions)} conditions watched)"
            )
        status = "failing" if any(a["severity"] == "critical" for a in active) else "degraded"
        return Check(
            status=status, detail="; ".join(f"{a['alert']}: {a['detail']}" for a in active)
        )

    async def run(
        self,
        every_s: float | Callable[[], float],
        on_event: Callable[[AlertEvent], None] | None = None,
    ) -> None:
        """Evaluate every ``every_s`` seconds (a number or a function giving it) until
        cancelled; checks run in a thread, ``on_event`` gets each opening and closing."""
        self.start()
        while True:
            try:
                for event in await asyncio.to_thread(self.evaluate):
                    if on_event is not None:
                        on_event(event)
            except Exception as exc:  # pragma: no cover - evaluate guards each check
                log.error("alert evaluation failed", error=repr(exc))
            await asyncio.sleep(every_s() if callable(every_s) else every_s)

    def close(self) -> None:
        for notifier in self.notifiers:
            _safely(notifier.close)


def _safely(fn: Callable, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.error(
            "alert notifier failed",
            notifier=type(getattr(fn, "__self__", fn)).__name__,
            error=repr(exc),
        )


# -- notifiers ---------------------------------------------------------------------------------


class WebhookNotifier:
    """POSTs each event as JSON to ``url`` from a background thread.

    At most ``queue_size`` events wait (the oldest are dropped beyond that); each is tried up
    to ``attempts`` times with doubling pauses from ``backoff_s``; a 2xx answer counts as
    delivered. ``sent`` and ``failed`` count outcomes.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
        queue_size: int = 100,
        headers: dict[str, str] | None = None,
    ):
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.headers = headers or {}
        self.sent = 0
        self.failed = 0
        self._queue: deque[AlertEvent] = deque(maxlen=queue_size)
        self._wake = threading.Condition()
        self._stop = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, conditions: Sequence[AlertCondition]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
            self._thread.start()

    def notify(self, event: AlertEvent) -> None:
        if self._thread is None:
            self.start(())
        with self._wake:
            self._queue.append(event)
            self._wake.notify()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, headers=self.headers) as client:
            while True:
                with self._wake:
                    while not self._queue and not self._stop:
                        self._wake.wait()
                    if self._stop and not self._queue:
                        return
                    event = self._queue.popleft()
                self._deliver(client, event)

    def _deliver(self, client: httpx.Client, event: AlertEvent) -> None:
        body = event.to_json()
        error = ""
        for attempt in range(self.attempts):
            try:
                r = client.post(self.url, json=body)
                if r.is_success:
                    self.sent += 1
                    return
                error = f"HTTP {r.status_code}"
                if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    break  # the receiver refuses this payload; retrying will not help
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.attempts and self._abort.wait(self.backoff_s * 2**attempt):
                break
        self.failed += 1
        log.warning("alert webhook failed", alert=event.alert, state=event.state, error=error)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (for at most ``timeout_s``), then stop."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._abort.set()
            with self._wake:
                self._queue.clear()
            self._thread.join(self.timeout_s + 1)


class MqttNotifier:
    """Publishes alert state to an MQTT broker, with Home Assistant MQTT discovery.

    Everything is retained, so Home Assistant (or anyone subscribing later) sees the current
    state at once; the last will marks the node ``offline`` if the service dies. paho's network
    thread connects, reconnects and sends; ``notify`` only queues.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        topic_prefix: str = "skylapse",
        *,
        node_id: str = "skylapse",
        discovery_prefix: str = "homeassistant",
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        device_name: str | None = None,
        keepalive_s: int = 30,
    ):
        import paho.mqtt.client as mqtt

        self.host, self.port = host, port
        self.topic_prefix = topic_prefix.strip("/")
        self.discovery_prefix = discovery_prefix.strip("/")
        self.node_id = node_id
        self.device_name = device_name or f"Skylapse {node_id}"
        self.keepalive_s = keepalive_s
        self._conditions: list[AlertCondition] = []
        self._state: dict[str, tuple[str, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"skylapse-{node_id}"
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, 60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._started = False

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/{self.node_id}/status"

    def state_topic(self, alert: str) -> str:
        return f"{self.topic_prefix}/{self.node_id}/alert/{alert}/state"

    def attributes_topic(self, alert: str) -> str:
        return f"{self.topic_prefix}/{self.node_id}/alert/{alert}/attributes"

    def discovery_topic(self, alert: str) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{self.node_id}_{alert}/config"

    def discovery_config(self, cond: AlertCondition) -> dict[str, Any]:
        """The Home Assistant discovery document of one condition's binary sensor."""
        return {
            "name": cond.title,
            "unique_id": f"{self.node_id}_{cond.name}",
            "object_id": f"{self.node_id}_{cond.name}",
            "device_class": "problem",
            "state_topic": self.state_topic(cond.name),
            "payload_on": "ON",
            "payload_off": "OFF",
            "json_attributes_topic": self.attributes_topic(cond.name),
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "entity_category": "diagnostic",
            "device": {
                "identifiers": [f"skylapse_{self.node_id}"],
                "name": self.device_name,
                "manufacturer": "Skylapse",
                "model": "timelapse station",
            },
        }

    def start(self, conditions: Sequence[AlertCondition]) -> None:
        with self._lock:
            self._conditions = list(conditions)
            for cond in conditions:
                self._state.setdefault(cond.name, ("OFF", None))
        if not self._started:
            self._started = True
            self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
            self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connection refused", host=self.host, reason=str(reason_code))
            return
        # (re)announce everything: the broker may have lost retained messages
        client.publish(self.status_topic, "online", qos=1, retain=True)
        with self._lock:
            for cond in self._conditions:
                client.publish(
                    self.discovery_topic(cond.name),
                    json.dumps(self.discovery_config(cond)),
                    qos=1,
                    retain=True,
                )
            for alert, (state, attributes) in self._state.items():
                self._publish_state(alert, state, attributes)
        self.connected.set()
        log.info("mqtt connected", host=self.host, port=self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.connected.clear()

    def _publish_state(self, alert: str, state: str, attributes: dict[str, Any] | None) -> None:
        self.client.publish(self.state_topic(alert), state, qos=1, retain=True)
        if attributes is not None:
            self.client.publish(
                self.attributes_topic(alert), json.dumps(attributes), qos=1, retain=True
            )

    def notify(self, event: AlertEvent) -> None:
        state = "ON" if event.state == "firing" else "OFF"
        with self._lock:
            self._state[event.alert] = (state, event.to_json())
            if self.connected.is_set():  # else _on_connect sends it
                self._publish_state(event.alert, state, event.to_json())

    def close(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):
                if self.connected.is_set():
                    self.client.publish(
                        self.status_topic, "offline", qos=1, retain=True
                    ).wait_for_publish(2)
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False


def processing_conditions(
    catalog: ProcessingCatalog,
    alerts: Any,
    failed_window: timedelta = timedelta(hours=24),
    *,
    store_at_risk: Callable[[], str | None] | None = None,
) -> list[AlertCondition]:
    """The processing service's conditions over its catalog (`ProcessingCatalog`), with the
    thresholds of an ``alerts`` config section (read at each evaluation); with
    ``store_at_risk`` (`StoreRetention.at_risk`: why, or None) also
    ``unrendered_frames_at_risk``: the store is past its watermark and only frames not yet
    rendered and archived are left, which retention never deletes."""

    def job_failing(active: bool) -> tuple[bool, str]:
        limit = alerts.job_failures
        since = datetime.now(UTC) - failed_window
        bad = []
        for job in catalog.jobs(limit=200):
            if job.attempts < limit:
                continue
            retrying = job.state in ("queued", "running") and job.error
            failed = (
                job.state == "failed" and job.finished_at is not None and job.finished_at >= since
            )
            if retrying or failed:
                bad.append(job)
        detail = "; ".join(
            f"{j.kind} job {j.id} {j.state} after {j.attempts} attempts: {j.error}" for j in bad[:3]
        )
        return bool(bad), detail

    def queue_depth(active: bool) -> tuple[bool, str]:
        depth = catalog.queue_depth()
        limit = alerts.processing_queue_max
        return depth > (0.8 * limit if active else limit), (
            f"{depth} jobs queued or running (target at most {limit})"
        )

    clear = alerts.clear_after_s
    conditions = [
        AlertCondition(
            "job_failing_repeatedly",
            "A processing job fails repeatedly",
            "critical",
            "workers",
            job_failing,
            clear_after_s=clear,
        ),
        AlertCondition(
            "processing_queue_depth",
            "Processing queue too deep",
            "warning",
            "queue",
            queue_depth,
            clear_after_s=clear,
        ),
    ]
    if store_at_risk is not None:
        at_risk = store_at_risk

        def store(active: bool) -> tuple[bool, str]:
            detail = at_risk()
            return detail is not None, detail or ""

        conditions.append(
            AlertCondition(
                "unrendered_frames_at_risk",
                "Processing store full of frames not yet rendered",
                "critical",
                "store",
                store,
                clear_after_s=clear,
            )
        )
    return conditions


def storage_condition(
    usage_pct: Callable[[], float],
    alerts: Callable[[], Any],
    what: str = "the data folder",
    clear_after_s: float = 60.0,
) -> AlertCondition:
    """``storage_utilization``: the use of the file system holding ``what`` above the
    ``storage_max_pct`` of ``alerts()`` (the current ``alerts`` section, read at each
    evaluation), clearing 5 points under it. Both services raise it."""

    def check(active: bool) -> tuple[bool, str]:
        pct = usage_pct()
        limit = alerts().storage_max_pct
        return pct > (limit - 5 if active else limit), (
            f"{pct:.1f} % of the file system holding {what} used (target at most {limit:g} %)"
        )

    return AlertCondition(
        "storage_utilization",
        "Storage use above target",
        "warning",
        "disk",
        check,
        clear_after_s=clear_after_s,
    )


def notifiers_from_config(config: Any, station: str) -> list[Notifier]:
    """The notifiers a :class:`~skylapse.config.SkylapseConfig`'s ``alerts`` section asks for."""
    section = config.alerts
    out: list[Notifier] = []
    webhook_url = reveal(section.webhook_url)
    if webhook_url:
        out.append(WebhookNotifier(webhook_url))
    mq = section.mqtt
    if mq.host:
        out.append(
            MqttNotifier(
                mq.host,
                mq.port,
                mq.topic_prefix,
                node_id=mq.node_id or station,
                discovery_prefix=mq.discovery_prefix,
                username=mq.username,
                password=reveal(mq.password),
            )
        )
    return out


__all__ = [
    "AlertCondition",
    "AlertEvent",
    "AlertManager",
    "MqttNotifier",
    "WebhookNotifier",
    "notifiers_from_config",
    "processing_conditions",
    "storage_condition",
]
