"""Jobs on the huey queue: SQLite by default, Redis shared by several worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import redis as redis_client

from servers import running_redis
from skylapse.processing.ingest import Ingestor
from skylapse.processing.jobs import JobService, make_huey
from skylapse.processing.options import RenderOptions
from skylapse.testing import SequenceSpec, generate_sequence
from tests_support import commit_frames_to_inbox, wait_for

FAST = RenderOptions(formats=["h264"], preset="ultrafast", denoise="off")


def ingest_sequence(service: JobService, tmp_path: Path, frames: int, station="peak-1") -> int:
    src = tmp_path / f"gen-{station}"
    generate_sequence(src, SequenceSpec(frames=frames, size=(160, 90), seed=len(station)))
    inbox = tmp_path / "inbox"
    commit_frames_to_inbox(src, inbox / station)
    report = Ingestor(inbox, service.store, tmp_path / "quarantine", service.catalog).scan()
    assert report.ingested == frames
    (seq,) = [s for s in service.catalog.sequences() if s.station == station]
    return seq.id


wait_for = partial(wait_for, timeout=90.0)


def run_consumer(service: JobService, workers: int = 1):
    return service.start_consumer(workers)


def test_started_consumer_leaves_the_signal_handlers_to_its_caller(tmp_path):
    """The API server and the demo own SIGINT and SIGTERM: a consumer they start in the
    background must not replace their handlers (unless asked to), and reports its threads."""
    service = JobService(tmp_path / "data", queue_url="")

    def handlers():
        return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    before = handlers()
    consumer = service.start_consumer(2)
    try:
        assert handlers() == before
        assert consumer.threads_alive() == (2, 2)
    finally:
        consumer.stop(graceful=True)
    assert consumer.threads_alive() == (0, 2)
    try:
        consumer = service.start_consumer(1, handle_signals=True)
        consumer.stop(graceful=True)
        assert handlers() != before  # huey's own handlers, as `skylapse worker` wants
    finally:
        for signum, handler in zip((signal.SIGINT, signal.SIGTERM), before, strict=True):
            signal.signal(signum, handler)


def test_render_job_runs_and_is_recorded(tmp_path):
    service = JobService(tmp_path / "data", queue_url="")
    seq = ingest_sequence(service, tmp_path, 12)
    job = service.submit_render(seq, FAST)
    assert service.catalog.job(job).state == "queued"
    assert service.catalog.queue_depth() == 1
    consumer = run_consumer(service)
    try:
        wait_for(lambda: service.catalog.job(job).state == "done", what="render job")
    finally:
        consumer.stop(graceful=True)
    result = service.catalog.job(job)
    assert result.progress == 1.0 and result.attempts == 1
    assert result.result["frames"] == 12
    video = service.data_dir / result.result["outputs"][0]
    assert video.suffix == ".mp4" and video.stat().st_size > 0
    assert not any(service.working.iterdir())  # working files cleaned up
    assert service.catalog.queue_depth() == 0


def test_failing_job_retries_then_fails_with_error(tmp_path):
    service = JobService(tmp_path / "data", queue_url="", retries=1, retry_delay_s=0.05)
    seq = ingest_sequence(service, tmp_path, 3)
    for f in service.catalog.sequence_frames(seq):
        (service.store / f.store_path).unlink()  # every frame gone: the render must fail
    job = service.submit_render(seq, FAST)
    consumer = run_consumer(service)
    try:
        wait_for(lambda: service.catalog.job(job).state == "failed", what="failure")
    finally:
        consumer.stop(graceful=True)
    failed = service.catalog.job(job)
    assert failed.attempts == 2  # first try plus one retry
    assert "RenderError" in failed.error or "no readable frames" in failed.error


def test_cancel_and_retry(tmp_path):
    service = JobService(tmp_path / "data", queue_url="")
    seq = ingest_sequence(service, tmp_path, 6)
    job = service.submit_render(seq, FAST)
    assert service.cancel(job).state == "cancelled"
    consumer = run_consumer(service)
    try:
        time.sleep(1.0)
        assert service.catalog.job(job).state == "cancelled"  # not run
        assert service.retry(job).state == "queued"
        wait_for(lambda: service.catalog.job(job).state == "done", what="retried job")
    finally:
        consumer.stop(graceful=True)
    with pytest.raises(ValueError, match="only failed or cancelled"):
        service.retry(job)


def test_idle_sequences_are_closed_and_rendered(tmp_path):
    service = JobService(tmp_path / "data", queue_url="")
    seq = ingest_sequence(service, tmp_path, 4)
    assert service.close_idle_sequences(timedelta(minutes=10)) == []
    later = datetime.now(UTC) + timedelta(minutes=11)
    jobs = service.close_idle_sequences(timedelta(minutes=10), FAST, now=later)
    assert len(jobs) == 1 and service.catalog.sequence(seq).closed_at is not None
    assert service.close_idle_sequences(timedelta(minutes=10), FAST, now=later) == []


def test_queue_url_must_be_redis(tmp_path):
    with pytest.raises(ValueError, match="redis://"):
        make_huey("amqp://nope", tmp_path)


@pytest.mark.system("redis-server")
def test_redis_queue_shared_by_two_worker_processes(tmp_path):
    with running_redis(tmp_path / "redis") as redis:
        data = tmp_path / "data"
        service = JobService(data, queue_url=redis.url)
        seqs = [ingest_sequence(service, tmp_path, 6, station=f"peak-{i}") for i in range(4)]
        env = {**os.environ, "SKYLAPSE_QUEUE_URL": redis.url}
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "skylapse.cli", "worker", "--data", str(data)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            # Both consumers wait in BRPOP before the jobs go in (huey's RedisStorage blocks by
            # default), so Redis hands the first two jobs to one each; a worker still importing
            # when they are queued would leave them all to the other.
            client = redis_client.Redis.from_url(redis.url)
            wait_for(
                lambda: sum(c["cmd"] in ("brpop", "blmove") for c in client.client_list()) == 2,
                timeout=60,
                what="both workers waiting for jobs",
            )
            client.close()
            jobs = [service.submit_render(s, FAST) for s in seqs]
            wait_for(
                lambda: all(service.catalog.job(j).state == "done" for j in jobs),
                timeout=120,
                what="all jobs on two workers",
            )
        finally:
            for w in workers:
                w.terminate()
            logs = [w.communicate(timeout=20)[1] for w in workers]
        assert all(service.catalog.job(j).attempts == 1 for j in jobs)  # each ran once
        # both workers took a share of the work (their JSON logs say which jobs they started)
        started = [sum('"job started"' in line for line in log.splitlines()) for log in logs]
        assert sum(started) == 4 and all(n >= 1 for n in started), started
