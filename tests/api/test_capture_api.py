"""The capture service's API over a simulated camera at 320x180 on a real (shifted) clock: every
endpoint and its refusals, the WebSocket's status and preview, config changes that take effect,
metrics from the service's events, alerts, the unattended plan recovering from camera errors
and the systemd watchdog."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import os
import socket
import threading
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from skylapse.alerts import AlertManager
from skylapse.api.capture.app import create_capture_app
from skylapse.capture.cameras import CameraConfig, CameraError, ReplayCamera, SimulatedCamera
from skylapse.capture.cameras.factory import MissingCamera
from skylapse.capture.clock import ShiftedClock
from skylapse.capture.storage import DiskUsage
from skylapse.capture.watchdog import Watchdog
from skylapse.catalog import FrameRecord
from skylapse.config import deep_merge, default_config, parse_config
from skylapse.metrics import ScheduledUptime
from tests_support import quiet_station_signals, wait_for

TOKEN = "capture-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = CameraConfig(resolution=(320, 180))
NOON = dt.datetime(2024, 3, 20, 12, 0, tzinfo=dt.UTC)


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, conditions):
        pass

    def notify(self, event):
        self.events.append(event)

    def close(self):
        pass


wait_for = partial(wait_for, timeout=15.0)


def make_app(tmp: Path, config=None, camera=None, **kw):
    clock = kw.pop("clock", None) or ShiftedClock(NOON)
    config = config or default_config()
    camera = camera or SimulatedCamera(clock=clock, seed=4)
    kw.setdefault("unattended", False)
    kw.setdefault("notifiers", [])
    kw.setdefault("signals", quiet_station_signals(tmp / "signals"))
    kw.setdefault("tick_s", 0.2)
    return create_capture_app(
        config, TOKEN, camera=camera, clock=clock, buffer=tmp, camera_config=SMALL, **kw
    )


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def config_with(**sections):
    doc = deep_merge(default_config().model_dump(mode="json"), sections)
    return parse_config(doc)


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("station")
    app = make_app(tmp / "buffer")
    with TestClient(app) as client:
        wait_for(lambda: app.state.runtime.camera_open, what="camera open")
        yield client, app, tmp


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/status"),
        ("GET", "/schedule"),
        ("GET", "/config"),
        ("PUT", "/config"),
        ("POST", "/capture"),
        ("GET", "/sessions"),
        ("POST", "/sessions"),
        ("DELETE", "/sessions/x"),
        ("GET", "/frames"),
        ("GET", "/frames/1/image"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ],
)
def test_every_endpoint_but_health_needs_the_token(station, method, path):
    client, _, _ = station
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        r = client.request(method, path, headers=headers, json={} if method != "GET" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/health").status_code == 200


def test_websocket_with_a_wrong_token_is_closed_4401(station):
    client, _, _ = station
    with client.websocket_connect("/ws?token=nope") as ws, pytest.raises(WebSocketDisconnect) as e:
        ws.receive_json()
    assert e.value.code == 4401


# -- frames ------------------------------------------------------------------------------------


def test_manual_capture_frames_paging_and_images(station):
    client, app, _ = station
    r = client.post("/capture", headers=AUTH, json={})
    assert r.status_code == 200, r.text
    (single,) = r.json()["frames"]
    assert single["session_id"].endswith("-manual") and single["extra"]["manual"] is True
    r = client.post("/capture", headers=AUTH, json={"bracket": True})
    bracket = r.json()["frames"]
    assert [f["bracket"]["index"] for f in bracket] == [0, 1, 2]
    offsets = [f["bracket"]["ev_offset"] for f in bracket]
    assert offsets == sorted(offsets) and offsets[0] < 0 < offsets[-1]
    assert client.post("/capture", headers=AUTH, json={"bracket": "yes"}).status_code == 422
    assert client.post("/capture", headers=AUTH, json={"burst": 3}).status_code == 422

    page = client.get("/frames", headers=AUTH, params={"limit": 2}).json()
    assert len(page["frames"]) == 2 and page["next_offset"] == 2
    rest = client.get("/frames", headers=AUTH, params={"limit": 2, "offset": 2}).json()
    ids = [f["id"] for f in page["frames"] + rest["frames"]]
    assert len(set(ids)) == len(ids) >= 4
    # time filter: only frames at or after the bracket's time
    since = bracket[0]["captured_at"]
    after = client.get("/frames", headers=AUTH, params={"since": since, "limit": 1000}).json()
    assert all(f["captured_at"] >= since for f in after["frames"])
    assert single["id"] not in [f["id"] for f in after["frames"]]
    until = client.get("/frames", headers=AUTH, params={"until": since}).json()["frames"]
    assert single["id"] in [f["id"] for f in until] and all(f["captured_at"] < since for f in until)
    naive = since[:26]  # no offset: taken as UTC
    assert (
        client.get("/frames", headers=AUTH, params={"since": naive}).json()["frames"]
        == after["frames"][:100]
    )
    for bad in ({"limit": 0}, {"limit": 5000}, {"offset": -1}, {"since": "yesterday"}):
        r = client.get("/frames", headers=AUTH, params=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == next(iter(bad))

    url = single["image_url"]
    assert url == f"/frames/{single['id']}/image"
    full = client.get(url, headers=AUTH, params={"size": "full"})
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert decode(full.content).shape == (180, 320, 3)
    assert full.content == (app.state.runtime.service.buffer / single["path"]).read_bytes()
    for size, width in (("100", 100), ("thumb", 320), ("preview", 320), ("40", 40)):
        r = client.get(url, headers=AUTH, params={"size": size})
        assert r.status_code == 200, r.text
        image = decode(r.content)
        assert image.shape[1] == width and abs(image.shape[0] - width * 180 / 320) <= 1
    # the reduced image is the frame, not noise: close to the full one downscaled
    small = decode(client.get(url, headers=AUTH, params={"size": "80"}).content).astype(float)
    ref = cv2.resize(decode(full.content), (80, 45), interpolation=cv2.INTER_AREA)
    assert np.abs(small - ref).mean() < 6
    for size in ("huge", "0", "../../etc/passwd", "99999"):
        assert client.get(url, headers=AUTH, params={"size": size}).status_code == 422
    assert client.get("/frames/999999/image", headers=AUTH).status_code == 404
    assert client.get("/frames/0/image", headers=AUTH).status_code == 422
    assert client.get(f"/frames/{single['id']}", headers=AUTH).json()["path"] == single["path"]


def test_images_outside_the_buffer_are_never_served(station):
    client, app, tmp = station
    service = app.state.runtime.service
    secret = tmp / "secret.jpg"
    secret.write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    link = service.buffer / "2024-03-20" / "link.jpg"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    ids = []
    for path in ("../secret.jpg", str(secret), "2024-03-20/link.jpg", "2024-03-20/none.jpg"):
        ids.append(
            service.catalog.add_frame(
                FrameRecord(
                    path=path,
                    captured_at=NOON - dt.timedelta(days=1),
                    sha256="0" * 64,
                    size_bytes=1,
                )
            )
        )
    for frame_id in ids:
        for size in ("full", "thumb"):
            r = client.get(f"/frames/{frame_id}/image", headers=AUTH, params={"size": size})
            assert r.status_code == 404, (frame_id, r.status_code)


# -- sessions, WebSocket, config ---------------------------------------------------------------


def test_sessions_start_stop_and_refusals(station):
    client, _, _ = station
    for bad, field in (
        ({"interval_s": -1}, "interval_s"),
        ({"session_id": "../x"}, "session_id"),
        ({"max_frames": 0}, "max_frames"),
        ({"colour": "red"}, "colour"),
    ):
        r = client.post("/sessions", headers=AUTH, json=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
    r = client.post("/sessions", headers=AUTH, json={"session_id": "api-test", "interval_s": 0.2})
    assert r.status_code == 201, r.text
    assert r.json()["session_id"] == "api-test" and r.json()["status"]["state"] == "capturing"
    assert client.post("/sessions", headers=AUTH, json={}).status_code == 409
    wait_for(
        lambda: (
            (client.get("/status", headers=AUTH).json()["session"] or {}).get("written", 0) >= 4
        ),
        what="4 frames",
    )
    assert client.delete("/sessions/other", headers=AUTH).status_code == 404
    summary = client.delete("/sessions/api-test", headers=AUTH).json()
    assert summary["session_id"] == "api-test" and summary["shots"] >= 4
    assert summary["ended_at"] is not None and summary["latency_ms_p99"] < 50
    assert client.delete("/sessions/api-test", headers=AUTH).status_code == 404
    assert client.get("/status", headers=AUTH).json()["state"] == "idle"
    sessions = client.get("/sessions", headers=AUTH).json()
    assert "api-test" in [s["id"] for s in sessions]


def test_websocket_sends_status_previews_and_frame_events(station):
    client, _, _ = station
    client.post("/capture", headers=AUTH, json={})
    with client.websocket_connect("/ws", headers=AUTH) as ws:
        first = ws.receive_json()
        assert first["type"] == "status" and first["status"]["camera_ok"] is True
        preview = ws.receive_json()
        assert preview["type"] == "preview" and preview["content_type"] == "image/jpeg"
        image = decode(base64.b64decode(preview["jpeg_base64"]))
        assert image.shape == (preview["height"], preview["width"], 3) == (180, 320, 3)
        assert image.mean() > 20  # a daylight frame, not black
        r = client.post("/sessions", headers=AUTH, json={"interval_s": 0.25, "max_frames": 3})
        sid = r.json()["session_id"]
        seen: dict[str, list] = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            msg = ws.receive_json()
            seen.setdefault(msg["type"], []).append(msg)
            if "session_stopped" in seen and len(seen.get("preview", [])) >= 2:
                break
        ws.send_text(json.dumps({"type": "ping"}))
        while (msg := ws.receive_json())["type"] != "pong":
            pass
    frames = [m for m in seen["frame"] if m["session_id"] == sid]
    assert len(frames) == 3 and frames[0]["record"]["image_url"].startswith("/frames/")
    assert seen["session_started"][0]["session_id"] == sid
    assert seen["session_stopped"][0]["session"]["shots"] == 3
    assert len(seen["status"]) >= 2  # several per second
    stamps = {m["frame_at"] for m in seen["preview"]}
    assert len(stamps) >= 2  # the preview follows new frames


def test_config_get_put_validation_and_effect_on_the_next_frames(station):
    client, app, _ = station
    doc = client.get("/config", headers=AUTH).json()
    assert doc["capture"]["jpeg_quality"] == 92
    before = client.get("/config", headers=AUTH).json()
    # one valid and one invalid change: refused whole, naming the field
    r = client.put(
        "/config", headers=AUTH, json={"capture": {"jpeg_quality": 50, "retention_h": -1}}
    )
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["detail"]] == ["capture.retention_h"]
    bad_phase = {
        "schedule": {
            "phases": [{"name": "all", "from_elevation_deg": 0, "interval_s": 5, "strategy": "day"}]
        }
    }
    r = client.put("/config", headers=AUTH, json=bad_phase)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "schedule"
    assert "-90" in r.json()["detail"][0]["msg"]
    r = client.put("/config", headers=AUTH, json={"transfer": {"host": "example.org"}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "transfer"
    assert "restart" in r.json()["detail"][0]["msg"]
    assert client.put("/config", headers=AUTH, json=[1, 2]).status_code == 422
    assert client.get("/config", headers=AUTH).json() == before  # nothing half-applied

    # follow-the-plan session at 0.4 s, then the day phase goes to 0.15 s
    phases = before["schedule"]["phases"]
    slow = [dict(p, interval_s=0.4) if p["name"] == "day" else p for p in phases]
    fast = [dict(p, interval_s=0.15) if p["name"] == "day" else p for p in phases]
    r = client.put(
        "/config",
        headers=AUTH,
        json={"schedule": {"phases": slow}, "capture": {"jpeg_quality": 60}},
    )
    assert r.status_code == 200, r.text
    assert (
        "schedule.phases" in r.json()["changed"] and "capture.jpeg_quality" in r.json()["changed"]
    )
    assert app.state.runtime.service.writer.quality == 60
    sid = client.post("/sessions", headers=AUTH, json={"session_id": "config-test"}).json()[
        "session_id"
    ]
    service = app.state.runtime.service

    def written():
        return (client.get("/status", headers=AUTH).json()["session"] or {}).get("written", 0)

    wait_for(lambda: written() >= 3, what="3 slow frames")
    assert (
        client.put("/config", headers=AUTH, json={"schedule": {"phases": fast}}).status_code == 200
    )
    wait_for(lambda: written() >= 9, what="fast frames")
    client.delete(f"/sessions/{sid}", headers=AUTH)
    rows = [r for r in service.catalog.frames() if r.session_id == sid]
    times = [r.scheduled_at.timestamp() for r in rows]
    gaps = np.diff(times)
    assert gaps[0] == pytest.approx(0.4, abs=0.02)
    assert gaps[-1] == pytest.approx(0.15, abs=0.02)  # the change reached the running session
    assert (
        client.put(
            "/config",
            headers=AUTH,
            json={"schedule": {"phases": phases}, "capture": {"jpeg_quality": 92}},
        ).status_code
        == 200
    )


def test_redaction_keeps_secrets_and_sending_them_back_keeps_them():
    cfg = config_with(api={"token": "s" * 20}, alerts={"mqtt": {"password": "pw"}})
    doc = cfg.model_dump(mode="json")
    assert doc["api"]["token"] == "***" and doc["alerts"]["mqtt"]["password"] == "***"
    assert doc["weather"]["api_key"] is None
    assert cfg.api.token.get_secret_value() == "s" * 20  # the model itself is untouched


def test_schedule_of_a_day_and_the_phase_now(station):
    client, _, _ = station
    r = client.get("/schedule", headers=AUTH, params={"date": "2024-06-21"})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["date"] == "2024-06-21" and plan["phase"] == "day"  # the clock says noon
    assert plan["sun_elevation_deg"] > 30 and plan["interval_s"] == 30
    rows = plan["phases"]
    assert {r["phase"] for r in rows} >= {"day", "golden_hour", "blue_hour"}
    for a, b in itertools.pairwise(rows):
        assert a["end"] == b["start"]  # contiguous
    assert [w["name"] for w in plan["windows"]] == ["sunrise", "sunset"]
    assert plan["sun"]["sunrise"] < plan["sun"]["sunset"]
    assert plan["total_frames"] == sum(r["frames"] for r in rows) > 0
    assert client.get("/schedule", headers=AUTH).json()["date"] == "2024-03-20"
    assert client.get("/schedule", headers=AUTH, params={"date": "21.6."}).status_code == 422


def test_status_health_and_metrics_after_capturing(station):
    client, _, _ = station
    # a session of its own (latencies, autofocus) and manual frames: the module's other tests may
    # or may not have run first
    r = client.post("/sessions", headers=AUTH, json={"interval_s": 0.2, "max_frames": 4})
    sid = r.json()["session_id"]

    def ended() -> bool:
        rows = client.get("/sessions", headers=AUTH).json()
        return any(row["id"] == sid and row["ended_at"] for row in rows)

    wait_for(ended, what="the session's end")
    assert client.post("/capture", headers=AUTH, json={}).status_code == 200
    status = client.get("/status", headers=AUTH).json()
    for key in (
        "state",
        "now",
        "session",
        "camera",
        "camera_ok",
        "phase",
        "strategy",
        "interval_s",
        "window",
        "writer",
        "storage",
        "frames",
        "transfer",
        "alerts",
        "last_frame_at",
        "sun_elevation_deg",
        "unattended",
    ):
        assert key in status, key
    assert status["phase"] == "day" and status["transfer"] is None
    assert status["frames"]["stored"] >= 5
    health = client.get("/health").json()
    assert set(health["checks"]) == {"camera", "disk", "scheduler", "transfer", "alerts"}
    assert health["checks"]["camera"]["status"] == "ok"
    assert "no transfer host" in health["checks"]["transfer"]["detail"]
    text = client.get("/metrics", headers=AUTH).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["frames_captured_total"] >= status["frames"]["stored"] - 4  # the fakes
    assert values["capture_latency_ms_count"] >= 4  # session frames (manual ones have none)
    assert values["capture_latency_ms_sum"] / values["capture_latency_ms_count"] < 50
    assert values["focus_acquisition_time_s_count"] >= 1
    assert 0 < values["image_quality_score"] <= 1
    assert 0 < values["storage_utilization_pct"] < 100
    assert 0 < values["system_uptime_pct"] <= 100
    for name in (
        "transfer_queue_depth",
        "transfer_bytes_sent",
        "transfer_failures",
        "transfer_last_success_timestamp_seconds",
    ):
        assert f"# HELP {name}" in text


def test_openapi_describes_every_json_body(station):
    """Every JSON answer is a named model whose fields are listed (no free-form objects)."""
    client, _, _ = station
    doc = client.get("/openapi.json", headers=AUTH).json()
    components = doc["components"]["schemas"]

    def described(schema: dict) -> bool:
        if schema.get("type") == "array":
            return described(schema["items"])
        if "$ref" not in schema:
            return False
        model = components[schema["$ref"].rsplit("/", 1)[1]]
        return bool(model.get("properties")) and model.get("additionalProperties") is not True

    json_bodies = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                body = response.get("content", {}).get("application/json")
                if code.startswith("2") and body is not None:
                    json_bodies += 1
                    assert described(body["schema"]), (method, path, body["schema"])
    assert json_bodies >= 10  # status, schedule, config x2, capture, sessions x3, frames x2
    status = components["Status"]["properties"]
    assert {"state", "session", "writer", "storage", "frames", "transfer", "alerts"} <= set(status)


def test_cors_lets_a_configured_dashboard_use_every_method(tmp_path):
    """A cross-origin dashboard may change the configuration and stop sessions, not only read."""
    origin = "https://dash.example"
    app = make_app(tmp_path / "buffer", config=config_with(api={"cors_origins": [origin]}))
    with TestClient(app) as client:
        for method, path in (
            ("GET", "/status"),
            ("POST", "/sessions"),
            ("PUT", "/config"),
            ("DELETE", "/sessions/s1"),
        ):
            r = client.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            assert r.status_code == 200, (method, path, r.text)
            assert method in r.headers["access-control-allow-methods"]
            assert r.headers["access-control-allow-origin"] == origin
        r = client.put("/config", headers={**AUTH, "Origin": origin}, json={})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin


# -- alerts, the unattended plan, the watchdog -------------------------------------------------


def test_disk_past_the_watermark_alerts_once_and_fails_health(tmp_path):
    usage = {"used": 50}
    recorder = Recorder()
    cfg = config_with(alerts={"evaluate_every_s": 0.05, "clear_after_s": 0})
    app = make_app(
        tmp_path,
        cfg,
        notifiers=[recorder],
        disk_usage=lambda p: DiskUsage(100, usage["used"], 100 - usage["used"]),
    )
    with TestClient(app) as client:
        wait_for(lambda: app.state.runtime.camera_open)
        assert client.get("/health").status_code == 200
        usage["used"] = 93
        wait_for(lambda: recorder.events, what="disk alert")
        time.sleep(0.3)  # many evaluations: still one notification
        # past the watermark (critical) and past the storage target (80 %, warning)
        assert [(e.alert, e.state) for e in recorder.events] == [
            ("disk_emergency", "firing"),
            ("storage_utilization", "firing"),
        ]
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["checks"]["disk"]["status"] == "failing"
        assert "93.0 %" in r.json()["checks"]["alerts"]["detail"]
        assert client.get("/status", headers=AUTH).json()["alerts"][0]["alert"] == "disk_emergency"
        usage["used"] = 78  # under the watermark but not under its hysteresis margin
        time.sleep(0.3)
        assert len(recorder.events) == 2
        usage["used"] = 60
        wait_for(lambda: len(recorder.events) == 4, what="resolved")
        assert {(e.alert, e.state) for e in recorder.events[2:]} == {
            ("disk_emergency", "resolved"),
            ("storage_utilization", "resolved"),
        }
        assert client.get("/health").status_code == 200


class FlakyCamera(SimulatedCamera):
    """Fails its 3rd and 4th captures, as a camera that stopped answering for a while."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0
        self.reconfigured = 0

    async def configure(self, config=None):
        self.reconfigured += 1
        await super().configure(config)

    async def capture(self, settings=None, **kw):
        self.calls += 1
        if self.calls in (3, 4):
            raise CameraError("no answer from the sensor")
        return await super().capture(settings, **kw)


