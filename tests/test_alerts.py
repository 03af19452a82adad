"""Alerts: one notification per episode (debounce and hysteresis), the JSON webhook against a
loopback HTTP server, and MQTT with Home Assistant discovery against a real mosquitto."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest

from servers import free_port, require_program, wait_for_port
from skylapse.alerts import AlertCondition, AlertManager, MqttNotifier, WebhookNotifier
from tests_support import wait_for


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    def __init__(self) -> None:
        self.events = []

    def start(self, conditions) -> None:
        self.conditions = list(conditions)

    def notify(self, event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


wait_for = partial(wait_for, timeout=10.0)


def latency_condition(reading: dict) -> AlertCondition:
    # opens above 100 ms, clears only below 80 ms
    def check(active: bool) -> tuple[bool, str]:
        limit = 80.0 if active else 100.0
        return reading["ms"] > limit, f"p99 {reading['ms']:.0f} ms"

    return AlertCondition(
        "capture_latency",
        "Capture latency high",
        "warning",
        "scheduler",
        check,
        raise_after_s=5,
        clear_after_s=30,
    )


def test_one_notification_per_episode_with_debounce_and_hysteresis():
    reading = {"ms": 10.0}
    clock, recorder = FakeTime(), Recorder()
    manager = AlertManager(
        "capture", "peak-1", [latency_condition(reading)], [recorder], monotonic=clock
    )
    manager.start()
    assert [c.name for c in recorder.conditions] == ["capture_latency"]

    def step(ms: float, seconds: float = 1.0, times: int = 1) -> None:
        for _ in range(times):
            reading["ms"] = ms
            manager.evaluate()
            clock.t += seconds

    step(150, times=3)  # a 3 s spike: shorter than raise_after_s
    step(10, times=5)
    assert recorder.events == [] and manager.active() == []
    step(150, times=100)  # a long episode, one frame per second
    assert [e.state for e in recorder.events] == ["firing"]
    assert manager.active()[0]["detail"] == "p99 150 ms"
    assert manager.health().status == "degraded"
    # hovering between the clear and open thresholds keeps the episode open without re-sending
    for ms in (95, 85, 99, 120, 90) * 20:
        step(ms)
    assert [e.state for e in recorder.events] == ["firing"]
    # clear for less than clear_after_s, then bad again: still the same episode
    step(20, times=10)
    step(150, times=10)
    assert len(recorder.events) == 1
    step(20, times=40)
    assert [e.state for e in recorder.events] == ["firing", "resolved"]
    resolved = recorder.events[1].to_json()
    assert resolved["episode"] == 1 and resolved["duration_s"] >= 0
    assert manager.active() == [] and manager.health().status == "ok"
    step(150, times=10)
    assert [(e.state, e.episode) for e in recorder.events][-1] == ("firing", 2)


def test_a_broken_check_does_not_hide_the_others_and_critical_means_failing():
    def broken(active):
        raise RuntimeError("boom")

    recorder = Recorder()
    manager = AlertManager(
        "capture",
        "s",
        [
            AlertCondition("broken", "Broken", "warning", "x", broken),
            AlertCondition(
                "disk", "Disk full", "critical", "disk", lambda a: (True, "99 %"), clear_after_s=0
            ),
        ],
        [recorder],
    )
    events = manager.evaluate()
    assert [e.alert for e in events] == ["disk"] and recorder.events == events
    assert manager.health().status == "failing"
    assert manager.component_alerts("disk")[0]["detail"] == "99 %"
    with pytest.raises(ValueError):
        AlertManager("c", "s", [manager.conditions[1]] * 2)


# -- webhook ---------------------------------------------------------------------------------


@contextlib.contextmanager
def webhook_server(fail_first: int = 0):
    received: list[dict] = []
    calls = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            calls["n"] += 1
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if calls["n"] <= fail_first:
                self.send_response(503)
                self.end_headers()
                return
            received.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received, calls
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_posts_each_episode_once_and_retries_a_failing_receiver():
    with webhook_server(fail_first=1) as (url, received, calls):
        hook = WebhookNotifier(url, backoff_s=0.05)
        state = {"bad": False}
        manager = AlertManager(
            "capture",
            "peak-1",
            [
                AlertCondition(
                    "camera_not_answering",
                    "Camera not answering",
                    "critical",
                    "camera",
                    lambda a: (state["bad"], "no frame for 300 s"),
                    clear_after_s=0,
                )
            ],
            [hook],
        )
        manager.start()
        for bad in [False] * 3 + [True] * 50 + [False] * 20:
            state["bad"] = bad
            manager.evaluate()
        hook.close()
        assert calls["n"] == 3  # the first POST got a 503 and was retried
        assert [r["json"]["state"] for r in received] == ["firing", "resolved"]
        body = received[0]["json"]
        assert received[0]["type"] == "application/json"
        assert body["alert"] == "camera_not_answering" and body["severity"] == "critical"
        assert body["station"] == "peak-1" and body["detail"] == "no frame for 300 s"
        assert received[1]["json"]["resolved_at"] is not None
        assert hook.sent == 2 and hook.failed == 0


def test_webhook_to_nothing_never_blocks_and_gives_up_after_bounded_attempts():
    hook = WebhookNotifier(
        f"http://127.0.0.1:{free_port()}/", attempts=3, backoff_s=0.02, timeout_s=1
    )
    manager = AlertManager(
        "processing",
        "s",
        [AlertCondition("queue_depth", "Queue deep", "warning", "queue", lambda a: (True, "99"))],
        [hook],
    )
    t0 = time.perf_counter()
    manager.evaluate()
    assert time.perf_counter() - t0 < 0.05  # the POST happens elsewhere
    assert wait_for(lambda: hook.failed == 1)
    hook.close()
    assert hook.sent == 0


# -- MQTT against a real broker --------------------------------------------------------------


@contextlib.contextmanager
def running_mosquitto(tmp_path):
    program = require_program("/usr/sbin/mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
    )
    proc = subprocess.Popen(
        [program, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class Subscriber:
    """A plain paho client that records what it receives on some topics."""

    def __init__(self, port: int, topics: list[str]):
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.connect("127.0.0.1", port)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def last(self, topic: str):
        found = [m for m in self.messages if m.topic == topic]
        return found[-1] if found else None

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.system("/usr/sbin/mosquitto")
def test_mqtt_publishes_retained_home_assistant_discovery_and_state(tmp_path):
    with running_mosquitto(tmp_path) as port:
        state = {"bad": False}
        notifier = MqttNotifier("127.0.0.1", port, "skylapse", node_id="peak1")
        manager = AlertManager(
            "capture",
            "peak1",
            [
                AlertCondition(
                    "disk_emergency",
                    "Disk past the emergency watermark",
                    "critical",
                    "disk",
                    lambda a: (state["bad"], "93.0 % used"),
                    clear_after_s=0,
                )
            ],
            [notifier],
        )
        manager.start()
        assert notifier.connected.wait(10)
        state["bad"] = True
        manager.evaluate()
        manager.evaluate()  # still the same episode
        state_topic = "skylapse/peak1/alert/disk_emergency/state"
        # Let the broker store what was published before a later subscriber arrives: the
        # notifier's messages share one connection, so once a QoS 1 marker sent after them is
        # acknowledged, they are at the broker too (on a loaded machine this takes a while).
        assert wait_for(lambda: notifier._state.get("disk_emergency", ("OFF",))[0] == "ON")
        notifier.client.publish("skylapse/peak1/test-marker", b"1", qos=1).wait_for_publish(10)
        # a subscriber that arrives later gets everything as retained messages
        sub = Subscriber(port, ["homeassistant/#", "skylapse/#"])
        try:
            config_topic = "homeassistant/binary_sensor/peak1_disk_emergency/config"
            assert wait_for(
                lambda: (
                    sub.last(config_topic)
                    and sub.last(state_topic)
                    and sub.last("skylapse/peak1/status")
                )
            )
            discovery = sub.last(config_topic)
            assert discovery.retain
            doc = json.loads(discovery.payload)
            assert doc["device_class"] == "problem" and doc["state_topic"] == state_topic
            assert doc["unique_id"] == "peak1_disk_emergency"
            assert doc["availability_topic"] == "skylapse/peak1/status"
            assert doc["device"]["identifiers"] == ["skylapse_peak1"]
            assert sub.last(state_topic).payload == b"ON" and sub.last(state_topic).retain
            attrs = json.loads(sub.last("skylapse/peak1/alert/disk_emergency/attributes").payload)
            assert attrs["state"] == "firing" and attrs["detail"] == "93.0 % used"
            assert sub.last("skylapse/peak1/status").payload == b"online"
            ons = [m for m in sub.messages if m.topic == state_topic]
            assert len(ons) == 1  # one retained state, not one per evaluation
            # the episode closes: OFF, live this time
            state["bad"] = False
            manager.evaluate()
            assert wait_for(lambda: sub.last(state_topic).payload == b"OFF")
            assert not sub.last(state_topic).retain  # delivered live, not from the store
            manager.close()
            assert wait_for(lambda: sub.last("skylapse/peak1/status").payload == b"offline")
        finally:
            sub.close()


# -- the processing service's conditions ---------------------------------------------------


class FakeJobs:
    def __init__(self):
        self.rows, self.depth = [], 0

    def jobs(self, state=None, limit=100):
        return self.rows[:limit]

    def queue_depth(self):
        return self.depth


def test_processing_conditions_job_failing_repeatedly_and_queue_depth():
    from datetime import UTC, datetime, timedelta

    from skylapse.alerts import processing_conditions
    from skylapse.catalog import JobRow
    from skylapse.config import AlertsConfig

    catalog = FakeJobs()
    recorder = Recorder()
    section = AlertsConfig(job_failures=3, processing_queue_max=10, clear_after_s=0)
    manager = AlertManager("processing", "p", processing_conditions(catalog, section), [recorder])
    now = datetime.now(UTC)

    def job(state, attempts, error="encoder crashed", finished=now):
        return JobRow(
            id=f"j{len(catalog.rows)}",
            kind="render",
            params={},
            state=state,
            error=error,
            attempts=attempts,
            progress=0.0,
            result=None,
            correlation_id=None,
            created_at=finished,
            started_at=None,
            finished_at=finished,
        )

    catalog.rows = [
        job("failed", 1),
        job("done", 5, None),
        job("failed", 4, finished=now - timedelta(days=3)),
    ]  # old: forgotten
    catalog.depth = 10
    assert manager.evaluate() == []
    catalog.rows.append(job("queued", 3))  # retried a third time, still failing
    catalog.depth = 11
    events = manager.evaluate()
    assert sorted(e.alert for e in events) == ["job_failing_repeatedly", "processing_queue_depth"]
    failing = next(e for e in events if e.alert == "job_failing_repeatedly")
    assert "after 3 attempts: encoder crashed" in failing.detail
    for _ in range(5):
        assert manager.evaluate() == []  # once per episode
    catalog.depth = 9  # above 80 % of the target: the queue episode stays open (hysteresis)
    assert manager.evaluate() == []
    catalog.depth, catalog.rows = 2, catalog.rows[:3]
    assert sorted((e.alert, e.state) for e in manager.evaluate()) == [
        ("job_failing_repeatedly", "resolved"),
        ("processing_queue_depth", "resolved"),
    ]
