"""The parts every Skylapse service API shares, and the factory that assembles them.

:func:`create_service_app` returns a FastAPI app that already has:

* correlation ids and an access log line per request, a bound on request bodies, CORS only
  when origins are configured (off by default), JSON error handlers (422 naming the field);
* ``GET /health`` (the only endpoint without a token): a :class:`HealthReport` built from the
  service's named checks, 200 while nothing fails, 503 when something does; no absolute path
  of this machine shows in it (:func:`hide_paths`: a path becomes ``…/`` and its last part);
* ``GET /metrics`` (token): the service's :class:`~skylapse.metrics.ServiceMetrics` in
  Prometheus' text format;
* ``GET /openapi.json`` and ``GET /docs`` (token, unless ``public_docs``);
* the dashboard hook: when the folder ``skylapse/web/static`` exists, ``/`` serves its
  ``index.html`` and ``/static/...`` its files, without a token (they are the page's code,
  not data; the page asks for the token and sends it with its API calls).

``app.state.require_token`` is the bearer-token dependency for the service's own routes, e.g.
``APIRouter(dependencies=[Depends(app.state.require_token)])``; ``app.state.token`` is the
token itself (for :func:`skylapse.api.auth.authenticate_websocket`);
``app.state.require_media_token`` also accepts ``?token=``, for GET endpoints that serve files
to ``<video>``/``<img>`` elements (see :func:`skylapse.api.auth.media_auth`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, params
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import Lifespan

import skylapse
from skylapse.api.auth import bearer_auth, media_auth
from skylapse.api.middleware import (
    BodySizeLimitMiddleware,
    CorrelationIdMiddleware,
    install_error_handlers,
)
from skylapse.metrics import EXPOSITION_CONTENT_TYPE, ServiceMetrics

HealthStatus = Literal["ok", "degraded", "failing"]
_SEVERITY = {"ok": 0, "degraded": 1, "failing": 2}

#: Where the dashboard's static files live when someone has built them.
DASHBOARD_DIR = Path(skylapse.__file__).parent / "web" / "static"

DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: What a configured cross-origin dashboard may send: every method the services' APIs have
#: (capture's ``PUT /config`` and ``DELETE /sessions/{id}`` included).
CORS_METHODS = ("GET", "POST", "PUT", "DELETE")


class Check(BaseModel):
    """One part of a service's health."""

    status: HealthStatus
    detail: str


class HealthReport(BaseModel):
    """``GET /health``: the worst check decides the overall status."""

    service: str
    status: HealthStatus
    version: str
    uptime_s: float = Field(description="seconds since this process started")
    checks: dict[str, Check]


#: An absolute path (not part of a URL, a ratio such as 1/30, or a relative path): its last part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"/:]+/)*([^\s'\"/:]*)")


def invalid(
    field: str, message: str, *, source: Literal["body", "query", "path"] = "body"
) -> HTTPException:
    """A 422 shaped like FastAPI's validation errors (one entry naming ``field``, dotted for a
    nested one: ``"capture.resolution"``), for checks a request model cannot make alone (they
    need the catalog or the running configuration)."""
    return HTTPException(
        422,
        detail=[
            {
                "field": field,
                "loc": [source, *field.split(".")],
                "msg": message,
                "type": "value_error",
            }
        ],
    )


def hide_paths(text: str) -> str:
    """``text`` with each absolute path cut to ``…/`` and its last part (for unauthenticated
    answers: the layout of the machine is nobody's business)."""
    return _ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}", text)