def test_unattended_plan_captures_and_recovers_from_camera_errors(tmp_path):
    clock = ShiftedClock(NOON)
    # a window from sunrise to 12 h later holds noon
    cfg = config_with(
        capture={
            "windows": [{"name": "day", "around": "sunrise", "before_min": 0, "after_min": 720}]
        },
        schedule={
            "phases": [
                dict(p, interval_s=0.2)
                for p in default_config().model_dump(mode="json")["schedule"]["phases"]
            ]
        },
        alerts={"evaluate_every_s": 0.05, "clear_after_s": 0},
    )
    camera = FlakyCamera(clock=clock, seed=5)
    recorder = Recorder()
    app = make_app(
        tmp_path,
        cfg,
        camera=camera,
        clock=clock,
        unattended=True,
        notifiers=[recorder],
        retry_s=0.3,
    )
    with TestClient(app) as client:
        status = wait_for(
            lambda: (
                (s := client.get("/status", headers=AUTH).json())["session"]
                and s["session"]["written"] >= 3
                and s
            ),
            what="plan frames",
        )
        assert status["session"]["session_id"] == "20240320-day"
        assert status["window"]["open"] is True
        assert [(e.alert, e.state) for e in recorder.events] == [
            ("camera_not_answering", "firing"),
            ("camera_not_answering", "resolved"),
        ]
        assert "no answer from the sensor" in recorder.events[0].detail
        assert camera.reconfigured >= 2  # opened, then reopened after the failure
        text = client.get("/metrics", headers=AUTH).text
        assert 'frames_failed_total{stage="capture"} 2.0' in text  # captures 3 and 4
        assert client.get("/health").json()["checks"]["camera"]["status"] == "ok"
        # a session through the API is refused while the plan's runs
        assert client.post("/sessions", headers=AUTH, json={}).status_code == 409


