"""The capture service's app: :func:`create_capture_app`.

The app is built on the shared layer (`skylapse.api.common`) around one
:class:`~skylapse.api.capture.runtime.CaptureRuntime`, stored as ``app.state.runtime``. Its
lifespan opens the camera (``capture.camera``: auto-detected or configured), tells systemd
READY once the camera is open and feeds the watchdog while the capture loop is alive, runs the
unattended plan (``capture.unattended``), the transfer worker (when ``transfer.host`` is set)
and the alerts. :func:`build_runtime` makes the runtime's parts from the configuration unless
:class:`RuntimeOptions` give them (tests and benches).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypedDict, Unpack

from fastapi import Depends, FastAPI

from skylapse.alerts import Notifier
from skylapse.api.capture import health
from skylapse.api.capture.routes import capture, frames, schedule, sessions, status, ws
from skylapse.api.capture.routes import config as config_routes
from skylapse.api.capture.runtime import CaptureRuntime
from skylapse.api.common import create_service_app
from skylapse.capture.cameras import Camera, CameraConfig, make_camera
from skylapse.capture.clock import Clock, RealClock
from skylapse.capture.service import CaptureService
from skylapse.capture.storage import DiskUsage
from skylapse.capture.watchdog import Watchdog
from skylapse.capture.weather import SkySource, WeatherService
from skylapse.catalog.capture import Catalog
from skylapse.config import SkylapseConfig
from skylapse.config_store import ConfigFile
from skylapse.maintenance import StationSignals
from skylapse.transfer.queue import TransferSettings, TransferWorker
from skylapse.transfer.rsync import SshTarget


class RuntimeOptions(TypedDict, total=False):
    """What replaces the configuration's choices (all optional): ``camera`` (default:
    ``capture.camera``), ``clock`` (the real clock), ``buffer`` (``capture.buffer_dir``),
    ``camera_config`` (``capture.resolution``), ``unattended`` (``capture.unattended``),
    ``watchdog`` (systemd's, from the environment), ``notifiers`` (from ``alerts``),
    ``transfer_worker`` (from ``transfer``), ``disk_usage`` (for the storage manager),
    ``weather`` (the OpenWeatherMap client on the real clock when enabled), ``tick_s`` (the
    status tick, 1 s), ``retry_s`` (the camera retry pause, 30 s), ``stall_after_s`` (how
    long a session may go without a frame; default from the longest interval and exposure) and
    ``signals`` (the maintenance alerts' sources; default: this machine's) and ``config_file``
    (where ``PUT /config`` saves its changes, `skylapse.config_store`; without one they live in
    memory only and the answer's ``saved_to`` is null)."""

    camera: Camera
    clock: Clock
    buffer: str | Path | None
    camera_config: CameraConfig
    unattended: bool
    watchdog: Watchdog
    notifiers: list[Notifier]
    transfer_worker: TransferWorker
    disk_usage: Callable[[Path], DiskUsage]
    weather: SkySource
    tick_s: float
    retry_s: float
    stall_after_s: float
    signals: StationSignals
    config_file: ConfigFile


#: The OpenAPI document's description; the WebSocket's messages are described in `routes.ws`.
DESCRIPTION = f"""\
The station's status, plan, configuration, sessions, frames and live view. Every endpoint but
``/health`` needs ``Authorization: Bearer <token>``; invalid input is a 422 whose entries name
the field. Times are ISO 8601 with an offset.

{ws.__doc__ or ""}"""
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
    runtime = build_runtime(config, **options)
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


def build_runtime(config: SkylapseConfig, **options: Unpack[RuntimeOptions]) -> CaptureRuntime:
    """The runtime for ``config``: its camera, capture service and transfer worker, each from
    the configuration unless ``options`` gives it."""
    clock = options.get("clock") or RealClock()
    buffer = Path(options.get("buffer") or config.capture.buffer_dir).expanduser()
    camera = options.get("camera")
    if camera is None:
        camera = make_camera(config.capture.camera, clock, config.location, seed=0)
    weather = options.get("weather")
    if weather is None and isinstance(clock, RealClock) and config.weather.enabled:
        weather = WeatherService(config.weather, config.location)
    service = CaptureService(
        camera,
        buffer=buffer,
        config=config,
        clock=clock,
        camera_config=options.get(
            "camera_config", CameraConfig(resolution=config.capture.resolution)
        ),
        weather=weather,
        disk_usage=options.get("disk_usage"),
    )
    return CaptureRuntime(
        service,
        config,
        watchdog=options.get("watchdog") or Watchdog(),
        unattended=options.get("unattended", config.capture.unattended),
        transfer_worker=(
            options["transfer_worker"]
            if options.get("transfer_worker") is not None
            else make_transfer_worker(config, service)
        ),
        conditions=health.alert_conditions,
        notifiers=options.get("notifiers"),
        retry_s=options.get("retry_s", 30.0),
        tick_s=options.get("tick_s", 1.0),
        stall_after_s=options.get("stall_after_s"),
        signals=options.get("signals"),
        config_file=options.get("config_file"),
    )


def make_transfer_worker(config: SkylapseConfig, service: CaptureService) -> TransferWorker | None:
    """The transfer worker ``transfer`` describes; None without a host."""
    tc = config.transfer
    if not tc.host:
        return None
    target = SshTarget(
        host=tc.host,
        inbox=tc.inbox,
        user=tc.user,
        port=tc.port,
        key_file=tc.key_file.expanduser() if tc.key_file else None,
        known_hosts=tc.known_hosts.expanduser() if tc.known_hosts else None,
    )
    settings = TransferSettings(
        batch_size=tc.batch_size, bandwidth_limit_kbps=tc.bandwidth_limit_kbps
    )
    # the worker needs the transfer half of the catalog, which a FrameCatalog does not promise
    catalog = service.catalog
    if not isinstance(catalog, Catalog):
        raise TypeError(f"transfer needs a skylapse Catalog, not {type(catalog).__name__}")
    return TransferWorker(catalog, service.buffer, target, tc.station, settings)
