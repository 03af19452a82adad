"""Bearer-token authentication for the HTTP endpoints and the WebSocket.

One shared secret per service, from ``$SKYLAPSE_API_TOKEN`` or the config file's
``api.token``. It is compared in constant time (`hmac.compare_digest`), so response timing
says nothing about how much of a guess was right. A wrong or missing token is a 401 with
``WWW-Authenticate: Bearer``.

WebSocket clients cannot always set headers (browsers cannot), so :func:`authenticate_websocket`
accepts, in this order: an ``Authorization: Bearer`` header, a ``?token=`` query parameter, or a
first text message ``{"token": "..."}`` sent within a few seconds of connecting. A refused
WebSocket is closed with code 4401.

Media elements (``<video>``, ``<img>``) cannot send headers either, so :func:`media_auth` lets the
GET endpoints that serve files (and only those) take the token as ``?token=`` instead. The
access log records the path without the query string, so the token does not end up in logs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Callable

from fastapi import Depends, HTTPException, Query, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.websockets import WebSocketDisconnect

from skylapse.config import MIN_TOKEN_LENGTH

TOKEN_ENV = "SKYLAPSE_API_TOKEN"
#: WebSocket close code for a refused token (4000-4999 are the application's; 401 mirrored).
WS_UNAUTHORIZED = 4401


class MissingTokenError(ValueError):
    """No API token, or one too short: the services refuse to start without a good one."""


def resolve_token(config_token: str | None) -> str:
    """The API token: ``$SKYLAPSE_API_TOKEN`` first, then the config file's ``api.token``.

    Either must be at least :data:`~skylapse.config.MIN_TOKEN_LENGTH` characters (the same rule
    for both), after stripping surrounding blanks.
    """
    from_env = (os.environ.get(TOKEN_ENV) or "").strip()
    token = from_env or (config_token or "").strip()
    if not token:
        raise MissingTokenError(f"no API token: set ${TOKEN_ENV} or api.token in the config file")
    if len(token) < MIN_TOKEN_LENGTH:
        source = f"${TOKEN_ENV}" if from_env else "api.token"
        raise MissingTokenError(
            f"{source}: the API token must be at least {MIN_TOKEN_LENGTH} characters"
        )
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


_bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description=f"The service's API token (${TOKEN_ENV} or api.token in the config file).",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer_auth(token: str) -> Callable[[Request, HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency that requires ``Authorization: Bearer <token>``.

    Use as ``dependencies=[Depends(bearer_auth(token))]`` on a router or route; the OpenAPI
    document then declares the bearer security scheme for those operations.
    """

    def require_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer_scheme),  # noqa: B008
    ) -> None:
        if credentials is None:
            raise _unauthorized("missing bearer token")
        if credentials.scheme.lower() != "bearer" or not token_matches(
            token, credentials.credentials
        ):
            raise _unauthorized("invalid bearer token")
        request.state.authenticated = True

    return require_token


def media_auth(
    token: str,
) -> Callable[[Request, HTTPAuthorizationCredentials | None, str | None], None]:
    """A FastAPI dependency for GET endpoints that serve files to media elements: like
    :func:`bearer_auth`, but without an ``Authorization`` header it takes ``?token=``.

    A header, when present, decides alone (a wrong header is refused whatever the query says).
    Use it only on read-only file endpoints: a token in a URL can be copied along with it.
    """

    def require_token_or_query(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer_scheme),  # noqa: B008
        query_token: str | None = Query(
            None,
            alias="token",
            max_length=1024,
            description="the API token, for media elements that cannot send a header",
        ),
    ) -> None:
        if "authorization" in request.headers:  # any scheme: a non-bearer one is refused
            ok = credentials is not None and token_matches(token, credentials.credentials)
        elif query_token is not None:
            ok = token_matches(token, query_token)
        else:
            raise _unauthorized("missing bearer token")
        if not ok:
            raise _unauthorized("invalid token")
        request.state.authenticated = True

    return require_token_or_query


async def authenticate_websocket(
    websocket: WebSocket, token: str, *, first_message_timeout_s: float = 5.0
) -> bool:
    """Accept the WebSocket and check its token; on failure close it with 4401.

    Returns whether the client is authenticated (the socket is accepted either way).
    """
    header = websocket.headers.get("authorization", "")
    presented: str | None = None
    if header.lower().startswith("bearer "):
        presented = header[7:].strip()
    elif "token" in websocket.query_params:
        presented = websocket.query_params["token"]
    await websocket.accept()
    if presented is None:
        try:
            text = await asyncio.wait_for(websocket.receive_text(), first_message_timeout_s)
            message = json.loads(text)
            presented = message.get("token") if isinstance(message, dict) else None
            if not isinstance(presented, str):
                presented = None
        except WebSocketDisconnect:
            return False
        except (TimeoutError, ValueError, KeyError, RuntimeError):
            presented = None
    if not token_matches(token, presented):
        await websocket.close(code=WS_UNAUTHORIZED, reason="invalid or missing token")
        return False
    return True