class DeadCamera(SimulatedCamera):
    """A camera that never opens (unplugged ribbon cable)."""

    async def configure(self, config=None):
        raise CameraError("no camera on the CSI port")


def day_window_config(**alerts):
    """A window from sunrise to 12 h later (it holds noon), 0.2 s intervals."""
    return config_with(
        capture={
            "windows": [{"name": "day", "around": "sunrise", "before_min": 0, "after_min": 720}]
        },
        schedule={
            "phases": [
                dict(p, interval_s=0.2)
                for p in default_config().model_dump(mode="json")["schedule"]["phases"]
            ]
        },
        alerts={"evaluate_every_s": 0.05, "clear_after_s": 0, **alerts},
    )


@pytest.mark.parametrize("camera_kind", ["dead", "working"])
def test_uptime_counts_scheduled_time_with_a_dead_camera_as_down(tmp_path, camera_kind):
    """system_uptime_pct: the share of scheduled capture time in which the station captured.
    A running service whose camera never answers through an open window is down."""
    clock = ShiftedClock(NOON)
    cls = DeadCamera if camera_kind == "dead" else SimulatedCamera
    app = make_app(
        tmp_path,
        day_window_config(),
        camera=cls(clock=clock, seed=5),
        clock=clock,
        unattended=True,
        retry_s=0.2,
        tick_s=0.1,
    )
    with TestClient(app) as client:
        time.sleep(2.5)  # five heartbeats (every 5 ticks) inside the open window
        text = client.get("/metrics", headers=AUTH).text
    [pct] = [float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("system_uptime_pct")]
    if camera_kind == "dead":
        assert pct == 0.0
    else:
        assert pct >= 75  # the first beat may fall before the session has started


