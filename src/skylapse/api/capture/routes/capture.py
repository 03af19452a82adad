"""``POST /capture``: a frame (or the strategy's bracket set) now."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from skylapse.api.capture.models import CaptureRequest, CaptureResult, Frame
from skylapse.api.capture.runtime import Runtime
from skylapse.capture.cameras import CameraError
from skylapse.capture.service import FrameNotStored, SessionError

router = APIRouter(tags=["frames"])


@router.post(
    "/capture",
    response_model=CaptureResult,
    responses={
        409: {"description": "the camera cannot bracket"},
        500: {"description": "a frame was taken but could not be stored"},
        503: {"description": "the camera failed"},
    },
)
async def post_capture(runtime: Runtime, body: CaptureRequest | None = None) -> CaptureResult:
    """Take a frame (or the strategy's bracket set) now; the running session's folder, or
    the day's ``manual`` session."""
    body = body or CaptureRequest()
    if not runtime.camera_open:
        raise HTTPException(503, detail=runtime.camera_problem() or "the camera is opening")
    try:
        records = await runtime.service.capture_now(bracket=body.bracket)
    except SessionError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    except CameraError as exc:
        runtime.camera_failed(exc)
        raise HTTPException(503, detail=f"camera: {exc}") from None
    except FrameNotStored as exc:  # counted by the writer (metrics); alert at once
        await runtime.frames_not_stored()
        raise HTTPException(500, detail=str(exc)) from None
    return CaptureResult(frames=[Frame.from_record(r) for r in records])
