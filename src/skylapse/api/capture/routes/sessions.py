"""``/sessions``: the catalog's sessions; start one now, stop the running one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from skylapse.api.capture.models import (
    SessionId,
    SessionRequest,
    SessionRow,
    SessionStarted,
    SessionSummary,
)
from skylapse.api.capture.runtime import Runtime
from skylapse.capture.service import SessionError, SessionSpec

router = APIRouter(tags=["sessions"])


@router.get("/sessions", response_model=list[SessionRow])
def list_sessions(
    runtime: Runtime, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[SessionRow]:
    """Capture sessions in the catalog, newest last."""
    rows = runtime.service.catalog.sessions()[-limit:]
    return [SessionRow.model_validate(row.to_json()) for row in rows]


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionStarted,
    responses={
        409: {"description": "a session is already running"},
        503: {"description": "the camera is not open"},
    },
)
async def start_session(runtime: Runtime, body: SessionRequest | None = None) -> SessionStarted:
    """Start a session now (beside the plan: the plan waits while it runs)."""
    body = body or SessionRequest()
    if not runtime.camera_open:
        raise HTTPException(503, detail=runtime.camera_problem() or "the camera is opening")
    spec = SessionSpec(
        session_id=body.session_id,
        interval_s=body.interval_s,
        duration_s=body.duration_s,
        max_frames=body.max_frames,
        hdr=body.hdr,
    )
    try:
        sid = await runtime.service.start_session(spec)
    except SessionError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    runtime.manual_interval_s = body.interval_s
    return SessionStarted(session_id=sid, status=runtime.status())


@router.delete(
    "/sessions/{session_id}",
    response_model=SessionSummary,
    responses={404: {"description": "no such running session"}},
)
async def stop_session(runtime: Runtime, session_id: SessionId) -> SessionSummary:
    """Stop the running session at its next deadline; its summary."""
    try:
        summary = await runtime.service.stop_session(session_id)
    except SessionError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    return SessionSummary.model_validate(summary.to_json())
