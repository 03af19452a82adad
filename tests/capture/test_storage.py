import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skylapse.capture.reconcile import reconcile_buffer
from skylapse.capture.storage import DiskUsage, StorageManager, write_atomic
from skylapse.catalog import Catalog, FrameRecord

T0 = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)
FRAME = 10_000  # bytes per test frame


def fake_disk(capacity: int):
    """Disk usage of a pretend disk of `capacity` bytes holding exactly the buffer's files."""

    def usage(root: Path) -> DiskUsage:
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        return DiskUsage(capacity, used, capacity - used)

    return usage


def add_frames(root: Path, cat: Catalog, n: int) -> list[int]:
    ids = []
    for i in range(n):
        rel = f"day/frame_{i:04d}.jpg"
        sha = write_atomic(root / rel, bytes([i % 256]) * FRAME)
        ids.append(
            cat.add_frame(
                FrameRecord(
                    path=rel, captured_at=T0 + timedelta(minutes=i), sha256=sha, size_bytes=FRAME
                )
            )
        )
    return ids


def test_write_atomic_leaves_complete_file_and_checksum(tmp_path):
    import hashlib

    sha = write_atomic(tmp_path / "a" / "f.jpg", b"abc" * 1000)
    assert (tmp_path / "a" / "f.jpg").read_bytes() == b"abc" * 1000
    assert sha == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.jpg"]


def test_reconcile_removes_half_written_files(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    (tmp_path / "buf" / "day").mkdir(parents=True)
    stray = tmp_path / "buf" / "day" / f".frame_0001.jpg.tmp-{os.getpid()}"
    stray.write_bytes(b"half")
    keep = tmp_path / "buf" / "day" / "frame_0000.jpg"
    keep.write_bytes(b"whole")
    report = reconcile_buffer(tmp_path / "buf", cat)
    assert report.removed_temps == [f"day/{stray.name}"]
    assert report.foreign == ["day/frame_0000.jpg"]  # not a Skylapse frame: left alone
    assert keep.exists() and not stray.exists()


def test_retention_deletes_only_verified_frames_past_age(tmp_path):
    root = tmp_path / "buf"
    cat = Catalog(tmp_path / "c.db")
    store = StorageManager(root, cat, retention=timedelta(hours=48), disk_usage=fake_disk(10**9))
    ids = add_frames(root, cat, 6)
    now = T0 + timedelta(hours=60)
    cat.set_transfer_state(ids[0:2], "verified", when=now - timedelta(hours=50))
    cat.set_transfer_state(ids[2:3], "verified", when=now - timedelta(hours=10))
    cat.set_transfer_state(ids[3:4], "sent")
    report = store.enforce(now)
    assert report.retention_deleted == 2 and report.emergency_deleted == 0
    assert sorted(report.deleted_paths) == ["day/frame_0000.jpg", "day/frame_0001.jpg"]
    assert not (root / "day/frame_0000.jpg").exists()
    assert all((root / f"day/frame_{i:04d}.jpg").exists() for i in range(2, 6))


def test_emergency_cleanup_deletes_verified_before_untransferred(tmp_path):
    root = tmp_path / "buf"
    cat = Catalog(tmp_path / "c.db")
    # 20 frames of 10 kB on a 240 kB disk: 83 % full, past the 80 % watermark
    store = StorageManager(root, cat, watermark_pct=80, margin_pct=5, disk_usage=fake_disk(240_000))
    ids = add_frames(root, cat, 20)
    cat.set_transfer_state(ids[10:13], "verified", when=T0)  # recent, not due for retention
    report = store.enforce(T0 + timedelta(hours=1))
    # goal 75 % = 180 kB -> 2 deletions; both must be verified frames, oldest first
    assert report.emergency_deleted == 2 and report.emergency_untransferred == 0
    assert report.deleted_paths == ["day/frame_0010.jpg", "day/frame_0011.jpg"]
    assert store.utilization_pct() <= 75
    assert store.deleted_total["emergency"] == 2


def test_emergency_cleanup_never_stops_capture(tmp_path):
    root = tmp_path / "buf"
    cat = Catalog(tmp_path / "c.db")
    store = StorageManager(root, cat, watermark_pct=80, margin_pct=5, disk_usage=fake_disk(100_000))
    ids = add_frames(root, cat, 10)  # 100 % full, nothing transferred but one
    cat.set_transfer_state(ids[5:6], "verified", when=T0)
    report = store.enforce(T0 + timedelta(hours=13))  # past the 12 h floor of untransferred
    # verified frame first, then the oldest untransferred ones, down to 75 %
    assert report.deleted_paths[0] == "day/frame_0005.jpg"
    assert report.deleted_paths[1:] == ["day/frame_0000.jpg", "day/frame_0001.jpg"]
    assert report.emergency_untransferred == 2
    assert store.utilization_pct() <= 75
    assert cat.count_frames() == 7


def test_bad_watermark_is_refused(tmp_path):
    with pytest.raises(ValueError, match="watermark"):
        StorageManager(tmp_path, Catalog(tmp_path / "c.db"), watermark_pct=0)
