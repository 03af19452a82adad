"""Fault and abuse suite, storage (issue 14, items 4 and 5): the capture buffer under a full
disk, a full or locked catalog, a hostile watermark and a crash, on a real small tmpfs where a
full disk matters.

Item 4: emergency cleanup deletes verified frames first; untransferred ones only while the
station's own frames are what fills the disk, never those of the last ``keep_untransferred_h``,
and only after an alert; ``watermark_pct`` is bounded.

Item 5: a frame's file and its catalog row are one unit (row "writing", rename, mark); lock
errors are retried; temporary files never outlive a failed write; the start-up reconcile
re-catalogs complete frames that have no row and removes only partial temporary files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from skylapse.api.capture.app import create_capture_app
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.service import CATALOG_NAME, CaptureService
from skylapse.capture.storage import DiskUsage, StorageManager, write_atomic
from skylapse.capture.writer import FrameWriter, WriteJob, encode_jpeg, frame_exif
from skylapse.catalog import Catalog, FrameRecord
from skylapse.config import default_config
from skylapse.exif import with_exif_jpeg
from tests_support import wait_for

T0 = dt.datetime(2026, 6, 21, 19, 0, tzinfo=dt.UTC)
TOKEN = "abuse-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = CameraConfig(resolution=(320, 180))


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size) -> Path``: a fresh tmpfs of ``size`` (e.g. "4m"), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True
        )
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def used_pct(root: Path) -> float:
    usage = shutil.disk_usage(root)
    return 100.0 * usage.used / usage.total


def add_frames(root: Path, cat: Catalog, n: int, size: int, start: dt.datetime) -> list[int]:
    """``n`` frame files of ``size`` bytes, one a minute from ``start``, each with its row."""
    ids = []
    for i in range(n):
        rel = f"day/frame_{i:04d}.jpg"
        sha = write_atomic(root / rel, bytes([i % 251]) * size)
        record = FrameRecord(
            path=rel, captured_at=start + dt.timedelta(minutes=i), sha256=sha, size_bytes=size
        )
        ids.append(cat.add_frame(record))
    return ids


def settle(root: Path) -> None:
    """Checkpoint the catalog's WAL into the database (set-up rows would otherwise sit in a WAL
    of about 17 kB per transaction, which dwarfs a 4 MB test disk)."""
    db = sqlite3.connect(root / CATALOG_NAME)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def foreign_file(path: Path, pct_of_disk: float) -> None:
    """Someone else's file taking ``pct_of_disk`` of the file system."""
    size = int(shutil.disk_usage(path.parent).total * pct_of_disk / 100)
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def jpeg_frame(record: FrameRecord, skylapse: dict, seed: int = 0) -> bytes:
    """A frame exactly as the writer makes it: JPEG plus the EXIF built from its record."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 65535, (24, 32, 3), dtype=np.uint16)
    return with_exif_jpeg(encode_jpeg(pixels), frame_exif(record, "sim-cam", skylapse))


def writer_job(i: int, pixels: np.ndarray) -> WriteJob:
    record = FrameRecord(
        path=f"2026-06-21/s1/frame_{i:06d}.jpg",
        captured_at=T0 + dt.timedelta(seconds=30 * i),
        sha256="",
        size_bytes=0,
        session_id="s1",
        phase="day",
    )
    return WriteJob(pixels, record, "sim-cam", {"session_id": "s1", "frame_number": i})


def write_all(writer: FrameWriter, jobs: list[WriteJob]) -> list[FrameRecord | None]:
    async def run():
        futures = [await writer.submit(job) for job in jobs]
        await writer.drain()
        return [f.result() for f in futures]

    try:
        return asyncio.run(run())
    finally:
        writer.close()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp-*") if p.is_file()]


def assert_buffer_matches_catalog(root: Path, cat: Catalog) -> None:
    """Every frame file has its live row, every live row its complete file."""
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    rows = cat.frames()
    assert on_disk == sorted(r.path for r in rows), "frames on disk without a catalog row"
    for r in rows:
        data = (root / r.path).read_bytes()
        assert len(data) == r.size_bytes and hashlib.sha256(data).hexdigest() == r.sha256


def real_sqlite_full() -> sqlite3.OperationalError:
    """The very exception SQLite raises when the catalog cannot grow (SQLITE_FULL)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA max_page_count = 2")
    try:
        for _ in range(100):
            db.execute("INSERT INTO t VALUES (?)", (b"x" * 2000,))
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorcode == sqlite3.SQLITE_FULL
        return exc
    finally:
        db.close()
    raise AssertionError("SQLite did not report a full database")


