"""`skylapse serve capture|processing`: run a service's API with uvicorn.

Settings come from, in order of precedence: the command line, the environment
(``SKYLAPSE_API_TOKEN``, ``SKYLAPSE_DATA_DIR``, ``SKYLAPSE_QUEUE_URL``), the config file's ``api``
and ``processing`` sections, and the built-in defaults (loopback, CORS off, 64 KB bodies).
Without a token the service does not start. ``PUT /config`` changes are saved to the override
file beside ``--config`` (``<stem>.override.yaml``), or without ``--config`` to
``<data>/skylapse.override.yaml``, and merged over the configuration at start
(`skylapse.config_store`).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skylapse import log
from skylapse.api.auth import MissingTokenError, resolve_token
from skylapse.api.server import ConnectionLimits, run_server
from skylapse.capture.cameras import CameraError
from skylapse.cli.common import fail
from skylapse.config import DATA_DIR_ENV, ConfigError, SkylapseConfig, load_config, reveal
from skylapse.config_store import ConfigFile

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVICES = ("capture", "processing")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _data_folder(service: str, data: Path | None, cfg: SkylapseConfig) -> Path:
    """The service's data folder: ``--data``, else (processing) ``$SKYLAPSE_DATA_DIR``, then
    ``processing.data_dir`` or ``./skylapse-data``; (capture) ``capture.buffer_dir``."""
    if data is not None:
        return data.expanduser()
    if service == "capture":
        return cfg.capture.buffer_dir.expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return (cfg.processing.data_dir or Path("skylapse-data")).expanduser()


def serve(
    service: Annotated[str, typer.Argument(help="capture or processing.")],
    host: Annotated[
        str | None, typer.Option(help="Listen address (default api.host: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port (default api.capture_port 8080 / api.processing_port 8081).",
            min=1,
            max=65535,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Processing: data folder (default $SKYLAPSE_DATA_DIR, "
            "processing.data_dir, or ./skylapse-data). Capture: the frame buffer "
            "(default capture.buffer_dir).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processing job threads in this process (default processing.workers, "
            "1); 0 = API only, `skylapse worker` processes run the jobs.",
            min=0,
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Skylapse YAML config file.")
    ] = None,
) -> None:
    """Serve a service's REST API, metrics and WebSocket (the processing service also ingests
    and runs jobs)."""
    if service not in SERVICES:
        raise typer.BadParameter(
            f"{service!r} is not one of {', '.join(SERVICES)}", param_hint="SERVICE"
        )
    try:
        cfg = load_config(config)  # with the override beside it, when there is one
        data_dir = _data_folder(service, data, cfg)
        config_file = ConfigFile.for_service(config, data_dir)
        if config is None:  # the packaged defaults: the override is in the data folder
            cfg = config_file.load()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        token = resolve_token(reveal(cfg.api.token))
    except MissingTokenError as exc:
        raise fail(str(exc)) from None
    host = host or cfg.api.host
    log.configure()
    if not _is_loopback(host):
        log.get_logger("skylapse.api").warning("listening beyond this machine", host=host)
    if service == "processing":
        app = _processing_app(cfg, token, data_dir, workers)
        port = port or cfg.api.processing_port
    else:
        from skylapse.api.capture.app import create_capture_app

        try:
            app = create_capture_app(cfg, token, buffer=data_dir, config_file=config_file)
        except (CameraError, OSError, ValueError) as exc:
            raise fail(str(exc)) from None
        port = port or cfg.api.capture_port
    limits = ConnectionLimits(
        header_timeout_s=cfg.api.header_timeout_s, max_connections=cfg.api.max_connections
    )
    run_server(app, host, port, limits)


def _processing_app(
    cfg: SkylapseConfig, token: str, data_dir: Path, workers: int | None
) -> FastAPI:
    """The processing service's app from the configuration, its data folder and the flags."""
    from skylapse.api.processing.app import create_processing_app
    from skylapse.api.processing.settings import ProcessingSettings
    from skylapse.processing.ingest import align_pillow_pixel_limit

    settings = ProcessingSettings.from_config(cfg, token, data_dir, workers)
    align_pillow_pixel_limit(cfg.processing.max_frame_pixels)
    try:
        return create_processing_app(settings)
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
