"""The alert notifiers: a JSON webhook and MQTT with Home Assistant discovery.

Notifiers never block the caller: the webhook posts from its own thread with a bounded queue and
a bounded number of retries; the MQTT client publishes from paho's network thread and reconnects
by itself. Both send :meth:`AlertEvent.to_json <skylapse.alerts.manager.AlertEvent.to_json>`
(the payload in `skylapse.alerts`).

MQTT topics (``<p>`` = topic prefix, ``<n>`` = node id): ``<p>/<n>/status`` (``online`` /
``offline``, retained, the last will), ``<p>/<n>/alert/<alert>/state`` (``ON``/``OFF``,
retained), ``<p>/<n>/alert/<alert>/attributes`` (the JSON payload, retained), and for each
condition the retained Home Assistant discovery document at
``<discovery>/binary_sensor/<n>_<alert>/config`` (device class ``problem``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import httpx

from skylapse.alerts.manager import AlertCondition, AlertEvent, Notifier
from skylapse.config import reveal
from skylapse.log import get_logger

log = get_logger(__name__)


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
