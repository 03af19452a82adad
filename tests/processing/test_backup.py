"""S3 backup against moto's S3 server on loopback: a real HTTP S3 API started by the tests."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from servers import running_s3
from skylapse.processing.archive import Archive
from skylapse.processing.backup import (
    MIB,
    BackupConfig,
    BackupError,
    LocalFileChanged,
    S3Backup,
    make_s3_client,
)

_buckets = itertools.count()


class Interrupted(Exception):
    """Stands for the process dying in the middle of an upload."""


@pytest.fixture(scope="module")
def s3():
    with running_s3() as server:
        yield server


@pytest.fixture
def config(s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "skylapse-test")  # the standard environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "skylapse-test-secret")
    cfg = BackupConfig(
        bucket=f"skylapse-backup-{next(_buckets)}",
        endpoint_url=s3.endpoint_url,
        region="us-east-1",
        part_size_mib=5,
        retry_wait_s=0.01,
        max_attempts=3,
        prefix="station1",
    )
    make_s3_client(cfg).create_bucket(Bucket=cfg.bucket)
    return cfg


def count_requests(backup: S3Backup, operation: str) -> list[int]:
    """Part numbers (or 0) of every ``operation`` request the client sends, retries included."""
    sent: list[int] = []

    def record(request, **_):
        if operation == "UploadPart":
            sent.append(int(request.url.split("partNumber=")[1].split("&")[0]))
        else:
            sent.append(0)

    backup.client.meta.events.register(f"before-send.s3.{operation}", record)
    return sent


def make_file(path: Path, size: int, seed: int = 1) -> bytes:
    data = hashlib.shake_256(str(seed).encode()).digest(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def archived_timelapse(tmp_path: Path, job_id: str, sizes: dict[str, int], when=None) -> tuple:
    """A finished render job's outputs, archived: (archive, catalog row)."""
    archive = Archive(tmp_path / "data")
    out = archive.data_dir / "timelapses" / f"1-{job_id}"
    for i, (name, size) in enumerate(sizes.items()):
        make_file(out / name, size, seed=hash((job_id, i)) & 0xFFFF)
    outputs = [f"timelapses/1-{job_id}/{name}" for name in sizes]
    archive.catalog.add_job(job_id, "render", {"sequence_id": 1}, datetime.now(UTC))
    archive.catalog.update_job(job_id, state="done", result={"outputs": outputs})
    return archive, archive.archive_job_outputs(job_id, now=when)


def object_bytes(backup: S3Backup, key: str) -> bytes:
    return backup.client.get_object(Bucket=backup.bucket, Key=key)["Body"].read()


def test_interrupted_multipart_upload_resumes_with_only_missing_parts(tmp_path, config):
    data = make_file(tmp_path / "big.mp4", 16 * MIB + 12345)  # 4 parts: 5, 5, 5, 1 MiB

    def die_after_two(key, number):
        if number == 2:
            raise Interrupted

    first = S3Backup(config, tmp_path / "state", on_part=die_after_two)
    with pytest.raises(Interrupted):
        first.upload_file(tmp_path / "big.mp4", "station1/big.mp4")
    state = json.loads(next((tmp_path / "state").glob("*.json")).read_text())
    assert sorted(state["parts"]) == ["1", "2"]
    assert all(len(p["sha256"]) == 64 and p["etag"] for p in state["parts"].values())

    # a new process: new client, the same state folder
    second = S3Backup(config, tmp_path / "state")
    sent = count_requests(second, "UploadPart")
    result = second.upload_file(
        tmp_path / "big.mp4", "station1/big.mp4", expected_sha256=hashlib.sha256(data).hexdigest()
    )
    assert sent == [3, 4]
    assert result.parts_uploaded == [3, 4] and result.parts_reused == [1, 2]
    assert object_bytes(second, "station1/big.mp4") == data
    md5s = b"".join(
        hashlib.md5(data[i : i + 5 * MIB]).digest() for i in range(0, len(data), 5 * MIB)
    )
    assert result.etag == f"{hashlib.md5(md5s).hexdigest()}-4"
    assert result.checksum_sha256 is not None
    assert not list((tmp_path / "state").glob("*.json"))  # state dropped once verified
    uploads = second.client.list_multipart_uploads(Bucket=config.bucket)
    assert not uploads.get("Uploads")

    # uploading again finds the verified object and sends nothing
    again = S3Backup(config, tmp_path / "state")
    sent_again = count_requests(again, "UploadPart") + count_requests(again, "PutObject")
    assert again.upload_file(tmp_path / "big.mp4", "station1/big.mp4").sha256 == result.sha256
    assert sent_again == []


