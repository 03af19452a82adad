"""``WS /ws``: live job events (the event types are listed in `skylapse.api.processing.app`).

The socket takes its token itself (`skylapse.api.auth.authenticate_websocket`: a header,
``?token=`` or a first message); a new client first gets a snapshot of the recent jobs.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket

from skylapse.api.auth import authenticate_websocket
from skylapse.api.processing.models import JobOut
from skylapse.api.processing.runtime import Runtime

router = APIRouter()


@router.websocket("/ws")
async def job_events(websocket: WebSocket, runtime: Runtime) -> None:
    if not await authenticate_websocket(websocket, runtime.settings.token):
        return
    recent = await asyncio.to_thread(runtime.jobs.catalog.jobs, None, 50)
    snapshot = [JobOut.from_row(j).model_dump() for j in recent]
    await runtime.hub.serve(websocket, [{"type": "snapshot", "jobs": snapshot}])
