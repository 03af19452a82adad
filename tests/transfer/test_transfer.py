"""The transfer queue against a real sshd and the real rsync, including faults."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servers import running_sshd
from skylapse.capture.storage import StorageManager, write_atomic
from skylapse.catalog import Catalog, FrameRecord
from skylapse.transfer.queue import TransferSettings, TransferWorker, VerificationFailed
from skylapse.transfer.rsync import SshTarget, TransferCommandError
from tests_support import SSH_TRANSFER

pytestmark = SSH_TRANSFER

T0 = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)


@pytest.fixture
def sshd(tmp_path):
    with running_sshd(tmp_path / "sshd") as server:
        yield server


def target_for(server, inbox: Path) -> SshTarget:
    return SshTarget(
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        inbox=str(inbox),
        key_file=server.client_key,
        known_hosts=server.known_hosts,
    )


def capture_frames(root: Path, cat: Catalog, n: int, size: int = 20_000, start: int = 0) -> None:
    rng = __import__("random").Random(start)
    for i in range(start, start + n):
        rel = f"2026-06-21/frame_{i:05d}.jpg"
        data = bytes(rng.getrandbits(8) for _ in range(64)) * (size // 64)
        sha = write_atomic(root / rel, data)
        cat.add_frame(
            FrameRecord(
                path=rel, captured_at=T0 + timedelta(seconds=i), sha256=sha, size_bytes=len(data)
            )
        )


def assert_all_arrived_once(root: Path, cat: Catalog, remote: Path) -> None:
    frames = cat.frames()
    assert frames and all(f.transfer_state == "verified" for f in frames)
    arrived = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*.jpg"))
    assert arrived == sorted(f.path for f in frames)
    for f in frames:
        assert hashlib.sha256((remote / f.path).read_bytes()).hexdigest() == f.sha256
    assert not list(remote.rglob(".rsync-partial/*"))
    assert not list(remote.rglob("*.part"))


def test_batches_arrive_verified_and_committed(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 23)
    inbox = sshd.home / "inbox"
    worker = TransferWorker(
        cat, root, target_for(sshd, inbox), "peak-1", TransferSettings(batch_size=10)
    )
    assert worker.drain(deadline_s=60) == 23
    remote = inbox / "peak-1"
    assert_all_arrived_once(root, cat, remote)
    manifests = sorted((remote / ".manifests").glob("*.sha256"))
    assert len(manifests) == 3  # 10 + 10 + 3, each committed
    listed = [ln.split("  ")[1] for m in manifests for ln in m.read_text().splitlines()]
    assert sorted(listed) == sorted(f.path for f in cat.frames())
    assert worker.stats.frames_sent == 23 and worker.stats.last_success is not None
    assert worker.drain(deadline_s=5) == 0  # nothing left


def test_unknown_host_key_is_refused(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 2)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIHJ5c2xhcHNlc2t5bGFwc2Vza3lsYXBzZXNreWxhcA==\n"
    )
    target = SshTarget(
        host="127.0.0.1",
        port=sshd.port,
        user=sshd.user,
        inbox=str(sshd.home),
        key_file=sshd.client_key,
        known_hosts=wrong,
    )
    worker = TransferWorker(cat, root, target, "peak-1")
    with pytest.raises(TransferCommandError):
        worker.send_batch()
    assert cat.count_frames(transfer_state="verified") == 0


def test_corruption_in_flight_is_caught_and_resent(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 5)
    inbox = sshd.home / "inbox"
    # An rsync that, on its first run, flips a byte in one frame after it arrived.
    flag = tmp_path / "corrupt-once"
    flag.touch()
    victim = inbox / "peak-1" / "2026-06-21" / "frame_00002.jpg"
    wrapper = tmp_path / "rsync-corrupting"
    wrapper.write_text(
        '#!/bin/sh\nrsync "$@" || exit $?\n'
        f"if [ -e {flag} ]; then rm {flag}; "
        f"printf 'X' | dd of={victim} bs=1 seek=100 conv=notrunc status=none; fi\n"
    )
    wrapper.chmod(0o755)
    worker = TransferWorker(
        cat,
        root,
        target_for(sshd, inbox),
        "peak-1",
        TransferSettings(rsync_program=str(wrapper), retry_initial_s=0.05),
    )
    with pytest.raises(VerificationFailed) as info:
        worker.send_batch()
    assert info.value.failed == ["2026-06-21/frame_00002.jpg"]
    # the four intact frames are committed at once, in a manifest without the corrupted one
    assert info.value.verified == 4 and cat.count_frames(transfer_state="verified") == 4
    [manifest] = (inbox / "peak-1" / ".manifests").glob("*.sha256")
    assert "frame_00002" not in manifest.read_text()
    assert cat.frame_by_path("2026-06-21/frame_00002.jpg").transfer_state == "sent"
    assert worker.drain(deadline_s=60) == 1
    assert_all_arrived_once(root, cat, inbox / "peak-1")


def test_killed_rsync_resumes_and_delivers_once(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 3, size=3_000_000)
    inbox = sshd.home / "inbox"
    slow = TransferWorker(
        cat,
        root,
        target_for(sshd, inbox),
        "peak-1",
        TransferSettings(bandwidth_limit_kbps=2000, compress=False),
    )
    errors = []

    def send():
        try:
            slow.send_batch()
        except TransferCommandError as exc:
            errors.append(exc)

    t = threading.Thread(target=send)
    t.start()
    partial = inbox / "peak-1" / "2026-06-21"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        list(partial.rglob(".rsync-partial/*")) or list(partial.glob(".frame_*"))
    ):
        time.sleep(0.05)
    assert slow.runner.kill()
    t.join(30)
    assert errors, "the killed rsync must surface as an error"
    assert cat.count_frames(transfer_state="verified") == 0
    fast = TransferWorker(cat, root, target_for(sshd, inbox), "peak-1")
    assert fast.drain(deadline_s=60) == 3
    assert_all_arrived_once(root, cat, inbox / "peak-1")


def test_sshd_down_then_back(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 4)
    inbox = sshd.home / "inbox"
    sshd.stop()
    worker = TransferWorker(
        cat,
        root,
        target_for(sshd, inbox),
        "peak-1",
        TransferSettings(retry_initial_s=0.1, retry_max_s=0.5),
    )
    threading.Timer(2.0, sshd.start).start()
    assert worker.drain(deadline_s=60) == 4
    assert worker.stats.failures >= 1 and worker.stats.failing_since is None
    assert_all_arrived_once(root, cat, inbox / "peak-1")


def test_restart_with_half_sent_queue(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 6)
    inbox = sshd.home / "inbox"
    first = TransferWorker(
        cat, root, target_for(sshd, inbox), "peak-1", TransferSettings(batch_size=6)
    )
    # Crash between rsync and verification: frames are 'sent' but not verified.
    first._verify_and_commit = lambda *a: (_ for _ in ()).throw(SystemExit("crash"))
    with pytest.raises(SystemExit):
        first.send_batch()
    assert cat.count_frames(transfer_state="sent") == 6
    cat.close()
    cat2 = Catalog(tmp_path / "c.db")  # the restarted capture service
    capture_frames(root, cat2, 2, start=6)
    second = TransferWorker(cat2, root, target_for(sshd, inbox), "peak-1")
    assert second.drain(deadline_s=60) == 8
    assert_all_arrived_once(root, cat2, inbox / "peak-1")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_receiver_disk_full_then_freed(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    capture_frames(root, cat, 8, size=200_000)
    inbox = sshd.home / "small"
    inbox.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inbox)], check=True)
    try:
        filler = inbox / "filler"
        filler.write_bytes(b"\0" * 900_000)
        worker = TransferWorker(
            cat,
            root,
            target_for(sshd, inbox),
            "peak-1",
            TransferSettings(retry_initial_s=0.1, retry_max_s=0.5),
        )
        with pytest.raises((TransferCommandError, VerificationFailed)):
            worker.drain(deadline_s=2)
        assert cat.count_frames(transfer_state="verified") == 0
        # Nothing unverified may be removed by retention, even long after.
        store = StorageManager(root, cat, retention=timedelta(hours=48))
        store.enforce(T0 + timedelta(days=10))
        assert len(list(root.rglob("*.jpg"))) == 8
        subprocess.run(["mount", "-o", "remount,size=8m", str(inbox)], check=True)
        filler.unlink()
        assert worker.drain(deadline_s=60) == 8
        assert_all_arrived_once(root, cat, inbox / "peak-1")
    finally:
        subprocess.run(["umount", "-l", str(inbox)], check=False)
