"""`skylapse demo` end to end at a reduced size: capture on the simulated camera, rsync over a
private sshd, ingest, a render job and its archive job on the queue, outputs that decode."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skylapse.catalog import Catalog, FrameRecord, ProcessingCatalog
from skylapse.cli import app
from skylapse.demo import (
    DEMO_DAY,
    DEMO_LOCATION,
    DemoError,
    DemoOptions,
    demo_config,
    exposure_range,
    flicker_estimate_ev,
    prepare_out,
    session_start,
)
from skylapse.transfer import local_sshd
from tests_support import SSH_TRANSFER

runner = CliRunner()


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        frames = sum(1 for _ in container.decode(s))
        cc = s.codec_context
        return {
            "codec": cc.name,
            "profile": cc.profile,
            "pix_fmt": cc.pix_fmt,
            "size": (s.width, s.height),
            "tag": s.codec_tag,
            "frames": frames,
        }


@SSH_TRANSFER
def test_demo_runs_every_stage_and_its_outputs_decode(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(out),
            "--resolution",
            "320x180",
            "--frames-scale",
            "0.2",
            "--preset",
            "ultrafast",
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.output
    for label in (
        "Where everything is",
        "Demo summary",
        "frames captured",
        "exposure range",
        "flicker (estimate)",
        "time: capture",
        "time: transfer",
        "time: ingest",
        "time: render",
        "time: archive",
        "wall",
    ):
        assert label in text, label

    # capture: a real session with HDR brackets in golden hour and single frames around it
    capture = Catalog(out / "capture" / "catalog.sqlite")
    frames = capture.frames()
    sets = {f.bracket_set for f in frames if f.bracket_set is not None}
    singles = [f for f in frames if f.bracket_set is None]
    assert len(sets) >= 5 and len(singles) >= 3
    assert {f.phase for f in frames} >= {"golden_hour", "blue_hour"}
    assert all(f.phase == "golden_hour" for f in frames if f.bracket_set is not None)
    # transfer: every frame sent over rsync/ssh and verified by the receiver
    assert all(f.transfer_state == "verified" for f in frames)
    # ingest: all of them, in one sequence, nothing quarantined
    processing = ProcessingCatalog(out / "processing" / "processing.db")
    (sequence,) = processing.sequences()
    assert sequence.frames == len(frames) and not processing.quarantined()
    # one render job and its archive job, both done
    jobs = processing.jobs()
    renders = [j for j in jobs if j.kind == "render"]
    archives = [j for j in jobs if j.kind == "archive"]
    assert len(renders) == 1 and len(archives) == 1
    assert renders[0].state == "done" and archives[0].state == "done"
    shots = len(sets) + len(singles)
    assert renders[0].result["frames"] == shots  # each bracket set fused into one frame
    # archived, with checksums, and nothing left in the render's working folder
    (timelapse,) = processing.timelapses()
    folder = out / "processing" / "archive" / timelapse.path
    names = {f.path for f in timelapse.files}
    assert names == {
        "timelapse.mp4",
        "timelapse.preview.mp4",
        "timelapse.keogram.png",
        "timelapse.contact.png",
    }
    assert not list((out / "processing" / "timelapses").glob("*/*"))
    assert str(folder.relative_to(out.parent)) in text.replace("\n", "").replace("│", "")
    # the videos: H.265 Main10 1080p tagged hvc1, and the H.264 preview
    main = probe(folder / "timelapse.mp4")
    assert main == {
        "codec": "hevc",
        "profile": "Main 10",
        "pix_fmt": "yuv420p10le",
        "size": (1920, 1080),
        "tag": "hvc1",
        "frames": shots,
    }
    preview = probe(folder / "timelapse.preview.mp4")
    assert preview["codec"] == "h264" and preview["tag"] == "avc1"
    assert preview["size"] == (1920, 1080) and preview["frames"] == shots
    keogram = cv2.imread(str(folder / "timelapse.keogram.png"))
    assert keogram is not None and keogram.shape[1] >= shots
    assert cv2.imread(str(folder / "timelapse.contact.png")) is not None
    # the private sshd is gone again
    pid = (
        int((out / "ssh" / "sshd.pid").read_text()) if (out / "ssh" / "sshd.pid").exists() else None
    )
    assert pid is None or not Path(f"/proc/{pid}").exists()


def test_missing_transfer_programs_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(local_sshd.TRANSFER_PROGRAMS, "/nonexistent/sshd", "openssh-server")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "/nonexistent/sshd" in message and "openssh-server" in message
    assert "rsync" in message and "make demo" in message
    assert not (tmp_path / "d").exists()  # failed before touching anything


def test_a_rerun_replaces_only_what_the_demo_wrote(tmp_path):
    out = tmp_path / "o"
    (out / "capture").mkdir(parents=True)
    with pytest.raises(DemoError, match="did not write"):
        prepare_out(out)  # someone else's folder: refused, kept
    assert (out / "capture").is_dir()
    (out / "capture").rmdir()
    prepare_out(out)
    (out / "processing" / "x").mkdir(parents=True)
    (out / "mine.txt").write_text("keep")
    prepare_out(out)
    assert not (out / "processing").exists() and (out / "mine.txt").read_text() == "keep"


def test_the_session_holds_the_sunset_and_the_plan_is_scaled():
    start = session_start(DEMO_LOCATION, DEMO_DAY, 90)
    cfg = demo_config(DemoOptions(frames_scale=0.5))
    # 50 of 90 minutes before sunset (about 16:58 UTC that day in Chamonix)
    assert (
        dt.datetime(2025, 10, 11, 16, 5, tzinfo=dt.UTC)
        < start
        < dt.datetime(2025, 10, 11, 16, 10, tzinfo=dt.UTC)
    )
    golden = next(p for p in cfg.schedule.phases if p.name == "golden_hour")
    assert golden.interval_s == pytest.approx(10 * 2.8 / 0.5)
    assert not cfg.weather.enabled and cfg.location.latitude == pytest.approx(45.92)


def test_flicker_estimate_finds_white_flicker_on_a_sunset_trend():
    k = np.arange(300, dtype=np.float64)
    sunset = -3.0 * (k / 300) ** 2 - 0.5 * k / 300  # a smooth, accelerating darkening
    rng = np.random.default_rng(1)
    assert flicker_estimate_ev(sunset) < 1e-3
    for std in (0.02, 0.1):
        estimate = flicker_estimate_ev(sunset + rng.normal(0, std, k.size))
        assert estimate == pytest.approx(std, rel=0.15)
    assert math.isnan(flicker_estimate_ev([1.0, 2.0]))


def test_exposure_range_in_ev100():
    t0 = dt.datetime(2025, 10, 11, 16, tzinfo=dt.UTC)
    records = [
        FrameRecord(
            path="a.jpg",
            captured_at=t0,
            sha256="",
            size_bytes=0,
            exposure_time_s=1 / 1000,
            analogue_gain=1.0,
            aperture=2.0,
        ),
        FrameRecord(
            path="b.jpg",
            captured_at=t0,
            sha256="",
            size_bytes=0,
            exposure_time_s=4.0,
            analogue_gain=4.0,
            aperture=2.0,
        ),
    ]
    r = exposure_range(records)
    # f/2 at 1/1000 s, ISO 100: EV 11.97; 4 s at ISO 400: EV 0 - 2 = -2
    assert r.ev100[1] == pytest.approx(math.log2(4 * 1000), abs=1e-9)
    assert r.ev100[0] == pytest.approx(-2.0, abs=1e-9)
    assert r.exposure_s == (1 / 1000, 4.0) and r.gain == (1.0, 4.0)
