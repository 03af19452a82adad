"""The archive: atomic archiving of finished renders, retention, working-folder cleanup, and the
``archive`` job a finished render queues."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_jobs import ingest_sequence, run_consumer, wait_for

from skylapse.processing.archive import Archive, ArchiveConfig, sha256_file
from skylapse.processing.jobs import JobService
from skylapse.processing.options import RenderOptions

FAST = RenderOptions(formats=["h264"], preset="ultrafast", denoise="off")


def finished_render(archive: Archive, job_id: str, files: dict[str, bytes], seq: int = 1) -> Path:
    """A render job marked done whose outputs sit in DATA/timelapses/<seq>-<job>/."""
    out = archive.data_dir / "timelapses" / f"{seq}-{job_id}"
    out.mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    archive.catalog.add_job(job_id, "render", {"sequence_id": seq}, datetime.now(UTC))
    archive.catalog.update_job(
        job_id, state="done", result={"outputs": [f"timelapses/{seq}-{job_id}/{n}" for n in files]}
    )
    return out


def test_archive_moves_outputs_and_records_checksums(tmp_path):
    archive = Archive(tmp_path / "data")
    src = finished_render(archive, "j1", {"timelapse.mp4": b"v" * 5000, "keogram.png": b"k" * 70})
    row = archive.archive_job_outputs("j1")
    assert not src.exists()
    folder = archive.path_of(row)
    assert folder == archive.root / "1-j1"
    assert row.size_bytes == 5070 and row.sequence_id == 1 and row.backed_up_at is None
    by_name = {f.path: f for f in row.files}
    assert by_name["timelapse.mp4"].sha256 == hashlib.sha256(b"v" * 5000).hexdigest()
    assert sha256_file(folder / "keogram.png") == by_name["keogram.png"].sha256
    assert archive.archive_job_outputs("j1").id == row.id  # idempotent
    assert not any((archive.root / ".staging").iterdir())


def test_archive_refuses_unfinished_jobs(tmp_path):
    archive = Archive(tmp_path / "data")
    archive.catalog.add_job("j2", "render", {"sequence_id": 1}, datetime.now(UTC))
    with pytest.raises(ValueError, match="only finished renders"):
        archive.archive_job_outputs("j2")
    with pytest.raises(KeyError):
        archive.archive_job_outputs("nope")


def test_archive_completes_after_a_crash_at_any_step(tmp_path):
    archive = Archive(tmp_path / "data")
    # crashed after moving the outputs into staging, before the rename into place
    src = finished_render(archive, "a", {"t.mp4": b"a" * 100})
    (archive.root / ".staging").mkdir()
    os.rename(src, archive.root / ".staging" / src.name)
    assert archive.path_of(archive.archive_job_outputs("a")).joinpath("t.mp4").read_bytes() == (
        b"a" * 100
    )
    # crashed after the rename, before the catalog row
    src = finished_render(archive, "b", {"t.mp4": b"b" * 100})
    os.rename(src, archive.root / src.name)
    row = archive.archive_job_outputs("b")
    assert row.size_bytes == 100 and len(archive.catalog.timelapses()) == 2
    # crashed halfway through a copy into staging: the half copy is discarded
    src = finished_render(archive, "c", {"t.mp4": b"c" * 100, "u.png": b"u"})
    (archive.root / ".staging" / src.name).mkdir()
    (archive.root / ".staging" / src.name / "t.mp4").write_bytes(b"c" * 10)
    row = archive.archive_job_outputs("c")
    assert row.size_bytes == 101
    assert archive.path_of(row).joinpath("t.mp4").read_bytes() == b"c" * 100


@pytest.fixture
def other_file_system(tmp_path):
    """A folder on another file system than the data: /dev/shm where it is one, else a small
    tmpfs mounted for the test (as root, as in CI)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        with tempfile.TemporaryDirectory(dir=shm) as other:
            yield other
        return
    mount = tmp_path / "other-fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_archive_on_another_file_system_copies_then_removes(tmp_path, other_file_system):
    other = other_file_system
    archive = Archive(tmp_path / "data", root=other)
    src = finished_render(archive, "x", {"t.mp4": b"x" * 3000})
    row = archive.archive_job_outputs("x")
    assert not src.exists()
    assert (Path(other) / "1-x" / "t.mp4").read_bytes() == b"x" * 3000
    assert row.files[0].sha256 == hashlib.sha256(b"x" * 3000).hexdigest()


