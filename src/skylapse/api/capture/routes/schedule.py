"""``GET /schedule``: the day's plan, its windows and the phase now."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from skylapse.api.capture.models import PlanPhase, Schedule, ScheduleWindow, SunTimes
from skylapse.api.capture.runtime import Runtime, iso
from skylapse.api.common import invalid
from skylapse.capture.plan import PlanRow, day_plan
from skylapse.capture.windows import day_windows

router = APIRouter(tags=["station"])

#: Days the sun's position is computed for.
_FIRST_DAY, _LAST_DAY = dt.date(1900, 1, 1), dt.date(2200, 12, 31)


@router.get("/schedule", response_model=Schedule)
def get_schedule(
    runtime: Runtime,
    date: Annotated[dt.date | None, Query(description="YYYY-MM-DD; default today")] = None,
) -> Schedule:
    """The day's plan (phases with intervals and strategies), its windows, the phase now; the
    day is the station's (``location.timezone``)."""
    cfg = runtime.config
    loc = cfg.location
    now, elev, choice = runtime.now_choice()
    day = date or now.astimezone(ZoneInfo(loc.timezone)).date()
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise invalid("date", "date must be within 1900..2200", source="query")
    plan = day_plan(loc, day, cfg)
    return Schedule(
        date=day.isoformat(),
        timezone=loc.timezone,
        location=loc,
        now=now.isoformat(timespec="microseconds"),
        sun_elevation_deg=round(elev, 3),
        phase=choice.phase,
        strategy=choice.strategy_name,
        interval_s=choice.interval_s,
        total_frames=plan.total_frames,
        phases=[_phase(r) for r in plan.rows],
        windows=[
            ScheduleWindow(
                session_id=w.session_id,
                name=w.name,
                start=w.start.isoformat(timespec="microseconds"),
                end=w.end.isoformat(timespec="microseconds"),
                open=w.contains(now),
            )
            for w in day_windows(loc, day, cfg)
        ],
        sun=SunTimes.model_validate(
            {name: iso(getattr(plan.events, name)) for name in SunTimes.model_fields}
        ),
    )


def _phase(r: PlanRow) -> PlanPhase:
    return PlanPhase(
        start=r.start.isoformat(timespec="microseconds"),
        end=r.end.isoformat(timespec="microseconds"),
        phase=r.phase,
        min_elevation_deg=round(r.min_elevation_deg, 3),
        max_elevation_deg=round(r.max_elevation_deg, 3),
        interval_s=r.interval_s,
        strategy=r.strategy,
        hdr=r.hdr,
        white_balance=r.white_balance,
        ev100_min=round(r.ev100_min, 2) if math.isfinite(r.ev100_min) else None,
        ev100_max=round(r.ev100_max, 2) if math.isfinite(r.ev100_max) else None,
        frames=r.frames,
    )
