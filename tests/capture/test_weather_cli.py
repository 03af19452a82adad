"""`skylapse plan --weather FILE` and `skylapse capture --weather FILE` through the real CLI."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
from test_weather_strategies import owm, weather_file
from typer.testing import CliRunner

from skylapse.capture.learning import MEMORY_NAME, SkyMemory, save_memory
from skylapse.capture.service import CATALOG_NAME
from skylapse.catalog.capture import Catalog
from skylapse.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "220"}
DAY = "2024-03-20"


def test_plan_under_replayed_weather_and_the_learned_sky(tmp_path):
    # broken cloud in the morning: sunrise extends; stormy from 16:00 UTC: sunset does not
    start = dt.datetime(2024, 3, 20, tzinfo=dt.UTC)
    payloads = [owm(start + dt.timedelta(hours=h), clouds=50, wind=3.0) for h in range(16)]
    payloads += [owm(start + dt.timedelta(hours=16), clouds=100, wind=15.0, code=211)]
    (tmp_path / "w.json").write_text(json.dumps(payloads))
    memory = SkyMemory().learn([(e, -1.5) for e in np.linspace(9, -9, 80)], 50.0, 0.5,
                               start)  # fmt: skip
    save_memory(tmp_path / MEMORY_NAME, memory)
    args = ["plan", "--location", "46.55,7.98", "--date", DAY]
    plain = runner.invoke(app, args, env=WIDE)
    result = runner.invoke(
        app, [*args, "--weather", str(tmp_path / "w.json"), "--buffer", str(tmp_path)], env=WIDE
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "stormy" in out and "5 s" in out and "50 %" in out  # the storm's fast clouds
    assert "learned sky" in out and "replayed weather" in out
    assert "session 20240320-sunrise: 04:04 - 06:24 (extended: the clouds promise colour)" in out
    assert "session 20240320-sunset: 16:17 - 19:17" in out  # stormy then: no colour
    assert "session 20240320-sunrise: 04:24 - 06:24" in plain.stdout
    assert " stormy " not in plain.stdout.split("sunrise")[0]  # clear-sky strategies only


def test_plan_and_capture_name_a_bad_weather_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"dt": 1}]')
    for args in (
        ["plan", "--date", DAY, "--weather", str(bad)],
        ["capture", "--camera", "simulated", "--clock", "simulated", "--duration", "1m",
         "--buffer", str(tmp_path / "b"), "--weather", str(bad)],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "--weather" in result.output and "entry 0" in result.output


def test_capture_a_stormy_evening_in_seconds(tmp_path):
    storm = weather_file(tmp_path, "storm")
    buffer = tmp_path / "buffer"
    result = runner.invoke(
        app,
        ["capture", "--camera", "simulated", "--clock", "simulated", "--location", "46.55,7.98",
         "--start", "2024-03-20T18:05:00Z", "--duration", "3m", "--buffer", str(buffer),
         "--resolution", "160x90", "--weather", str(storm)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = Catalog(buffer / CATALOG_NAME).frames()
    assert {r.strategy for r in rows} == {"stormy"}
    gaps = np.diff([r.scheduled_at.timestamp() for r in rows])
    assert np.allclose(gaps, 5.0) and len(rows) >= 35
    assert rows[0].extra["weather"]["wind_ms"] == 20.0  # the gusts
    assert (buffer / MEMORY_NAME).is_file()  # and the station learned from it
