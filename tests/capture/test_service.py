"""The capture loop: deadlines, EXIF/catalog agreement, HDR, the writer off the capture path,
crash safety and resuming, unattended plan sessions."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skylapse.capture import storage as storage_module
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import RealClock, SimulatedClock
from skylapse.capture.service import CaptureService, DeadlineSchedule, SessionSpec
from skylapse.capture.writer import encode_jpeg
from skylapse.exif import EXIF_IFD, read_skylapse_metadata

SMALL = CameraConfig(resolution=(320, 180))
UTC = dt.UTC


def _service(tmp_path: Path, start: dt.datetime, **kw) -> CaptureService:
    clock = SimulatedClock(start)
    camera = kw.pop("camera", None) or SimulatedCamera(clock=clock, seed=3)
    return CaptureService(camera, buffer=tmp_path, clock=clock, camera_config=SMALL, **kw)


def _run(coro):
    return asyncio.run(coro)


# -- pure schedule -----------------------------------------------------------------------------


def test_deadline_schedule_has_no_cumulative_drift_and_skips_overruns():
    s = DeadlineSchedule(1000.0, 0.1)
    acc = 1000.0
    for _ in range(100_000):
        s.advance(now=s.deadline)  # always on time
        acc += 0.1  # what "previous + interval" would give
    assert s.deadline == pytest.approx(1000.0 + 100_000 * 0.1, abs=1e-9)
    assert abs(acc - (1000.0 + 100_000 * 0.1)) > 1e-9  # summing drifts, the schedule does not
    assert s.skipped == 0
    # work that ends 2.5 intervals after a deadline misses the next two; back on the grid
    before = s.deadline
    assert s.advance(now=before + 0.25) == 2
    assert s.deadline == pytest.approx(before + 0.3)
    # late by less than the tolerance: taken late, not skipped
    d = s.deadline
    assert s.advance(now=d + 0.1 + 0.01) == 0
    # a new interval re-anchors at the current deadline
    d = s.deadline
    s.advance(now=d, interval_s=15.0)
    assert s.deadline == pytest.approx(d + 15.0)


# -- a simulated evening ---------------------------------------------------------------------


def test_evening_session_catalog_exif_hdr_and_deadlines(tmp_path):
    # 17:55 UTC on the equinox at the default location: golden hour (HDR) into blue hour
    start = dt.datetime(2024, 3, 20, 17, 55, tzinfo=UTC)
    service = _service(tmp_path, start)

    async def go():
        await service.open()
        summary = await service.run_session(SessionSpec(session_id="eve", duration_s=8 * 60))
        await service.close()
        return summary

    summary = _run(go())
    rows = service.catalog.frames()
    assert summary.skipped_deadlines == 0 and summary.failed == 0
    assert summary.written == len(rows) == summary.files
    assert {"golden_hour", "blue_hour"} <= {r.phase for r in rows}
    assert summary.focus_acquisition_time_s is not None
    files = sorted(p for p in tmp_path.rglob("*.jpg"))
    assert len(files) == len(rows)
    assert all(f.parent == tmp_path / "2024-03-20" / "eve" for f in files)

    for r in rows:
        path = tmp_path / r.path
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == r.sha256 and len(data) == r.size_bytes
        with Image.open(path) as im:
            assert im.size == (320, 180)
            ifd = im.getexif().get_ifd(EXIF_IFD)
        assert float(ifd[0x829A]) == pytest.approx(r.exposure_time_s, rel=1e-4)
        assert ifd[0x8827] == round(r.iso)
        assert float(ifd[0x829D]) == pytest.approx(r.aperture)
        stamp = dt.datetime.strptime(f"{ifd[0x9003]}.{ifd[0x9291]}", "%Y:%m:%d %H:%M:%S.%f")
        assert stamp == r.captured_at.replace(tzinfo=None)
        meta = read_skylapse_metadata(path)
        assert meta["session_id"] == "eve" and meta["phase"] == r.phase
        assert meta["strategy"] == r.strategy
        assert meta["quality_score"] == pytest.approx(r.quality_score)
        assert meta["exposure_error_ev"] == pytest.approx(r.exposure_error_ev)
        assert dt.datetime.fromisoformat(meta["scheduled_at"]) == r.scheduled_at
        assert 0.0 <= r.quality_score <= 1.0 and r.focus_score > 0
        assert r.latency_ms == 0.0  # simulated clock: the exposure starts at the deadline
        if r.phase == "golden_hour":
            assert meta["bracket"] == {
                "set": r.bracket_set,
                "index": r.bracket_index,
                "ev_offset": r.ev_offset,
            }
            assert r.path.endswith(f"frame_{r.bracket_set:06d}_b{r.bracket_index}.jpg")
        else:
            assert meta["bracket"] is None and r.bracket_set is None

    # golden hour: complete brackets of -2/0/+2 EV, longer exposure for higher offsets
    sets: dict[int, list] = {}
    for r in rows:
        if r.bracket_set is not None:
            sets.setdefault(r.bracket_set, []).append(r)
    assert len(sets) >= 20
    for members in sets.values():
        members.sort(key=lambda r: r.bracket_index)
        assert [m.ev_offset for m in members] == [-2.0, 0.0, 2.0]
        ev = [math.log2(m.exposure_time_s * m.analogue_gain) for m in members]
        assert np.allclose(np.diff(ev), 2.0, atol=0.01)

    # deadlines: exactly the phase interval apart (10 s golden, 15 s blue), no drift
    shots = sorted({(r.scheduled_at, r.phase) for r in rows})
    gaps = {
        (a[1], (b[0] - a[0]).total_seconds()) for a, b in itertools.pairwise(shots) if a[1] == b[1]
    }
    assert gaps == {("golden_hour", 10.0), ("blue_hour", 15.0)}
    assert shots[0][0] == start


class _StallingCamera(SimulatedCamera):
    """Stalls (in simulated time) for 2.5 s on its 4th frame, like a driver hiccup."""

    async def capture(self, settings=None, **kw):
        frame = await super().capture(settings, **kw)
        if self._frames == 4:
            await self.clock.sleep(2.5)
        return frame


def test_overrun_skips_to_the_next_future_deadline(tmp_path):
    start = dt.datetime(2024, 3, 20, 12, 0, tzinfo=UTC)
    clock = SimulatedClock(start)
    camera = _StallingCamera(clock=clock, seed=1)
    service = CaptureService(
        camera, buffer=tmp_path, clock=clock, camera_config=SMALL, config=_no_af_config()
    )

    async def go():
        s = await service.run_session(SessionSpec(interval_s=1.0, duration_s=10.0, hdr=False))
        await service.close()
        return s

    summary = _run(go())
    assert summary.skipped_deadlines == 2
    assert summary.shots == 8  # 10 deadlines, two skipped
    offsets = [(r.scheduled_at - start).total_seconds() for r in service.catalog.frames()]
    assert offsets == [0, 1, 2, 3, 6, 7, 8, 9]


class _LeadCamera(SimulatedCamera):
    """Wants its call ahead of the deadline (as picamera2 does); records (call, deadline)."""

    deadline_lead_s = 0.3

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[tuple[float, float | None]] = []

    async def capture(self, settings=None, **kw):
        self.calls.append((self.clock.monotonic(), kw.get("deadline")))
        return await super().capture(settings, **kw)


def test_the_camera_gets_the_deadline_and_is_called_its_lead_ahead(tmp_path):
    clock = SimulatedClock(dt.datetime(2024, 3, 20, 12, 0, tzinfo=UTC))
    camera = _LeadCamera(clock=clock, seed=1)
    service = CaptureService(
        camera, buffer=tmp_path, clock=clock, camera_config=SMALL, config=_no_af_config()
    )

    async def go():
        s = await service.run_session(SessionSpec(interval_s=2.0, max_frames=4, hdr=False))
        await service.close()
        return s

    summary = _run(go())
    (first_call, first), *rest = camera.calls
    assert first_call == pytest.approx(first)  # due at once: called at once
    assert [d for _, d in rest] == pytest.approx([first + 2.0 * k for k in (1, 2, 3)])
    assert all(call == pytest.approx(d - 0.3, abs=1e-6) for call, d in rest)
    # the simulated camera exposes when called: its latency, to the call, says it was early
    assert summary.latencies_ms[1:] == pytest.approx([-300.0] * 3, abs=1e-3)


def _no_af_config():
    from skylapse.config import default_config

    cfg = default_config()
    return cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"autofocus": False})})


# -- the writer is off the capture path --------------------------------------------------------


def test_slow_writer_does_not_delay_deadlines(tmp_path):
    """Real clock: every write takes 1.5 intervals, yet the exposures stay on their deadlines."""
    clock = RealClock()
    camera = SimulatedCamera(clock=clock, seed=2)
    delays: list[float] = []

    def slow_write(job):
        time.sleep(0.15)
        delays.append(time.perf_counter())

    cfg = _no_af_config()
    cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"writer_queue": 32})})
    service = CaptureService(
        camera,
        buffer=tmp_path,
        clock=clock,
        config=cfg,
        camera_config=CameraConfig(resolution=(160, 90)),
        write_hook=slow_write,
    )

    async def go():
        await service.open()
        t0 = time.perf_counter()
        await service.start_session(SessionSpec(interval_s=0.1, max_frames=20, hdr=False))
        session = service._session
        while session.summary.shots < 20:
            await asyncio.sleep(0.01)
        captured_in = time.perf_counter() - t0
        depth = service.writer.depth
        summary = await service.wait_session()  # drains the writer
        await service.close()
        return summary, captured_in, depth

    summary, captured_in, depth = _run(go())
    assert summary.skipped_deadlines == 0
    assert summary.latency_ms(99) < 50.0
    assert captured_in < 20 * 0.15 * 0.8  # capture finished long before the writes did
    assert depth >= 5  # frames were still queued for writing when capture was done
    assert summary.written == 20 and len(service.catalog.frames()) == 20
    sched = [r.scheduled_at for r in service.catalog.frames()]
    steps = np.diff([(s - sched[0]).total_seconds() for s in sched])
    assert np.allclose(steps, 0.1, atol=1e-6)


# -- crash safety and resuming -----------------------------------------------------------------


def test_crash_mid_write_leaves_no_row_and_restart_resumes_numbering(tmp_path, monkeypatch):
    start = dt.datetime(2024, 3, 20, 12, 0, tzinfo=UTC)
    service = _service(tmp_path, start, config=_no_af_config())
    real_replace = os.replace
    calls = {"n": 0}

    def crashing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # "power cut" between fsync and rename of the third frame
            raise OSError(5, "simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(storage_module.os, "replace", crashing_replace)

    async def first():
        s = await service.run_session(
            SessionSpec(session_id="day", interval_s=30.0, duration_s=150.0, hdr=False)
        )
        await service.close()
        return s

    s1 = _run(first())
    monkeypatch.setattr(storage_module.os, "replace", real_replace)
    folder = tmp_path / "2024-03-20" / "day"
    rows = service.catalog.frames()
    assert s1.shots == 5 and s1.failed == 1 and len(rows) == 4
    assert not (folder / "frame_000002.jpg").exists()
    assert not list(folder.glob(".*.tmp-*"))  # the failed write removed its temporary file
    assert all((tmp_path / r.path).is_file() for r in rows)
    # a half-written temporary file, as a power cut mid-write leaves it
    (folder / ".frame_000002.jpg.tmp-999999").write_bytes(b"\xff\xd8 half")
    # a complete file whose row was never written (crash after rename): must not be overwritten
    orphan = folder / "frame_000007.jpg"
    orphan.write_bytes(encode_jpeg(np.zeros((18, 32, 3), np.uint16)))
    orphan_bytes = orphan.read_bytes()

    clock2 = SimulatedClock(start + dt.timedelta(minutes=10))
    service2 = CaptureService(
        SimulatedCamera(clock=clock2, seed=3),
        buffer=tmp_path,
        clock=clock2,
        camera_config=SMALL,
        config=_no_af_config(),
    )

    async def second():
        s = await service2.run_session(
            SessionSpec(session_id="day", interval_s=30.0, duration_s=60.0, hdr=False)
        )
        await service2.close()
        return s

    s2 = _run(second())
    assert not list(folder.glob(".*.tmp-*"))  # the reconcile removed the partial file
    assert s2.first_frame_number == 8 and s2.written == 2
    assert orphan.read_bytes() == orphan_bytes
    names = sorted(Path(r.path).name for r in service2.catalog.frames())
    assert names == [f"frame_{n:06d}.jpg" for n in (0, 1, 3, 4, 8, 9)]
    sessions = service2.catalog.sessions()
    assert len(sessions) == 1 and sessions[0].started_at == dt.datetime(2024, 3, 20, 12, tzinfo=UTC)


# -- unattended plan ---------------------------------------------------------------------------


def test_plan_waits_for_the_window_then_resumes_it_after_a_restart(tmp_path):
    # default windows at 46.55 N 7.98 E on 2024-03-20: sunset 17:47 UTC -> 16:17..19:17
    start = dt.datetime(2024, 3, 20, 16, 0, tzinfo=UTC)
    service = _service(tmp_path, start, config=_no_af_config())

    async def run(svc, until):
        out = await svc.run_plan(until=until)
        await svc.close()
        return out

    first = _run(run(service, dt.datetime(2024, 3, 20, 16, 20, tzinfo=UTC)))
    assert [s.session_id for s in first] == ["20240320-sunset"]
    rows = service.catalog.frames()
    window_start = min(r.scheduled_at for r in rows)
    assert (
        dt.datetime(2024, 3, 20, 16, 16, tzinfo=UTC)
        < window_start
        < dt.datetime(2024, 3, 20, 16, 18, tzinfo=UTC)
    )
    assert {r.phase for r in rows} == {"day"} and len(rows) == first[0].shots
    n_first = len(rows)

    # "restart" at 16:30, inside the window: the same session resumes at once
    service2 = _service(
        tmp_path, dt.datetime(2024, 3, 20, 16, 30, tzinfo=UTC), config=_no_af_config()
    )
    second = _run(run(service2, dt.datetime(2024, 3, 20, 16, 32, tzinfo=UTC)))
    assert [s.session_id for s in second] == ["20240320-sunset"]
    assert second[0].first_frame_number == n_first
    new = [r for r in service2.catalog.frames() if r.scheduled_at >= second[0].started_at]
    assert min(r.scheduled_at for r in new) == dt.datetime(2024, 3, 20, 16, 30, tzinfo=UTC)
    assert len(service2.catalog.sessions()) == 1


def test_capture_now_outside_a_session_brackets(tmp_path):
    service = _service(tmp_path, dt.datetime(2024, 3, 20, 12, 0, tzinfo=UTC))

    async def go():
        single = await service.capture_now()
        bracket = await service.capture_now(bracket=True)
        status = service.status()
        await service.close()
        return single, bracket, status

    single, bracket, status = _run(go())
    assert len(single) == 1 and single[0].bracket_set is None
    assert [r.bracket_index for r in bracket] == [0, 1, 2]
    assert [r.ev_offset for r in bracket] == [-2.0, 0.0, 2.0]
    assert {r.session_id for r in single + bracket} == {"20240320-manual"}
    assert bracket[0].bracket_set == 1  # numbering continues within the manual session
    assert status["state"] == "idle" and status["writer"]["written"] == 4


# -- white balance by capability ---------------------------------------------------------------


def test_colour_temperature_goes_only_to_cameras_that_take_one(tmp_path):
    """A fixed-kelvin strategy (golden hour: 5500 K) reaches a camera only when it has
    COLOUR_TEMPERATURE; one that takes (red, blue) gains only keeps its own white balance,
    whatever its name (the check used to be ``camera.name != "simulated"``)."""
    from skylapse.capture.cameras import CameraCapability
    from skylapse.capture.exposure import ExposureSettings
    from skylapse.capture.shot import camera_settings
    from skylapse.capture.strategy import CaptureChoice
    from skylapse.config import default_config

    class GainsOnly(SimulatedCamera):
        name = "gains-only"

    golden = default_config().strategies["golden_hour"]
    choice = CaptureChoice("golden_hour", 5.0, "golden_hour", golden, "clear")
    settings = ExposureSettings(0.01, 1.0, math.log2(0.01))
    service = _service(tmp_path, dt.datetime(2024, 3, 20, 17, tzinfo=UTC), camera=GainsOnly(seed=3))
    _run(service.open())
    assert not service.camera.supports_capability(CameraCapability.COLOUR_TEMPERATURE)
    cam = service.camera
    assert camera_settings(cam, settings, choice, None, None).colour_temperature_k is None
    records = _run(service.capture_now())  # golden hour: the frame is taken all the same
    assert len(records) == 1
    service.camera._capabilities |= {CameraCapability.COLOUR_TEMPERATURE}
    assert camera_settings(cam, settings, choice, None, None).colour_temperature_k == 5500.0
    _run(service.close())
