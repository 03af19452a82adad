"""Command lines for the real ``rsync`` and ``ssh`` programs, and running them.

Skylapse moves frames with the tools every Pi administrator already trusts: rsync over SSH,
with host keys checked against a known-hosts file. These functions only build argument lists
(pure, easy to test) and run them with a timeout; the policy lives in `skylapse.transfer.queue`.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from skylapse.names import check_host, check_port, check_user

#: rsync exit codes that mean "try again later" rather than "this cannot work".
RETRYABLE_RSYNC_CODES = {5, 10, 11, 12, 20, 23, 24, 30, 35, 255}


@dataclass(frozen=True)
class SshTarget:
    """Where frames go: an SSH account on the processing host and its inbox folder."""

    host: str
    inbox: str  # absolute folder on the host
    user: str | None = None
    port: int = 22
    key_file: Path | None = None
    known_hosts: Path | None = None
    strict_host_key_checking: bool = True
    connect_timeout_s: int = 10

    def __post_init__(self) -> None:
        # Nothing here may reach ssh's command line as an option (``-oProxyCommand=...``).
        check_host(self.host, "host")
        if self.user is not None:
            check_user(self.user, "user")
        check_port(self.port, "port")

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


class TransferCommandError(RuntimeError):
    """rsync or ssh failed; ``returncode`` tells whether retrying can help."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        tail = self.stderr.splitlines()[-1] if self.stderr else "no message"
        super().__init__(f"{Path(argv[0]).name} exited with {returncode}: {tail}")

    @property
    def retryable(self) -> bool:
        return self.returncode in RETRYABLE_RSYNC_CODES or self.returncode < 0


def ssh_argv(target: SshTarget, ssh_program: str = "ssh") -> list[str]:
    """The ``ssh`` invocation (without the remote command) that both rsync and verify use."""
    argv = [
        ssh_program,
        "-p",
        str(target.port),
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={target.connect_timeout_s}",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        f"StrictHostKeyChecking={'yes' if target.strict_host_key_checking else 'accept-new'}",
    ]
    if target.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={target.known_hosts}"]
    if target.key_file is not None:
        argv += ["-i", str(target.key_file), "-o", "IdentitiesOnly=yes"]
    return argv


def ssh_command(target: SshTarget, command: str, ssh_program: str = "ssh") -> list[str]:
    """``ssh`` running ``command`` on the target; ``--`` ends the options before the host."""
    return [*ssh_argv(target, ssh_program), "--", target.destination, command]


def rsync_argv(
    target: SshTarget,
    local_root: Path,
    files_from: Path,
    remote_dir: str,
    *,
    bandwidth_limit_kbps: int | None = None,
    compress: bool = True,
    checksum: bool = False,
    rsync_program: str = "rsync",
    ssh_program: str = "ssh",
    io_timeout_s: int = 60,
) -> list[str]:
    """rsync the files listed in ``files_from`` (relative to ``local_root``, each ended by a
    NUL byte: ``--from0``, so any character of a path is safe) to ``remote_dir``.

    ``--partial-dir`` keeps an interrupted file out of sight of the receiver's ingest and lets
    the next attempt resume it; ``checksum`` makes rsync compare contents rather than size and
    time, which a re-send after a failed verification needs (a corrupted copy has the same size
    and time as the original).
    """
    argv = [
        rsync_program,
        "--archive",
        "--partial",
        "--partial-dir=.rsync-partial",
        f"--files-from={files_from}",
        "--from0",
        f"--timeout={io_timeout_s}",
        "--mkpath",
        "-e",
        shlex.join(ssh_argv(target, ssh_program)),
    ]
    if compress:
        # JPEG hardly compresses; zstd at its fastest level costs almost nothing.
        argv += ["--compress", "--compress-choice=zstd", "--compress-level=1"]
    if checksum:
        argv.append("--checksum")
    if bandwidth_limit_kbps:
        argv.append(f"--bwlimit={bandwidth_limit_kbps}")
    argv += ["--", f"{local_root}/", f"{target.destination}:{remote_dir.rstrip('/')}/"]
    return argv


class CommandRunner:
    """Runs one command at a time and can kill it from another thread (shutdown, tests)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def run(
        self, argv: Sequence[str], timeout_s: float | None = None, stdin_text: str | None = None
    ) -> str:
        with self._lock:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        try:
            out, err = self._proc.communicate(stdin_text, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, err = self._proc.communicate()
            raise TransferCommandError(argv, -9, f"timed out after {timeout_s} s\n{err}") from None
        finally:
            code = self._proc.returncode
            with self._lock:
                self._proc = None
        if code != 0:
            raise TransferCommandError(argv, code, err or out)
        return out

    def kill(self) -> bool:
        """Kill the running command, if any; returns whether there was one."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                return False
            self._proc.kill()
            return True

    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None
