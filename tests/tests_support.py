"""Small helpers shared by several test modules."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from skylapse.transfer.local_sshd import SSHD, TRANSFER_PROGRAMS

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"

#: The system programs tests run, with the Debian package that ships each (`make system-deps`
#: installs them all). Absolute paths for those outside a non-root PATH (/usr/sbin).
SYSTEM_PROGRAMS = {
    **TRANSFER_PROGRAMS,
    "redis-server": "redis-server",
    "/usr/sbin/mosquitto": "mosquitto",
    CHROMIUM: "chromium",
    "systemd-analyze": "systemd",
}

#: The mark of tests that log in to a private sshd and transfer with rsync over ssh. Tests that
#: run system programs carry ``pytest.mark.system(*programs)``: `pytest -m "not system"` leaves
#: them out, and a plain `pytest` fails them, never skips, when one is missing (conftest.py).
SSH_TRANSFER = pytest.mark.system(SSHD, "ssh", "ssh-keygen", "rsync")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    poll_s: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def commit_frames_to_inbox(src: Path, station_dir: Path, name: str = "batch-1") -> list[str]:
    """Put every frame of ``src`` into a station's inbox with a committed manifest, as the
    capture side's transfer would."""
    lines, rels = [], []
    for frame in sorted(p for p in src.iterdir() if p.suffix in (".jpg", ".png")):
        rel = f"frames/{frame.name}"
        dest = station_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(frame, dest)
        lines.append(f"{hashlib.sha256(frame.read_bytes()).hexdigest()}  {rel}\n")
        rels.append(rel)
    (station_dir / ".manifests").mkdir(parents=True, exist_ok=True)
    (station_dir / ".manifests" / f"{name}.sha256").write_text("".join(lines))
    return rels


def quiet_station_signals(folder: Path, **replace):
    """Maintenance signals (`skylapse.maintenance`) of a healthy station, independent of the
    machine the tests run on (its kernel log, clock sync, temperature): an empty kernel log
    file, a synchronised clock, no thermal zone, no eMMC, a fresh storage history and no
    weather client; ``replace`` swaps any of them."""
    from skylapse.maintenance import (
        ClockState,
        KernelLog,
        StationSignals,
        StorageErrors,
        UsageHistory,
    )

    folder.mkdir(parents=True, exist_ok=True)
    kmsg = folder / "kmsg"
    kmsg.touch()
    values = {
        "soc_temp_c": lambda: None,
        "wear": lambda: None,
        "storage_errors": StorageErrors(KernelLog(kmsg), ("mmcblk0",)),
        "clock": lambda: ClockState(max_error_us=20_000, status=0x2001, state=0),
        "usage": UsageHistory(folder / "storage-history.json"),
        "watermark_pct": lambda: 80.0,
        "weather_failures": lambda: None,
        **replace,
    }
    return StationSignals(**values)