def test_backup_marks_timelapse_only_after_checksums_match(tmp_path, config):
    archive, t = archived_timelapse(
        tmp_path, "job-a", {"timelapse.mp4": 12 * MIB, "timelapse.keogram.png": 3000}
    )
    assert t.backed_up_at is None
    backup = S3Backup(config, tmp_path / "state")
    row = backup.backup_timelapse(archive, t.id)
    assert row.backed_up_at is not None
    assert row.backup_location == f"s3://{config.bucket}/station1/1-job-a/"
    assert set(row.backup_etags) == {"timelapse.mp4", "timelapse.keogram.png"}
    folder = archive.path_of(row)
    for f in row.files:
        body = object_bytes(backup, f"station1/1-job-a/{f.path}")
        assert body == (folder / f.path).read_bytes()
    manifest = object_bytes(backup, "station1/1-job-a/manifest.json")
    assert hashlib.sha256(manifest).hexdigest() == row.backup_sha256
    listed = {f["path"]: f["sha256"] for f in json.loads(manifest)["files"]}
    assert listed == {f.path: f.sha256 for f in row.files}
    assert archive.catalog.timelapses(backed_up=False) == []


def test_local_file_corrupted_between_attempts_is_never_marked(tmp_path, config):
    archive, t = archived_timelapse(tmp_path, "job-b", {"timelapse.mp4": 12 * MIB})

    def die_after_one(key, number):
        raise Interrupted

    with pytest.raises(Interrupted):
        S3Backup(config, tmp_path / "state", on_part=die_after_one).backup_timelapse(archive, t.id)
    video = archive.path_of(t) / "timelapse.mp4"
    with open(video, "r+b") as f:  # bit rot in the part already uploaded
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x40]))
    backup = S3Backup(config, tmp_path / "state")
    sent = count_requests(backup, "UploadPart")
    with pytest.raises(LocalFileChanged):
        backup.backup_timelapse(archive, t.id)
    assert sent == [1, 2, 3]  # part 1 no longer matched the store's copy: it was sent again
    assert archive.catalog.timelapse(t.id).backed_up_at is None
    with pytest.raises(ClientError):
        backup.client.head_object(Bucket=config.bucket, Key="station1/1-job-b/timelapse.mp4")
    assert not backup.client.list_multipart_uploads(Bucket=config.bucket).get("Uploads")
    # and retention must keep it, whatever the limits
    report = archive.enforce_retention(max_age=timedelta(0), max_total_bytes=0)
    assert report.deleted == [] and report.kept_not_backed_up == [t.id]
    assert video.exists()


def test_store_returning_a_wrong_etag_is_not_marked(tmp_path, config):
    archive, t = archived_timelapse(tmp_path, "job-c", {"timelapse.mp4": 11 * MIB})
    backup = S3Backup(config, tmp_path / "state")

    def corrupt_part_two(request, **_):
        if "partNumber=2" in request.url:  # the bytes change on the way to the store
            body = request.body
            body = bytearray(body.read() if hasattr(body, "read") else body)
            body[10] ^= 1
            request.body = bytes(body)

    backup.client.meta.events.register("before-send.s3.UploadPart", corrupt_part_two)
    with pytest.raises(BackupError, match="part 2"):
        backup.backup_timelapse(archive, t.id)
    assert archive.catalog.timelapse(t.id).backed_up_at is None