def test_scheduled_uptime_ledger_counts_gaps_by_the_plan(tmp_path):
    now = [1_700_000_000.0]
    spans = []

    def scheduled(start, end):
        spans.append((start, end))
        return [(start + 100, start + 400)]  # a window inside the gap

    path = tmp_path / "uptime.json"
    ledger = ScheduledUptime(path, scheduled, max_gap_s=10, clock=lambda: now[0])
    assert ledger.percent() == 100.0  # nothing scheduled yet
    for _ in range(10):  # 50 s scheduled and captured
        now[0] += 5
        ledger.heartbeat(True, True)
    for _ in range(10):  # 50 s scheduled, camera dead
        now[0] += 5
        ledger.heartbeat(True, False)
    for _ in range(10):  # 50 s outside the windows: not counted
        now[0] += 5
        ledger.heartbeat(False, False)
    assert ledger.totals() == (100.0, 50.0) and ledger.percent() == 50.0
    ledger.save()
    start = now[0]
    now[0] += 1000  # down for 1000 s, of which the plan scheduled 300 s
    again = ScheduledUptime(path, scheduled, max_gap_s=10, clock=lambda: now[0])
    assert spans[-1] == (start, now[0])
    assert again.totals() == (400.0, 50.0)
    assert again.percent() == pytest.approx(12.5)
    now[0] += 8 * 86400  # a week later the window has moved past all of it
    assert again.totals() == (0.0, 0.0) and again.percent() == 100.0


