"""Running an app with uvicorn: in the foreground (`skylapse serve`) or in a thread (tests,
benchmarks).

Both use the same settings: our structlog logging (uvicorn's own access log off, the
correlation-id middleware logs each request), no ``Server`` header, WebSocket messages up to
64 KB, and a bounded graceful shutdown.

Idle and half-sent connections are bounded (:class:`ConnectionLimits`), because the API shares
its process, and so its file descriptors, with the capture loop:

* a request head (request line and headers) must arrive within ``header_timeout_s`` of the
  connection opening or of the previous response ending, else the connection is closed; uvicorn
  has no such timeout (its keep-alive timer restarts on every byte), so
  :func:`header_timeout_protocol` adds one to uvicorn's httptools protocol;
* at most ``max_connections`` are open at once, and never more than the descriptor limit
  (``RLIMIT_NOFILE``) minus ``reserved_fds``, which stay for the camera, the frame writer, the
  catalog and the logs. A connection beyond the cap evicts the oldest one still sending its
  head, or is answered 503 and closed when there is none;
* uvicorn's ``limit_concurrency`` answers 503 beyond the same number of requests in flight, and
  idle keep-alive connections close after ``keep_alive_s``.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from dataclasses import dataclass
from typing import TypedDict

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _UvicornOptions(TypedDict):
    log_config: None
    access_log: bool
    server_header: bool
    ws_max_size: int
    timeout_graceful_shutdown: int


UVICORN_OPTIONS: _UvicornOptions = {
    "log_config": None,  # keep the handler `skylapse.log.configure` installed
    "access_log": False,
    "server_header": False,
    "ws_max_size": 64 * 1024,
    "timeout_graceful_shutdown": 10,
}


class _LimitOptions(TypedDict):
    http: type
    limit_concurrency: int
    timeout_keep_alive: int


#: What a connection over the cap gets when no half-sent one can make room for it.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: 5\r\nconnection: close\r\n\r\nbusy\n"
)


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on the server's connections (see the module docstring)."""

    header_timeout_s: float = 10.0
    max_connections: int = 512
    keep_alive_s: int = 5
    #: descriptors kept free for the rest of the process (camera, writer, catalog, logs)
    reserved_fds: int = 256

    def connection_cap(self) -> int:
        """``max_connections``, lowered to fit under this process's descriptor limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(8, min(self.max_connections, soft - self.reserved_fds))

    def uvicorn_options(self) -> _LimitOptions:
        """The uvicorn settings enforcing these limits."""
        cap = self.connection_cap()
        return {
            "http": header_timeout_protocol(self.header_timeout_s, cap),
            # the protocol caps connections itself; this bounds the requests in flight (the
            # connection that evicted another still counts both for a moment)
            "limit_concurrency": cap + 1,
            "timeout_keep_alive": self.keep_alive_s,
        }


def header_timeout_protocol(header_timeout_s: float, max_connections: int) -> type:
    """uvicorn's httptools protocol with a deadline for each request head and a connection cap.

    The deadline runs from the connection opening, and from each response's end on a kept-alive
    connection, until the request's headers are complete; when it passes the connection is
    closed. WebSocket connections are past their head once upgraded, so it never closes them.
    """

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_since = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections and not self._evict_half_sent():
                self.connections.discard(self)  # counted out now, not at connection_lost
                transport.write(_BUSY)
                transport.close()
                return
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:  # idle: the next head is due
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_since = time.monotonic()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def _evict_half_sent(self) -> bool:
            """Close the oldest other connection still sending its head; whether one was."""
            waiting = [
                c
                for c in self.connections
                if isinstance(c, HeaderTimeoutProtocol) and c is not self and c._head_timer
            ]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c._head_since)
            oldest._disarm_head_timer()
            self.connections.discard(oldest)  # counted out now, not at connection_lost
            oldest.transport.close()
            return True

    return HeaderTimeoutProtocol


def run_server(app: ASGIApp, host: str, port: int, limits: ConnectionLimits | None = None) -> None:
    """Serve ``app`` until interrupted (SIGINT/SIGTERM)."""
    limits = limits or ConnectionLimits()
    uvicorn.run(app, host=host, port=port, **UVICORN_OPTIONS, **limits.uvicorn_options())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class ServerThread:
    """``with ServerThread(app) as server: httpx.get(server.url + "/health")``.

    Starts uvicorn on a free loopback port in a daemon thread, waits until it accepts
    connections (and the app's lifespan has started), and shuts it down on exit.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float = 30.0,
        limits: ConnectionLimits | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        limits = limits or ConnectionLimits()
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            lifespan="on",
            **UVICORN_OPTIONS,
            **limits.uvicorn_options(),
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
