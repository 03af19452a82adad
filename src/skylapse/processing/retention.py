"""Processing-side retention: ingested frames leave the store once their sequence is rendered and
archived, and an emergency watermark keeps the store's disk from filling.

Settings are ``processing.retention`` (:class:`~skylapse.config.RetentionConfig`):

* **Age**: a sequence's frames are deleted ``keep_days`` after its render was archived.
* **Watermark**: while the store's file system is fuller than ``watermark_pct``, the frames of the
  oldest (by capture time) rendered-and-archived sequences are deleted, one sequence at a time,
  until use is ``margin_pct`` below the watermark.
* **Never** deleted: a sequence that is not rendered and archived, or that a queued or running
  job reads (a render of it, or an archive job that may copy its frames). *Rendered and archived*
  means a whole-sequence render (no phase) finished and its outputs are in the archive
  (`skylapse.processing.archive`), and that render started after the sequence's last frame
  arrived, so it saw every frame. When the disk stays above the watermark with only such frames
  left, nothing more is deleted: :attr:`StoreRetention.at_risk` says why and the service raises
  the ``unrendered_frames_at_risk`` alert (`skylapse.alerts.processing_conditions`).

A pass is a pure decision (:func:`plan_retention`, from the catalog's view and the disk's usage)
and a small shell that carries it out (:class:`StoreRetention`): for each sequence it deletes the
files, then records the deletion in the catalog (``frame_deletions``: when, why, how many frames
and bytes), then logs it, so a crash in between is finished by the next pass. The ``ingested``
rows stay: a frame the station sends again is still recognised and not ingested twice. A render
requested later for such a sequence fails saying its frames were deleted.

The processing service runs a pass every ``check_every_s`` (`skylapse.api.processing`), shows the
store in ``/health`` (check ``store``) and ``/metrics`` (``store_bytes``,
``store_utilization_pct``, ``store_frames_deleted_total{reason}``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from skylapse.capture.storage import DiskUsage
from skylapse.catalog import ArchivedRender, ProcessingCatalog, StoredSequenceRow
from skylapse.config import RetentionConfig
from skylapse.log import get_logger

if TYPE_CHECKING:
    from skylapse.api.common import Check
    from skylapse.metrics import ServiceMetrics

log = get_logger(__name__)

Reason = Literal["age", "watermark"]


@dataclass(frozen=True)
class StoredSequence:
    """What retention knows of a sequence whose frames are in the store."""

    id: int
    name: str  # station/session, for logs and alerts
    first_at: datetime | None  # capture time of its first frame
    frames: int
    size_bytes: int
    archived_at: datetime | None  # rendered (every frame) and archived at; None = not yet
    in_use: bool = False  # a queued or running job reads it

    @property
    def deletable(self) -> bool:
        return self.archived_at is not None and not self.in_use


@dataclass(frozen=True)
class Deletion:
    sequence: StoredSequence
    reason: Reason


@dataclass
class RetentionPlan:
    """What one pass deletes, and the disk's use before and (as projected) after."""

    deletions: list[Deletion] = field(default_factory=list)
    used_pct_before: float = 0.0
    used_pct_after: float = 0.0
    kept: list[StoredSequence] = field(default_factory=list)  # not rendered and archived, or busy
    at_risk: str | None = None  # over the watermark with only such frames left


def _pct(used: int, total: int) -> float:
    return 100.0 * used / total if total else 0.0


def plan_retention(
    sequences: Sequence[StoredSequence],
    usage: DiskUsage,
    policy: RetentionConfig,
    now: datetime,
) -> RetentionPlan:
    """Decide a pass (module docstring): age first, then the watermark, oldest capture first.

    The freed space is projected from the catalog's frame sizes; the next pass measures again.
    """
    plan = RetentionPlan(used_pct_before=_pct(usage.used, usage.total))
    keep = timedelta(days=policy.keep_days) if policy.keep_days is not None else None
    used = usage.used
    remaining = []
    for seq in sequences:
        aged = keep is not None and seq.archived_at is not None and now - seq.archived_at >= keep
        if seq.deletable and aged:
            plan.deletions.append(Deletion(seq, "age"))
            used -= seq.size_bytes
        else:
            remaining.append(seq)
    goal = policy.watermark_pct - policy.margin_pct
    if _pct(used, usage.total) > policy.watermark_pct:
        oldest_first = sorted(remaining, key=lambda s: (s.first_at is None, s.first_at, s.id))
        for seq in oldest_first:
            if _pct(used, usage.total) <= goal:
                break
            if seq.deletable:
                plan.deletions.append(Deletion(seq, "watermark"))
                used -= seq.size_bytes
    deleted = {d.sequence.id for d in plan.deletions}
    plan.kept = [s for s in sequences if s.id not in deleted and not s.deletable]
    plan.used_pct_after = _pct(used, usage.total)
    if plan.used_pct_after > policy.watermark_pct:
        plan.at_risk = _at_risk_detail(plan, policy)
    return plan


def _at_risk_detail(plan: RetentionPlan, policy: RetentionConfig) -> str:
    kept_bytes = sum(s.size_bytes for s in plan.kept)
    busy = sum(s.in_use for s in plan.kept)
    return (
        f"store disk {plan.used_pct_after:.1f} % full (watermark {policy.watermark_pct:g} %) "
        f"after deleting {len(plan.deletions)} rendered sequences; kept: {len(plan.kept)} "
        f"sequences ({sum(s.frames for s in plan.kept)} frames, {kept_bytes / 1e9:.2f} GB) not "
        f"yet rendered and archived ({busy} of them being rendered or archived now). Render "
        "and archive them (archive.after_render), or give the store more disk"
    )


