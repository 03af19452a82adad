import threading
from datetime import UTC, datetime, timedelta

import pytest

from skylapse.catalog import Catalog, FrameRecord

T0 = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)


def record(i: int, **kw) -> FrameRecord:
    return FrameRecord(
        path=f"2026-06-21/frame_{i:05d}.jpg",
        captured_at=T0 + timedelta(seconds=30 * i, microseconds=123),
        scheduled_at=T0 + timedelta(seconds=30 * i),
        sha256=f"{i:064x}",
        size_bytes=1000 + i,
        exposure_time_s=0.01 * (i + 1),
        analogue_gain=1.0,
        white_balance=(2.0, 1.5),
        **kw,
    )


def test_round_trip_and_json(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    fid = cat.add_frame(record(1, bracket_set=3, bracket_index=1, ev_offset=-2.0, extra={"k": 1}))
    got = cat.get_frame(fid)
    assert got.path == "2026-06-21/frame_00001.jpg"
    assert got.captured_at == T0 + timedelta(seconds=30, microseconds=123)
    assert got.white_balance == (2.0, 1.5)
    assert got.extra == {"k": 1}
    js = got.to_json()
    assert js["captured_at"] == "2026-06-21T19:00:30.000123+00:00"
    assert js["scheduled_at"].endswith(".000000+00:00")
    assert js["bracket"] == {"set": 3, "index": 1, "ev_offset": -2.0}


def test_paths_are_unique(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    cat.add_frame(record(1))
    with pytest.raises(Exception, match="UNIQUE"):
        cat.add_frame(record(1))


def test_queue_and_deletion_order(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    ids = [cat.add_frame(record(i)) for i in range(5)]
    cat.set_transfer_state(ids[2:4], "sent")
    cat.set_transfer_state(ids[3:4], "verified", when=T0)
    assert [r.id for r in cat.pending_transfer()] == [ids[0], ids[1], ids[2], ids[4]]
    assert cat.count_frames(transfer_state="verified") == 1
    order = [r.id for r in cat.deletion_candidates()]
    assert order == [ids[3], ids[0], ids[1], ids[2], ids[4]]
    cat.mark_deleted(ids[0], T0, "test")
    assert ids[0] not in [r.id for r in cat.frames()]
    assert ids[0] in [r.id for r in cat.frames(include_deleted=True)]
    with pytest.raises(ValueError):
        cat.set_transfer_state(ids, "lost")


def test_time_filter_and_paging(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    for i in range(10):
        cat.add_frame(record(i))
    got = cat.frames(since=T0 + timedelta(seconds=60), until=T0 + timedelta(seconds=181))
    assert [r.path[-9:-4] for r in got] == ["00002", "00003", "00004", "00005", "00006"]
    page = cat.frames(limit=3, offset=3)
    assert [r.path[-9:-4] for r in page] == ["00003", "00004", "00005"]


def test_concurrent_writers_from_threads(tmp_path):
    cat = Catalog(tmp_path / "c.db")

    def writer(base):
        for i in range(25):
            cat.add_frame(record(base + i))

    threads = [threading.Thread(target=writer, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cat.count_frames() == 100
