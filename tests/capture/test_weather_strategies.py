"""Weather inside the capture loop: replayed OpenWeatherMap evenings (clear, overcast, storm, fog)
through the real weather client, the simulated camera rendering them, the strategies they pick,
and every frame on target where the camera can reach it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.exposure import split_exposure, target_level
from skylapse.capture.learning import MEMORY_NAME, SkyMemory, save_memory
from skylapse.capture.service import CaptureService, SessionSpec
from skylapse.capture.strategy import choose_capture
from skylapse.capture.weather import parse_owm_current
from skylapse.capture.weather_replay import WeatherFileError, load_weather_file, replayed_weather
from skylapse.capture.windows import day_windows, plan_wake_time, promises_colour
from skylapse.config import SkylapseConfig
from skylapse.exif import read_skylapse_metadata

UTC = dt.UTC
CFG = SkylapseConfig()
SMALL = CameraConfig(resolution=(160, 90))
#: golden hour into blue hour at the default site on the equinox (sunset 17:47 UTC)
EVENING = dt.datetime(2024, 3, 20, 17, 55, tzinfo=UTC)
#: frames of the first two minutes are the controller settling on the site (not judged)
SETTLE = dt.timedelta(minutes=2)

SKIES = {
    "clear": {"clouds": 10, "wind": 3.0},
    "overcast": {"clouds": 95, "wind": 4.0},
    "storm": {"clouds": 100, "wind": 14.0, "gust": 20.0, "code": 211, "rain": 5.0},
    "fog": {"clouds": 100, "wind": 1.0, "visibility": 300, "code": 741},
}


def owm(when: dt.datetime, clouds, wind, gust=None, visibility=10000, code=800, rain=None):
    """An OpenWeatherMap current-weather answer (units=metric)."""
    payload = {
        "dt": int(when.timestamp()),
        "weather": [{"id": code, "main": "x", "description": "replayed"}],
        "clouds": {"all": clouds},
        "wind": {"speed": wind, "deg": 250},
        "visibility": visibility,
        "main": {"temp": 4.0},
    }
    if gust is not None:
        payload["wind"]["gust"] = gust
    if rain is not None:
        payload["rain"] = {"1h": rain}
    return payload


def weather_file(folder: Path, sky: str, start: dt.datetime = EVENING, hours: float = 2) -> Path:
    path = folder / f"{sky}.json"
    times = [start - dt.timedelta(minutes=30) + dt.timedelta(minutes=10 * k)
             for k in range(int(hours * 6) + 4)]  # fmt: skip
    path.write_text(json.dumps([owm(t, **SKIES[sky]) for t in times]))
    return path


def run_evening(
    buffer: Path,
    weather: Path | None,
    minutes: float = 28,
    start=EVENING,
    session="eve",
    config: SkylapseConfig = CFG,
):
    clock = SimulatedClock(start)
    camera = SimulatedCamera(clock=clock, seed=3)
    source = None
    if weather is not None:
        source = replayed_weather(weather, config.weather, config.location, clock.now, camera)
    service = CaptureService(
        camera, buffer=buffer, clock=clock, camera_config=SMALL, weather=source, config=config
    )

    async def go():
        await service.open()
        summary = await service.run_session(
            SessionSpec(session_id=session, duration_s=minutes * 60)
        )
        await service.close()
        return summary

    summary = asyncio.run(go())
    return service, summary


def reference_frames(service, session="eve"):
    """One row per shot of a session: the single frame, or the 0 EV frame of a bracket."""
    return [
        r
        for r in service.catalog.frames()
        if r.session_id == session and (r.bracket_index is None or r.ev_offset == 0)
    ]


@pytest.fixture(scope="module")
def evenings(tmp_path_factory):
    root = tmp_path_factory.mktemp("evenings")
    out = {}
    for sky in ("clear", "overcast", "storm"):
        out[sky] = run_evening(root / sky, weather_file(root, sky))[0]
    return out


def test_replayed_evenings_differ_as_configured(evenings):
    clear, overcast, storm = (reference_frames(evenings[k]) for k in ("clear", "overcast", "storm"))

    def by_strategy(rows):
        return {r.strategy for r in rows}

    # clear: golden hour brackets (HDR), then blue hour
    assert {"golden_hour", "blue_hour"} <= by_strategy(clear)
    assert any(r.bracket_index is not None for r in evenings["clear"].catalog.frames())
    # overcast: the overcast strategy in golden hour, no brackets, its tone recorded
    assert "overcast" in by_strategy(overcast) and "golden_hour" not in by_strategy(overcast)
    assert all(r.bracket_index is None for r in evenings["overcast"].catalog.frames())
    over = next(r for r in overcast if r.strategy == "overcast")
    assert over.extra["tone"] == {"shadow_lift": 0.25, "contrast": 1.2, "dehaze": 0.4}
    assert over.extra["weather"]["cloud_cover_pct"] == 95
    exif = read_skylapse_metadata(evenings["overcast"].buffer / over.path)
    assert exif["strategy"] == "overcast" and exif["tone"]["dehaze"] == 0.4
    # storm: stormy through golden and blue hour, every 5 s while the wind blows
    stormy = [r for r in storm if r.strategy == "stormy"]
    assert min(r.extra["sun_elevation_deg"] for r in stormy) < -5.5  # stormy blue hour
    gaps = np.diff([r.scheduled_at.timestamp() for r in stormy])
    assert np.allclose(gaps, 5.0) and stormy[0].extra["weather"]["fast_clouds"]
    assert len(stormy) > 2 * len([r for r in clear if r.strategy != "night"])

    # the exposure bias as configured: storm darker than clear darker than overcast
    def level(rows, strategy):
        return np.median([r.extra["metered_log2"] for r in rows if r.strategy == strategy])

    assert level(overcast, "overcast") - level(clear, "golden_hour") == pytest.approx(0.3, abs=0.2)
    assert level(storm, "stormy") < level(clear, "golden_hour") - 0.3

    # the weather the camera saw darkened the scene: longer exposures under the overcast
    def ev(rows, strategy):
        return np.median([r.extra["achieved_ev"] for r in rows if r.strategy == strategy])

    assert ev(overcast, "overcast") > ev(clear, "golden_hour") + 1.0


@pytest.mark.parametrize("sky", ["clear", "overcast", "storm"])
def test_every_strategy_stays_on_target_where_the_camera_reaches_it(evenings, sky):
    rows = reference_frames(evenings[sky])
    start = rows[0].captured_at
    judged = [r for r in rows if r.captured_at - start >= SETTLE]
    reachable = [r for r in judged if r.extra["limited_by"] in ("", "step")]
    assert len(reachable) > 0.9 * len(judged) > 30
    for r in reachable:
        target = target_level(CFG.exposure, r.extra["sun_elevation_deg"])
        target += CFG.strategies[r.strategy].exposure_bias_ev
        error = r.extra["metered_log2"] - target
        assert abs(error) <= 0.5, (r.strategy, r.extra["sun_elevation_deg"], error)


def test_storm_shutter_cap_uses_gain_first_then_time():
    stormy = CFG.strategies["stormy"]
    ex = CFG.exposure
    # bright: under the wind cap, no gain
    t, g, limit = split_exposure(-9.0, 5.0, ex, stormy)
    assert t == pytest.approx(2**-9) and g == 1.0 and limit == ""
    # darker: time stops at 1/250 s, gain rises
    t, g, limit = split_exposure(-6.0, 5.0, ex, stormy)
    assert t == pytest.approx(1 / 250) and g == pytest.approx(2**-6 * 250) and limit == ""
    # blue hour: gain used up at the cap, the time grows (to 3 s: the 5 s interval's budget)
    t, g, limit = split_exposure(2.0, 5.0, ex, stormy)
    assert g == stormy.max_gain and t == pytest.approx(0.5) and limit == ""
    t, g, limit = split_exposure(6.0, 5.0, ex, stormy)
    assert t == pytest.approx(3.0) and limit == "max_gain"


def test_choice_follows_the_wind_and_the_fog():
    def obs(**kw):
        return parse_owm_current(owm(EVENING, **kw), EVENING)

    gale = obs(clouds=100, wind=14.0)
    breeze = obs(clouds=100, wind=5.0, code=211)
    assert choose_capture(CFG, 2, "stormy", gale).interval_s == 5
    assert choose_capture(CFG, 2, "stormy", gale).fast_clouds
    assert choose_capture(CFG, 2, "stormy", breeze).interval_s == 10  # the phase's
    assert choose_capture(CFG, 2, "overcast", gale).interval_s == 10  # overcast has no rule
    assert choose_capture(CFG, 2, "overcast", obs(**SKIES["fog"])).fog
    assert not choose_capture(CFG, 2, "overcast", obs(clouds=90, wind=1.0)).fog


def test_fog_keeps_the_last_good_focus(tmp_path):
    save_memory(tmp_path / "buf" / MEMORY_NAME, SkyMemory().with_focus(0.42))
    service, summary = run_evening(tmp_path / "buf", weather_file(tmp_path, "fog"), minutes=2)
    assert summary.focus_acquisition_time_s is None  # no contrast search in fog
    assert summary.lens_position == 0.42
    rows = service.catalog.frames()
    assert rows and all(r.lens_position == pytest.approx(0.42) for r in rows)
    assert all(r.extra["weather"]["fog"] for r in rows)
    # a clear evening autofocuses and remembers the focus it found
    service, summary = run_evening(tmp_path / "buf", weather_file(tmp_path, "clear"), minutes=2)
    assert summary.focus_acquisition_time_s is not None
    assert service.memory.memory.last_good_focus == pytest.approx(summary.lens_position)


def test_replay_goes_through_the_client_refresh_and_staleness(tmp_path):
    path = tmp_path / "w.json"
    t0 = EVENING
    path.write_text(json.dumps([owm(t0, 10, 3.0), owm(t0 + dt.timedelta(minutes=5), 95, 3.0)]))
    replay = load_weather_file(path)
    now = [t0 - dt.timedelta(minutes=1)]
    client = replay.service(CFG.weather, CFG.location, lambda: now[0])

    async def at(minutes):
        now[0] = t0 + dt.timedelta(minutes=minutes)
        return await client.current(now[0])

    async def go():
        assert await at(-1) is None  # before the first answer: 404, no observation
        assert (await at(14)).cloud_cover_pct == 95  # a 404 is a failed fetch, retried in 15'
        assert client.failures == 0

    asyncio.run(go())
    now2 = [t0]
    client2 = replay.service(CFG.weather, CFG.location, lambda: now2[0])

    async def go2():
        assert (await client2.current(t0)).cloud_cover_pct == 10
        now2[0] = t0 + dt.timedelta(minutes=10)
        assert (await client2.current(now2[0])).cloud_cover_pct == 10  # held until refresh_s
        now2[0] = t0 + dt.timedelta(minutes=16)
        assert (await client2.current(now2[0])).cloud_cover_pct == 95

    asyncio.run(go2())
    assert replay.sim_weather(t0 + dt.timedelta(minutes=6)).cloud_cover == 0.95
    assert replay.sim_weather(t0 - dt.timedelta(minutes=6)).cloud_cover == 0.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not valid JSON"),
        ("{}", "expected a JSON list"),
        ('[{"dt": 1}]', "entry 0: not an OpenWeatherMap current-weather answer (missing 'clouds')"),
        ('[{"dt": 1, "clouds": {"all": 5}}, 3]', "entry 1: expected an object"),
    ],
)
def test_bad_weather_files_name_the_file_and_entry(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(WeatherFileError) as err:
        load_weather_file(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_windows_extend_on_their_dark_side_when_clouds_promise_colour():
    loc, day = CFG.location, dt.date(2024, 3, 20)
    broken = parse_owm_current(owm(EVENING, clouds=50, wind=3.0), EVENING)
    closed = parse_owm_current(owm(EVENING, clouds=100, wind=3.0), EVENING)
    rainy = parse_owm_current(owm(EVENING, clouds=50, wind=3.0, rain=0.5), EVENING)
    assert promises_colour(broken, CFG)
    assert not any(promises_colour(o, CFG) for o in (closed, rainy, None))
    plain = {w.name: w for w in day_windows(loc, day, CFG)}
    wide = {w.name: w for w in day_windows(loc, day, CFG, colour=True)}
    assert wide["sunset"].start == plain["sunset"].start
    assert wide["sunset"].end - plain["sunset"].end == dt.timedelta(minutes=30)
    assert plain["sunrise"].start - wide["sunrise"].start == dt.timedelta(minutes=20)
    assert wide["sunrise"].end == plain["sunrise"].end
    # the plan wakes at the earliest start the sunrise window could have, then asks again
    before = plain["sunrise"].start - dt.timedelta(hours=2)
    window, wake = plan_wake_time(loc, before, CFG, colour=False)
    assert window.name == "sunrise" and wake == wide["sunrise"].start
    window, wake = plan_wake_time(loc, wide["sunrise"].start, CFG, colour=False)
    assert wake == plain["sunrise"].start  # no colour promised: wait for its own start
    window, wake = plan_wake_time(loc, wide["sunrise"].start, CFG, colour=True)
    assert wake == wide["sunrise"].start  # colour: open now