class HangingCamera(SimulatedCamera):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.hang = threading.Event()
        self.release = threading.Event()

    async def capture(self, settings=None, **kw):
        while self.hang.is_set() and not self.release.is_set():
            await asyncio.sleep(0.02)
        return await super().capture(settings, **kw)


def test_watchdog_ready_pings_and_stops_pinging_when_the_loop_hangs(tmp_path):
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.05)
    received: list[tuple[float, str]] = []

    def drain():
        while True:
            try:
                received.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                return

    watchdog = Watchdog(
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    )
    camera = HangingCamera(clock=ShiftedClock(NOON), seed=6)
    app = make_app(tmp_path / "buf", camera=camera, watchdog=watchdog, stall_after_s=0.6)
    try:
        with TestClient(app) as client:
            wait_for(lambda: (drain(), any("READY=1" in m for _, m in received))[1], what="READY")
            client.post("/sessions", headers=AUTH, json={"interval_s": 0.1})
            time.sleep(0.6)
            drain()
            pings = [t for t, m in received if m == "WATCHDOG=1"]
            assert len(pings) >= 4  # every ~0.1 s (half of 0.2 s)
            camera.hang.set()
            time.sleep(1.5)
            drain()
            hung_at = max(t for t, m in received if m == "WATCHDOG=1")
            time.sleep(0.5)
            drain()
            assert max(t for t, m in received if m == "WATCHDOG=1") == hung_at  # no more pings
            health = client.get("/health").json()["checks"]["camera"]
            assert health["status"] == "failing" and "no frame for" in health["detail"]
            camera.release.set()
        drain()
        assert received[-1][1] == "STOPPING=1"
        statuses = [m for _, m in received if m.startswith("STATUS=")]
        assert any("capturing session" in m for m in statuses)
    finally:
        sock.close()


