"""The capture side's transfer queue: batches of frames to the processing host, verified.

The queue is the catalog itself (`skylapse.catalog`): every frame is written with
``transfer_state = 'pending'``, so the queue survives restarts for free and resumes where it
stopped. One batch goes like this:

1. The oldest frames not yet verified are listed, with the SHA-256 recorded at capture, in a
   manifest (``sha256sum`` format).
2. ``rsync`` sends the frames to ``<inbox>/<station>/`` over SSH. Interrupted files wait in
   ``.rsync-partial`` and resume on the next attempt.
3. One ``ssh`` command on the receiver writes the manifest (from its stdin) to
   ``.manifests/<batch>.sha256.part``, runs ``sha256sum -c`` on it and, only if every file
   checks, renames it to ``<batch>.sha256``: the commit that hands the batch to the
   processing side's ingest, which never looks at ``.part`` manifests. The checker's output is
   read back as the acknowledgement.
   The same command hands back the receiver's ``.resend`` list (frames its ingest quarantined
   after arrival), which go back into the queue.
   (The manifest, this command and its answer: `skylapse.transfer.manifest`.)
4. Frames are marked ``verified`` only after that commit. When some frames of a batch fail the
   check, the others are committed at once as a batch of their own (a second manifest), so one
   bad frame never holds its batch-mates back. Failed frames are re-sent with ``--checksum`` on
   the next attempt, since a corrupted copy has the size and time of the good one.

A failed frame whose bytes on the station no longer match its catalog SHA-256 (a poison frame:
a flipped bit on the card) can never verify: it is *quarantined*, moved to
``<buffer>/quarantine/<path>`` with a ``.reason`` file beside it and marked ``quarantined`` in
the catalog; never sent again, never deleted by retention, counted in
``frames_failed_total{stage="transfer"}`` and raised as an alert. So is a frame whose path a
file list or manifest line cannot carry (a control character, from before the name rule of
`skylapse.names`). A frame that keeps failing for any other reason (the receiver refuses it)
is tried alone after ``suspect_after`` attempts, once everything else has gone.
An rsync that delivered only part of a batch (exit 23 or 24) still has the receiver check
and commit what arrived.

Every batch has an id (``<UTC time>-<8 hex>``, its manifest's name); the worker's log lines
name it, and ``batch verified`` lists the ids of the frames it committed (``frame_ids``, the
capture loop's, from each frame's catalog row: `skylapse.capture.shot`), so one frame can be
followed from capture through transfer to ingest and render.

A frame's companion files (its DNG, ``extra["companions"]``) travel with it: listed in the same
file list and manifest with their own SHA-256, the frame verified only when all its files
check, quarantined together. A companion missing from the buffer is logged and the frame sent
without it.

Only verified frames become eligible for retention and preferred by emergency cleanup
(`skylapse.capture.storage`), so nothing that has not provably arrived is deleted first.
A failing batch is retried with exponential backoff and full jitter for as long as the
worker runs; a failed transfer never blocks capture, which only ever adds rows to the catalog.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from skylapse.catalog.capture import FrameRecord, TransferCatalog
from skylapse.log import get_logger
from skylapse.names import check_name
from skylapse.transfer.manifest import (
    MANIFEST_DIR,
    inside_buffer,
    manifest_text,
    path_problem,
    read_answer,
    receiver_script,
)
from skylapse.transfer.rsync import (
    CommandRunner,
    SshTarget,
    TransferCommandError,
    rsync_argv,
    ssh_command,
)

log = get_logger(__name__)

#: Where frames that must not be sent are set aside, under the buffer (``.reason`` beside each).
QUARANTINE_DIR = "quarantine"
#: rsync exits after which part of the batch arrived: the receiver checks what did.
PARTIAL_RSYNC_CODES = frozenset({23, 24})
#: How long a quarantined frame keeps the station's alert open.
QUARANTINE_ALERT_WINDOW = timedelta(hours=24)


class VerificationFailed(RuntimeError):
    """The receiver's checksums did not match for some frames of a batch; ``verified`` frames
    of the same batch were committed all the same."""

    def __init__(self, failed: list[str], verified: int = 0):
        self.failed = failed
        self.verified = verified
        super().__init__(f"{len(failed)} frame(s) failed verification: {', '.join(failed[:5])}")


@dataclass(frozen=True)
class _SentBatch:
    """A batch that rsync delivered (all of it, or part: ``send_error``) and the receiver has
    yet to check."""

    batch_id: str
    batch: list[FrameRecord]
    send_error: TransferCommandError | None = None


@dataclass
class TransferStats:
    """Counters behind the transfer metrics and the /health detail."""

    frames_sent: int = 0
    bytes_sent: int = 0
    batches_verified: int = 0
    failures: int = 0
    verification_failures: int = 0
    quarantined: int = 0
    last_success: datetime | None = None
    failing_since: datetime | None = None
    last_error: str | None = None
    queue_depth: int = 0


@dataclass(frozen=True)
class TransferSettings:
    batch_size: int = 50
    bandwidth_limit_kbps: int | None = None
    compress: bool = True
    rsync_program: str = "rsync"
    ssh_program: str = "ssh"
    command_timeout_s: float = 600.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    #: a frame sent this many times without being verified is tried alone, after the others
    suspect_after: int = 3


class TransferQueue(Protocol):
    """What the station's runtime (`skylapse.api.capture`) asks of a transfer worker, so tests
    can run it with a fake: counters, the target, the failure clock and the alert, and a
    blocking ``run`` loop (in its own thread) that ``stop`` ends."""

    stats: TransferStats
    target: SshTarget

    def run(self, poll_s: float = 5.0) -> None: ...
    def stop(self) -> None: ...
    def failing_for_s(self, now: datetime | None = None) -> float: ...
    def quarantine_alert(self, now: datetime | None = None) -> tuple[bool, str]: ...


class TransferWorker:
    """Moves the catalog's pending frames to the processing host, one verified batch at a time."""

    def __init__(
        self,
        catalog: TransferCatalog,
        buffer_root: str | Path,
        target: SshTarget,
        station: str,
        settings: TransferSettings | None = None,
    ):
        self.catalog = catalog
        self.buffer_root = Path(buffer_root)
        self.target = target
        self.station = check_name(station, "station")  # the receiver's folder for it
        self.settings = settings or TransferSettings()
        self.stats = TransferStats()
        self.runner = CommandRunner()  # rsync
        self.verify_runner = CommandRunner()  # the receiver's check, beside the next rsync
        self._stop = threading.Event()
        self._consecutive_failures = 0
        self._remove_stale_lists()

    @property
    def remote_dir(self) -> str:
        return f"{self.target.inbox.rstrip('/')}/{self.station}"

    # -- one batch ---------------------------------------------------------------------------

    def send_batch(self) -> int:
        """Send and verify one batch; returns how many frames were verified (0: queue empty).

        Raises `TransferCommandError` or `VerificationFailed`; the caller retries.
        """
        sent = self._send()
        return 0 if sent is None else self._confirm(sent)

    def _send(self, exclude: frozenset[int] = frozenset()) -> _SentBatch | None:
        """rsync the next batch (leaving out frames still being verified); None: nothing to send."""
        batch = self._next_batch(exclude)
        self._update_queue_depth()
        if not batch:
            return None
        batch_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        files_from = self.buffer_root / MANIFEST_DIR / f"{batch_id}.list"
        files_from.parent.mkdir(parents=True, exist_ok=True)
        listed = [p for r in batch for p, _ in self._files(r)]
        files_from.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in listed))
        resend = any(r.transfer_attempts > 0 for r in batch)
        send_error = None
        try:
            self.runner.run(
                rsync_argv(
                    self.target,
                    self.buffer_root,
                    files_from,
                    self.remote_dir,
                    bandwidth_limit_kbps=self.settings.bandwidth_limit_kbps,
                    compress=self.settings.compress,
                    checksum=resend,
                    rsync_program=self.settings.rsync_program,
                    ssh_program=self.settings.ssh_program,
                ),
                timeout_s=self.settings.command_timeout_s,
            )
        except TransferCommandError as exc:
            if exc.returncode not in PARTIAL_RSYNC_CODES:
                raise
            send_error = exc  # part of the batch arrived: the receiver checks what did
        finally:
            files_from.unlink(missing_ok=True)
        self.catalog.set_transfer_state([r.stored_id for r in batch], "sent")
        log.info("batch sent", batch=batch_id, frames=len(batch), station=self.station)
        return _SentBatch(batch_id, batch, send_error)

    def _confirm(self, sent: _SentBatch) -> int:
        """Have the receiver check and commit a sent batch; mark what arrived intact verified,
        quarantine what changed on the station; returns the frames verified.

        Raises `VerificationFailed` (after committing the rest) for frames to be sent again.
        """
        failed = set(self._verify_and_commit(sent.batch_id, sent.batch))
        verified = [r for r in sent.batch if r.path not in failed]
        if verified:
            self._mark_verified(sent.batch_id, verified)
        retry = self._quarantine_changed([r for r in sent.batch if r.path in failed])
        if sent.send_error is not None:
            log.warning(
                "rsync delivered part of a batch",
                batch=sent.batch_id,
                error=str(sent.send_error),
                verified=len(verified),
                station=self.station,
            )
        if retry:
            self.stats.verification_failures += 1
            failed_paths = [r.path for r in retry]
            raise VerificationFailed(failed_paths, len(verified)) from sent.send_error
        return len(verified)

    def _mark_verified(self, batch_id: str, records: list[FrameRecord]) -> None:
        now = datetime.now(UTC)
        self.catalog.set_transfer_state([r.stored_id for r in records], "verified", when=now)
        self.stats.frames_sent += len(records)
        self.stats.bytes_sent += sum(r.total_bytes for r in records)
        self.stats.batches_verified += 1
        self.stats.last_success = now
        self.stats.failing_since = None
        self._consecutive_failures = 0
        self.stats.queue_depth = max(0, self.stats.queue_depth - len(records))
        log.info(
            "batch verified",
            batch=batch_id,
            frames=len(records),
            station=self.station,
            frame_ids=[r.extra.get("frame_id") for r in records],
        )

    def _update_queue_depth(self) -> None:
        self.stats.queue_depth = (
            self.catalog.count_frames()
            - self.catalog.count_frames(transfer_state="verified")
            - self.catalog.count_frames(transfer_state="quarantined")
        )

    def _next_batch(self, exclude: frozenset[int] = frozenset()) -> list[FrameRecord]:
        """Up to ``batch_size`` of the oldest frames to send. A frame already sent
        ``suspect_after`` times without arriving goes alone, once no other frame waits, so it
        cannot hold back the frames batched with it."""
        batch: list[FrameRecord] = []
        suspect = self.settings.suspect_after
        limit = self.settings.batch_size + len(exclude)
        for record in self.catalog.pending_transfer(limit, suspect_after=suspect):
            if record.id in exclude or not self._sendable(record):
                continue
            if record.transfer_attempts >= suspect:
                if batch:
                    break
                log.warning(
                    "retrying a frame alone",
                    path=record.path,
                    attempts=record.transfer_attempts,
                    station=self.station,
                )
                return [record]
            batch.append(record)
            if len(batch) >= self.settings.batch_size:
                break
        return batch

    def _files(self, record: FrameRecord) -> list[tuple[str, str]]:
        """(path, SHA-256) of the frame's files that are in the buffer: its own, then its
        companions (a missing companion is logged and left out)."""
        files = [record.files[0]]
        for path, sha in record.files[1:]:
            if (self.buffer_root / path).is_file():
                files.append((path, sha))
            else:
                log.error("companion file missing from the buffer", path=path, frame=record.path)
        return files

    def _sendable(self, record: FrameRecord) -> bool:
        """Whether a queued frame can go; sets aside or writes off those that cannot."""
        problem = next(filter(None, (path_problem(p) for p, _ in record.files)), None)
        if problem is not None:
            self._quarantine(record, problem)
            return False
        if (self.buffer_root / record.path).is_file():
            return True
        aside = self.buffer_root / QUARANTINE_DIR / record.path
        if aside.is_file():  # moved aside just before a crash: finish the quarantine
            reason_file = aside.with_name(aside.name + ".reason")
            reason = reason_file.read_text().strip() if reason_file.is_file() else "unknown"
            self._record_quarantine(record, f"{QUARANTINE_DIR}/{record.path}", reason)
            return False
        # Not on disk and not deleted by us: nothing to send, and nothing to wait for.
        self.catalog.mark_deleted(record.stored_id, datetime.now(UTC), "missing from the buffer")
        log.error("frame missing from the buffer", path=record.path)
        return False

    # -- quarantine on the station ----------------------------------------------------------

    def _quarantine_changed(self, records: list[FrameRecord]) -> list[FrameRecord]:
        """Quarantine the frames whose bytes on the station no longer match their catalog
        SHA-256 (no re-send can fix those); returns the others, to be sent again."""
        retry = []
        for record in records:
            changed = None
            for path, sha in record.files:
                try:
                    with open(self.buffer_root / path, "rb") as f:
                        actual = hashlib.file_digest(f, "sha256").hexdigest()
                except FileNotFoundError:  # gone meanwhile: the next batch writes it off
                    actual = sha
                if actual != sha:
                    changed = (
                        f"the bytes on the station no longer match the catalog: {path} has"
                        f" SHA-256 {actual}, catalog {sha}"
                    )
                    break
            if changed is None:
                retry.append(record)
            else:
                self._quarantine(record, changed)
        return retry

    def _quarantine(self, record: FrameRecord, reason: str) -> None:
        """Move a frame to ``<buffer>/quarantine/<path>`` with a ``.reason`` file, then mark it
        in the catalog (a crash in between is finished by `_sendable`). A frame whose path
        would leave the buffer, or whose file is gone, is only marked."""
        rel = record.path
        if inside_buffer(record.path) and (self.buffer_root / record.path).is_file():
            rel = f"{QUARANTINE_DIR}/{record.path}"
            for path, _ in record.files[1:]:  # companions first: the frame's move commits
                src = self.buffer_root / path
                if inside_buffer(path) and src.is_file():
                    aside = self.buffer_root / QUARANTINE_DIR / path
                    aside.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, aside)
            dest = self.buffer_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.with_name(dest.name + ".reason").write_text(reason + "\n")
            os.replace(self.buffer_root / record.path, dest)
        self._record_quarantine(record, rel, reason)

    def _record_quarantine(self, record: FrameRecord, rel: str, reason: str) -> None:
        self.catalog.quarantine_frame(record.stored_id, rel, reason, datetime.now(UTC))
        self.stats.quarantined += 1
        log.error(
            "frame quarantined on the station",
            frame_id=record.extra.get("frame_id"),
            path=record.path,
            quarantine_path=rel,
            reason=reason,
            station=self.station,
        )

    def quarantine_alert(self, now: datetime | None = None) -> tuple[bool, str]:
        """The station's alert check: frames quarantined within `QUARANTINE_ALERT_WINDOW`."""
        since = (now or datetime.now(UTC)) - QUARANTINE_ALERT_WINDOW
        notes = (r.quarantine for r in self.catalog.quarantined_frames())
        recent = [q for q in notes if q is not None and q.at >= since]
        if not recent:
            return False, ""
        hours = QUARANTINE_ALERT_WINDOW.total_seconds() / 3600
        listed = "; ".join(f"{q.original_path!r}: {q.reason}" for q in recent[:3])
        return True, (
            f"{len(recent)} frame(s) set aside in {self.buffer_root / QUARANTINE_DIR} in the"
            f" last {hours:g} h: {listed}"
        )

    def _remove_stale_lists(self) -> None:
        """File lists left by a worker killed during rsync (each names one batch)."""
        for stale in (self.buffer_root / MANIFEST_DIR).glob("*.list"):
            stale.unlink(missing_ok=True)
            log.info("removed a stale file list", path=str(stale))

    # -- the receiver's check ---------------------------------------------------------------

    def _verify_and_commit(self, batch_id: str, batch: list[FrameRecord]) -> list[str]:
        """Have the receiver check ``batch`` and commit the frames that match; returns the
        paths that did not. When only some failed, the others are committed as a batch of
        their own. Raises `TransferCommandError` when the receiver could not be asked."""
        failed = self._check_on_receiver(batch_id, batch)
        if failed and len(failed) < len(batch):
            good = [r for r in batch if r.path not in set(failed)]
            failed += self._check_on_receiver(f"{batch_id}-ok", good)
        return failed

    def _check_on_receiver(self, batch_id: str, batch: list[FrameRecord]) -> list[str]:
        """One check and commit on the receiver, all or nothing; returns the failed paths."""
        files = {r.path: self._files(r) for r in batch}
        out = self.verify_runner.run(
            ssh_command(
                self.target,
                receiver_script(self.remote_dir, batch_id),
                self.settings.ssh_program,
            ),
            timeout_s=self.settings.command_timeout_s,
            stdin_text=manifest_text(f for r in batch for f in files[r.path]),
        )
        answer = read_answer(out)
        self._requeue(answer.resend)
        if answer.committed:
            return []
        failed = [r.path for r in batch if any(p not in answer.ok for p, _ in files[r.path])]
        return failed or [r.path for r in batch]  # all checked, yet not committed

    def _requeue(self, paths: list[str]) -> None:
        if paths:
            n = self.catalog.requeue_paths(paths)
            log.warning("receiver asked to re-send frames", frames=n, station=self.station)

    # -- the loop ----------------------------------------------------------------------------

    def drain(self, deadline_s: float | None = None) -> int:
        """Send batches until the queue is empty, retrying failures; returns frames verified.

        Batch k+1 is rsynced while the receiver checks (and fsyncs) batch k, so the link and
        the receiver's disk work at the same time. Failures back off exponentially with jitter;
        frames of a failed batch go back into the queue. With ``deadline_s``, gives up
        (raising the last error) once transfers have failed for that long; without it, retries
        for as long as it takes.
        """
        total = 0
        verifying: tuple[Future[int], _SentBatch] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="transfer-verify") as pool:
            try:
                while not self._stop.is_set():
                    exclude = (
                        frozenset(r.stored_id for r in verifying[1].batch) if verifying else None
                    )
                    error: Exception | None = None
                    sent = None
                    try:
                        sent = self._send(exclude or frozenset())
                    except Exception as exc:
                        error = exc
                    # A verification can put frames back in the queue (the receiver's re-send
                    # list): after one, look again before calling the queue empty.
                    was_verifying = verifying is not None
                    if verifying is not None:
                        try:
                            total += verifying[0].result()
                        except Exception as exc:
                            total += _verified_despite(exc)
                            if error is None:
                                error = exc
                            else:  # both failed: record this one too, back off on the other
                                self._record_failure(exc)
                        verifying = None
                    if sent is not None:
                        verifying = (pool.submit(self._confirm, sent), sent)
                    if error is not None:
                        self._back_off(error, deadline_s)
                    elif sent is None and not was_verifying:
                        break
            finally:
                if verifying is not None:
                    try:
                        total += verifying[0].result()
                    except Exception as exc:  # its frames stay queued for the next drain
                        total += _verified_despite(exc)
                        self._record_failure(exc)
        return total

    def _back_off(self, error: Exception, deadline_s: float | None) -> None:
        """Record a failure, then wait (exponential, full jitter) or give up as told."""
        self._record_failure(error)
        if not _retryable(error) or self._stop.is_set():
            raise error
        if deadline_s is not None and self.failing_for_s() > deadline_s:
            raise error
        self._consecutive_failures += 1
        ceiling = min(
            self.settings.retry_max_s,
            self.settings.retry_initial_s * 2 ** (self._consecutive_failures - 1),
        )
        self._stop.wait(random.uniform(0, ceiling))

    def run(self, poll_s: float = 5.0) -> None:
        """Run until `stop`: drain the queue, then wait for new frames."""
        while not self._stop.is_set():
            try:
                self.drain()
            except Exception as exc:  # never let the worker die; the next poll retries
                log.error("transfer loop error", error=str(exc))
            self._stop.wait(poll_s)

    def stop(self) -> None:
        self._stop.set()
        self.runner.kill()
        self.verify_runner.kill()

    def _record_failure(self, exc: BaseException | None) -> None:
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        if self.stats.failing_since is None:
            self.stats.failing_since = datetime.now(UTC)
        log.warning("transfer attempt failed", error=str(exc), station=self.station)

    def failing_for_s(self, now: datetime | None = None) -> float:
        """Seconds since transfers started failing (0 while they succeed): the alert input."""
        if self.stats.failing_since is None:
            return 0.0
        return ((now or datetime.now(UTC)) - self.stats.failing_since).total_seconds()


def _verified_despite(exc: BaseException) -> int:
    """Frames a failed batch still committed."""
    return exc.verified if isinstance(exc, VerificationFailed) else 0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, VerificationFailed):
        return True
    if isinstance(exc, TransferCommandError):
        return exc.retryable
    return isinstance(exc, OSError)
