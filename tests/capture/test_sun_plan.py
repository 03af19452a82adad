import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from skylapse.capture.plan import day_plan, parse_location, render_plan_table
from skylapse.capture.strategy import choose_capture
from skylapse.capture.sun import phase_for_elevation, phase_segments, sun_elevation, sun_events
from skylapse.config import LocationConfig, SkylapseConfig

LONDON = LocationConfig(
    latitude=51.5074, longitude=-0.1278, elevation_m=0, timezone="Europe/London"
)
TROMSO = LocationConfig(latitude=69.65, longitude=18.96, elevation_m=0, timezone="Europe/Oslo")
CFG = SkylapseConfig()


def _minutes(t: dt.datetime) -> float:
    return t.hour * 60 + t.minute + t.second / 60


def test_london_midsummer_sunrise_sunset_match_published_times():
    # published (timeanddate.com): sunrise 04:43, sunset 21:21 BST on 2024-06-21
    ev = sun_events(LONDON, dt.date(2024, 6, 21))
    assert _minutes(ev.sunrise) == pytest.approx(4 * 60 + 43, abs=2)
    assert _minutes(ev.sunset) == pytest.approx(21 * 60 + 21, abs=2)
    assert ev.evening_golden_hour[0] < ev.sunset < ev.evening_blue_hour[0] < ev.civil_dusk
    # at the reported sunset the sun is just below the horizon (apparent, refraction included)
    assert -0.9 < sun_elevation(LONDON, ev.sunset) < 0


def test_phase_for_elevation_uses_configured_bounds():
    phases = CFG.schedule.phases
    names = [phase_for_elevation(e, phases).name for e in (30, 6, 5.9, -4, -5, -6.1, -18, -30)]
    assert names == [
        "day",
        "day",
        "golden_hour",
        "golden_hour",
        "blue_hour",
        "twilight",
        "twilight",
        "night",
    ]


def test_segments_cover_the_day_and_agree_with_astral_golden_hour():
    day = dt.date(2024, 3, 20)
    segs = phase_segments(LONDON, day, CFG.schedule.phases)
    tz = ZoneInfo("Europe/London")
    assert segs[0].start == dt.datetime(2024, 3, 20, tzinfo=tz)
    assert segs[-1].end == dt.datetime(2024, 3, 21, tzinfo=tz)
    for a, b in itertools.pairwise(segs):
        assert a.end == b.start and a.phase.name != b.phase.name
    for s in segs:  # the sun's elevation inside each segment is in that phase's band
        mid = s.start + s.duration / 2
        assert phase_for_elevation(sun_elevation(LONDON, mid), CFG.schedule.phases) == s.phase
    evening_golden = [s for s in segs if s.phase.name == "golden_hour" and not s.rising]
    assert len(evening_golden) == 1
    astral_gh = sun_events(LONDON, day).evening_golden_hour
    assert abs((evening_golden[0].start - astral_gh[0]).total_seconds()) < 60
    assert abs((evening_golden[0].end - astral_gh[1]).total_seconds()) < 60
    names = [s.phase.name for s in segs]
    assert names.count("night") == 2  # equinox London: true night at both ends of the day


def test_polar_day_has_no_sunset_and_no_night():
    ev = sun_events(TROMSO, dt.date(2024, 6, 21))
    assert ev.sunrise is None and ev.sunset is None
    segs = phase_segments(TROMSO, dt.date(2024, 6, 21), CFG.schedule.phases)
    assert {s.phase.name for s in segs} <= {"day", "golden_hour"}
    assert min(s.min_elevation_deg for s in segs) > 0


def test_strategy_follows_phase_and_weather():
    assert choose_capture(CFG, 30).strategy_name == "day"
    gh = choose_capture(CFG, 2)
    assert (gh.strategy_name, gh.strategy.hdr, gh.interval_s) == ("golden_hour", True, 10)
    assert choose_capture(CFG, 2, "overcast").strategy_name == "overcast"
    assert choose_capture(CFG, 2, "overcast").interval_s == 10  # interval stays the phase's
    assert choose_capture(CFG, -5, "overcast").strategy_name == "blue_hour"  # not listed there
    assert choose_capture(CFG, -5, "stormy").strategy_name == "stormy"
    assert choose_capture(CFG, -30, "stormy").strategy_name == "night"
    night = choose_capture(CFG, -30).strategy
    assert night.max_exposure_s >= 10 and night.max_gain > 1


def test_day_plan_rows_and_rendering():
    plan = day_plan(LONDON, dt.date(2024, 6, 21), CFG)
    assert plan.rows[0].start.hour == 0 and plan.rows[-1].end.day == 22
    golden = [r for r in plan.rows if r.phase == "golden_hour"]
    assert len(golden) == 2 and all(r.hdr and r.interval_s == 10 for r in golden)
    day = next(r for r in plan.rows if r.phase == "day")
    assert day.ev100_max == pytest.approx(15.3, abs=0.3)  # sun ~62° at noon
    hours = (day.end - day.start).total_seconds()
    assert day.frames == pytest.approx(hours / 30, abs=1)
    assert plan.total_frames == sum(r.frames for r in plan.rows)
    console = Console(width=140, record=True)
    console.print(render_plan_table(plan))
    text = console.export_text()
    for word in ("golden_hour", "blue_hour", "twilight", "04:43", "21:2"):
        assert word in text


def test_parse_location():
    assert parse_location("46.55, 7.98") == (46.55, 7.98)
    for bad in ("46.55", "91,0", "a,b"):
        with pytest.raises(ValueError):
            parse_location(bad)
