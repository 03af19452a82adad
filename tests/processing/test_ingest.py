"""Ingest of committed batches: verification, sequences, quarantine, idempotence, re-send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from servers import running_sshd
from skylapse.capture.storage import write_atomic
from skylapse.catalog import Catalog, FrameRecord, ProcessingCatalog
from skylapse.exif import exif_bytes, read_skylapse_metadata, with_exif_jpeg
from skylapse.processing.ingest import Ingestor
from skylapse.transfer.queue import TransferWorker
from skylapse.transfer.rsync import SshTarget
from tests_support import SSH_TRANSFER

T0 = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)


def jpeg_frame(i: int, session: str, phase: str) -> bytes:
    rng = np.random.default_rng(i)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", img)
    assert ok
    when = T0 + timedelta(seconds=30 * i, microseconds=250)
    meta = {
        "session_id": session,
        "phase": phase,
        "camera": "simulated",
        "captured_at": when.isoformat(),
    }
    return with_exif_jpeg(
        enc.tobytes(), exif_bytes(when, exposure_time_s=1 / 250, iso=100, f_number=8, skylapse=meta)
    )


def commit_batch(station_dir: Path, name: str, files: dict[str, bytes], corrupt: str = "") -> None:
    import hashlib

    lines = []
    for rel, data in files.items():
        (station_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (station_dir / rel).write_bytes(data if rel != corrupt else data[:-10] + b"0123456789")
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
    (station_dir / ".manifests").mkdir(parents=True, exist_ok=True)
    (station_dir / ".manifests" / f"{name}.sha256").write_text("".join(lines))


@pytest.fixture
def ingestor(tmp_path):
    cat = ProcessingCatalog(tmp_path / "processing.db")
    return Ingestor(tmp_path / "inbox", tmp_path / "store", tmp_path / "quarantine", cat)


def test_exif_round_trip_of_skylapse_record(tmp_path):
    data = jpeg_frame(3, "s1", "golden_hour")
    import io

    from PIL import Image

    buf = io.BytesIO(data)
    with Image.open(buf) as im:
        assert im.size == (64, 48)
    path = tmp_path / "skylapse-exif-test.jpg"
    path.write_bytes(data)
    assert read_skylapse_metadata(path)["phase"] == "golden_hour"


def test_ingest_groups_sequences_and_is_idempotent(ingestor, tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    files = {
        f"d/f{i:03d}.jpg": jpeg_frame(
            i, "evening-1" if i < 4 else "evening-2", "golden_hour" if i < 2 else "blue_hour"
        )
        for i in range(6)
    }
    commit_batch(station, "b1", files)
    # a half-sent batch (uncommitted manifest) must be left alone
    (station / ".manifests" / "b2.sha256.part").write_text("x  d/never.jpg\n")
    report = ingestor.scan()
    assert report.ingested == 6 and not report.quarantined
    seqs = ingestor.catalog.sequences()
    assert [(s.session_id, s.frames) for s in seqs] == [("evening-1", 4), ("evening-2", 2)]
    assert seqs[0].phases == ("golden_hour", "blue_hour")
    frames = ingestor.catalog.sequence_frames(seqs[0].id)
    assert [f.path for f in frames] == [f"d/f{i:03d}.jpg" for i in range(4)]
    assert all((tmp_path / "store" / f.store_path).is_file() for f in frames)
    assert not (station / "d" / "f000.jpg").exists()
    # the same batch arriving again (a re-send) is not recorded twice
    commit_batch(station, "b1-again", dict(list(files.items())[:2]))
    again = ingestor.scan()
    assert again.ingested == 0 and again.already_ingested == 2
    assert sum(s.frames for s in ingestor.catalog.sequences()) == 6
    assert (station / ".manifests" / "b2.sha256.part").exists()


def test_corrupt_and_undecodable_frames_are_quarantined_with_reason(ingestor, tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    good = jpeg_frame(1, "s", "day")
    files = {"a.jpg": good, "b.jpg": jpeg_frame(2, "s", "day"), "c.jpg": b"not a jpeg at all"}
    commit_batch(station, "b1", files, corrupt="b.jpg")
    report = ingestor.scan()
    assert report.ingested == 1
    reasons = dict(report.quarantined)
    assert reasons["peak-1/b.jpg"].startswith("checksum mismatch")
    assert reasons["peak-1/c.jpg"].startswith("does not decode")
    q = tmp_path / "quarantine" / "peak-1"
    assert (q / "b.jpg").exists() and (q / "b.jpg.reason").read_text().startswith("checksum")
    assert (q / "c.jpg").exists()
    assert len(ingestor.catalog.quarantined()) == 2
    # only the checksum failure asks the capture side to send again
    assert (station / ".resend").read_text() == "b.jpg\n"


def test_manifest_cannot_point_outside_the_inbox(ingestor, tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_frame(1, "s", "day"))
    (station / ".manifests").mkdir(parents=True)
    (station / ".manifests" / "evil.sha256").write_text("0" * 64 + "  ../../secret.jpg\n")
    report = ingestor.scan()
    assert report.ingested == 0 and len(report.quarantined) == 1
    assert secret.exists()


@SSH_TRANSFER
def test_end_to_end_with_resend_of_a_frame_rejected_at_ingest(tmp_path):
    """Capture -> rsync/ssh -> ingest; a frame damaged after verification is sent again."""
    with running_sshd(tmp_path / "sshd") as sshd:
        buf, cat = tmp_path / "buf", Catalog(tmp_path / "capture.db")
        for i in range(5):
            rel = f"2026-06-21/f{i:03d}.jpg"
            sha = write_atomic(buf / rel, jpeg_frame(i, "evening", "golden_hour"))
            cat.add_frame(
                FrameRecord(
                    path=rel,
                    captured_at=T0 + timedelta(seconds=i),
                    sha256=sha,
                    size_bytes=(buf / rel).stat().st_size,
                )
            )
        inbox = sshd.home / "inbox"
        target = SshTarget(
            host="127.0.0.1",
            port=sshd.port,
            user=sshd.user,
            inbox=str(inbox),
            key_file=sshd.client_key,
            known_hosts=sshd.known_hosts,
        )
        worker = TransferWorker(cat, buf, target, "peak-1")
        assert worker.drain(deadline_s=60) == 5
        # bit rot on the receiver between verification and ingest
        victim = inbox / "peak-1" / "2026-06-21" / "f002.jpg"
        data = bytearray(victim.read_bytes())
        data[200] ^= 0xFF
        victim.write_bytes(bytes(data))
        ingestor = Ingestor(
            inbox, tmp_path / "store", tmp_path / "q", ProcessingCatalog(tmp_path / "p.db")
        )
        report = ingestor.scan()
        assert report.ingested == 4 and len(report.quarantined) == 1
        # the next batch reads the receiver's re-send list back and sends f002 again
        rel = "2026-06-21/f005.jpg"
        sha = write_atomic(buf / rel, jpeg_frame(5, "evening", "blue_hour"))
        cat.add_frame(
            FrameRecord(
                path=rel,
                captured_at=T0 + timedelta(seconds=5),
                sha256=sha,
                size_bytes=(buf / rel).stat().st_size,
            )
        )
        assert worker.drain(deadline_s=60) == 2  # f005, then f002 again
        assert cat.frame_by_path("2026-06-21/f002.jpg").transfer_attempts >= 1
        report = ingestor.scan()
        assert report.ingested == 2
        seq = ingestor.catalog.sequences()[0]
        assert seq.frames == 6
        assert all(f.transfer_state == "verified" for f in cat.frames())
