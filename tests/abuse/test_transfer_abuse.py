"""Fault and abuse suite, transfer side (issue 14, items 1, 2 and 12).

Each test reproduces an attack or a fault that used to stall the transfer queue or run a
command of the attacker's choosing: a poison frame in a batch, a receiver that refuses one
frame, a newline in a session name, a stale file list, an error hidden behind another, and a
``transfer.host`` that ssh reads as an option. Tests marked ``system`` run the real sshd and
rsync (a private loopback sshd, `skylapse.transfer.local_sshd`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from servers import running_sshd
from skylapse.capture.storage import write_atomic
from skylapse.catalog import Catalog, FrameRecord
from skylapse.cli import app
from skylapse.config import ConfigError, parse_config
from skylapse.doctor import parse_ssh_target
from skylapse.names import check_name
from skylapse.transfer.manifest import MANIFEST_DIR
from skylapse.transfer.queue import (
    QUARANTINE_DIR,
    TransferSettings,
    TransferWorker,
    VerificationFailed,
)
from skylapse.transfer.rsync import SshTarget, rsync_argv, ssh_argv, ssh_command
from tests_support import SSH_TRANSFER, wait_for

T0 = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)
STATION = "peak-1"
runner = CliRunner()


@pytest.fixture
def sshd(tmp_path):
    with running_sshd(tmp_path / "sshd") as server:
        yield server


def add_frames(root: Path, cat: Catalog, n: int, folder: str = "2026-06-21/s1", start: int = 0):
    """``n`` small frames, durable on disk and in the catalog (as the capture service writes)."""
    for i in range(start, start + n):
        rel = f"{folder}/frame_{i:06d}.jpg"
        data = hashlib.sha256(rel.encode()).digest() * 300
        sha = write_atomic(root / rel, data)
        cat.add_frame(
            FrameRecord(
                path=rel, captured_at=T0 + timedelta(seconds=i), sha256=sha, size_bytes=len(data)
            )
        )


def worker_for(sshd, root: Path, cat: Catalog, **settings) -> TransferWorker:
    settings = {"retry_initial_s": 0.02, "retry_max_s": 0.1, **settings}
    target = sshd.target(sshd.home / "inbox")
    return TransferWorker(cat, root, target, STATION, TransferSettings(**settings))


def remote_ok(sshd, cat: Catalog, paths: list[str]) -> None:
    """Every path is verified in the catalog, on the receiver with its catalog checksum, and
    listed in a committed manifest."""
    remote = sshd.home / "inbox" / STATION
    committed = {
        line.split("  ", 1)[1]
        for m in (remote / MANIFEST_DIR).glob("*.sha256")
        for line in m.read_text().splitlines()
    }
    for path in paths:
        record = cat.frame_by_path(path)
        assert record is not None and record.transfer_state == "verified", path
        assert hashlib.sha256((remote / path).read_bytes()).hexdigest() == record.sha256
        assert path in committed


# -- item 1: a poison frame, a frame the receiver refuses ----------------------------------


@SSH_TRANSFER
def test_poison_frame_is_quarantined_and_its_batch_mates_verified(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    add_frames(root, cat, 10)
    poison = "2026-06-21/s1/frame_000003.jpg"
    data = bytearray((root / poison).read_bytes())
    data[100] ^= 0x01  # one flipped bit: the bytes no longer match the catalog
    (root / poison).write_bytes(bytes(data))
    worker = worker_for(sshd, root, cat, batch_size=10)

    assert worker.drain(deadline_s=10) == 9
    good = [f.path for f in cat.frames() if f.transfer_state != "quarantined"]
    assert len(good) == 9 and poison not in good
    remote_ok(sshd, cat, good)

    # set aside on the station, with the reason, never deleted and never sent again
    [bad] = [f for f in cat.frames() if f.transfer_state == "quarantined"]
    assert bad.deleted_at is None and bad.extra["quarantine"]["original_path"] == poison
    assert bad.path == f"{QUARANTINE_DIR}/{poison}"
    assert (root / bad.path).read_bytes() == bytes(data) and not (root / poison).exists()
    reason = (root / f"{bad.path}.reason").read_text()
    assert "SHA-256" in reason and bad.sha256 in reason
    assert worker.stats.quarantined == 1
    firing, detail = worker.quarantine_alert()
    assert firing and poison in detail
    assert worker.drain(deadline_s=5) == 0
    assert worker.stats.queue_depth == 0


@SSH_TRANSFER
def test_a_frame_the_receiver_refuses_does_not_block_its_batch_mates(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    add_frames(root, cat, 10)
    refused = "2026-06-21/s1/frame_000000.jpg"
    # A non-empty folder where the oldest frame should go: rsync cannot write it (exit 23).
    blocker = sshd.home / "inbox" / STATION / refused / "x"
    blocker.mkdir(parents=True)
    worker = worker_for(sshd, root, cat, batch_size=10)

    with pytest.raises(VerificationFailed):
        worker.drain(deadline_s=3)
    others = [f.path for f in cat.frames() if f.path != refused]
    remote_ok(sshd, cat, others)
    record = cat.frame_by_path(refused)
    assert record.transfer_state == "sent"  # its bytes are fine: kept in the queue, not set aside
    assert worker.stats.quarantined == 0

    # once the receiver takes it again, it goes through
    (blocker).rmdir()
    blocker.parent.rmdir()
    assert worker.drain(deadline_s=10) == 1
    remote_ok(sshd, cat, [refused])


def test_frames_that_failed_repeatedly_are_retried_alone_after_the_others(tmp_path):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    add_frames(root, cat, 12)
    frames = cat.frames()
    stuck, also_stuck = frames[0], frames[1]
    for _ in range(5):
        cat.set_transfer_state([stuck.id], "sent")
    for _ in range(3):
        cat.set_transfer_state([also_stuck.id], "sent")
    target = SshTarget(host="127.0.0.1", inbox="/nowhere")
    worker = TransferWorker(cat, root, target, STATION, TransferSettings(batch_size=10))

    first = worker._next_batch()
    assert [r.path for r in first] == [f.path for f in frames[2:12]]
    cat.set_transfer_state([r.id for r in first], "verified")
    # only the suspects are left: one at a time, the one tried least first
    assert [r.path for r in worker._next_batch()] == [also_stuck.path]
    assert [r.path for r in worker._next_batch(frozenset({also_stuck.id}))] == [stuck.path]


def test_a_quarantine_cut_short_by_a_crash_is_finished_not_written_off(tmp_path):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    add_frames(root, cat, 2)
    moved = "2026-06-21/s1/frame_000000.jpg"
    aside = root / QUARANTINE_DIR / moved
    aside.parent.mkdir(parents=True)
    aside.with_name(aside.name + ".reason").write_text("the bytes no longer match\n")
    (root / moved).rename(aside)  # the crash came before the catalog was told
    worker = TransferWorker(cat, root, SshTarget(host="127.0.0.1", inbox="/in"), STATION)
    assert [r.path for r in worker._next_batch()] == ["2026-06-21/s1/frame_000001.jpg"]
    [record] = cat.quarantined_frames()
    assert record.deleted_at is None and record.path == f"{QUARANTINE_DIR}/{moved}"
    assert record.extra["quarantine"]["reason"] == "the bytes no longer match"


# -- item 2: a newline in a session name ---------------------------------------------------


@SSH_TRANSFER
def test_a_newline_in_a_session_name_leaves_every_other_frame_verified(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    add_frames(root, cat, 1, folder="2026-06-21/bad\nname")  # as an older version let in
    add_frames(root, cat, 9, folder="2026-06-21/s1", start=1)
    worker = worker_for(sshd, root, cat, batch_size=10)

    assert worker.drain(deadline_s=10) == 9
    remote_ok(sshd, cat, [f.path for f in cat.frames() if "\n" not in f.path and "s1" in f.path])
    [bad] = [f for f in cat.frames() if f.transfer_state == "quarantined"]
    assert bad.extra["quarantine"]["original_path"] == "2026-06-21/bad\nname/frame_000000.jpg"
    assert (root / bad.path).is_file() and "file name" in bad.extra["quarantine"]["reason"]
    assert worker.drain(deadline_s=5) == 0


def test_file_lists_are_nul_separated():
    target = SshTarget(host="127.0.0.1", inbox="/in")
    argv = rsync_argv(target, Path("/buf"), Path("/buf/.manifests/x.list"), "/in/s")
    assert "--from0" in argv


@pytest.mark.parametrize(
    "name", ["a\nb", "a\rb", "a b", "../x", "-x", "a/b", "a\x00b", "", "x" * 65, "é"]
)
def test_one_name_rule_refuses_separators(name):
    with pytest.raises(ValueError, match="session_id"):
        check_name(name, "session_id")


def test_the_catalog_refuses_a_session_name_with_a_newline(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    with pytest.raises(ValueError, match="session_id"):
        cat.open_session("evening\nx", T0, "simulated", {})
    assert cat.sessions() == []


def test_capture_refuses_a_session_name_with_a_newline(tmp_path):
    buf = tmp_path / "buf"
    args = ["capture", "--camera", "simulated", "--clock", "simulated", "--location", "46.5,7.9"]
    args += ["--start", "2024-03-20T17:58:00Z", "--duration", "30s", "--buffer", str(buf)]
    args += ["--resolution", "320x180", "--session", "evening\nx"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--session" in result.output
    assert not list(buf.rglob("*.jpg"))


def test_stale_file_lists_are_removed_at_start(tmp_path):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    stale = root / MANIFEST_DIR / "20260621T190000-deadbeef.list"
    stale.parent.mkdir(parents=True)
    stale.write_text("2026-06-21/s1/frame_000000.jpg\n")
    TransferWorker(cat, root, SshTarget(host="127.0.0.1", inbox="/in"), STATION)
    assert not stale.exists()


@SSH_TRANSFER
def test_a_verification_failure_beside_an_rsync_error_is_logged(tmp_path, sshd):
    root, cat = tmp_path / "buf", Catalog(tmp_path / "c.db")
    add_frames(root, cat, 4)
    remote = sshd.home / "inbox" / STATION
    victim = remote / "2026-06-21/s1/frame_000000.jpg"
    calls = tmp_path / "calls"
    # 1st rsync: delivers, then corrupts one frame on the receiver (it fails verification);
    # 2nd rsync (while the receiver checks the 1st batch): a protocol error.
    wrapper = tmp_path / "rsync-faulty"
    wrapper.write_text(
        f'#!/bin/sh\necho x >> {calls}\nn=$(wc -l < {calls})\nif [ "$n" -eq 2 ]; then exit 12; fi\n'
        'rsync "$@" || exit $?\n'
        f'if [ "$n" -eq 1 ]; then printf X | dd of={victim} bs=1 seek=10 conv=notrunc'
        " status=none; fi\n"
    )
    wrapper.chmod(0o755)
    worker = worker_for(sshd, root, cat, batch_size=2, rsync_program=str(wrapper))
    with structlog.testing.capture_logs() as logs:
        assert worker.drain(deadline_s=20) == 4
    failures = [e for e in logs if e["event"] == "transfer attempt failed"]
    assert any("exited with 12" in e["error"] for e in failures)
    assert any("failed verification" in e["error"] for e in failures), failures


# -- item 12: transfer.host read as an ssh option ------------------------------------------


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"host": "-oProxyCommand=touch /tmp/pwned"}, "transfer.host"),
        ({"host": "host name"}, "transfer.host"),
        ({"host": "a;b"}, "transfer.host"),
        ({"host": "example.org", "user": "-oProxyCommand=x"}, "transfer.user"),
        ({"host": "example.org", "user": "a b"}, "transfer.user"),
        ({"host": "example.org", "port": 0}, "transfer.port"),
        ({"host": "example.org", "station": "a\nb"}, "transfer.station"),
    ],
)
def test_config_refuses_transfer_hosts_users_and_ports_that_are_options(section, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config({"transfer": section}, "station.yaml")


@pytest.mark.parametrize("host", ["processing.local", "10.0.0.7", "::1", "[::1]", "pi-2"])
def test_config_accepts_hostnames_and_addresses(host):
    assert parse_config({"transfer": {"host": host, "user": "pi"}}, "s.yaml").transfer.host


def test_doctor_does_not_run_a_command_from_transfer_host(tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "station.yaml"
    config.write_text(json.dumps({"transfer": {"host": f"-oProxyCommand=touch {marker}"}}))
    skip = [a for c in ("camera", "disk", "clock", "codecs", "rsync") for a in ("--skip", c)]
    result = runner.invoke(app, ["doctor", "--config", str(config), *skip])
    assert not marker.exists()
    assert result.exit_code != 0 and "transfer.host" in result.output


def test_doctor_refuses_an_option_as_ssh_target(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="host"):
        parse_ssh_target(f"-oProxyCommand=touch {marker}")
    result = runner.invoke(app, ["doctor", "--ssh", f"-oProxyCommand=touch {marker}"])
    assert result.exit_code == 2 and not marker.exists()


def test_ssh_targets_validate_and_end_options_before_the_destination(tmp_path):
    with pytest.raises(ValueError, match="host"):
        SshTarget(host="-oProxyCommand=x", inbox="/in")
    with pytest.raises(ValueError, match="user"):
        SshTarget(host="example.org", user="-l", inbox="/in")
    with pytest.raises(ValueError, match="port"):
        SshTarget(host="example.org", port=70000, inbox="/in")
    target = SshTarget(host="example.org", user="pi", inbox="/in")
    assert ssh_command(target, "true")[-3:] == ["--", "pi@example.org", "true"]
    assert ssh_command(target, "true")[: len(ssh_argv(target))] == ssh_argv(target)
    rsync = rsync_argv(target, Path("/buf"), Path("/buf/l"), "/in/s")
    assert rsync[-3:] == ["--", "/buf/", "pi@example.org:/in/s/"]


@SSH_TRANSFER
def test_the_capture_service_counts_and_alerts_a_quarantined_frame(tmp_path, sshd):
    from fastapi.testclient import TestClient

    from skylapse.api.capture.app import create_capture_app
    from skylapse.capture.cameras import CameraConfig, SimulatedCamera
    from skylapse.config import default_config

    doc = default_config().model_dump(mode="json")
    doc["transfer"].update(
        host="127.0.0.1",
        port=sshd.port,
        user=sshd.user,
        key_file=str(sshd.client_key),
        known_hosts=str(sshd.known_hosts),
        inbox=str(sshd.home / "inbox"),
        station=STATION,
        poll_s=0.2,
    )
    doc["alerts"]["evaluate_every_s"] = 0.2
    token = "capture-token-0123456789abcdef"
    app = create_capture_app(
        parse_config(doc, "station.yaml"),
        token,
        camera=SimulatedCamera(seed=1),
        buffer=tmp_path / "buf",
        camera_config=CameraConfig(resolution=(320, 180)),
        unattended=False,
        notifiers=[],
        tick_s=0.2,
    )
    service = app.state.runtime.service
    add_frames(service.buffer, service.catalog, 3)
    poison = service.buffer / "2026-06-21/s1/frame_000001.jpg"
    poison.write_bytes(b"\x00" + poison.read_bytes()[1:])
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:

        def alert():
            alerts = client.get("/status", headers=auth).json()["alerts"]
            return [a for a in alerts if a["alert"] == "transfer_quarantine"]

        [firing] = wait_for(alert, what="the quarantine alert", timeout=30)
        assert "frame_000001" in firing["detail"] and firing["severity"] == "warning"

        def metrics():
            text = client.get("/metrics", headers=auth).text
            return text if 'frames_failed_total{stage="transfer"} 1.0' in text else None

        text = wait_for(metrics, what="the metric")
        assert "frames_transferred_total 2.0" in text
        health = client.get("/health", headers=auth).json()["checks"]["transfer"]
        assert health["status"] == "degraded"
    assert service.catalog.count_frames(transfer_state="verified") == 2
