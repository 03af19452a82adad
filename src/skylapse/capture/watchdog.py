"""systemd service notification (sd_notify) and the watchdog, without a dependency.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``, an AF_UNIX datagram socket (``@`` marks
Linux's abstract namespace). The service sends newline-separated ``KEY=VALUE`` assignments:
``READY=1`` once started, ``STATUS=...`` for `systemctl status`, ``WATCHDOG=1`` as a keep-alive
and ``STOPPING=1`` on shutdown. With ``WatchdogSec=`` systemd also sets ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``) and restarts the service when no keep-alive arrives within that time; the
documented advice is to ping at half the interval.

The capture loop calls :meth:`Watchdog.kick` once per iteration: a hung loop stops the pings
and systemd restarts the service. Reference: sd_notify(3), systemd.service(5) ``WatchdogSec=``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=capturing"``) to systemd.

    Returns False, doing nothing, when not run by systemd (no ``NOTIFY_SOCKET``) or when the
    socket cannot be reached: notification must never break the service.
    """
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """systemd's watchdog timeout in seconds, when it applies to this process, else None."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return usec / 1e6


class Watchdog:
    """Feeds systemd's watchdog at half its timeout; a no-op outside systemd."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.env = dict(os.environ if env is None else env)
        timeout = watchdog_interval(self.env)
        self.interval_s = timeout / 2 if timeout else None
        self.clock = clock
        self._last: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def ready(self, status: str | None = None) -> bool:
        return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), self.env)

    def status(self, text: str) -> bool:
        return notify(f"STATUS={text}", self.env)

    def stopping(self) -> bool:
        self.stop()
        return notify("STOPPING=1", self.env)

    def kick(self) -> bool:
        """Ping if half the timeout has passed since the last ping; True when one was sent."""
        if self.interval_s is None:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return notify("WATCHDOG=1", self.env)

    def start(self, healthy: Callable[[], bool]) -> None:
        """Ping from a thread for as long as ``healthy()`` says the service works.

        For loops that block longer than the interval (a 30 s night exposure): ``healthy``
        checks that the loop made progress recently, so a hang still stops the pings.
        """
        interval_s = self.interval_s
        if interval_s is None or self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_s / 2):
                if healthy():
                    self.kick()

        self._thread = threading.Thread(target=run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