def test_transient_connection_errors_are_retried(tmp_path, config):
    data = make_file(tmp_path / "big.mp4", 11 * MIB)
    backup = S3Backup(config, tmp_path / "state")
    sent = count_requests(backup, "UploadPart")
    failures = {"left": 2}

    def flaky(request, **_):
        if "partNumber=2" in request.url and failures["left"]:
            failures["left"] -= 1
            raise ConnectionClosedError(endpoint_url=request.url)

    backup.client.meta.events.register("before-send.s3.UploadPart", flaky)
    result = backup.upload_file(tmp_path / "big.mp4", "x/big.mp4")
    assert sent == [1, 2, 2, 2, 3]  # two failures, the third try of part 2 went through
    assert object_bytes(backup, "x/big.mp4") == data
    assert result.parts_uploaded == [1, 2, 3]

    failures["left"] = 10  # more than max_attempts: the error surfaces
    (tmp_path / "big.mp4").write_bytes(data[::-1])
    with pytest.raises(ConnectionClosedError):
        backup.upload_file(tmp_path / "big.mp4", "x/big.mp4")


def test_backup_then_retention_deletes_the_oldest_backed_up(tmp_path, config):
    now = datetime.now(UTC)
    archive, old = archived_timelapse(
        tmp_path, "job-old", {"a.mp4": 40_000}, when=now - timedelta(days=10)
    )
    _, mid = archived_timelapse(
        tmp_path, "job-mid", {"a.mp4": 40_000}, when=now - timedelta(days=5)
    )
    _, new = archived_timelapse(tmp_path, "job-new", {"a.mp4": 40_000}, when=now)
    backup = S3Backup(config, tmp_path / "state")
    done, failed = backup.backup_pending(archive)
    assert done == [old.id, mid.id, new.id] and failed == {}
    report = archive.enforce_retention(max_total_bytes=85_000, now=now)
    assert report.deleted == [old.id] and report.total_bytes == 80_000
    assert not archive.path_of(old).exists() and archive.path_of(mid).exists()


def test_config_from_environment():
    cfg = BackupConfig.from_env(
        {
            "SKYLAPSE_BACKUP_BUCKET": "b",
            "SKYLAPSE_BACKUP_PART_SIZE_MIB": "8",
            "SKYLAPSE_BACKUP_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    assert cfg.enabled and cfg.part_size_mib == 8 and cfg.endpoint_url == "http://127.0.0.1:9000"
    assert not BackupConfig.from_env({}).enabled
    with pytest.raises(BackupError, match="bucket"):
        S3Backup(BackupConfig(), os.devnull)


def test_archive_and_backup_commands(tmp_path, config, monkeypatch):
    from typer.testing import CliRunner

    from skylapse.cli import app

    archive = Archive(tmp_path / "data")
    out = archive.data_dir / "timelapses" / "3-cli"
    make_file(out / "timelapse.mp4", 6 * MIB)
    archive.catalog.add_job("cli", "render", {"sequence_id": 3}, datetime.now(UTC))
    archive.catalog.update_job(
        "cli", state="done", result={"outputs": ["timelapses/3-cli/timelapse.mp4"]}
    )
    (archive.data_dir / "working" / "cli").mkdir(parents=True)
    monkeypatch.setenv("SKYLAPSE_DATA_DIR", str(archive.data_dir))
    result = CliRunner().invoke(app, ["archive", "--no-backup"])
    assert result.exit_code == 0, result.output
    assert "archived 1, backed up 0" in result.output and "kept 0" in result.output
    assert not (archive.data_dir / "working" / "cli").exists()
    result = CliRunner().invoke(
        app,
        [
            "backup",
            "--bucket",
            config.bucket,
            "--endpoint-url",
            config.endpoint_url,
            "--prefix",
            "cli",
            "--part-size-mib",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = archive.catalog.timelapses()
    assert row.backup_location == f"s3://{config.bucket}/cli/3-cli/"
    backup = S3Backup(config, tmp_path / "state")
    archived = archive.root / "3-cli" / "timelapse.mp4"
    assert object_bytes(backup, "cli/3-cli/timelapse.mp4") == archived.read_bytes()
