"""sd_notify and the watchdog over a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from skylapse.capture.watchdog import Watchdog, notify, watchdog_interval


@pytest.fixture
def systemd_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def received(sock: socket.socket, timeout: float = 0.0) -> list[str]:
    sock.settimeout(timeout)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except (BlockingIOError, TimeoutError):
            return out
        sock.settimeout(0)


def test_notify_sends_the_state_as_one_datagram(systemd_socket):
    path, sock = systemd_socket
    assert notify("READY=1\nSTATUS=capturing", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=capturing"


def test_notify_abstract_socket():
    name = f"skylapse-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"WATCHDOG=1"


def test_notify_outside_systemd_is_a_quiet_no_op(tmp_path):
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "missing.sock")}) is False


def test_watchdog_interval_honours_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({}) is None


def test_kick_pings_at_half_the_timeout(systemd_socket):
    path, sock = systemd_socket
    now = [100.0]
    dog = Watchdog({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}, clock=lambda: now[0])
    assert dog.enabled and dog.interval_s == 15.0
    assert dog.ready("capturing sunset")
    sent = []
    for _ in range(61):  # a loop iteration every second for a minute
        sent.append(dog.kick())
        now[0] += 1.0
    assert sent.count(True) == 5  # at t = 0, 15, 30, 45, 60
    assert [i for i, s in enumerate(sent) if s] == [0, 15, 30, 45, 60]
    msgs = received(sock, 1.0)
    assert msgs[0] == "READY=1\nSTATUS=capturing sunset"
    assert msgs[1:] == ["WATCHDOG=1"] * 5
    assert dog.stopping() and received(sock, 1.0) == ["STOPPING=1"]


def test_thread_pings_only_while_healthy(systemd_socket):
    path, sock = systemd_socket
    dog = Watchdog({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # 0.2 s timeout
    healthy = [True]
    dog.start(lambda: healthy[0])
    try:
        time.sleep(0.55)
        pings = received(sock)
        assert 2 <= len(pings) <= 7 and set(pings) == {"WATCHDOG=1"}
        healthy[0] = False  # the loop hangs: the pings must stop
        time.sleep(0.1)
        received(sock)
        time.sleep(0.4)
        assert received(sock) == []
    finally:
        dog.stop()


def test_watchdog_without_systemd_does_nothing():
    dog = Watchdog({})
    assert not dog.enabled and dog.kick() is False and dog.ready() is False
    dog.start(lambda: True)  # no thread
    assert dog._thread is None
