"""``/frames``: the frames in the buffer, paged, one by one and as JPEG.

``since``/``until`` are ISO 8601; without an offset they are taken as UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from skylapse.api.capture.images import IMAGE_SIZES, buffer_file, resized_jpeg
from skylapse.api.capture.models import MAX_DB_INT, Frame, FrameId, FramePage
from skylapse.api.capture.runtime import Runtime, log

router = APIRouter(tags=["frames"])


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


@router.get("/frames", response_model=FramePage)
def list_frames(
    runtime: Runtime,
    since: Annotated[dt.datetime | None, Query(description="captured at or after")] = None,
    until: Annotated[dt.datetime | None, Query(description="captured before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> FramePage:
    """Frames still in the buffer, oldest first, paged."""
    try:
        records = runtime.service.catalog.frames(
            since=_utc(since), until=_utc(until), limit=limit, offset=offset
        )
    except OverflowError:
        records = []
    return FramePage(
        frames=[Frame.from_record(r) for r in records],
        limit=limit,
        offset=offset,
        next_offset=offset + len(records) if len(records) == limit else None,
    )


@router.get(
    "/frames/{frame_id}", response_model=Frame, responses={404: {"description": "no such frame"}}
)
def get_frame(runtime: Runtime, frame_id: FrameId) -> Frame:
    """A frame's catalog record."""
    record = runtime.service.catalog.get_frame(frame_id)
    if record is None:
        raise HTTPException(404, detail=f"no frame {frame_id}")
    return Frame.from_record(record)


@router.get(
    "/frames/{frame_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}},
        404: {"description": "no such frame, or no longer in the buffer"},
    },
)
def get_frame_image(
    runtime: Runtime,
    frame_id: FrameId,
    size: Annotated[
        str,
        Query(
            pattern=r"^(thumb|preview|full|[1-9][0-9]{1,3})$",
            description="thumb (320 px), preview (960 px), full (as stored) or a width 10..9999 px",
        ),
    ] = "preview",
) -> Response:
    """A frame as JPEG, reduced on the fly; only files inside the buffer are served."""
    service = runtime.service
    record = service.catalog.get_frame(frame_id)
    path = buffer_file(service.buffer, record.path) if record is not None else None
    if record is None or record.deleted_at is not None or path is None:
        raise HTTPException(404, detail=f"no image for frame {frame_id}")
    width = IMAGE_SIZES[size] if size in IMAGE_SIZES else int(size)
    if width is None:
        return FileResponse(path, media_type="image/jpeg")
    try:
        data = resized_jpeg(path, width)
    except (ValueError, OSError) as exc:  # the message names the file: logged, not answered
        log.warning("frame image unreadable", frame=frame_id, error=str(exc))
        raise HTTPException(404, detail=f"image of frame {frame_id} unreadable") from None
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )
