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
4. Frames are marked ``verified`` only after that commit. Failed frames are re-sent with
   ``--checksum`` on the next attempt, since a corrupted copy has the size and time of the good one.

Only verified frames become eligible for retention and preferred by emergency cleanup
(`skylapse.capture.storage`), so nothing that has not provably arrived is deleted first.
A failing batch is retried with exponential backoff and full jitter for as long as the
worker runs; a failed transfer never blocks capture, which only ever adds rows to the catalog.
"""

from __future__ import annotations

import random
import shlex
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from skylapse.catalog import Catalog, FrameRecord
from skylapse.log import get_logger
from skylapse.transfer.rsync import (
    CommandRunner,
    SshTarget,
    TransferCommandError,
    rsync_argv,
    ssh_argv,
)

log = get_logger(__name__)

MANIFEST_DIR = ".manifests"
#: Paths the receiver's ingest rejected after arrival (see `skylapse.processing.ingest`).
RESEND_FILE = ".resend"
COMMITTED_MARK = "SKYLAPSE-COMMITTED"
#: Checks a ``sha256sum`` manifest on the receiver and prints what ``sha256sum -c`` prints.
#: Python's hashlib (OpenSSL, with the CPU's SHA extensions) hashes several times faster than
#: coreutils' ``sha256sum``, which would otherwise cost as much time as the transfer itself;
#: hosts without python3 fall back to ``sha256sum -c``. Each checked file is fsynced, and the
#: commit is synced, so a batch is acknowledged only once it is on the receiver's disk.
_PY_CHECK = (
    "import hashlib,os,sys\n"
    "bad=0\n"
    "for line in open(sys.argv[1]):\n"
    "    want,_,name=line.rstrip('\\n').partition('  ')\n"
    "    try:\n"
    "        h=hashlib.sha256()\n"
    "        with open(name,'rb') as f:\n"
    "            for block in iter(lambda: f.read(1<<20), b''): h.update(block)\n"
    "            os.fsync(f.fileno())\n"
    "        ok=h.hexdigest()==want\n"
    "    except OSError:\n"
    "        ok=False\n"
    "    bad+=not ok\n"
    "    print(name+(': OK' if ok else ': FAILED'))\n"
    "sys.exit(1 if bad else 0)\n"
)


def _check_manifest(part: str) -> str:
    """Shell that checks the manifest ``part``; its status is the check's."""
    return (
        f"if command -v python3 >/dev/null; then python3 -c {shlex.quote(_PY_CHECK)} {part};"
        f" else sha256sum -c {part}; fi"
    )


RESEND_MARK = "SKYLAPSE-RESEND"


class VerificationFailed(RuntimeError):
    """The receiver's checksums did not match for some frames of a batch."""

    def __init__(self, failed: list[str]):
        self.failed = failed
        super().__init__(f"{len(failed)} frame(s) failed verification: {', '.join(failed[:5])}")


@dataclass(frozen=True)
class _SentBatch:
    """A batch that rsync delivered and the receiver has yet to check."""

    batch_id: str
    manifest: str
    batch: list[FrameRecord]


@dataclass
class TransferStats:
    """Counters behind the transfer metrics and the /health detail."""

    frames_sent: int = 0
    bytes_sent: int = 0
    batches_verified: int = 0
    failures: int = 0
    verification_failures: int = 0
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


