"""``GET /sequences``: what has been ingested, to choose what to render."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from skylapse.api.processing.models import SequenceOut
from skylapse.api.processing.runtime import Runtime

router = APIRouter(tags=["sequences"])


@router.get("/sequences", response_model=list[SequenceOut])
def list_sequences(
    runtime: Runtime,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[SequenceOut]:
    """Ingested sequences (one per station, camera and capture session), newest last."""
    return [SequenceOut.from_row(s) for s in runtime.jobs.catalog.sequences()[-limit:]]