def _archived_at(
    seq: StoredSequenceRow, renders: dict[int, list[ArchivedRender]]
) -> datetime | None:
    """When the newest archived whole render of ``seq`` that saw every frame was archived."""
    out = None
    last_ingested = seq.last_ingested_at
    for r in renders.get(seq.id, []):
        started = r.render_started_at
        if started is not None and (last_ingested is None or started >= last_ingested):
            out = r.archived_at
    return out


class StoreRetention:
    """Applies :func:`plan_retention` to the store (module docstring).

    ``policy`` is the config section or a function returning it (read at each pass);
    ``disk_usage`` measures the store's file system (default: `shutil.disk_usage`).
    """

    def __init__(
        self,
        store: str | Path,
        catalog: ProcessingCatalog,
        policy: RetentionConfig | Callable[[], RetentionConfig] | None = None,
        *,
        disk_usage: Callable[[Path], DiskUsage] | None = None,
        metrics: ServiceMetrics | None = None,
    ):
        self.store = Path(store)
        self.catalog = catalog
        self._policy = policy if policy is not None else RetentionConfig()
        self._disk_usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))
        self.metrics = metrics
        self.at_risk: str | None = None
        self.last_plan: RetentionPlan | None = None
        self.last_error: str | None = None
        if metrics is not None:
            metrics.gauge("store_bytes").set_function(catalog.stored_bytes)
            metrics.gauge("store_utilization_pct").set_function(self.used_pct)

    @property
    def policy(self) -> RetentionConfig:
        return self._policy() if callable(self._policy) else self._policy

    def usage(self) -> DiskUsage:
        self.store.mkdir(parents=True, exist_ok=True)
        return self._disk_usage(self.store)

    def used_pct(self) -> float:
        usage = self.usage()
        return _pct(usage.used, usage.total)

    def sequences(self) -> list[StoredSequence]:
        """The catalog's view: every sequence still in the store, oldest capture first."""
        renders: dict[int, list[ArchivedRender]] = {}
        for r in self.catalog.archived_renders():
            renders.setdefault(r.sequence_id, []).append(r)
        busy = self.catalog.sequences_in_use()
        return [
            StoredSequence(
                id=row.id,
                name=row.name,
                first_at=row.first_at,
                frames=row.frames,
                size_bytes=row.size_bytes,
                archived_at=_archived_at(row, renders),
                in_use=row.id in busy,
            )
            for row in self.catalog.stored_sequences()
        ]

    def enforce(self, now: datetime | None = None) -> RetentionPlan:
        """One pass: decide, delete each chosen sequence's frames, record and log each."""
        now = now or datetime.now(UTC)
        policy = self.policy
        plan = plan_retention(self.sequences(), self.usage(), policy, now)
        for deletion in plan.deletions:
            self._delete(deletion, now)
        self.last_plan = plan
        if plan.at_risk and plan.at_risk != self.at_risk:
            log.error("store over its watermark: unrendered frames at risk", detail=plan.at_risk)
        self.at_risk = plan.at_risk
        return plan

    def _delete(self, deletion: Deletion, now: datetime) -> None:
        seq = deletion.sequence
        folders = set()
        for frame in self.catalog.sequence_frames(seq.id):
            path = self.store / frame.store_path
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        _remove_empty_folders(folders, self.store)
        self.catalog.record_frames_deleted(seq.id, now, deletion.reason, seq.frames, seq.size_bytes)
        if self.metrics is not None:
            self.metrics.counter("store_frames_deleted").labels(reason=deletion.reason).inc(
                seq.frames
            )
        log.info(
            "deleted a sequence's frames from the store",
            sequence=seq.id,
            name=seq.name,
            reason=deletion.reason,
            frames=seq.frames,
            bytes=seq.size_bytes,
            archived_at=seq.archived_at.isoformat() if seq.archived_at else None,
        )

    def check(self) -> Check:
        """The ``/health`` check ``store``: failing while unrendered frames are at risk,
        degraded above the watermark (cleanup under way) or when the last pass failed."""
        from skylapse.api.common import Check

        policy = self.policy
        pct = self.used_pct()
        detail = (
            f"{self.catalog.stored_bytes() / 1e9:.2f} GB of frames; disk {pct:.1f} % used "
            f"(watermark {policy.watermark_pct:g} %)"
        )
        if self.last_plan is not None:
            detail += (
                f"; last pass deleted {len(self.last_plan.deletions)} sequences, "
                f"{len(self.last_plan.kept)} not yet rendered and archived"
            )
        if self.at_risk:
            return Check(status="failing", detail=self.at_risk)
        if self.last_error:
            return Check(status="degraded", detail=f"{detail}; last pass failed: {self.last_error}")
        status = "degraded" if pct > policy.watermark_pct else "ok"
        return Check(status=status, detail=detail)

    async def run(self) -> None:
        """A pass every ``check_every_s`` (in a thread) until cancelled; a failing pass is
        logged and shown by :meth:`check`, and the next one tries again."""
        while True:
            try:
                await asyncio.to_thread(self.enforce)
                self.last_error = None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("store retention failed", error=self.last_error)
            await asyncio.sleep(self.policy.check_every_s)


def _remove_empty_folders(folders: set[Path], root: Path) -> None:
    """Remove the folders (and their parents up to ``root``) that deleting frames emptied."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != root and folder.is_relative_to(root):
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or gone): its parents are not empty either
                break
            folder = folder.parent
