"""The processing service's API: sequences, render jobs, finished timelapses, live progress.

``create_processing_app(settings)`` builds the app on the shared layer (`skylapse.api.common`):

=========================================  ====================================================
``GET  /health``                            queue, disk, catalog, workers and ingest (no token)
``GET  /metrics``                           Prometheus text format
``GET  /sequences``                         ingested sequences, to choose what to render
``GET  /jobs``                              jobs, newest first (``?state=``, ``?limit=``)
``GET  /jobs/{id}``                         one job
``POST /jobs``                              queue a render of a sequence (202; 429 when too many)
``POST /jobs/{id}/cancel``                  cancel a queued or running job
``POST /jobs/{id}/retry``                   queue a failed or cancelled job again
``GET  /timelapses``                        finished renders and their files, with URLs
``GET  /timelapses/{job_id}/{file}``        one file, with HTTP range requests (206)
``WS   /ws``                                job events (see below)
=========================================  ====================================================

``POST /jobs`` takes renders up to 8K UHD (``MAX_RENDER_PIXELS``, no side over
``MAX_RENDER_SIDE``) and at most ``job_burst`` at once and ``jobs_per_minute`` on average;
beyond that it answers 429 with ``Retry-After``.

Every endpoint but ``/health`` needs ``Authorization: Bearer <token>`` (the file endpoint
also takes ``?token=``, for ``<video>`` and ``<img>`` elements). The WebSocket takes the
token as that header, as ``?token=``, or as a first message ``{"token": "..."}``; a refused
socket is closed with code 4401. It then receives JSON events:

* ``{"type": "snapshot", "jobs": [...]}`` once, the recent jobs;
* ``{"type": "job", "job": {...}}`` whenever a job's state, progress, attempts or error changes
  in the catalog (polled every ``job_poll_s``, so jobs run by `skylapse worker` processes on
  this or other machines are seen too);
* ``{"type": "progress", "job_id": ..., "progress": 0.42}`` at once from this process's own
  workers (the render reports at most every half second);
* ``{"type": "alert", "alert": {...}}`` when an alert episode opens or closes (a job failing
  repeatedly, the queue deeper than ``alerts.processing_queue_max``; see `skylapse.alerts`);
* ``{"type": "pong"}`` in answer to ``{"type": "ping"}``.

With ``workers > 0`` the app runs a huey consumer with that many threads; with
``ingest_every_s`` set it scans the inbox in a background thread and queues a render for every
sequence whose frames stopped coming ``render_after_min`` minutes ago. So one process can be the
whole processing service, or only its API in front of separate worker processes.

Timelapse files are served only by name from a finished render job's own outputs, from its
folder in ``DATA/timelapses`` or the archive (``DATA/archive`` or ``$SKYLAPSE_ARCHIVE_DIR``),
and the resolved path must stay inside that store: no path from the request reaches the file
system.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from skylapse.api.common import create_service_app
from skylapse.api.processing.health import health_checks
from skylapse.api.processing.models import refusal
from skylapse.api.processing.routes import jobs, media, sequences, timelapses, ws
from skylapse.api.processing.runtime import ProcessingRuntime
from skylapse.api.processing.settings import ProcessingSettings

__all__ = ["ProcessingSettings", "create_processing_app"]


def create_processing_app(settings: ProcessingSettings) -> FastAPI:
    """The processing service's FastAPI app (see the module docstring for its endpoints); its
    state is a `ProcessingRuntime` at ``app.state.runtime``."""
    runtime = ProcessingRuntime(settings)
    app = create_service_app(
        service="processing",
        title="Skylapse processing service",
        description=__doc__ or "",
        token=settings.token,
        metrics=runtime.metrics,
        health_checks=health_checks(runtime),
        cors_origins=settings.api.cors_origins,
        max_body_bytes=settings.api.max_body_kb * 1024,
        public_docs=settings.api.public_docs,
        lifespan=runtime.lifespan,
    )
    app.state.runtime = runtime
    unauthorized: dict[int | str, dict[str, object]] = {401: refusal("missing or invalid token")}
    token = [Depends(app.state.require_token)]
    for resource in (sequences, jobs, timelapses):
        app.include_router(resource.router, dependencies=token, responses=unauthorized)
    media_token = [Depends(app.state.require_media_token)]
    app.include_router(media.router, dependencies=media_token, responses=unauthorized)
    app.include_router(ws.router)
    return app