def worst(statuses: Sequence[HealthStatus]) -> HealthStatus:
    """The most severe of some statuses (``ok`` for none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default="ok")


def run_checks(checks: Mapping[str, Callable[[], Check]]) -> dict[str, Check]:
    """Run each named check; one that raises counts as failing with the error as detail."""
    results = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as exc:
            results[name] = Check(status="failing", detail=f"{type(exc).__name__}: {exc}")
    return results


def disk_check(path: Path, warn_pct: float = 90.0, fail_pct: float = 97.0) -> Check:
    """Disk use of the file system holding ``path``: degraded above ``warn_pct``."""
    usage = shutil.disk_usage(path)
    pct = 100.0 * usage.used / usage.total if usage.total else 100.0
    status: HealthStatus = "failing" if pct >= fail_pct else "degraded" if pct >= warn_pct else "ok"
    free_gb = usage.free / 1e9
    return Check(status=status, detail=f"{pct:.1f} % used, {free_gb:.1f} GB free")


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    token: str,
    metrics: ServiceMetrics,
    health_checks: Mapping[str, Callable[[], Check]],
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    public_docs: bool = False,
    lifespan: Lifespan[FastAPI] | None = None,
    dashboard_dir: Path | None = DASHBOARD_DIR,
) -> FastAPI:
    """A FastAPI app with the shared middleware, ``/health``, ``/metrics``, docs and hooks."""
    if not token:
        raise ValueError("an API token is required")
    started = time.monotonic()
    app = FastAPI(
        title=title,
        description=description,
        version=skylapse.__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    require_token = bearer_auth(token)
    app.state.require_token = require_token
    app.state.require_media_token = media_auth(token)
    app.state.token = token
    app.state.metrics = metrics
    _add_middleware(app, cors_origins, max_body_bytes)
    install_error_handlers(app)
    _add_health_route(app, service, health_checks, started)
    token_required = [Depends(require_token)]
    _add_metrics_route(app, metrics, token_required)
    _add_docs_routes(app, title, [] if public_docs else token_required)
    if dashboard_dir is not None:
        mount_dashboard(app, dashboard_dir)
    return app


def _add_middleware(app: FastAPI, cors_origins: Sequence[str], max_body_bytes: int) -> None:
    """CORS when origins are configured, the body-size bound, and correlation ids."""
    # Added last = outermost: the correlation id also covers 413s and CORS preflights.
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=["Authorization", "Content-Type", "X-Correlation-ID", "Range"],
            expose_headers=["X-Correlation-ID", "Content-Range", "Accept-Ranges"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(CorrelationIdMiddleware)


def _health_report(
    service: str, checks: Mapping[str, Callable[[], Check]], started: float
) -> HealthReport:
    """Run the service's named checks into a report, absolute paths hidden (see
    :func:`hide_paths`); ``started`` is the service's start on the ``time.monotonic`` clock."""
    results = {
        name: check.model_copy(update={"detail": hide_paths(check.detail)})
        for name, check in run_checks(checks).items()
    }
    return HealthReport(
        service=service,
        status=worst([c.status for c in results.values()]),
        version=skylapse.__version__,
        uptime_s=round(time.monotonic() - started, 3),
        checks=results,
    )


def _add_health_route(
    app: FastAPI, service: str, checks: Mapping[str, Callable[[], Check]], started: float
) -> None:
    """``GET /health``, without a token: 200 while no check fails, 503 when one does."""

    @app.get(
        "/health",
        response_model=HealthReport,
        tags=["service"],
        summary="Service health (no token needed)",
        responses={503: {"model": HealthReport, "description": "a check is failing"}},
    )
    def health() -> JSONResponse:
        report = _health_report(service, checks, started)
        code = 503 if report.status == "failing" else 200
        return JSONResponse(report.model_dump(), status_code=code)


def _add_metrics_route(
    app: FastAPI, metrics: ServiceMetrics, dependencies: Sequence[params.Depends]
) -> None:
    """``GET /metrics``, behind ``dependencies`` (the token): the service's metrics in
    Prometheus' text format."""

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics",
        dependencies=dependencies,
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=EXPOSITION_CONTENT_TYPE)


def _add_docs_routes(app: FastAPI, title: str, dependencies: Sequence[params.Depends]) -> None:
    """``GET /openapi.json`` and the Swagger UI at ``GET /docs``, behind ``dependencies``."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=dependencies)
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=dependencies)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - docs")


def mount_dashboard(app: FastAPI, folder: Path) -> bool:
    """Serve ``folder`` at ``/static`` and its ``index.html`` at ``/`` when the folder exists."""
    if not folder.is_dir():
        return False
    app.mount("/static", StaticFiles(directory=folder), name="static")
    index = folder / "index.html"
    if index.is_file():

        @app.get("/", include_in_schema=False)
        def dashboard() -> FileResponse:
            return FileResponse(index, media_type="text/html")

    return True
