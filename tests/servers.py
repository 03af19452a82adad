"""Real servers the tests start for themselves on free loopback ports, and stop afterwards.

Nothing here touches the system's own configuration: keys, configs and data live in a
temporary folder per server. The sshd is the package's (`skylapse.transfer.local_sshd`), which
the demo uses too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from skylapse.transfer.local_sshd import (  # the one copy, shared with `skylapse demo`
    SshServer,
    free_port,
    running_sshd,
    wait_for_port,
)

__all__ = ["SshServer", "free_port", "running_redis", "running_s3", "running_sshd", "wait_for_port"]


def require_program(path: str) -> str:
    found = shutil.which(path) or (path if os.path.exists(path) else None)
    if found is None:
        raise RuntimeError(f"{path} is not installed; `make test` installs it (run as root)")
    return found


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
        [
            redis,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(base),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
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