def test_alert_manager_wiring_uses_configured_notifiers(tmp_path):
    cfg = config_with(alerts={"webhook_url": "http://127.0.0.1:9/hook"})
    app = make_app(tmp_path, cfg, notifiers=None)
    alerts: AlertManager = app.state.runtime.alerts
    assert [type(n).__name__ for n in alerts.notifiers] == ["WebhookNotifier"]
    assert {c.name for c in alerts.conditions} == {
        "camera_not_answering",
        "disk_emergency",
        "untransferred_frames_at_risk",
        "transfer_failing",
        "capture_latency",
        "image_quality",
        "transfer_queue",
        "transfer_quarantine",
        "storage_utilization",
        "system_uptime",
        "storage_io_errors",
        "storage_wear",
        "soc_temperature",
        "disk_time_to_full",
        "clock_unsynchronised",
        "weather_failing",
        "frames_not_stored",
    }


# -- no silent fake, nothing claimed that did not happen (issue 10) ----------------------------


def test_a_frame_that_could_not_be_stored_is_an_error_counted_and_alerted(tmp_path):
    recorder = Recorder()
    app = make_app(tmp_path / "buf", notifiers=[recorder])

    def disk_fails(job):
        raise OSError(5, "Input/output error")

    with TestClient(app) as client:
        wait_for(lambda: app.state.runtime.camera_open, what="camera open")
        app.state.runtime.service.writer._write_hook = disk_fails  # the writer's test seam
        r = client.post("/capture", headers=AUTH, json={})
        assert r.status_code == 500
        assert "not stored" in r.json()["detail"] and "Input/output error" in r.json()["detail"]
        text = client.get("/metrics", headers=AUTH).text
        assert 'frames_failed_total{stage="write"} 1.0' in text
        assert [e.alert for e in recorder.events if e.state == "firing"] == ["frames_not_stored"]
        assert client.get("/frames", headers=AUTH).json()["frames"] == []


