"""A private sshd on loopback, for the demo and the tests: the real transfer path on one machine.

``running_sshd(base)`` generates a host key and a client key in ``base``, writes an
``authorized_keys``, a ``known_hosts`` that pins the host key for ``[127.0.0.1]:PORT`` and an
``sshd_config`` (key login only, loopback only, its own pid file), starts ``sshd -D`` on a free
port and stops it on exit. Nothing of the system's own SSH configuration is read or changed;
the only shared thing is sshd's privilege-separation folder ``/run/sshd``, created when missing
(as root; an unprivileged sshd does not need it).

It logs in as the user running it, so the transfer's ``rsync`` and ``ssh`` are exactly those a
station uses against a processing host (`skylapse.transfer.rsync`), host-key checking included.

API
---
``running_sshd(base) -> ContextManager[SshServer]``; ``SshServer.target(inbox) -> SshTarget``.
``find_program(name, package) -> str`` (raises :class:`MissingProgramError`),
``free_port()``, ``wait_for_port(port, timeout, proc)``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from skylapse.transfer.rsync import SshTarget

SSHD = "/usr/sbin/sshd"
#: The programs the real transfer path runs, with the Debian package that ships each.
TRANSFER_PROGRAMS = {
    SSHD: "openssh-server",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "rsync": "rsync",
    "sha256sum": "coreutils",
}


class MissingProgramError(RuntimeError):
    """A program the local transfer path needs is not installed; ``package`` ships it."""

    def __init__(self, program: str, package: str):
        self.program = program
        self.package = package
        super().__init__(f"{program} is not installed (Debian package {package})")


def find_program(name: str, package: str) -> str:
    """The path of ``name`` (a command on PATH or an absolute path), or MissingProgramError."""
    found = shutil.which(name) or (name if os.path.isabs(name) and os.path.exists(name) else None)
    if found is None:
        raise MissingProgramError(name, package)
    return found


def missing_transfer_programs() -> list[MissingProgramError]:
    """Every program of :data:`TRANSFER_PROGRAMS` that is missing (empty: all there)."""
    missing = []
    for program, package in TRANSFER_PROGRAMS.items():
        try:
            find_program(program, package)
        except MissingProgramError as exc:
            missing.append(exc)
    return missing


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None, host: str = "127.0.0.1"
) -> None:
    """Wait until something accepts connections on ``host:port``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


@dataclass
class SshServer:
    """A private sshd: connect as ``user`` to 127.0.0.1:``port`` with ``client_key``."""

    port: int
    user: str
    client_key: Path
    known_hosts: Path
    home: Path  # a folder callers may use as the remote side
    proc: subprocess.Popen
    config: Path

    def target(self, inbox: str | Path) -> SshTarget:
        """The transfer target for an inbox folder on this server (host key pinned)."""
        return SshTarget(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            inbox=str(inbox),
            key_file=self.client_key,
            known_hosts=self.known_hosts,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def start(self) -> None:
        """(Re)start on the same port, keys and config (for 'sshd went away' tests)."""
        self.stop()
        self.proc = _spawn_sshd(self.config)
        wait_for_port(self.port, proc=self.proc)


def _spawn_sshd(config: Path) -> subprocess.Popen:
    sshd = find_program(SSHD, TRANSFER_PROGRAMS[SSHD])
    return subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def running_sshd(base: Path) -> Iterator[SshServer]:
    """Generate keys and a config in ``base`` (created, mode 700), run sshd, stop it on exit."""
    keygen = find_program("ssh-keygen", TRANSFER_PROGRAMS["ssh-keygen"])
    find_program(SSHD, TRANSFER_PROGRAMS[SSHD])
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    host_key, client_key = base / "host_ed25519", base / "client_ed25519"
    for key in (host_key, client_key):
        for stale in (key, key.with_suffix(".pub")):
            stale.unlink(missing_ok=True)  # ssh-keygen asks before overwriting
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    authorized = base / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    os.chmod(authorized, 0o600)
    port = free_port()
    known_hosts = base / "known_hosts"
    host_pub = host_key.with_suffix(".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\nPidFile {base / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    home = base / "remote"
    home.mkdir(exist_ok=True)
    proc = _spawn_sshd(config)
    server = SshServer(port, _user(), client_key, known_hosts, home, proc, config)
    try:
        wait_for_port(port, proc=proc)
        yield server
    finally:
        server.stop()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


__all__ = [
    "TRANSFER_PROGRAMS",
    "MissingProgramError",
    "SshServer",
    "find_program",
    "free_port",
    "missing_transfer_programs",
    "running_sshd",
    "wait_for_port",
]
