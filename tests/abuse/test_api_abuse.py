"""Fault and abuse suite, the APIs: each test replays an attack from issue 14 (hardening) against
the real service and checks it no longer works.

* idle and half-sent connections (slowloris) against the descriptor budget: real uvicorn on
  loopback, real sockets;
* ``PUT /config`` with out-of-range values: refused whole, nothing applied, later PUTs work;
* oversized renders and floods of ``POST /jobs``;
* secrets in ``GET /config`` and in the logs;
* weak tokens, the env file's mode, absolute paths in unauthenticated answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import os
import selectors
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from skylapse import log
from skylapse.alerts import AlertEvent, WebhookNotifier
from skylapse.api.auth import TOKEN_ENV, MissingTokenError, resolve_token
from skylapse.api.capture.app import create_capture_app
from skylapse.api.processing.app import ProcessingSettings, create_processing_app
from skylapse.api.server import ConnectionLimits, ServerThread
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import ShiftedClock
from skylapse.capture.weather import WeatherService
from skylapse.config import (
    LocationConfig,
    ProcessingConfig,
    WeatherConfig,
    deep_merge,
    default_config,
    parse_config,
)
from skylapse.testing import SequenceSpec, generate_sequence
from tests_support import commit_frames_to_inbox, wait_for

TOKEN = "abuse-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HALF_SENT = b"GET /health HTTP/1.1\r\nHost: station\r\nX-Slow: "


def config_with(**sections):
    """The default configuration with ``sections`` merged in, weather off (no network)."""
    doc = deep_merge(default_config().model_dump(mode="python"), {"weather": {"enabled": False}})
    return parse_config(deep_merge(doc, sections))


def capture_app(buffer: Path, config=None):
    """The capture service over a small simulated camera, no sessions unless asked; in
    daylight whenever the test runs (at night the simulated camera exposes for up to 30 s)."""
    clock = ShiftedClock(dt.datetime(2024, 3, 20, 12, tzinfo=dt.UTC))
    return create_capture_app(
        config or config_with(),
        TOKEN,
        camera=SimulatedCamera(clock=clock),
        clock=clock,
        buffer=buffer,
        camera_config=CameraConfig(resolution=(160, 90)),
        unattended=False,
        notifiers=[],
    )


def half_sent(url_port: int, n: int) -> list[socket.socket]:
    """``n`` connections that each sent part of a request head and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", url_port), timeout=5)
        s.sendall(HALF_SENT)
        socks.append(s)
    return socks


