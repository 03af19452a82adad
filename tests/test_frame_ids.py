"""A frame's id through its whole life: the capture loop gives it, and the capture, transfer,
ingest and render job logs (each to its own file) all name it, so ``grep`` finds it in all four."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from pathlib import Path

from skylapse import log as skylapse_log
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.service import CaptureService, SessionSpec
from skylapse.exif import read_skylapse_metadata
from skylapse.processing.ingest import Ingestor
from skylapse.processing.jobs import JobService, RenderJobOptions
from skylapse.transfer.local_sshd import running_sshd
from skylapse.transfer.queue import TransferSettings, TransferWorker
from tests_support import SSH_TRANSFER, wait_for

NOON = dt.datetime(2024, 3, 20, 12, 0, tzinfo=dt.UTC)


def logging_to(path: Path):
    """Send every log line (JSON, as the services write them) to ``path`` from now on."""
    stream = path.open("w", buffering=1)
    skylapse_log.configure("INFO", stream=stream)
    return stream


def lines(path: Path, frame_id: str) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if frame_id in ln]


@SSH_TRANSFER
def test_grep_of_one_frame_id_finds_it_in_the_capture_transfer_ingest_and_render_logs(tmp_path):
    logs = {name: tmp_path / f"{name}.log" for name in ("capture", "transfer", "ingest", "render")}
    buffer, inbox = tmp_path / "station", tmp_path / "inbox"
    try:
        # capture: a short session on the simulated camera
        with logging_to(logs["capture"]):
            clock = SimulatedClock(NOON)
            service = CaptureService(
                SimulatedCamera(clock=clock, seed=3),
                buffer=buffer,
                clock=clock,
                camera_config=CameraConfig(resolution=(320, 180)),
            )

            async def capture():
                await service.open()
                await service.run_session(
                    SessionSpec(session_id="noon", interval_s=5, max_frames=4)
                )
                await service.close()

            asyncio.run(capture())
        records = service.catalog.frames()
        assert len(records) == 4
        frame = records[1]
        frame_id = frame.extra["frame_id"]
        session_cid = service.catalog.session("noon").settings["correlation_id"]
        assert frame_id == f"{session_cid}-{frame.extra['frame_number']:06d}"
        assert len({r.extra["frame_id"] for r in records}) == 4
        # it travels in the frame's own EXIF record
        assert read_skylapse_metadata(buffer / frame.path)["frame_id"] == frame_id

        # transfer: rsync over a private sshd, verified by the receiver
        with logging_to(logs["transfer"]), running_sshd(tmp_path / "ssh") as sshd:
            worker = TransferWorker(
                service.catalog,
                buffer,
                sshd.target(inbox),
                "peak-1",
                TransferSettings(compress=False),
            )
            assert worker.drain(deadline_s=60) == 4

        # ingest, and a render job on the queue
        jobs = JobService(tmp_path / "processing")
        with logging_to(logs["ingest"]):
            report = Ingestor(inbox, jobs.store, tmp_path / "quarantine", jobs.catalog).scan()
        assert report.ingested == 4 and not report.quarantined
        with logging_to(logs["render"]):
            (sequence,) = jobs.catalog.sequences()
            options = RenderJobOptions(
                formats=["h264"],
                size="160x90",
                preset="ultrafast",
                deflicker=False,
                stabilize="off",
                denoise="off",
            )
            job_id = jobs.submit_render(sequence.id, options)
            consumer = jobs.start_consumer(1)
            try:
                done = wait_for(
                    lambda: (j := jobs.catalog.job(job_id)).state in ("done", "failed") and j,
                    timeout=120,
                    what="the render job",
                )
            finally:
                consumer.stop(graceful=True)
        assert done.state == "done", done.error
    finally:
        skylapse_log.configure("INFO")  # back to stderr

    found = subprocess.run(
        ["grep", "-l", "--", frame_id, *map(str, logs.values())],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert found == [str(p) for p in logs.values()]
    # what each log says of it
    (stored,) = lines(logs["capture"], frame_id)
    assert stored["event"] == "frame stored" and stored["correlation_id"] == session_cid
    assert stored["path"] == frame.path
    (verified,) = lines(logs["transfer"], frame_id)
    assert verified["event"] == "batch verified" and frame_id in verified["frame_ids"]
    (ingested,) = lines(logs["ingest"], frame_id)
    assert ingested["event"] == "frame ingested" and ingested["batch"] == verified["batch"]
    (rendered,) = lines(logs["render"], frame_id)
    assert rendered["event"] == "render inputs" and rendered["job"] == job_id
    assert rendered["frame_ids"] == [r.extra["frame_id"] for r in records]