def test_replayed_jpegs_without_exif_are_all_stored(tmp_path):
    folder = tmp_path / "replay"
    folder.mkdir()
    for i in range(3):  # cv2 writes no EXIF: no exposure, no ISO
        cv2.imwrite(str(folder / f"f{i}.jpg"), np.full((90, 160, 3), 60 * (i + 1), np.uint8))
    camera = ReplayCamera(folder, clock=ShiftedClock(NOON))
    app = make_app(tmp_path / "buf", camera=camera)
    with TestClient(app) as client:
        wait_for(lambda: app.state.runtime.camera_open, what="camera open")
        for _ in range(3):
            r = client.post("/capture", headers=AUTH, json={})
            assert r.status_code == 200, r.text
            (frame,) = r.json()["frames"]
            assert frame["exposure_time_s"] is None
            assert (tmp_path / "buf" / frame["path"]).is_file()
        assert app.state.runtime.service.writer.failed == 0
        assert client.get("/status", headers=AUTH).status_code == 200


def test_simulated_camera_standing_in_is_degraded_health(tmp_path):
    camera = SimulatedCamera(clock=ShiftedClock(NOON), seed=4)
    camera.notice = "simulated camera: no camera stack here (not a Raspberry Pi, no libcamera)"
    app = make_app(tmp_path / "buf", camera=camera)
    with TestClient(app) as client:
        wait_for(lambda: app.state.runtime.camera_open, what="camera open")
        check = client.get("/health").json()["checks"]["camera"]
        assert check["status"] == "degraded" and check["detail"].startswith("simulated camera")
        status = client.get("/status", headers=AUTH).json()
        assert status["camera_notice"] == camera.notice


def test_a_station_without_its_camera_is_failing_alerted_and_retrying(tmp_path):
    recorder = Recorder()
    camera = MissingCamera("no camera found on Raspberry Pi 5 Model B: libcamera lists none")
    cfg = config_with(alerts={"evaluate_every_s": 0.1})
    app = make_app(tmp_path / "buf", cfg, camera=camera, notifiers=[recorder], retry_s=0.1)
    with TestClient(app) as client:
        wait_for(
            lambda: any(e.alert == "camera_not_answering" for e in recorder.events),
            what="camera alert",
        )
        r = client.get("/health")
        assert r.status_code == 503
        check = r.json()["checks"]["camera"]
        assert check["status"] == "failing" and "Raspberry Pi 5" in check["detail"]
        assert client.post("/capture", headers=AUTH, json={}).status_code == 503
        assert not app.state.runtime.camera_open
        assert app.state.runtime.service.catalog.count_frames() == 0  # never a simulated frame