def make_app(buffer: Path, **kw):
    clock = kw.pop("clock", None) or SimulatedClock(T0)
    return create_capture_app(
        default_config(),
        TOKEN,
        camera=SimulatedCamera(clock=clock, seed=4),
        clock=clock,
        buffer=buffer,
        camera_config=SMALL,
        tick_s=0.2,
        unattended=False,
        **kw,
    )


class Recorder:
    """A notifier that also notes whether the buffer's frames were all still there."""

    def __init__(self, root: Path):
        self.root, self.events = root, []

    def start(self, conditions):
        pass

    def notify(self, event):
        present = len(list(self.root.rglob("*.jpg")))
        self.events.append((event.alert, event.state, present))

    def close(self):
        pass


# -- item 4: emergency cleanup -----------------------------------------------------------------


def test_foreign_file_filling_the_disk_costs_no_untransferred_frame(small_disk):
    root = small_disk("4m")
    cat = Catalog(root / CATALOG_NAME)
    store = StorageManager(root, cat)  # 80 % watermark, as shipped
    ids = add_frames(root, cat, 50, 8192, T0)  # 400 kB of frames, 10 of them verified
    now = T0 + dt.timedelta(days=1)  # every frame older than any floor of recent hours
    cat.set_transfer_state(ids[:10], "verified", when=now - dt.timedelta(hours=1))
    settle(root)
    foreign_file(root / "someone-elses.bin", 81)  # the disk is 81 % full of a foreign file
    before = used_pct(root)
    assert before > 90

    report = store.enforce(now)

    # Verified frames go first (they are safe on the processing host) ...
    assert report.emergency_deleted == 10
    assert report.deleted_paths == [f"day/frame_{i:04d}.jpg" for i in range(10)]
    # ... but deleting the station's untransferred frames would not bring the disk back.
    assert report.emergency_untransferred == 0
    assert cat.count_frames() == 40
    assert all((root / f"day/frame_{i:04d}.jpg").exists() for i in range(10, 50))
    assert store.untransferred_alert is not None and "not this station" in store.untransferred_alert


def test_own_frames_filling_the_disk_delete_old_untransferred_ones_after_an_alert(small_disk):
    root = small_disk("4m")
    cat = Catalog(root / CATALOG_NAME)
    now = T0 + dt.timedelta(days=1)
    seen: list[tuple[str | None, int]] = []
    store = StorageManager(root, cat, keep_untransferred=dt.timedelta(hours=12))
    store.on_alert = lambda: seen.append(
        (store.untransferred_alert, len(list(root.rglob("*.jpg"))))
    )
    old = add_frames(root, cat, 40, 40_960, now - dt.timedelta(hours=20))  # 1.6 MB, 20 h ago
    for i in range(30):  # 1.2 MB of the last hour
        rel = f"recent/frame_{i:04d}.jpg"
        sha = write_atomic(root / rel, bytes([i]) * 40_960)
        cat.add_frame(
            FrameRecord(rel, now - dt.timedelta(minutes=60 - i), sha256=sha, size_bytes=40_960)
        )
    settle(root)
    foreign_file(root / "other.bin", 14)
    assert used_pct(root) > 80

    report = store.enforce(now)

    # Oldest untransferred first, down to the goal (watermark - margin) ...
    assert 0 < report.emergency_untransferred < len(old)
    assert report.deleted_paths == [
        f"day/frame_{i:04d}.jpg" for i in range(len(report.deleted_paths))
    ]
    assert used_pct(root) <= 75
    # ... never one of the last 12 hours ...
    assert len(list((root / "recent").glob("*.jpg"))) == 30
    # ... and only after the alert was raised, while every frame was still there.
    assert seen and seen[0][1] == 70
    assert "untransferred" in seen[0][0]


