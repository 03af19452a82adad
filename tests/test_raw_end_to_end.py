"""RAW frames along the whole path: the simulated camera with ``capture.raw`` -> the transfer to a
private sshd (DNGs sent and verified) -> ingest -> a render job that decodes the DNGs."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from functools import partial
from pathlib import Path

from servers import running_sshd
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.service import CaptureService
from skylapse.catalog import Catalog
from skylapse.config import parse_config
from skylapse.processing import sources
from skylapse.processing.ingest import Ingestor
from skylapse.processing.jobs import JobService, RenderJobOptions
from skylapse.transfer.queue import TransferWorker
from skylapse.transfer.rsync import SshTarget
from tests_support import SSH_TRANSFER, wait_for

pytestmark = SSH_TRANSFER

SHOTS = 6


def _capture(buffer) -> list:
    clock = SimulatedClock(dt.datetime(2024, 3, 20, 12, 0, tzinfo=dt.UTC))
    config = parse_config({"capture": {"raw": True, "autofocus": False}}, "test")
    service = CaptureService(
        SimulatedCamera(clock=clock, seed=3),
        buffer=buffer,
        clock=clock,
        camera_config=CameraConfig(resolution=(320, 180)),
        config=config,
    )

    async def go():
        try:
            return [r for _ in range(SHOTS) for r in await service.capture_now()]
        finally:
            await service.close()

    return asyncio.run(go())


def test_dngs_travel_verified_are_ingested_and_rendered(tmp_path, monkeypatch):
    buffer = tmp_path / "buffer"
    records = _capture(buffer)
    assert len(records) == SHOTS and all(len(r.companions) == 1 for r in records)

    with running_sshd(tmp_path / "sshd") as sshd:
        inbox = sshd.home / "inbox"
        target = SshTarget(
            host="127.0.0.1",
            port=sshd.port,
            user=sshd.user,
            inbox=str(inbox),
            key_file=sshd.client_key,
            known_hosts=sshd.known_hosts,
        )
        catalog = Catalog(buffer / "catalog.sqlite")
        worker = TransferWorker(catalog, buffer, target, "peak-1")
        assert worker.drain(deadline_s=60) == SHOTS
    assert catalog.count_frames(transfer_state="verified") == SHOTS
    assert worker.stats.bytes_sent == sum(r.total_bytes for r in records)
    station = inbox / "peak-1"
    (manifest,) = (station / ".manifests").glob("*.sha256")
    listed = dict(reversed(line.split("  ")) for line in manifest.read_text().splitlines())
    assert listed == {path: sha for r in records for path, sha in r.files}  # DNGs checked too
    for r in records:
        dng = station / r.companions[0].path
        assert hashlib.sha256(dng.read_bytes()).hexdigest() == r.companions[0].sha256

    jobs = JobService(tmp_path / "data", queue_url="")
    report = Ingestor(inbox, jobs.store, tmp_path / "quarantine", jobs.catalog).scan()
    assert report.quarantined == [] and report.ingested == 2 * SHOTS
    (sequence,) = jobs.catalog.sequences()
    stored = jobs.catalog.sequence_frames(sequence.id)
    assert sorted(f.path[-4:] for f in stored) == [".dng"] * SHOTS + [".jpg"] * SHOTS

    decoded = []
    real_read = sources.read_frame

    def spy(path, keep_8bit=False):
        decoded.append(Path(path).suffix)
        return real_read(path, keep_8bit=keep_8bit)

    monkeypatch.setattr(sources, "read_frame", spy)
    job = jobs.submit_render(
        sequence.id, RenderJobOptions(formats=["h264"], preset="ultrafast", denoise="off")
    )
    consumer = jobs.consumer(1)
    consumer.start()
    try:
        partial(wait_for, timeout=90.0)(
            lambda: jobs.catalog.job(job).state in ("done", "failed"), what="render job"
        )
    finally:
        consumer.stop(graceful=True)
    result = jobs.catalog.job(job)
    assert result.state == "done", result.error
    assert result.result["frames"] == SHOTS and result.result["skipped"] == []
    assert decoded and set(decoded) == {".dng"}  # the render read the DNGs, never the JPEGs
    assert result.result["source_size"] == [320, 180]
