"""A WebSocket hub: broadcast JSON events to every connected, authenticated client.

Each client has a bounded queue; a client too slow to keep up loses its oldest events rather
than slowing the others or growing memory without bound (the events are state updates, so the
newest matter most). Events can be published from the event loop (:meth:`publish`) or from
any thread (:meth:`publish_threadsafe`), e.g. a job's progress callback in a worker thread.

Clients may send ``{"type": "ping"}`` and get ``{"type": "pong"}`` back; other messages are
ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from collections.abc import Iterable, Mapping
from typing import Final

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from skylapse.log import get_logger

log = get_logger(__name__)

Event = Mapping[str, object]  # one JSON object


class _Close(enum.Enum):
    CLOSE = enum.auto()


_CLOSE: Final = _Close.CLOSE  # tells a client's sender to close
_Queue = asyncio.Queue[Event | _Close]


class WebSocketHub:
    """Fan-out of JSON events to connected WebSocket clients."""

    def __init__(self, queue_size: int = 256):
        self.queue_size = queue_size
        self._clients: set[_Queue] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Remember the event loop that :meth:`publish_threadsafe` hands events to."""
        self._loop = loop or asyncio.get_running_loop()

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every client (call on the event loop)."""
        for queue in list(self._clients):
            _put_dropping_oldest(queue, event)

    def publish_threadsafe(self, event: Event) -> None:
        """Queue ``event`` from any thread (a no-op before the loop is bound)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.publish, event)

    def close_all(self) -> None:
        """Ask every client's connection to close (on shutdown)."""
        for queue in list(self._clients):
            _put_dropping_oldest(queue, _CLOSE)

    async def serve(self, websocket: WebSocket, initial: Iterable[Event] = ()) -> None:
        """Stream events to an accepted, authenticated WebSocket until either side closes."""
        if self._loop is None:
            self.bind_loop()
        queue: _Queue = asyncio.Queue(self.queue_size)
        for event in initial:
            _put_dropping_oldest(queue, event)
        self._clients.add(queue)
        sender = asyncio.create_task(self._send_loop(websocket, queue))
        receiver = asyncio.create_task(self._receive_loop(websocket, queue))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._clients.discard(queue)
            for task in (sender, receiver):
                task.cancel()
            for task in (sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(code=1001)

    async def _send_loop(self, websocket: WebSocket, queue: _Queue) -> None:
        while True:
            event = await queue.get()
            if event is _CLOSE:
                return
            await websocket.send_text(json.dumps(event, default=str))

    async def _receive_loop(self, websocket: WebSocket, queue: _Queue) -> None:
        while True:
            try:
                text = await websocket.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            except KeyError:  # a binary frame
                continue
            try:
                message = json.loads(text)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("type") == "ping":
                _put_dropping_oldest(queue, {"type": "pong"})


def _put_dropping_oldest(queue: _Queue, item: Event | _Close) -> None:
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
