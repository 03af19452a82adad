"""Real servers the tests start for themselves on free loopback ports, and stop afterwards.

Nothing here touches the system's own configuration: keys, configs and data live in a
temporary folder per server.
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def require_program(path: str) -> str:
    found = shutil.which(path) or (path if os.path.exists(path) else None)
    if found is None:
        raise RuntimeError(f"{path} is not installed; `make test` installs it (run as root)")
    return found


@dataclass
class SshServer:
    """A private sshd: connect as ``user`` to 127.0.0.1:``port`` with ``client_key``."""

    port: int
    user: str
    client_key: Path
    known_hosts: Path
    home: Path  # a folder the tests may use as the remote side
    proc: subprocess.Popen
    config: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def start(self) -> None:
        """(Re)start on the same port, keys and config — for 'sshd went away' tests."""
        self.stop()
        self.proc = _spawn_sshd(self.config)
        wait_for_port(self.port, proc=self.proc)


def _spawn_sshd(config: Path) -> subprocess.Popen:
    sshd = require_program("/usr/sbin/sshd")
    return subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def running_sshd(base: Path) -> Iterator[SshServer]:
    keygen = require_program("ssh-keygen")
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    host_key, client_key = base / "host_ed25519", base / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = base / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    os.chmod(authorized, 0o600)
    port = free_port()
    known_hosts = base / "known_hosts"
    host_pub = host_key.with_suffix(".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
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
    home.mkdir()
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


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def running_redis(base: Path) -> Iterator[RedisServer]:
    redis = require_program("redis-server")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [redis, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield RedisServer(port, proc)
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class S3Server:
    """moto's S3 API served over real HTTP on loopback; any credentials are accepted."""

    port: int
    server: object

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port)
        yield S3Server(port, server)
    finally:
        server.stop()