def test_the_floor_of_recent_hours_holds_even_above_the_watermark(small_disk):
    root = small_disk("4m")
    cat = Catalog(root / CATALOG_NAME)
    now = T0 + dt.timedelta(days=1)
    store = StorageManager(root, cat, keep_untransferred=dt.timedelta(hours=6))
    add_frames(root, cat, 3, 32_768, now - dt.timedelta(hours=7))  # past the floor
    for i in range(70):  # 2.2 MB of the last 5 hours
        rel = f"recent/frame_{i:04d}.jpg"
        sha = write_atomic(root / rel, bytes([i]) * 32_768)
        cat.add_frame(FrameRecord(rel, now - dt.timedelta(minutes=300 - i), sha, 32_768))
    settle(root)
    foreign_file(root / "other.bin", 26)
    assert used_pct(root) > 80

    report = store.enforce(now)

    assert report.deleted_paths == [
        "day/frame_0000.jpg",
        "day/frame_0001.jpg",
        "day/frame_0002.jpg",
    ]
    assert len(list((root / "recent").glob("*.jpg"))) == 70
    assert "6 h" in store.untransferred_alert


@pytest.mark.parametrize(
    "patch", [{"watermark_pct": 1}, {"watermark_pct": 99}, {"watermark_pct": 49.9}]
)
def test_put_config_cannot_set_a_watermark_that_deletes_untransferred_frames(tmp_path, patch):
    app = make_app(tmp_path / "buf")
    with TestClient(app) as client:
        wait_for(lambda: app.state.runtime.camera_open, what="camera open", timeout=15)
        service = app.state.runtime.service
        root = service.buffer
        add_frames(root, service.catalog, 5, 1000, T0 - dt.timedelta(days=1))
        r = client.put("/config", headers=AUTH, json={"capture": patch})
        assert r.status_code == 422, r.text
        assert [d["field"] for d in r.json()["detail"]] == ["capture.watermark_pct"]
        assert service.storage.watermark_pct == 80
        assert client.get("/config", headers=AUTH).json()["capture"]["watermark_pct"] == 80
        service.storage.enforce(T0)  # the next check deletes nothing
        assert service.catalog.count_frames() == 5


def test_keep_untransferred_h_is_validated_and_applied(tmp_path):
    app = make_app(tmp_path / "buf")
    with TestClient(app) as client:
        r = client.put("/config", headers=AUTH, json={"capture": {"keep_untransferred_h": 0}})
        assert r.status_code == 422
        assert [d["field"] for d in r.json()["detail"]] == ["capture.keep_untransferred_h"]
        r = client.put("/config", headers=AUTH, json={"capture": {"keep_untransferred_h": 24}})
        assert r.status_code == 200, r.text
        storage = app.state.runtime.service.storage
        assert storage.keep_untransferred == dt.timedelta(hours=24)


def test_the_service_alerts_before_it_deletes_an_untransferred_frame(tmp_path):
    buffer = tmp_path / "buf"
    recorder = Recorder(buffer)

    def disk(root: Path) -> DiskUsage:  # a 100 kB disk holding only the frames
        used = sum(p.stat().st_size for p in root.rglob("*.jpg"))
        return DiskUsage(100_000, used, 100_000 - used)

    app = make_app(buffer, notifiers=[recorder], disk_usage=disk)
    with TestClient(app):
        wait_for(lambda: app.state.runtime.camera_open, what="camera open", timeout=15)
        service = app.state.runtime.service
        add_frames(buffer, service.catalog, 9, 10_000, T0 - dt.timedelta(days=1))  # 90 %
        report = service.storage.enforce(T0)
        assert report.emergency_untransferred == 2  # down to 75 %
        risk = [e for e in recorder.events if e[0] == "untransferred_frames_at_risk"]
        assert risk and risk[0][1:] == ("firing", 9)  # raised while all 9 were there


# -- item 5: the writer and the reconcile ------------------------------------------------------


