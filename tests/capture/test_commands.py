"""`skylapse plan`, `skylapse capture` and `skylapse frames` through the real CLI app."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from typer.testing import CliRunner

from skylapse.cli import app

runner = CliRunner()
ISO_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def test_plan_prints_the_phases_and_session_windows():
    result = runner.invoke(
        app, ["plan", "--location", "46.55,7.98", "--date", "2024-03-20"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for phase in ("day", "golden_hour", "blue_hour", "twilight", "night"):
        assert phase in result.stdout
    assert "session 20240320-sunrise: 04:24 - 06:24" in result.stdout
    assert "session 20240320-sunset: 16:17 - 19:17" in result.stdout


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    """A short simulated session across the end of golden hour (brackets, then singles)."""
    buf = tmp_path_factory.mktemp("buffer")
    result = runner.invoke(
        app,
        [
            "capture",
            "--camera",
            "simulated",
            "--clock",
            "simulated",
            "--location",
            "46.55,7.98",
            "--start",
            "2024-03-20T17:58:00Z",
            "--duration",
            "4m",
            "--interval",
            "auto",
            "--buffer",
            str(buf),
            "--resolution",
            "320x180",
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped deadlines" in result.stdout and "p99" in result.stdout
    return buf


def test_frames_json_fields_and_formats(buffer):
    result = runner.invoke(app, ["frames", "--buffer", str(buffer), "--json"])
    assert result.exit_code == 0, result.output
    frames = json.loads(result.stdout)
    # 17:58 to ~18:00 golden hour at 10 s (brackets of 3), then blue hour at 15 s (singles)
    sets = {f["bracket"]["set"] for f in frames if f["bracket"]}
    singles = [f for f in frames if f["bracket"] is None]
    assert len(frames) == 3 * len(sets) + len(singles)
    assert 12 <= len(sets) <= 13 and 7 <= len(singles) <= 8
    for f in frames:
        for key in (
            "path",
            "scheduled_at",
            "captured_at",
            "exposure_time_s",
            "analogue_gain",
            "lens_position",
            "bracket",
            "quality_score",
            "latency_ms",
        ):
            assert key in f
        assert ISO_US.match(f["scheduled_at"]) and ISO_US.match(f["captured_at"])
        assert f["exposure_time_s"] > 0 and f["analogue_gain"] >= 1.0
        assert 0.0 <= f["quality_score"] <= 1.0 and f["latency_ms"] == 0.0
        assert (buffer / f["path"]).is_file()
        if f["phase"] == "golden_hour":
            assert set(f["bracket"]) >= {"set", "index"} and f["bracket"]["index"] in (0, 1, 2)
        else:
            assert f["bracket"] is None
    first = dt.datetime.fromisoformat(frames[0]["scheduled_at"])
    assert first == dt.datetime(2024, 3, 20, 17, 58, tzinfo=dt.UTC)

    table = runner.invoke(app, ["frames", "--buffer", str(buffer)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "frame_000000_b0.jpg" in table.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--duration", "ten minutes"], "--duration"),
        (["--duration", "0s"], "--duration"),
        (["--interval", "fast"], "--interval"),
        (["--location", "95,7"], "--location"),
        (["--location", "46.5"], "--location"),
        (["--start", "yesterday"], "--start"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, args, needle):
    base = [
        "capture",
        "--camera",
        "simulated",
        "--clock",
        "simulated",
        "--duration",
        "1m",
        "--buffer",
        str(tmp_path),
    ]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 2
    assert needle in result.output
    assert not (tmp_path / "catalog.sqlite").exists()


def test_frames_without_a_catalog_exits_2(tmp_path):
    result = runner.invoke(app, ["frames", "--buffer", str(tmp_path / "nowhere"), "--json"])
    assert result.exit_code == 2 and "no catalog" in result.output
