"""Structured JSON logs with correlation ids.

Every log line is one JSON object (structlog) with a timestamp, level, logger name and event.
A correlation id bound with `correlation_id()` is carried by contextvars into every line logged
inside that context, so the lines of one request, and of the jobs and transfers it starts, can be
found together.

No secret reaches a log line through a URL: every line, ours or a library's, has the query
strings of the URLs and paths in it removed (`strip_url_queries`: the OpenWeatherMap key and a
WebSocket's ``?token=`` travel there), and httpx's per-request lines (which would print a
webhook's secret path) and uvicorn's access lines are quieted to warnings.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import IO

import structlog
from structlog.typing import Processor

_configured = False

#: A URL (scheme://...) or an absolute path (group 1), then its query string.
_URL_QUERY = re.compile(
    r"""((?:[A-Za-z][A-Za-z0-9+.-]*://[^\s?#"'<>]+|/[^\s?#"'<>]*))\?[^\s#"'<>]+"""
)
#: Libraries whose INFO lines name each request's URL: only their warnings are kept.
QUIETED_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


def without_queries(text: str) -> str:
    """``text`` with the query string of every URL and path in it removed."""
    return _URL_QUERY.sub(r"\1", text)


def strip_url_queries(
    _logger: object, _method: str, event_dict: MutableMapping[str, object]
) -> Mapping[str, object]:
    """A structlog processor: :func:`without_queries` on every text value of the line."""
    return {k: without_queries(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def configure(
    level: str | int = "INFO", *, json: bool = True, stream: IO[str] | None = None
) -> None:
    """Route structlog and the standard library's logging to one JSON (or console) stream."""
    global _configured
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                strip_url_queries,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger; lines go wherever `configure` routed logging (stderr by default)."""
    return structlog.stdlib.get_logger(name)


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


@contextmanager
def correlation_id(value: str | None = None) -> Iterator[str]:
    """Bind a correlation id (a new one unless given) to every log line in this context."""
    cid = value or new_correlation_id()
    with structlog.contextvars.bound_contextvars(correlation_id=cid):
        yield cid
