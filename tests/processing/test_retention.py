"""Processing-side retention: the pure decision, the shell that deletes and records, a real
render-and-archive followed by retention, and the store cleaning itself on a small real disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from test_jobs import FAST, ingest_sequence, run_consumer, wait_for

from skylapse.capture.storage import DiskUsage
from skylapse.catalog import ProcessingCatalog
from skylapse.config import ConfigError, ProcessingConfig, RetentionConfig, parse_config
from skylapse.metrics import ServiceMetrics
from skylapse.processing.archive import ArchiveConfig
from skylapse.processing.jobs import JobService
from skylapse.processing.retention import StoredSequence, StoreRetention, plan_retention

NOW = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
MB = 1_000_000


def seq(
    id: int, size_mb: float, archived_days_ago: float | None, *, in_use: bool = False
) -> StoredSequence:
    return StoredSequence(
        id=id,
        name=f"peak-1/s{id}",
        first_at=NOW - timedelta(days=30 - id),  # a higher id was captured later
        frames=10,
        size_bytes=int(size_mb * MB),
        archived_at=None if archived_days_ago is None else NOW - timedelta(days=archived_days_ago),
        in_use=in_use,
    )


def usage(used_mb: float, total_mb: float = 100) -> DiskUsage:
    return DiskUsage(int(total_mb * MB), int(used_mb * MB), int((total_mb - used_mb) * MB))


# -- the decision ------------------------------------------------------------------------------


def test_age_deletes_only_rendered_and_archived_sequences_past_keep_days():
    policy = RetentionConfig(keep_days=7, watermark_pct=90)
    sequences = [seq(1, 1, 8), seq(2, 1, 6), seq(3, 1, None), seq(4, 1, 30, in_use=True)]
    plan = plan_retention(sequences, usage(40), policy, NOW)
    assert [(d.sequence.id, d.reason) for d in plan.deletions] == [(1, "age")]
    assert {s.id for s in plan.kept} == {3, 4}  # unrendered, and one a job is reading
    assert plan.at_risk is None
    assert (
        plan_retention(sequences, usage(40), RetentionConfig(keep_days=None), NOW).deletions == []
    )
    zero = plan_retention(sequences, usage(40), RetentionConfig(keep_days=0), NOW)
    assert [d.sequence.id for d in zero.deletions] == [1, 2]


def test_watermark_deletes_oldest_rendered_first_down_to_the_margin():
    policy = RetentionConfig(keep_days=None, watermark_pct=80, margin_pct=5)
    # captured in id order; 3 is not rendered; at 90 % the goal is 75 %: 15 MB to free
    sequences = [seq(1, 10, 1), seq(2, 3, 1), seq(3, 40, None), seq(4, 5, 1), seq(5, 5, 1)]
    plan = plan_retention(sequences, usage(90), policy, NOW)
    assert [(d.sequence.id, d.reason) for d in plan.deletions] == [
        (1, "watermark"),
        (2, "watermark"),
        (4, "watermark"),
    ]
    assert plan.used_pct_before == 90 and plan.used_pct_after == 72
    assert plan.at_risk is None
    # under the watermark: nothing
    assert plan_retention(sequences, usage(79), policy, NOW).deletions == []


def test_over_the_watermark_with_only_unrendered_frames_left_alerts_and_keeps_them():
    policy = RetentionConfig(keep_days=None, watermark_pct=60, margin_pct=5)
    sequences = [seq(1, 5, 1), seq(2, 30, None), seq(3, 20, None), seq(4, 10, 1, in_use=True)]
    plan = plan_retention(sequences, usage(85), policy, NOW)
    assert [d.sequence.id for d in plan.deletions] == [1]  # the only deletable one
    assert {s.id for s in plan.kept} == {2, 3, 4}
    assert plan.used_pct_after == 80
    assert plan.at_risk is not None
    assert "80.0 % full (watermark 60 %)" in plan.at_risk
    assert "3 sequences (30 frames, 0.06 GB) not yet rendered and archived" in plan.at_risk
    assert "1 of them being rendered or archived now" in plan.at_risk


def test_retention_settings_are_validated_naming_the_field():
    config = parse_config({"processing": {"retention": {"keep_days": 0, "watermark_pct": 50}}})
    assert config.processing.retention.keep_days == 0
    for bad in ({"keep_days": -1}, {"watermark_pct": 49}, {"watermark_pct": 99}, {"nope": 1}):
        with pytest.raises(ConfigError, match=r"f\.yaml: processing\.retention\.") as err:
            parse_config({"processing": {"retention": bad}}, "f.yaml")
        assert next(iter(bad)) in str(err.value)


# -- the shell, on a catalog ----------------------------------------------------------------


def add_sequence(
    catalog: ProcessingCatalog, store: Path, session: str, frames: int, size: int, at: datetime
) -> int:
    """A sequence of ``frames`` files of ``size`` random bytes in the store, ingested at ``at``."""
    for i in range(frames):
        rel = f"peak-1/{session}/f{i:03d}.jpg"
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(os.urandom(size))
        sid = catalog.record_ingested(
            station="peak-1",
            path=f"{session}/f{i:03d}.jpg",
            store_path=rel,
            sha256="0" * 64,
            size_bytes=size,
            captured_at=at + timedelta(seconds=i),
            camera="cam",
            session_id=session,
            phase="day",
            metadata={},
            now=at + timedelta(seconds=i),
        )
    return sid


def render_and_archive(
    catalog: ProcessingCatalog, sid: int, job: str, started: datetime, archived: datetime
) -> None:
    """A done whole-sequence render of ``sid`` whose outputs were archived at ``archived``."""
    catalog.add_job(job, "render", {"sequence_id": sid, "phase": None, "options": {}}, started)
    catalog.update_job(job, state="done", started_at=started, finished_at=started, result={})
    catalog.add_timelapse(
        job_id=job, sequence_id=sid, path=f"{sid}-{job}", files=[], created_at=archived
    )


def test_shell_deletes_files_records_logs_and_counts(tmp_path):
    catalog = ProcessingCatalog(tmp_path / "processing.db")
    store = tmp_path / "store"
    t = NOW - timedelta(days=20)
    old = add_sequence(catalog, store, "s-old", 3, 1000, t)
    render_and_archive(catalog, old, "r-old", t + timedelta(hours=1), t + timedelta(hours=2))
    late = add_sequence(catalog, store, "s-late", 2, 1000, t)
    # rendered before its last frame came: that render did not see every frame
    render_and_archive(catalog, late, "r-late", t - timedelta(hours=1), t + timedelta(hours=2))
    add_sequence(catalog, store, "s-new", 2, 1000, t)
    metrics = ServiceMetrics(["store_bytes", "store_utilization_pct", "store_frames_deleted"])
    retention = StoreRetention(
        store,
        catalog,
        RetentionConfig(keep_days=7),
        disk_usage=lambda p: usage(10),
        metrics=metrics,
    )
    assert {s.id: s.deletable for s in retention.sequences()} == {1: True, 2: False, 3: False}
    with structlog.testing.capture_logs() as logs:
        plan = retention.enforce(NOW)
    assert [d.sequence.id for d in plan.deletions] == [old]
    assert not (store / "peak-1" / "s-old").exists()  # the files and their emptied folder
    assert len(list((store / "peak-1").rglob("*.jpg"))) == 4
    deleted = catalog.frames_deleted(old)
    assert deleted is not None and deleted.reason == "age" and deleted.frames == 3
    assert len(catalog.sequence_frames(old)) == 3  # ingested rows stay: no double ingest
    assert catalog.is_ingested("peak-1", "s-old/f000.jpg")
    (entry,) = [e for e in logs if e["event"] == "deleted a sequence's frames from the store"]
    assert entry["sequence"] == old and entry["reason"] == "age" and entry["bytes"] == 3000
    text = metrics.exposition().decode()
    assert 'store_frames_deleted_total{reason="age"} 3.0' in text
    assert "store_bytes 4000.0" in text
    assert retention.enforce(NOW).deletions == []  # nothing twice
    assert retention.check().status == "ok"


def test_a_real_render_and_archive_lets_retention_delete_and_a_rerender_fails_clearly(tmp_path):
    service = JobService(tmp_path / "data", queue_url="", archive=ArchiveConfig(after_render=True))
    sid = ingest_sequence(service, tmp_path, 6)
    retention = StoreRetention(service.store, service.catalog, RetentionConfig(keep_days=0))
    assert retention.enforce().deletions == []  # not rendered yet
    files = [service.store / f.store_path for f in service.catalog.sequence_frames(sid)]
    consumer = run_consumer(service)
    try:
        service.submit_render(sid, FAST)
        # the archive job done, not only its timelapse recorded: while it runs, the sequence
        # is in use and retention keeps it
        wait_for(
            lambda: [j for j in service.catalog.jobs(state="done") if j.kind == "archive"],
            what="render and archive",
        )
        assert [d.sequence.id for d in retention.enforce().deletions] == [sid]
        assert not any(f.exists() for f in files)
        again = service.submit_render(sid, FAST)
        wait_for(lambda: service.catalog.job(again).state == "failed", what="failed render")
    finally:
        consumer.stop(graceful=True)
    assert "frames were deleted from the store" in service.catalog.job(again).error


# -- a small real disk -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A fresh 8 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    point = tmp_path / "disk"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)], check=True)
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def used_pct(path: Path) -> float:
    u = shutil.disk_usage(path)
    return 100.0 * u.used / u.total


def test_the_store_cleans_itself_on_a_small_disk(tmp_path, small_disk):
    catalog = ProcessingCatalog(tmp_path / "processing.db")  # off the small disk
    store = small_disk / "store"
    t = NOW - timedelta(days=3)
    rendered = []
    for day in range(4):  # 4 x 1 MB, rendered and archived, captured day by day
        sid = add_sequence(catalog, store, f"s{day}", 4, 250_000, t + timedelta(hours=day))
        at = t + timedelta(hours=day, minutes=30)
        render_and_archive(catalog, sid, f"r{day}", at, at)
        rendered.append(sid)
    unrendered = add_sequence(catalog, store, "s-open", 4, 250_000, t + timedelta(hours=5))
    policy = RetentionConfig(keep_days=30, watermark_pct=50, margin_pct=5)
    retention = StoreRetention(store, catalog, policy)
    assert used_pct(store) > 55
    plan = retention.enforce(NOW)
    assert used_pct(store) <= 45
    deleted = [d.sequence.id for d in plan.deletions]
    assert deleted == rendered[: len(deleted)] and len(deleted) < len(rendered)  # oldest first
    assert all(catalog.frames_deleted(s).reason == "watermark" for s in deleted)
    assert catalog.frames_deleted(unrendered) is None
    assert retention.at_risk is None and retention.check().status == "ok"
    # fill it with frames not yet rendered: the rest of the rendered ones go, then it alerts
    add_sequence(catalog, store, "s-big", 5, 700_000, t + timedelta(hours=6))
    plan = retention.enforce(NOW)
    assert {d.sequence.id for d in plan.deletions} == set(rendered) - set(deleted)
    assert used_pct(store) > 50
    assert len(list((store / "peak-1").rglob("*.jpg"))) == 9  # every unrendered frame kept
    assert retention.at_risk is not None and "not yet rendered and archived" in retention.at_risk
    assert retention.check().status == "failing"


def test_the_processing_service_runs_retention_and_shows_the_store(small_disk):
    from fastapi.testclient import TestClient

    from skylapse.api.processing.app import ProcessingSettings, create_processing_app
    from skylapse.config import AlertsConfig

    token = "test-token-0123456789abcdef"
    retention = RetentionConfig(keep_days=30, watermark_pct=50, check_every_s=0.05)
    settings = ProcessingSettings(
        data_dir=small_disk / "data",
        token=token,
        workers=0,
        ingest=False,
        processing=ProcessingConfig(render_after_min=None, retention=retention),
        alerts=AlertsConfig(evaluate_every_s=0.05, clear_after_s=0),
        alert_notifiers=[],
    )
    app = create_processing_app(settings)
    catalog, store = app.state.runtime.jobs.catalog, app.state.runtime.jobs.store
    t = datetime.now(UTC) - timedelta(days=3)  # archived 3 days ago: keep_days does not apply
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        health = client.get("/health").json()
        assert health["checks"]["store"]["status"] == "ok"
        assert "0.00 GB of frames" in health["checks"]["store"]["detail"]
        old = add_sequence(catalog, store, "s-old", 4, 500_000, t)
        render_and_archive(catalog, old, "r-old", t + timedelta(hours=1), t + timedelta(hours=1))
        new = add_sequence(catalog, store, "s-new", 5, 900_000, t + timedelta(hours=2))
        wait_for(lambda: catalog.frames_deleted(old), what="the watermark pass")
        values = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in client.get("/metrics").text.splitlines()
            if line and not line.startswith("#")
        }
        assert values["store_bytes"] == 4_500_000
        assert values['store_frames_deleted_total{reason="watermark"}'] == 4
        assert values["store_utilization_pct"] > 50  # only the unrendered sequence is left
        body = wait_for(
            lambda: (
                (b := client.get("/health").json())["checks"]["alerts"]["status"] == "failing" and b
            ),
            what="the unrendered_frames_at_risk alert",
        )
        assert body["checks"]["store"]["status"] == "failing"
        assert "unrendered_frames_at_risk" in body["checks"]["alerts"]["detail"]
        assert catalog.frames_deleted(new) is None
        assert len(list(store.rglob("*.jpg"))) == 5