def test_retention_by_age_and_size_never_deletes_what_is_not_backed_up(tmp_path):
    archive = Archive(tmp_path / "data")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    ids = []
    for i, days in enumerate([40, 30, 20, 10, 1]):
        finished_render(archive, f"r{i}", {"t.mp4": bytes(1000)})
        ids.append(archive.archive_job_outputs(f"r{i}", now=now - timedelta(days=days)).id)
    for tid in ids[1:]:  # the oldest one never reached the backup
        archive.catalog.mark_timelapse_backed_up(tid, now, "s3://b/p/", "0" * 64, {})

    report = archive.enforce_retention(max_age=timedelta(days=25), now=now)
    assert report.deleted == [ids[1]] and report.kept_not_backed_up == [ids[0]]
    assert report.total_bytes == 4000
    assert archive.path_of(archive.catalog.timelapse(ids[0])).exists()
    deleted = archive.catalog.timelapse(ids[1])
    assert deleted.deleted_reason == "age" and not archive.path_of(deleted).exists()

    report = archive.enforce_retention(max_total_bytes=2500, now=now)
    assert report.deleted == [ids[2], ids[3]] and report.total_bytes == 2000
    assert [t.id for t in archive.catalog.timelapses()] == [ids[0], ids[4]]
    assert archive.catalog.timelapse(ids[2]).deleted_reason == "size"
    assert not (archive.root / ".trash").exists() or not any((archive.root / ".trash").iterdir())


def test_cleanup_working_removes_only_finished_jobs(tmp_path):
    archive = Archive(tmp_path / "data")
    working = archive.data_dir / "working"
    for job, state in [
        ("done1", "done"),
        ("fail1", "failed"),
        ("run1", "running"),
        ("queue1", "queued"),
        ("gone1", None),
    ]:
        (working / job / "frames").mkdir(parents=True)
        (working / job / "frames" / "0.jpg").write_bytes(b"x")
        if state:
            archive.catalog.add_job(job, "render", {}, datetime.now(UTC))
            archive.catalog.update_job(job, state=state)
    removed = archive.cleanup_working()
    assert sorted(removed) == ["done1", "fail1", "gone1"]
    assert sorted(p.name for p in working.iterdir()) == ["queue1", "run1"]


def test_config_from_environment():
    cfg = ArchiveConfig.from_env(
        {
            "SKYLAPSE_ARCHIVE_AFTER_RENDER": "1",
            "SKYLAPSE_ARCHIVE_MAX_TOTAL_GB": "2.5",
            "SKYLAPSE_ARCHIVE_MAX_AGE_DAYS": "30",
        }
    )
    assert cfg.after_render and not cfg.include_frames
    assert cfg.max_total_bytes == 2_500_000_000 and cfg.max_age == timedelta(days=30)
    assert ArchiveConfig.from_env({}).after_render is False


def test_finished_render_queues_its_archive_job(tmp_path):
    service = JobService(
        tmp_path / "data",
        queue_url="",
        archive=ArchiveConfig(after_render=True, include_frames=True, max_total_gb=1e-9),
    )
    seq = ingest_sequence(service, tmp_path, 8)
    stale = service.working / "stale-job"  # left by a worker that died long ago
    stale.mkdir(parents=True)
    render_job = service.submit_render(seq, FAST)
    consumer = run_consumer(service)
    try:
        wait_for(
            lambda: any(
                j.kind == "archive" and j.state in ("done", "failed")
                for j in service.catalog.jobs()
            ),
            what="archive job",
        )
    finally:
        consumer.stop(graceful=True)
    (archive_job,) = [j for j in service.catalog.jobs() if j.kind == "archive"]
    assert archive_job.state == "done", archive_job.error
    assert archive_job.params == {"job_id": render_job}
    row = service.catalog.timelapse_for_job(render_job)
    names = [f.path for f in row.files]
    assert "timelapse.preview.mp4" in names or "timelapse.mp4" in names
    assert sum(n.startswith("frames/") for n in names) == 8  # source frames kept with it
    assert not (service.timelapses / f"{seq}-{render_job}").exists()
    assert "stale-job" in archive_job.result["working_removed"]
    assert not stale.exists()
    # over the (tiny) size limit, but never backed up: retention keeps it
    assert archive_job.result["retention_deleted"] == []
    for f in row.files:
        path = service.data_dir / "archive" / row.path / f.path
        assert path.stat().st_size == f.size and sha256_file(path) == f.sha256