class TransferWorker:
    """Moves the catalog's pending frames to the processing host, one verified batch at a time."""

    def __init__(
        self,
        catalog: Catalog,
        buffer_root: str | Path,
        target: SshTarget,
        station: str,
        settings: TransferSettings | None = None,
    ):
        self.catalog = catalog
        self.buffer_root = Path(buffer_root)
        self.target = target
        self.station = station
        self.settings = settings or TransferSettings()
        self.stats = TransferStats()
        self.runner = CommandRunner()  # rsync
        self.verify_runner = CommandRunner()  # the receiver's check, beside the next rsync
        self._stop = threading.Event()
        self._consecutive_failures = 0

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
        self.stats.queue_depth = self.catalog.count_frames() - self.catalog.count_frames(
            transfer_state="verified"
        )
        if not batch:
            return None
        batch_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        files_from = self.buffer_root / MANIFEST_DIR / f"{batch_id}.list"
        files_from.parent.mkdir(parents=True, exist_ok=True)
        files_from.write_text("".join(f"{r.path}\n" for r in batch))
        resend = any(r.transfer_attempts > 0 for r in batch)
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
        finally:
            files_from.unlink(missing_ok=True)
        self.catalog.set_transfer_state([r.id for r in batch], "sent")
        manifest = "".join(f"{r.sha256}  {r.path}\n" for r in batch)
        return _SentBatch(batch_id, manifest, batch)

    def _confirm(self, sent: _SentBatch) -> int:
        """Have the receiver check and commit a sent batch; mark its frames verified."""
        self._verify_and_commit(sent.batch_id, sent.manifest, sent.batch)
        now = datetime.now(UTC)
        self.catalog.set_transfer_state([r.id for r in sent.batch], "verified", when=now)
        self.stats.frames_sent += len(sent.batch)
        self.stats.bytes_sent += sum(r.size_bytes for r in sent.batch)
        self.stats.batches_verified += 1
        self.stats.last_success = now
        self.stats.failing_since = None
        self._consecutive_failures = 0
        self.stats.queue_depth = max(0, self.stats.queue_depth - len(sent.batch))
        log.info(
            "batch verified", batch=sent.batch_id, frames=len(sent.batch), station=self.station
        )
        return len(sent.batch)

    def _next_batch(self, exclude: frozenset[int] = frozenset()) -> list[FrameRecord]:
        batch = []
        limit = self.settings.batch_size + len(exclude)
        for record in self.catalog.pending_transfer(limit):
            if record.id in exclude or len(batch) >= self.settings.batch_size:
                continue
            if (self.buffer_root / record.path).is_file():
                batch.append(record)
            else:
                # Not on disk and not deleted by us: nothing to send, and nothing to wait for.
                self.catalog.mark_deleted(record.id, datetime.now(UTC), "missing from the buffer")
                log.error("frame missing from the buffer", path=record.path)
        return batch

    def _verify_and_commit(self, batch_id: str, manifest: str, batch: list[FrameRecord]) -> None:
        part = f"{MANIFEST_DIR}/{batch_id}.sha256.part"
        committed = f"{MANIFEST_DIR}/{batch_id}.sha256"
        # The manifest travels on stdin of the verifying command, so an interrupted rsync never
        # leaves one behind, and a failed check removes it.
        script = (
            f"cd {shlex.quote(self.remote_dir)} && mkdir -p {MANIFEST_DIR} && "
            f"cat > {part} && {{ {_check_manifest(part)}; }} 2>&1; rc=$?; "
            f"if [ $rc -eq 0 ]; then mv -f {part} {committed} && sync -f . &&"
            f" echo {COMMITTED_MARK}; else rm -f {part}; fi; "
            # frames the receiver's ingest rejected after arrival, to be sent again
            f"if [ -f {RESEND_FILE} ] && mv -f {RESEND_FILE} {RESEND_FILE}.reading; then"
            f" echo {RESEND_MARK}; cat {RESEND_FILE}.reading; rm -f {RESEND_FILE}.reading; fi; "
            "exit $rc"
        )
        argv = [*ssh_argv(self.target, self.settings.ssh_program), self.target.destination, script]
        try:
            out = self.verify_runner.run(
                argv, timeout_s=self.settings.command_timeout_s, stdin_text=manifest
            )
        except TransferCommandError as exc:
            if exc.returncode == 1:  # sha256sum: some file did not match or is missing
                failed = _failed_paths(exc.stderr)
                self._count_attempts(batch, failed)
                self.stats.verification_failures += 1
                raise VerificationFailed(failed) from None
            raise
        checked, _, resend = out.partition(RESEND_MARK)
        self._requeue(resend.split())
        ok = {ln.rsplit(": ", 1)[0] for ln in checked.splitlines() if ln.endswith(": OK")}
        missing = [r.path for r in batch if r.path not in ok]
        if missing or COMMITTED_MARK not in checked:
            raise VerificationFailed(missing or ["<manifest not committed>"])

    def _requeue(self, paths: list[str]) -> None:
        if paths:
            n = self.catalog.requeue_paths(paths)
            log.warning("receiver asked to re-send frames", frames=n, station=self.station)

    def _count_attempts(self, batch: list[FrameRecord], failed: list[str]) -> None:
        # 'sent' bumps the attempt counter, so the next try of these frames uses --checksum.
        bad = [r.id for r in batch if r.path in set(failed)]
        if bad:
            self.catalog.set_transfer_state(bad, "sent")

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
                    exclude = frozenset(r.id for r in verifying[1].batch) if verifying else None
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
                            error = error or exc
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


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, VerificationFailed):
        return True
    if isinstance(exc, TransferCommandError):
        return exc.retryable
    return isinstance(exc, OSError)


def _failed_paths(sha256sum_output: str) -> list[str]:
    failed = []
    for line in sha256sum_output.splitlines():
        path, sep, status = line.rpartition(": ")
        if sep and status != "OK" and not line.startswith("sha256sum:"):
            failed.append(path)
    return failed
