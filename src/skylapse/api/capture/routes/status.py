"""``GET /status``: what the station is doing now."""

from __future__ import annotations

from fastapi import APIRouter

from skylapse.api.capture.models import Status
from skylapse.api.capture.runtime import Runtime

router = APIRouter(tags=["station"])


@router.get("/status", response_model=Status)
def get_status(runtime: Runtime) -> Status:
    """What the station is doing now: the session, the camera, the plan's phase, the writer,
    storage, transfers and open alerts."""
    return runtime.status()
