"""Processing jobs on a real task queue (huey), tracked in the processing catalog.

The queue is SQLite by default (one machine, nothing to run) and Redis when
``SKYLAPSE_QUEUE_URL=redis://…`` is set, so that `skylapse worker` processes on several
machines share the work. A job's parameters and state live in the catalog's ``jobs`` table;
the queue carries only the job id. That keeps jobs idempotent (a task re-delivered after a
worker died finds the job already done and does nothing) and lets the API list, cancel and
retry them without asking the queue.

Job kinds:

* ``render``: a sequence (or one phase of it) through `skylapse.processing.render`, into
  ``<data>/timelapses/<sequence>-<job>/``.
* ``enhance``: one bracket set (HDR exposure fusion) or focus stack fused into a still.
* ``archive``: a finished render's outputs into the archive (`skylapse.processing.archive`),
  then working-folder cleanup, S3 backup when configured, and retention. Queued by every
  finished render when ``ArchiveConfig.after_render`` (``SKYLAPSE_ARCHIVE_AFTER_RENDER=1``).

A failing job is retried by the queue up to its limit, then marked ``failed`` with the error.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer

from skylapse.catalog import JobRow, ProcessingCatalog
from skylapse.catalog.sqlite import iso_time
from skylapse.log import correlation_id, get_logger
from skylapse.processing.archive import ArchiveConfig
from skylapse.processing.backup import BackupConfig
from skylapse.processing.options import RenderOptions

if TYPE_CHECKING:
    from huey.api import Task

log = get_logger(__name__)

QUEUE_URL_ENV = "SKYLAPSE_QUEUE_URL"

#: What a render job may ask for: the render's own options (the name the API still uses).
RenderJobOptions = RenderOptions


class JobCancelled(Exception):
    """Raised inside a running job when it was cancelled."""


class BackgroundConsumer(Consumer):  # type: ignore[misc]  # huey has no type hints
    """A huey consumer of thread workers that starts in the background (`start`, `stop`) beside
    a program that owns the process, and reports its threads (`threads_alive`).

    With ``handle_signals=False`` it leaves the SIGINT and SIGTERM handlers to that program
    (a web server, the demo's Ctrl-C); huey's own ``start`` installs its handlers and has no
    switch for it, so this overrides the hook, as its ``Consumer`` invites subclasses to.
    """

    def __init__(self, huey: Huey, workers: int, *, handle_signals: bool = False) -> None:
        super().__init__(huey, workers=workers, worker_type="thread", periodic=False)
        self.handle_signals = handle_signals

    def _set_signal_handlers(self) -> None:
        if self.handle_signals:
            super()._set_signal_handlers()

    def threads_alive(self) -> tuple[int, int]:
        """How many of the worker threads are alive, and how many there are."""
        threads = [thread for _, thread in self.worker_threads]
        return sum(t.is_alive() for t in threads), len(threads)


def make_huey(queue_url: str | None, data_dir: Path, name: str = "skylapse") -> Huey:
    """The task queue: Redis for ``redis://`` URLs, else a SQLite file in the data folder."""
    if queue_url:
        if not queue_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{QUEUE_URL_ENV}: expected a redis:// URL, got {queue_url!r}")
        return RedisHuey(name, url=queue_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name, filename=str(data_dir / "queue.db"))


class JobService:
    """Submits, runs and tracks jobs: the same object in the API process and in every worker."""

    def __init__(
        self,
        data_dir: str | Path,
        queue_url: str | None = None,
        *,
        retries: int = 2,
        retry_delay_s: float = 2.0,
        on_progress: Callable[[str, float], None] | None = None,
        archive: ArchiveConfig | None = None,
        backup: BackupConfig | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = ProcessingCatalog(self.data_dir / "processing.db")
        self.store = self.data_dir / "store"
        self.timelapses = self.data_dir / "timelapses"
        self.working = self.data_dir / "working"
        self.retries = retries
        self.on_progress = on_progress
        self.archive = archive if archive is not None else ArchiveConfig.from_env()
        self.backup = backup if backup is not None else BackupConfig.from_env()
        url = queue_url if queue_url is not None else os.environ.get(QUEUE_URL_ENV)
        self.huey = make_huey(url, self.data_dir)
        self._task = self.huey.task(
            retries=retries, retry_delay=retry_delay_s, context=True, name="skylapse.job"
        )(self._execute)

    # -- submitting --------------------------------------------------------------------------

    def submit(self, kind: str, params: dict[str, Any], *, correlation: str | None = None) -> str:
        """Record a job and queue it; returns its id."""
        if kind not in _RUNNERS:
            raise ValueError(f"unknown job kind {kind!r}; expected one of {sorted(_RUNNERS)}")
        job_id = uuid.uuid4().hex[:12]
        self.catalog.add_job(job_id, kind, params, datetime.now(UTC), correlation)
        self._task(job_id)
        log.info("job queued", job=job_id, kind=kind)
        return job_id

    def submit_render(
        self,
        sequence_id: int,
        options: RenderOptions | None = None,
        *,
        phase: str | None = None,
        correlation: str | None = None,
    ) -> str:
        if self.catalog.sequence(sequence_id) is None:
            raise ValueError(f"no sequence {sequence_id}")
        params = {
            "sequence_id": sequence_id,
            "phase": phase,
            "options": (options or RenderOptions()).model_dump(mode="json"),
        }
        return self.submit("render", params, correlation=correlation)

    def cancel(self, job_id: str) -> JobRow:
        job = self._require(job_id)
        if job.state in ("queued", "running"):
            self.catalog.update_job(job_id, state="cancelled", finished_at=datetime.now(UTC))
        return self._require(job_id)

    def retry(self, job_id: str) -> JobRow:
        job = self._require(job_id)
        if job.state not in ("failed", "cancelled"):
            raise ValueError(f"job {job_id} is {job.state}; only failed or cancelled jobs retry")
        self.catalog.update_job(
            job_id, state="queued", error=None, progress=0.0, started_at=None, finished_at=None
        )
        self._task(job_id)
        return self._require(job_id)

    def close_idle_sequences(
        self, idle: timedelta, options: RenderOptions | None = None, now: datetime | None = None
    ) -> list[str]:
        """Close sequences that received no frame for ``idle`` and queue their render.

        The capture side's session has ended when its frames stop coming; rendering on that
        signal needs no extra message between the two services.
        """
        now = now or datetime.now(UTC)
        jobs = []
        for seq in self.catalog.sequences():
            if seq.closed_at or not seq.frames:
                continue
            last = self.catalog.last_ingested_at(seq.id)
            if last is not None and now - last >= idle:
                self.catalog.close_sequence(seq.id, now)
                jobs.append(self.submit_render(seq.id, options))
        return jobs

    def _require(self, job_id: str) -> JobRow:
        job = self.catalog.job(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    # -- running -----------------------------------------------------------------------------

    def consumer(self, workers: int = 1) -> Consumer:
        """A huey consumer running this service's jobs on ``workers`` threads; its ``run()``
        owns the process (`skylapse worker`: it handles SIGINT and SIGTERM itself)."""
        return self.huey.create_consumer(workers=workers, worker_type="thread", periodic=False)

    def start_consumer(
        self, workers: int = 1, *, handle_signals: bool = False
    ) -> BackgroundConsumer:
        """Start a consumer of this service's jobs on ``workers`` threads in the background and
        return it; stop it with ``stop(graceful=...)``. ``handle_signals=False`` for callers
        that own SIGINT and SIGTERM (see `BackgroundConsumer`)."""
        consumer = BackgroundConsumer(self.huey, workers, handle_signals=handle_signals)
        consumer.start()
        return consumer

    def _execute(self, job_id: str, task: Task | None = None) -> None:
        job = self.catalog.job(job_id)
        if job is None or job.state in ("done", "cancelled"):
            return  # re-delivered or cancelled: idempotent
        with correlation_id(job.correlation_id or job_id):
            attempts = job.attempts + 1
            self.catalog.update_job(
                job_id, state="running", attempts=attempts, started_at=datetime.now(UTC), error=None
            )
            log.info("job started", job=job_id, kind=job.kind, attempt=attempts)
            t0 = time.perf_counter()
            try:
                result = _RUNNERS[job.kind](self, job_id, job.params)
            except JobCancelled:
                log.info("job cancelled", job=job_id)
                return
            except Exception as exc:
                final = task is None or not task.retries
                self.catalog.update_job(
                    job_id,
                    state="failed" if final else "queued",
                    error=f"{type(exc).__name__}: {exc}",
                    finished_at=datetime.now(UTC) if final else None,
                )
                log.error("job failed", job=job_id, error=str(exc), final=final)
                raise
            result["duration_s"] = round(time.perf_counter() - t0, 3)
            self.catalog.update_job(
                job_id, state="done", progress=1.0, result=result, finished_at=datetime.now(UTC)
            )
            log.info("job done", job=job_id, seconds=result["duration_s"])
            if job.kind == "render" and self.archive.after_render:
                self.submit("archive", {"job_id": job_id}, correlation=job.correlation_id)

    def _progress(self, job_id: str) -> Callable[[str, int, int], None]:
        """A render progress callback that stores progress (throttled) and honours cancel."""
        last = [0.0]

        def report(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] < 0.5 and done < total:
                return
            last[0] = now
            if self._require(job_id).state == "cancelled":
                raise JobCancelled(job_id)
            # the analysis pass is roughly the first 15 % of a render's time
            share = done / max(total, 1)
            fraction = 0.15 * share if stage == "analysing" else 0.15 + 0.85 * share
            self.catalog.update_job(job_id, progress=round(fraction, 4))
            if self.on_progress is not None:
                self.on_progress(job_id, fraction)

        return report


def _run_render(service: JobService, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from skylapse.processing import sources
    from skylapse.processing.render import render

    deleted = service.catalog.frames_deleted(params["sequence_id"])
    if deleted is not None:  # skylapse.processing.retention
        raise ValueError(
            f"sequence {params['sequence_id']}'s frames were deleted from the store at "
            f"{iso_time(deleted.deleted_at)} ({deleted.reason} retention, after its render was "
            "archived): its archived timelapse is what remains"
        )
    frames = service.catalog.sequence_frames(params["sequence_id"], params.get("phase"))
    # a RAW+JPEG pair is one shot: its DNG is the frame (the links below lose the names)
    twins = sources.raw_twins(f.path for f in frames)
    frames = [f for f in frames if Path(f.path) not in twins]
    if not frames:
        raise ValueError(f"sequence {params['sequence_id']} has no frames")
    log.info(
        "render inputs",
        job=job_id,
        sequence=params["sequence_id"],
        frames=len(frames),
        frame_ids=[f.frame_id for f in frames],
    )
    work = service.working / job_id
    shutil.rmtree(work, ignore_errors=True)
    (work / "frames").mkdir(parents=True)
    try:
        # Links named in capture order: the render orders by EXIF time, then by name.
        for i, f in enumerate(frames):
            src = service.store / f.store_path
            os.symlink(src.resolve(), work / "frames" / f"{i:06d}{src.suffix.lower()}")
        out_dir = service.timelapses / f"{params['sequence_id']}-{job_id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        options = RenderOptions.model_validate(params["options"])
        summary = render(
            work / "frames", out_dir / "timelapse.mp4", options, progress=service._progress(job_id)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)  # processing_working cleanup
    return {
        "outputs": [str(p.relative_to(service.data_dir)) for p in summary.outputs],
        "frames": summary.shots_rendered,
        "skipped": [[str(p), r] for p, r in summary.skipped],
        "render_fps": round(summary.frames_per_second, 2),
        "render_wall_s": round(summary.wall_seconds, 3),
        "stage_seconds": {k: round(v, 3) for k, v in summary.stage_seconds.items()},
        "source_size": list(summary.source_size),
        "output_size": list(summary.output_size),
        "exposure_correction_ev": [round(v, 3) for v in summary.exposure_correction_ev],
    }


def _run_enhance(service: JobService, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from skylapse.processing import exposure_fusion, focus_stack, sources
    from skylapse.processing.encode import write_image

    paths = [service.store / p for p in params["paths"]]
    for p in paths:
        if not p.resolve().is_relative_to(service.store.resolve()):
            raise ValueError(f"{p} is outside the store")
    images = [sources.read_frame(p) for p in paths]
    if params.get("mode", "hdr") == "focus":
        fused = focus_stack.fuse_focus_stack(focus_stack.align_focus_stack(images))
    else:
        fused = exposure_fusion.fuse_exposures(exposure_fusion.align_brackets(images))
    out = service.data_dir / "enhanced" / f"{job_id}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(out, fused)
    return {"outputs": [str(out.relative_to(service.data_dir))]}


def _data_relative(service: JobService, path: Path) -> str:
    inside = path.is_relative_to(service.data_dir)
    return str(path.relative_to(service.data_dir) if inside else path)


def _run_archive(service: JobService, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    from skylapse.processing.archive import Archive
    from skylapse.processing.backup import S3Backup

    cfg = service.archive
    archive = Archive(service.data_dir, service.catalog, cfg.dir)
    frames = params.get("include_frames", cfg.include_frames)
    record = archive.archive_job_outputs(params["job_id"], include_frames=frames)
    result: dict[str, Any] = {
        "timelapse_id": record.id,
        "outputs": [
            _data_relative(service, archive.path_of(record) / f.path) for f in record.files
        ],
        "size_bytes": record.size_bytes,
        "working_removed": archive.cleanup_working(service.working),
    }
    if service.backup.enabled and record.backed_up_at is None:
        backed = S3Backup(service.backup, archive.root / ".backup-state").backup_timelapse(
            archive, record.id
        )
        result["backup_location"] = backed.backup_location
    if cfg.max_age is not None or cfg.max_total_bytes is not None:
        report = archive.enforce_retention(cfg.max_age, cfg.max_total_bytes)
        result["retention_deleted"] = report.deleted
    return result


_RUNNERS: dict[str, Callable[[JobService, str, dict[str, Any]], dict[str, Any]]] = {
    "render": _run_render,
    "enhance": _run_enhance,
    "archive": _run_archive,
}
