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

import selectors
import socket
import time
from pathlib import Path

import httpx
import pytest

from skylapse.api.capture import create_capture_app, deep_merge
from skylapse.api.server import ConnectionLimits, ServerThread
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.config import default_config, parse_config

TOKEN = "abuse-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HALF_SENT = b"GET /health HTTP/1.1\r\nHost: station\r\nX-Slow: "


def config_with(**sections):
    """The default configuration with ``sections`` merged in, weather off (no network)."""
    doc = deep_merge(default_config().model_dump(mode="python"), {"weather": {"enabled": False}})
    return parse_config(deep_merge(doc, sections))


def capture_app(buffer: Path, config=None):
    """The capture service over a small simulated camera, no sessions unless asked."""
    return create_capture_app(
        config or config_with(),
        TOKEN,
        camera=SimulatedCamera(),
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
