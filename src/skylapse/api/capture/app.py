"""The capture service's app: :func:`create_capture_app`.

The app is built on the shared layer (`skylapse.api.common`) around one
:class:`~skylapse.api.capture.runtime.CaptureRuntime`, stored as ``app.state.runtime``. Its
lifespan opens the camera (``capture.camera``: auto-detected or configured), tells systemd
READY once the camera is open and feeds the watchdog while the capture loop is alive, runs the
unattended plan (``capture.unattended``), the transfer worker (when ``transfer.host`` is set)
and the alerts.
"""

from __future__ import annotations

from typing import Unpack

from fastapi import Depends, FastAPI

from skylapse.api.capture import health
from skylapse.api.capture.routes import capture, frames, schedule, sessions, status, ws
from skylapse.api.capture.routes import config as config_routes
from skylapse.api.capture.runtime import RuntimeOptions, build_runtime
from skylapse.api.common import create_service_app
from skylapse.config import SkylapseConfig

DESCRIPTION = """\
The station's status, plan, configuration, sessions, frames and live view. Every endpoint but
`/health` needs `Authorization: Bearer <token>`; invalid input is a 422 whose entries name the
field. Times are ISO 8601 with an offset. `WS /ws` (not listed below) sends JSON messages with
a `type`: `status` (`{"status": Status}`, every second), `preview` (`PreviewMessage`, about
once a second), `frame` (`{"session_id", "record": Frame}`), `session_started`,
`session_stopped` (`{"session": SessionSummary}`), `skipped`, `alert`, and `pong` for a
`{"type": "ping"}`; the token comes as the header, `?token=` or a first message
`{"token": "..."}`.
"""
#: The routes behind the bearer token, in the OpenAPI document's order.
ROUTERS = (
    status.router,
    schedule.router,
    config_routes.router,
    capture.router,
    sessions.router,
    frames.router,
)


def create_capture_app(
    config: SkylapseConfig, token: str, **options: Unpack[RuntimeOptions]
) -> FastAPI:
    """The capture service's FastAPI app (see the module docstring); ``options`` replace what
    the configuration would choose, for tests and benches (`RuntimeOptions`)."""
    runtime = build_runtime(config, health.alert_conditions, **options)
    app = create_service_app(
        service="capture",
        title="Skylapse capture service",
        description=DESCRIPTION,
        token=token,
        metrics=runtime.metrics,
        health_checks=health.health_checks(runtime),
        cors_origins=config.api.cors_origins,
        max_body_bytes=config.api.max_body_kb * 1024,
        public_docs=config.api.public_docs,
        lifespan=runtime.lifespan,
    )
    app.state.runtime = runtime
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(app.state.require_token)])
    app.include_router(ws.router)  # authenticates the WebSocket itself
    return app
