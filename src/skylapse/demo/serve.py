"""`skylapse demo --serve`: both services and the dashboard over the demo's data, until
Ctrl-C."""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import time
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console

from skylapse.config import ProcessingConfig
from skylapse.demo.options import DEMO_LOCATION, demo_config
from skylapse.demo.progress import logs_to
from skylapse.demo.report import DemoResult

if TYPE_CHECKING:
    from fastapi import FastAPI


def serve_demo(result: DemoResult, console: Console, port: int = 8081) -> None:
    """Serve the processing API (and the capture API, where the package has one) on
    127.0.0.1 with a new token, over the demo's data, until Ctrl-C."""
    # the web stack loads only here: `skylapse demo` without --serve does not need it
    from skylapse.api.common import DASHBOARD_DIR
    from skylapse.api.processing.app import ProcessingSettings, create_processing_app
    from skylapse.api.server import ServerThread, free_port

    token = secrets.token_urlsafe(24)
    settings = ProcessingSettings(
        data_dir=result.data_dir,
        token=token,
        processing=ProcessingConfig(workers=1, ingest_every_s=5.0, render_after_min=None),
        inbox=result.inbox,
        archive_dir=result.data_dir / "archive",
    )
    servers = [("processing", create_processing_app(settings), _port_or_free(port))]
    servers.append(("capture", _capture_app(result, token), _port_or_free(port - 1)))
    with contextlib.ExitStack() as stack:
        stack.enter_context(logs_to(result.out / "serve.log", "a"))
        urls = {}
        for name, app, p in servers:
            server = stack.enter_context(ServerThread(app, port=p or free_port()))
            urls[name] = server.url
            console.print(f"{name} service: {server.url}/", highlight=False)
        if DASHBOARD_DIR.is_dir():
            console.print(
                f"dashboard: {urls['processing']}/ (it asks for the token)", highlight=False
            )
        console.print(f"token: {token}", highlight=False)
        console.print(
            "e.g. curl -H 'Authorization: Bearer TOKEN' URL/timelapses; Ctrl-C stops",
            highlight=False,
        )
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping")
        finally:
            signal.signal(signal.SIGTERM, previous)


def _capture_app(result: DemoResult, token: str) -> FastAPI:
    """The station's API over the demo's buffer, on the real clock; no unattended plan, so
    nothing is captured unless asked for (POST /capture, /sessions)."""
    from skylapse.api.capture.app import create_capture_app
    from skylapse.capture.cameras import CameraConfig, CameraFactory, Location

    loc = DEMO_LOCATION
    camera = CameraFactory.create(
        "simulated",
        seed=result.options.seed,
        location=Location(loc.latitude, loc.longitude, loc.elevation_m),
    )
    return create_capture_app(
        demo_config(result.options, result.capture_buffer),
        token,
        camera=camera,
        buffer=result.capture_buffer,
        unattended=False,
        camera_config=CameraConfig(resolution=result.options.resolution),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _port_or_free(port: int) -> int | None:
    """``port`` when it is free on loopback, else None (a free one is chosen)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port
