"""Running an app with uvicorn: in the foreground (`skylapse serve`) or in a thread (tests,
benchmarks).

Both use the same settings: our structlog logging (uvicorn's own access log off, the
correlation-id middleware logs each request), no ``Server`` header, WebSocket messages up to
64 KB, and a bounded graceful shutdown.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TypedDict

import uvicorn
from starlette.types import ASGIApp


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


def run_server(app: ASGIApp, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (SIGINT/SIGTERM)."""
    uvicorn.run(app, host=host, port=port, **UVICORN_OPTIONS)


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
    ):
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        config = uvicorn.Config(app, host=host, port=self.port, lifespan="on", **UVICORN_OPTIONS)
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
