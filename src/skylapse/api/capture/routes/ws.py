"""``WS /ws``: live status, previews and events.

The token comes as the ``Authorization`` header, ``?token=`` or a first message
``{"token": "..."}`` (refused: closed with 4401). Messages are JSON text, each with a
``type``:

* ``status``: ``{"status": Status}`` on connecting and then every second;
* ``preview``: a ``PreviewMessage`` on connecting (once a
  frame exists) and then about once a second: the newest frame, at most 640 px wide;
* ``frame``: ``{"session_id", "record": Frame}`` for every frame written;
* ``session_started``: ``{"session_id"}``; ``session_stopped``: ``{"session":
  SessionSummary}``; ``skipped``: ``{"session_id", "count"}`` (deadlines missed);
* ``alert``: ``{"alert": {"alert", "state": "firing" | "resolved", "severity", "component",
  "title", "detail", "episode", "opened_at", "resolved_at", ...}}``
  (`skylapse.alerts.AlertEvent.to_json`);
* ``pong`` in answer to ``{"type": "ping"}``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket

from skylapse.api.auth import authenticate_websocket
from skylapse.api.capture.runtime import Runtime
from skylapse.api.ws import Event

router = APIRouter()


@router.websocket("/ws")
async def live(websocket: WebSocket, runtime: Runtime) -> None:
    if not await authenticate_websocket(websocket, websocket.app.state.token):
        return
    status = await asyncio.to_thread(runtime.status)
    initial: list[Event] = [{"type": "status", "status": status.model_dump(mode="json")}]
    preview = await runtime.preview()
    if preview is not None:
        initial.append(preview.model_dump(mode="json"))
    await runtime.hub.serve(websocket, initial)