def closed_by_server(socks: list[socket.socket], within_s: float) -> int:
    """How many of ``socks`` the server closes (EOF or reset) within ``within_s``."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + within_s
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(timeout=min(left, 0.2)):
            try:
                data = key.fileobj.recv(4096)  # type: ignore[union-attr]
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data or data.startswith(b"HTTP/1.1 503"):
                closed += 1
                sel.unregister(key.fileobj)
    sel.close()
    return closed


@pytest.fixture
def close_all():
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


# -- 6: idle and half-sent connections ---------------------------------------------------------


def test_half_sent_requests_are_dropped_by_the_header_timeout_while_health_answers(
    tmp_path, close_all
):
    limits = ConnectionLimits(header_timeout_s=1.0, max_connections=400)
    with ServerThread(capture_app(tmp_path / "buffer"), limits=limits) as server:
        close_all += half_sent(server.port, 200)
        t0 = time.monotonic()
        r = httpx.get(server.url + "/health", timeout=5)
        assert r.status_code in (200, 503) and r.json()["service"] == "capture"
        assert time.monotonic() - t0 < 1.0  # answered while the 200 are held
        assert closed_by_server(close_all, within_s=4.0) == 200
        assert len(server.server.server_state.connections) == 0
        # a kept-alive connection that starts a second head and stalls is dropped too
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: station\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 ")
            s.sendall(b"GET /health HTTP/1.1\r\n")
            assert closed_by_server([s], within_s=3.0) == 1


def test_connections_over_the_cap_evict_half_sent_ones_and_health_still_answers(
    tmp_path, close_all
):
    limits = ConnectionLimits(header_timeout_s=60.0, max_connections=20)
    with ServerThread(capture_app(tmp_path / "buffer"), limits=limits) as server:
        close_all += half_sent(server.port, 60)
        r = httpx.get(server.url + "/health", timeout=5)
        assert r.status_code in (200, 503) and r.json()["service"] == "capture"
        assert len(server.server.server_state.connections) <= 20
        # the oldest were evicted to make room: the station keeps its descriptors
        assert closed_by_server(close_all[:40], within_s=2.0) >= 40


def test_the_connection_cap_keeps_descriptors_for_the_capture_loop(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1024))
    assert ConnectionLimits(max_connections=5000, reserved_fds=256).connection_cap() == 768
    assert ConnectionLimits(max_connections=100).connection_cap() == 100


def test_the_unit_raises_the_descriptor_limit():
    from skylapse.deploy import DEFAULTS, render_capture_unit

    limits = [
        line
        for line in render_capture_unit(DEFAULTS).splitlines()
        if line.startswith("LimitNOFILE=")
    ]
    assert limits and int(limits[0].split("=")[1]) >= 4096
    unit = Path(__file__).parents[2] / "deploy" / "systemd" / "skylapse-capture.service"
    assert limits[0] in unit.read_text().splitlines()


# -- 7: PUT /config is whole or nothing --------------------------------------------------------

#: One value of each kind of secret the configuration holds.
SECRETS = {
    "api": {"token": "config-token-a1b2c3d4e5f6"},
    "weather": {"api_key": "owm-key-9f8e7d6c5b4a"},
    "alerts": {
        "webhook_url": "https://hooks.example/services/T000/B000/hook-secret-path",
        "mqtt": {"password": "mqtt-pass-5566"},
    },
    "processing": {"queue_url": "redis://:redis-pass-7788@queue.example:6379/0"},
    "backup": {"access_key_id": "AKIA-ACCESS-1122", "secret_access_key": "s3-secret-3344"},
}
SECRET_VALUES = [
    "config-token-a1b2c3d4e5f6",
    "owm-key-9f8e7d6c5b4a",
    "hook-secret-path",
    "mqtt-pass-5566",
    "redis-pass-7788",
    "AKIA-ACCESS-1122",
    "s3-secret-3344",
]


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    """The capture service holding every kind of secret, without a session running."""
    buffer = tmp_path_factory.mktemp("station") / "buffer"
    app = capture_app(buffer, config_with(**SECRETS))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(AUTH)
        wait_for(lambda: app.state.runtime.camera_open, timeout=15, what="camera open")
        yield client, app, buffer


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"capture": {"retention_h": 1e300, "jpeg_quality": 10}}', "capture.retention_h"),
        ('{"capture": {"storage_check_s": Infinity}}', "capture.storage_check_s"),
        ('{"exposure": {"max_step_ev": NaN}}', "exposure.max_step_ev"),
        ('{"strategies": {"day": {"max_exposure_s": 1e300}}}', "strategies.day.max_exposure_s"),
        ('{"weather": {"refresh_s": 1e300}}', "weather.refresh_s"),
        ('{"alerts": {"transfer_queue_max": 1000000000000}}', "alerts.transfer_queue_max"),
    ],
)
def test_an_out_of_range_put_changes_nothing_and_later_puts_work(station, body, field):
    client, app, _ = station
    service = app.state.runtime.service
    before = client.get("/config").json()
    quality, retention = service.writer.quality, service.storage.retention
    r = client.put("/config", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["detail"]] == [field]
    assert client.get("/config").json() == before
    assert (service.writer.quality, service.storage.retention) == (quality, retention)
    r = client.put("/config", json={"capture": {"jpeg_quality": 50}})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == ["capture.jpeg_quality"] and service.writer.quality == 50
    assert client.put("/config", json={"capture": {"jpeg_quality": quality}}).status_code == 200


def test_a_config_that_fails_to_apply_is_not_swapped_in(station, monkeypatch):
    client, app, _ = station
    service = app.state.runtime.service
    config, quality = service.config, service.writer.quality
    # past validation (model_copy does not validate): applying it overflows a timedelta
    bad = config.model_copy(
        update={"capture": config.capture.model_copy(update={"retention_h": 1e300})}
    )
    with pytest.raises(OverflowError):
        service.apply_config(bad)
    assert service.config is config and service.writer.quality == quality

    def refuse(new):
        raise RuntimeError("apply failed")

    before = client.get("/config").json()
    monkeypatch.setattr(service, "apply_config", refuse)
    assert client.put("/config", json={"capture": {"jpeg_quality": 33}}).status_code == 500
    assert client.get("/config").json() == before  # the runtime kept the old configuration


@pytest.mark.parametrize(
    "patch",
    [
        {"weather": {"base_url": "http://attacker.example/collect"}},
        {"weather": {"cache_path": "/tmp/elsewhere.json"}},
    ],
)
def test_weather_fields_read_only_at_start_are_refused_as_restart_only(station, patch):
    client, _, _ = station
    r = client.put("/config", json=patch)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["field"] == "weather." + next(iter(patch["weather"]))
    assert "restart" in detail["msg"]


def test_weather_thresholds_changed_by_put_reach_the_weather_service(tmp_path):
    config = parse_config({"weather": {"enabled": True, "api_key": "k" * 16}})
    app = create_capture_app(
        config,
        TOKEN,
        camera=SimulatedCamera(),
        buffer=tmp_path / "buffer",
        camera_config=CameraConfig(resolution=(160, 90)),
        unattended=False,
        notifiers=[],
        weather=WeatherService(
            config.weather.model_copy(update={"cache_path": tmp_path / "w.json"}),
            config.location,
        ),
    )
    with TestClient(app) as client:
        r = client.put("/config", headers=AUTH, json={"weather": {"stormy_wind_ms": 30}})
        assert r.status_code == 200 and r.json()["changed"] == ["weather.stormy_wind_ms"]
        assert app.state.runtime.service.weather.config.stormy_wind_ms == 30


# -- 9: no secret in GET /config or the PUT answer ---------------------------------------------


def test_config_answers_show_no_secret_and_sending_them_back_keeps_them(station):
    client, app, _ = station
    r = client.get("/config")
    assert r.status_code == 200
    assert not [v for v in SECRET_VALUES if v in r.text]
    doc = r.json()
    assert doc["alerts"]["webhook_url"] == "***" and doc["processing"]["queue_url"] == "***"
    assert doc["backup"]["secret_access_key"] == "***" and doc["weather"]["api_key"] == "***"
    r = client.put("/config", json=doc)  # the redacted document sent back as it came
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == [] and not [v for v in SECRET_VALUES if v in r.text]
    cfg = app.state.runtime.config
    assert cfg.alerts.webhook_url.get_secret_value().endswith("hook-secret-path")
    assert cfg.backup.secret_access_key.get_secret_value() == "s3-secret-3344"
    assert not [v for v in SECRET_VALUES if v in repr(cfg) or v in str(cfg)]


# -- 10: no secret in the logs -----------------------------------------------------------------


@pytest.fixture
def logs():
    """Everything logged during the test, as one text; logging restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quieted = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    stream = io.StringIO()
    log.configure("INFO", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, was in quieted.items():
        logging.getLogger(name).setLevel(was)


def test_the_weather_key_is_not_logged(tmp_path, logs):
    key = "owm-key-0011223344"
    seen = []

    def owm(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["appid"])
        return httpx.Response(401, json={"cod": 401, "message": "Invalid API key"})

    async def fetch():
        async with httpx.AsyncClient(transport=httpx.MockTransport(owm)) as http:
            weather = WeatherService(
                WeatherConfig(api_key=key, cache_path=tmp_path / "weather.json"),
                LocationConfig(),
                http=http,
            )
            await weather.current(dt.datetime.now(dt.UTC))

    asyncio.run(fetch())
    assert seen == [key]  # the key was sent: OpenWeatherMap takes it only in the query
    text = logs.getvalue()
    assert "weather.fetch_failed" in text and "401" in text
    assert key not in text and "appid" not in text


def test_the_webhook_url_is_not_logged(logs):
    app = FastAPI()
    got = []

    @app.post("/hooks/{secret}")
    def hook(secret: str) -> dict:
        got.append(secret)
        return {}

    with ServerThread(app) as server:
        notifier = WebhookNotifier(server.url + "/hooks/hook-secret-0099")
        now = dt.datetime.now(dt.UTC)
        event = AlertEvent("disk", "firing", "warning", "capture", "s", "disk", "t", "d", 1, now)
        notifier.notify(event)
        wait_for(lambda: notifier.sent == 1, timeout=10, what="webhook delivery")
        notifier.close()
    assert got == ["hook-secret-0099"]
    assert "hook-secret-0099" not in logs.getvalue()


def test_a_websocket_token_in_the_query_is_not_logged(tmp_path, logs):
    with ServerThread(capture_app(tmp_path / "buffer")) as server:
        url = server.url.replace("http://", "ws://") + f"/ws?token={TOKEN}"
        with connect(url) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "status"
    text = logs.getvalue()
    assert "WebSocket /ws" in text  # uvicorn's line is there, without its query
    assert TOKEN not in text


def test_url_queries_are_cut_from_every_log_line():
    line = log.without_queries("GET https://x.example/a/b?appid=K&lat=1 and /ws?token=T done?")
    assert line == "GET https://x.example/a/b and /ws done?"


# -- 8: render sizes and job floods ------------------------------------------------------------


@pytest.fixture(scope="module")
def processing(tmp_path_factory):
    """The processing service (no workers: jobs stay queued) with one ingested sequence."""
    tmp = tmp_path_factory.mktemp("processing")
    generate_sequence(tmp / "gen", SequenceSpec(frames=4, size=(64, 36), seed=1))
    commit_frames_to_inbox(tmp / "gen", tmp / "data" / "inbox" / "peak-1")
    settings = ProcessingSettings(
        data_dir=tmp / "data",
        token=TOKEN,
        workers=0,
        processing=ProcessingConfig(ingest_every_s=0.1, render_after_min=None, job_poll_s=0.2),
        jobs_per_minute=6,
        job_burst=5,
    )
    with TestClient(create_processing_app(settings)) as client:
        client.headers.update(AUTH)
        seqs = wait_for(lambda: client.get("/sequences").json(), timeout=30, what="ingest")
        yield client, seqs[0]["id"], tmp


@pytest.mark.parametrize("size", ["16384x16384", "8192x8192", "8640p", "7680x4322"])
def test_renders_beyond_8k_are_refused(processing, size):
    client, sequence, _ = processing
    r = client.post("/jobs", json={"sequence_id": sequence, "options": {"size": size}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "options.size"


def test_a_flood_of_job_submissions_is_cut_off_with_429(processing):
    client, sequence, _ = processing
    codes = [
        client.post("/jobs", json={"sequence_id": sequence, "options": {"size": "4320p"}})
        for _ in range(20)
    ]
    accepted = [r for r in codes if r.status_code == 202]
    refused = [r for r in codes if r.status_code == 429]
    assert len(accepted) == 5 and len(refused) == 15  # the burst, then nothing for a while
    assert int(refused[0].headers["Retry-After"]) >= 1


# -- 13: weak tokens, the env file's mode, paths in answers ------------------------------------


def test_a_short_token_is_refused_from_the_environment_as_from_the_file(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "x")
    with pytest.raises(MissingTokenError, match="16"):
        resolve_token("a-good-config-token-1234")
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(MissingTokenError, match="16"):
        resolve_token("short")
    monkeypatch.setenv(TOKEN_ENV, "e" * 16)
    assert resolve_token(None) == "e" * 16


@pytest.mark.skipif(os.geteuid() != 0, reason="install-service writes the env file as root")
def test_the_env_file_is_never_readable_by_others(tmp_path, monkeypatch):
    from skylapse.deploy import UnitSettings, current_executable, install_capture_service

    # freeze the moment between creating the file and any chmod: what is on disk then?
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: None)
    old_umask = os.umask(0o022)
    try:
        env_file = tmp_path / "etc" / "skylapse.env"
        install_capture_service(
            UnitSettings(current_executable(), user="nobody", buffer_dir=tmp_path / "buffer"),
            tmp_path / "units",
            state_dir=tmp_path / "state",
            env_file=env_file,
        )
    finally:
        os.umask(old_umask)
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    assert env_file.read_text().startswith("SKYLAPSE_API_TOKEN=")


def test_health_shows_no_absolute_path(processing):
    client, _, tmp = processing
    r = client.get("/health", headers={"Authorization": ""})
    assert r.status_code in (200, 503)
    assert str(tmp) not in r.text and "/tmp" not in r.text


def test_a_404_for_an_unreadable_frame_shows_no_absolute_path(station):
    client, _, buffer = station
    r = client.post("/capture")
    assert r.status_code == 200, r.text
    frame = r.json()["frames"][0]
    (buffer / frame["path"]).write_bytes(b"not a jpeg")
    r = client.get(f"/frames/{frame['id']}/image", params={"size": "thumb"})
    assert r.status_code == 404
    assert str(buffer) not in r.text and str(buffer.resolve()) not in r.text
