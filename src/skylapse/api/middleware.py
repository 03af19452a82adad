"""ASGI middleware and error handlers shared by the Skylapse services.

* :class:`CorrelationIdMiddleware`: every request gets a correlation id (the client's
  ``X-Correlation-ID`` when it is a sane token, else a new one). It is bound to every log line
  written while the request runs (`skylapse.log.correlation_id`), stored in
  ``request.state.correlation_id`` so that jobs started by the request carry it on, echoed in
  the response header, and one access line per request is logged with status and duration.
* :class:`BodySizeLimitMiddleware`: refuses bodies over a limit with 413, by ``Content-Length``
  up front and by counting the bytes of bodies without one (chunked uploads).
* :class:`RateLimit`: a token bucket for expensive endpoints (``POST /jobs``); over the rate
  they answer 429 with ``Retry-After``.
* :func:`install_error_handlers`: invalid input is a 422 whose entries name the field
  (``"field": "options.fps"``); anything unexpected is a JSON 500 with the correlation id,
  logged with its traceback, never an HTML page or a dropped connection.

Both middlewares are plain ASGI (not ``BaseHTTPMiddleware``): no extra task per request, and
context variables set here are seen by the endpoint.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skylapse.log import correlation_id, get_logger, new_correlation_id

log = get_logger("skylapse.api")

CORRELATION_HEADER = "X-Correlation-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_correlation_id(request: Request) -> str | None:
    """The correlation id the middleware gave this request (``None`` outside it)."""
    return getattr(request.state, "correlation_id", None)


class CorrelationIdMiddleware:
    """Binds a correlation id to each request's logs and echoes it in the response."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True):
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope.get("headers", ()):
            if key == b"x-correlation-id":
                incoming = value.decode("latin-1")
                break
        cid = incoming if incoming and _SANE_ID.match(incoming) else new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = cid
        status = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(CORRELATION_HEADER, cid)
                status[0] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        with correlation_id(cid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if self.access_log and scope["type"] == "http":
                    log.info(
                        "request",
                        method=scope["method"],
                        path=scope["path"],
                        status=status[0] or 500,
                        ms=round((time.perf_counter() - t0) * 1000, 2),
                    )


class RateLimit:
    """A token bucket: ``burst`` calls at once, then ``per_minute`` on average.

    Thread-safe (sync endpoints run in a thread pool). :meth:`check` raises the 429.
    """

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limit needs per_minute > 0 and burst >= 1")
        self.rate_s = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Spend one token: 0.0 when there was one, else the seconds until there is."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_s)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate_s

    def check(self, what: str) -> None:
        """Spend a token or raise 429 Too Many Requests with ``Retry-After`` (seconds)."""
        wait = self.take()
        if wait:
            raise HTTPException(
                429,
                detail=f"too many {what}: at most {self.burst} at once and "
                f"{self.rate_s * 60:g} a minute; retry in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )


class RequestTooLarge(HTTPException):
    """A request body over the limit (an HTTPException so FastAPI's body reader passes it on)."""

    def __init__(self, limit: int):
        super().__init__(413, detail=f"request body larger than {limit} bytes")


class BodySizeLimitMiddleware:
    """Refuses request bodies larger than ``max_bytes`` with 413 Content Too Large."""

    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(send)
                    return
                break
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except RequestTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads
    return {"type": "http.disconnect"}


def _field_name(loc: tuple[object, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or str(loc[0] if loc else "")


def validation_details(errors: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """Pydantic/FastAPI errors as JSON-safe entries that name the field."""
    out: list[dict[str, object]] = []
    for err in errors:
        given = err.get("loc", ())
        loc = tuple(given) if isinstance(given, list | tuple) else ()
        out.append(
            {
                "field": _field_name(loc),
                "loc": [p if isinstance(p, int) else str(p) for p in loc],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def install_error_handlers(app: FastAPI) -> None:
    """422 with field names for invalid input; a JSON 500 (logged) for anything unexpected."""

    @app.exception_handler(RequestValidationError)
    async def _invalid_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(list(exc.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        cid = request_correlation_id(request)
        log.error("unhandled error", path=request.url.path, error=repr(exc), exc_info=exc)
        return JSONResponse(
            {"detail": "internal error", "correlation_id": cid},
            status_code=500,
            headers={CORRELATION_HEADER: cid} if cid else None,
        )