def test_full_disk_leaves_no_temp_files_and_no_frames_without_rows(small_disk):
    root = small_disk("1m")
    cat = Catalog(root / CATALOG_NAME)
    rng = np.random.default_rng(5)
    # noisy frames of 40..90 kB between tiny flat ones of 1 kB: once the disk is full a tiny
    # frame's file still fits where the catalog's WAL cannot grow (SQLITE_FULL on the row)
    jobs = [
        writer_job(
            i,
            rng.integers(0, 65535, (100 + 5 * i, 160, 3), dtype=np.uint16)
            if i % 2
            else np.full((16, 16, 3), 20000 + i, np.uint16),
        )
        for i in range(60)
    ]
    writer = FrameWriter(root, cat)

    results = write_all(writer, jobs)

    assert writer.failed > 0 and writer.written > 0  # the disk did fill up
    assert writer.written + writer.failed == 60
    assert temp_files(root) == []
    # one unit: every frame file has its row and every row its complete file
    rows = cat.frames(include_deleted=True)
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert on_disk == sorted(r.path for r in rows)
    for r in rows:
        assert hashlib.sha256((root / r.path).read_bytes()).hexdigest() == r.sha256
    assert sum(r is not None for r in results) == len(rows) == writer.written


def test_catalog_full_drops_the_frame_as_a_unit(tmp_path, monkeypatch):
    root = tmp_path / "buf"
    cat = Catalog(root / CATALOG_NAME)
    full = real_sqlite_full()

    def add_frame(record):
        raise full

    monkeypatch.setattr(cat, "add_frame", add_frame)
    writer = FrameWriter(root, cat)
    pixels = np.full((24, 32, 3), 30000, np.uint16)

    assert write_all(writer, [writer_job(0, pixels)]) == [None]

    assert writer.failed == 1
    assert list(root.rglob("*.jpg")) == [] and temp_files(root) == []


def test_locked_catalog_is_retried_and_the_frame_kept(tmp_path):
    root = tmp_path / "buf"
    cat = Catalog(root / CATALOG_NAME)
    held, release = threading.Event(), threading.Event()

    def hold_lock():  # another process writing for a while
        db = sqlite3.connect(root / CATALOG_NAME, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(5)
        db.execute("COMMIT")
        db.close()

    def short_busy_timeout(job):  # so the lock outlasts it, as a 30 s one can in the field
        threading.Timer(0.3, release.set).start()
        cat._connect().execute("PRAGMA busy_timeout = 20")

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(5)
    writer = FrameWriter(root, cat, write_hook=short_busy_timeout)
    pixels = np.full((24, 32, 3), 30000, np.uint16)
    try:
        [record] = write_all(writer, [writer_job(0, pixels)])
    finally:
        release.set()
        holder.join()

    assert record is not None and writer.failed == 0
    assert cat.frame_by_path(record.path).transfer_state == "pending"
    assert_buffer_matches_catalog(root, cat)
    assert temp_files(root) == []


def test_a_row_left_writing_is_marked_by_the_next_frame(tmp_path, monkeypatch):
    root = tmp_path / "buf"
    cat = Catalog(root / CATALOG_NAME)
    real_mark = cat.mark_written
    writing = {"job": -1}

    def note_job(job):  # runs in the writer thread before each frame
        writing["job"] = job.skylapse["frame_number"]

    def mark_written(frame_id):
        if writing["job"] == 0:  # the first frame's mark meets a lock through every retry
            cat._connect().execute("PRAGMA busy_timeout = 0")
            blocker = sqlite3.connect(root / CATALOG_NAME, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                return real_mark(frame_id)  # SQLite's own "database is locked"
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
        return real_mark(frame_id)

    monkeypatch.setattr(cat, "mark_written", mark_written)
    writer = FrameWriter(root, cat, write_hook=note_job)
    pixels = np.full((24, 32, 3), 30000, np.uint16)

    first, second = write_all(writer, [writer_job(0, pixels), writer_job(1, pixels)])

    assert first is not None and first.transfer_state == "writing"  # on disk, row kept
    assert second is not None and second.transfer_state == "pending"
    assert [r.transfer_state for r in cat.frames()] == ["pending", "pending"]
    assert_buffer_matches_catalog(root, cat)


def test_reconcile_at_start_recatalogs_complete_frames_and_removes_only_partial_temps(tmp_path):
    buffer = tmp_path / "buf"
    folder = buffer / "2026-06-21" / "day"
    folder.mkdir(parents=True)
    cat = Catalog(buffer / CATALOG_NAME)

    def frame(n: int) -> tuple[FrameRecord, bytes]:
        record = FrameRecord(
            path=f"2026-06-21/day/frame_{n:06d}.jpg",
            captured_at=T0 + dt.timedelta(seconds=30 * n, microseconds=123456),
            sha256="",
            size_bytes=0,
            session_id="day",
            exposure_time_s=1 / 250,
            iso=200,
            aperture=2.8,
            phase="golden",
            strategy="golden-hdr",
        )
        skylapse = {
            "session_id": "day",
            "frame_number": n,
            "phase": "golden",
            "strategy": "golden-hdr",
            "scheduled_at": record.captured_at.isoformat(timespec="microseconds"),
            "bracket": {"set": n, "index": 1, "ev_offset": -2.0},
            "quality_score": 0.75,
            "focus_score": 12.5,
            "exposure_error_ev": 0.1,
            "latency_ms": 3.5,
            "lens_position": 1.5,
        }
        data = jpeg_frame(record, skylapse, seed=n)
        sha = hashlib.sha256(data).hexdigest()
        return replace(record, sha256=sha, size_bytes=len(data)), data

    # (0) complete, renamed, but its row never made it (catalog full or locked at the time)
    rec0, data0 = frame(0)
    (buffer / rec0.path).write_bytes(data0)
    # (1) a half-written temporary file
    _, data1 = frame(1)
    (folder / ".frame_000001.jpg.tmp-4242").write_bytes(data1[: len(data1) // 2])
    # (2) row "writing", file renamed into place, never marked
    rec2, data2 = frame(2)
    cat.add_frame(replace(rec2, transfer_state="writing"))
    (buffer / rec2.path).write_bytes(data2)
    # (3) row "writing", complete temporary file, power cut before the rename
    rec3, data3 = frame(3)
    cat.add_frame(replace(rec3, transfer_state="writing"))
    (folder / ".frame_000003.jpg.tmp-4242").write_bytes(data3)
    # (4) row "writing", nothing on disk: the frame never existed
    rec4, _ = frame(4)
    cat.add_frame(replace(rec4, transfer_state="writing"))
    # (5) a JPEG that is not Skylapse's: neither cataloged nor deleted
    stranger = folder / "holiday.jpg"
    stranger.write_bytes(encode_jpeg(np.zeros((8, 8, 3), np.uint16)))

    clock = SimulatedClock(T0 + dt.timedelta(hours=1))
    service = CaptureService(
        SimulatedCamera(clock=clock, seed=3), buffer=buffer, clock=clock, camera_config=SMALL
    )

    async def start():
        await service.open()
        await service.close()

    asyncio.run(start())

    rows = {r.path: r for r in service.catalog.frames()}
    assert sorted(rows) == [rec0.path, rec2.path, rec3.path]
    assert all(r.transfer_state == "pending" for r in rows.values())
    assert (buffer / rec3.path).read_bytes() == data3
    assert service.catalog.frame_by_path(rec4.path) is None
    assert temp_files(buffer) == []
    assert stranger.exists()
    # the re-cataloged frame carries what its EXIF says
    got = rows[rec0.path]
    assert got.sha256 == rec0.sha256 and got.size_bytes == len(data0)
    assert got.captured_at == rec0.captured_at
    assert got.session_id == "day" and got.phase == "golden" and got.strategy == "golden-hdr"
    assert got.exposure_time_s == pytest.approx(1 / 250) and got.iso == 200
    assert got.aperture == pytest.approx(2.8)
    assert (got.bracket_set, got.bracket_index, got.ev_offset) == (0, 1, -2.0)
    assert got.quality_score == 0.75 and got.scheduled_at == rec0.captured_at
    assert got.extra["frame_number"] == 0
