"""The station's maintenance signals and the alerts over them: storage wear and I/O errors, the
SoC temperature, a disk filling faster than retention frees it, an unsynchronised clock and a
failing weather API.

Every signal is read from an injectable source, so the checks run on any machine and the tests
feed them files in the kernel's own formats:

* **Kernel log** (`KernelLog`): the records of ``/dev/kmsg``, each
  ``<priority>,<sequence>,<microseconds since boot>,<flags>;<message>`` followed by
  continuation lines that start with a space (the kernel's
  ``Documentation/ABI/testing/dev-kmsg``). It is read without blocking, from the oldest record
  the kernel still holds, so errors logged at boot count too. Storage errors are the records
  naming the buffer's disk (or any disk, when it is unknown) that say ``I/O error`` (the block
  layer's ``I/O error, dev mmcblk0, sector …``, ``Buffer I/O error on dev mmcblk0p2, …``,
  NVMe's ``I/O Error``), ``critical medium error`` or ``EXT4-fs error``
  (`is_storage_error`). Where the kernel log cannot be read (``kernel.dmesg_restrict=1``
  without ``CAP_SYSLOG``), the check says so in its detail and never fires.
* **The buffer's disk** (`disk_of`): ``/sys/dev/block/<major>:<minor>`` of the file system's
  device links to the partition's sysfs folder (``Documentation/ABI/testing/sysfs-dev``); a
  partition has a ``partition`` file and its parent is the whole disk
  (``Documentation/ABI/stable/sysfs-block``).
* **Wear** (`read_wear`): an eMMC (5.0 and later) reports ``device/life_time`` as two bytes,
  ``0x01 0x02``: the type A and type B estimates of life used, 0x01 = 0-10 % .. 0x0A =
  90-100 %, 0x0B = past its rated life, 0x00 = not given; and ``device/pre_eol_info``, one byte:
  0x01 normal, 0x02 warning (80 % of the reserved blocks used), 0x03 urgent (the kernel's
  ``drivers/mmc/core/mmc.c``; JEDEC JESD84-B51, EXT_CSD 268/269 and 267). SD cards and most USB
  disks report neither: their trouble shows as kernel I/O errors.
* **The SoC temperature**: ``/sys/class/thermal/thermal_zone0/temp``
  (`skylapse.capture.sensors.read_thermal_zone`).
* **Clock sync** (`read_clock`): ``adjtimex(2)`` with no mode bits (a read, no privilege), the
  call behind ``timedatectl show -p NTPSynchronized``: the clock counts as synchronised while the
  kernel's maximum error estimate is below 16 s, systemd's rule (``ntp_synced()`` in
  ``src/basic/time-util.c``). The kernel grows that estimate by 500 ppm while nothing (NTP,
  chrony, systemd-timesyncd) disciplines the clock and holds it at 16 s when it is unset.
* **Time to full** (`UsageHistory`, `time_to_full_h`): samples of the buffer's disk use, kept
  in a small JSON file. The net fill rate is the growth over the last ``disk_fill_window_h``
  (24 h: one whole day of captures and of retention's deletions, so the daily rhythm cancels
  out); with a positive rate, the time to full is what is left up to the emergency watermark
  (where the storage manager starts deleting frames before their retention is over) divided by
  that rate. Until the history spans the window there is no estimate and no alert.
* **Weather**: the weather client's count of consecutive failed fetches
  (`skylapse.capture.weather.WeatherService.failures`).

API
---
``parse_kmsg(text) -> KernelRecord | None``, ``is_storage_error(message, disks)``,
``parse_life_time(text)``, ``parse_pre_eol(text)``, ``time_to_full_h(samples, ...)``   pure.
``KernelLog(path)``, ``StorageErrors(log, disks)``, ``disk_of(path)``, ``read_wear(disk)``,
``read_clock()``, ``UsageHistory(path)``.
``StationSignals`` (the sources) and ``maintenance_conditions(signals, alerts, clear_after_s)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylapse.alerts import AlertCondition, CheckFn, Severity
from skylapse.log import get_logger

log = get_logger(__name__)

KMSG = Path("/dev/kmsg")
SYS = Path("/sys")
#: The largest /dev/kmsg record (the kernel refuses smaller reads with EINVAL).
_KMSG_READ = 8192
_STORAGE_ERROR = re.compile(r"i/o error|critical medium error|ext4-fs error", re.IGNORECASE)
#: systemd's limit for a synchronised clock: the kernel's maximum error below 16 s (in µs).
SYNC_MAX_ERROR_US = 16_000_000
_TIME_ERROR = 5  # adjtimex's return: the clock is not synchronised


# -- the kernel log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelRecord:
    """One /dev/kmsg record: syslog priority (0 emergency .. 7 debug), sequence number,
    microseconds since boot, and the message (continuation lines dropped)."""

    priority: int
    sequence: int
    at_us: int
    message: str


def parse_kmsg(text: str) -> KernelRecord | None:
    """One record in /dev/kmsg's format; None when ``text`` is not one."""
    prefix, sep, rest = text.partition(";")
    fields = prefix.split(",")
    if not sep or len(fields) < 4:
        return None
    try:
        level, sequence, at_us = (int(f) for f in fields[:3])
    except ValueError:
        return None
    return KernelRecord(level & 7, sequence, at_us, rest.split("\n", 1)[0])


def is_storage_error(message: str, disks: Sequence[str] = ()) -> bool:
    """Whether a kernel message reports a storage error on one of ``disks`` (block device
    names such as ``mmcblk0``: their partitions count too), or on any disk when none is given."""
    if not _STORAGE_ERROR.search(message):
        return False
    return not disks or any(re.search(rf"\b{re.escape(d)}(p?\d+)?\b", message) for d in disks)


class KernelLog:
    """Reads the kernel log's records without blocking: each `read` returns those logged
    since the previous one (the first, all the kernel still holds). ``unavailable`` says why
    it cannot be read, once that happened."""

    def __init__(self, path: Path = KMSG) -> None:
        self.path = path
        self.unavailable: str | None = None
        self._fd: int | None = None
        self._partial = ""

    def read(self) -> list[KernelRecord]:
        if self.unavailable is not None:
            return []
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                self.unavailable = f"{self.path}: {exc.strerror}"
                log.warning("kernel log unreadable", path=str(self.path), error=exc.strerror)
                return []
        chunks = []
        while True:
            try:
                chunk = os.read(self._fd, _KMSG_READ)
            except BlockingIOError:  # /dev/kmsg: nothing newer
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before we read them
                    continue
                raise
            if not chunk:  # a regular file (a copy of the log): its end for now
                break
            chunks.append(chunk.decode("utf-8", "replace"))
        text = self._partial + "".join(chunks)
        # a record is its line plus continuation lines, which start with a space
        lines = text.split("\n")
        self._partial = lines.pop()
        return [r for line in lines if line and line[0] != " " and (r := parse_kmsg(line))]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StorageErrors:
    """Storage errors in the kernel log for ``disks`` (any disk when empty), with their
    times: `check` reads what is new and says whether one is more recent than the window.

    ``now_us`` is the kernel log's clock, microseconds since boot (CLOCK_MONOTONIC)."""

    def __init__(
        self,
        kernel_log: KernelLog,
        disks: Sequence[str] = (),
        now_us: Callable[[], int] = lambda: time.monotonic_ns() // 1000,
    ) -> None:
        self.kernel_log = kernel_log
        self.disks = tuple(disks)
        self.now_us = now_us
        self.errors: list[KernelRecord] = []
        self._lock = threading.Lock()

    def check(self, window_s: float) -> tuple[bool, str]:
        with self._lock:
            self.errors += [
                r for r in self.kernel_log.read() if is_storage_error(r.message, self.disks)
            ]
            self.errors = self.errors[-100:]
        if self.kernel_log.unavailable is not None:
            return False, f"kernel log not readable ({self.kernel_log.unavailable})"
        since = self.now_us() - window_s * 1e6
        recent = [r for r in self.errors if r.at_us >= since]
        if not recent:
            return False, ""
        where = ", ".join(self.disks) or "a disk"
        return True, (
            f"{len(recent)} storage error(s) on {where} in the last {window_s / 3600:g} h; "
            f"newest: {recent[-1].message[:200]}"
        )


# -- the disk and its wear ---------------------------------------------------------------------


def disk_of(path: Path, sys_root: Path = SYS) -> Path | None:
    """The sysfs folder of the whole disk holding ``path`` (``…/block/mmcblk0``); None when
    the file system is not on a block device (tmpfs, overlay, NFS)."""
    dev = os.stat(path).st_dev
    link = sys_root / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        device = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return device.parent if (device / "partition").is_file() else device


@dataclass(frozen=True)
class Wear:
    """An eMMC's wear: life used (lower bound of the reported 10 % step, per type; None when
    not given) and the pre-EOL state (1 normal, 2 warning, 3 urgent; None when not given)."""

    life_used_pct: tuple[int | None, int | None]
    pre_eol: int | None

    def worn(self, max_pct: float) -> str | None:
        """Why the medium counts as worn at ``max_pct`` life used, or None."""
        used = [u for u in self.life_used_pct if u is not None]
        if used and max(used) >= max_pct:
            return f"life used at least {max(used)} % (eMMC life_time estimate)"
        if self.pre_eol is not None and self.pre_eol >= 2:
            state = "urgent" if self.pre_eol >= 3 else "warning"
            return f"pre-EOL {state}: reserved blocks running out (eMMC pre_eol_info)"
        return None


def parse_life_time(text: str) -> tuple[int | None, int | None]:
    """``life_time``'s two estimates as the lower bound of life used in %: 0x01 -> 0,
    0x0A -> 90, 0x0B (past rated life) -> 100; 0x00 (not given) -> None."""
    values = [int(v, 16) for v in text.split()]
    if len(values) != 2:
        raise ValueError(f"life_time is not two values: {text!r}")
    a, b = (None if v == 0 else min(v - 1, 10) * 10 for v in values)
    return a, b


def parse_pre_eol(text: str) -> int | None:
    """``pre_eol_info`` as 1 (normal), 2 (warning), 3 (urgent); 0x00 (not given) -> None."""
    value = int(text.strip(), 16)
    return value or None


def read_wear(disk: Path | None) -> Wear | None:
    """The wear the disk's ``device/life_time`` and ``device/pre_eol_info`` report; None
    when it reports neither (not an eMMC, or an unknown disk)."""
    if disk is None:
        return None
    life: tuple[int | None, int | None] = (None, None)
    pre_eol = None
    with contextlib.suppress(OSError, ValueError):  # absent: not an eMMC
        life = parse_life_time((disk / "device" / "life_time").read_text())
    with contextlib.suppress(OSError, ValueError):
        pre_eol = parse_pre_eol((disk / "device" / "pre_eol_info").read_text())
    if life == (None, None) and pre_eol is None:
        return None
    return Wear(life, pre_eol)


# -- the clock ---------------------------------------------------------------------------------


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of adjtimex(2), as glibc's ``adjtimex`` symbol takes it (``long``
    fields: the same layout on 32- and 64-bit ARM)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class ClockState:
    """What adjtimex(2) says of the system clock: its maximum error (µs), the status bits,
    and the clock state it returned (5, TIME_ERROR: not synchronised)."""

    max_error_us: int
    status: int
    state: int

    @property
    def synchronised(self) -> bool:
        return self.max_error_us < SYNC_MAX_ERROR_US


def read_clock() -> ClockState | None:
    """The kernel's clock discipline state; None where adjtimex is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    timex = _Timex()  # modes = 0: read only
    state = libc.adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    return ClockState(timex.maxerror, timex.status, state)


# -- storage usage history and time to full ----------------------------------------------------


@dataclass(frozen=True)
class UsageSample:
    at: float  # Unix time
    used: int  # bytes
    total: int  # bytes


def time_to_full_h(
    samples: Sequence[UsageSample], limit_pct: float, window_s: float
) -> tuple[float | None, float | None]:
    """(hours until use reaches ``limit_pct`` of the disk, net fill rate in bytes per hour)
    from the growth between the newest sample and the newest one at least ``window_s`` older.
    (None, None) while the history is shorter than the window; hours is None when use does
    not grow (retention frees at least what is captured) and 0 when past the limit already."""
    if not samples:
        return None, None
    newest = samples[-1]
    base = next((s for s in reversed(samples) if newest.at - s.at >= window_s), None)
    if base is None:
        return None, None
    rate = (newest.used - base.used) / (newest.at - base.at) * 3600
    left = limit_pct / 100 * newest.total - newest.used
    if left <= 0:
        return 0.0, rate
    return (left / rate if rate > 0 else None), rate


class UsageHistory:
    """Samples of the buffer's disk use, one at most every ``every_s``, kept for ``keep_s``
    in a JSON file (so a restart keeps the history)."""

    def __init__(self, path: Path, *, every_s: float = 300.0, keep_s: float = 8 * 86400) -> None:
        self.path = path
        self.every_s = every_s
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self.samples: list[UsageSample] = self._load()

    def _load(self) -> list[UsageSample]:
        try:
            rows = json.loads(self.path.read_text())
            return [UsageSample(float(a), int(u), int(t)) for a, u, t in rows]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as exc:
            log.warning("storage history unreadable", path=str(self.path), error=repr(exc))
            return []

    def add(self, at: float, used: int, total: int) -> bool:
        """Record a sample unless the last is younger than ``every_s``; whether it did."""
        with self._lock:
            if self.samples and at - self.samples[-1].at < self.every_s:
                return False
            self.samples = [s for s in self.samples if at - s.at <= self.keep_s]
            self.samples.append(UsageSample(at, used, total))
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps([[s.at, s.used, s.total] for s in self.samples]))
            os.replace(tmp, self.path)
            return True


# -- the conditions ----------------------------------------------------------------------------


@dataclass
class StationSignals:
    """Where the maintenance alerts read the station (each replaceable in tests)."""

    soc_temp_c: Callable[[], float | None]
    wear: Callable[[], Wear | None]
    storage_errors: StorageErrors
    clock: Callable[[], ClockState | None]
    usage: UsageHistory
    watermark_pct: Callable[[], float]
    weather_failures: Callable[[], int | None]


#: name, title, severity of each maintenance alert (component ``maintenance``).
MAINTENANCE_ALERTS: tuple[tuple[str, str, Severity], ...] = (
    ("storage_io_errors", "Storage errors in the kernel log", "critical"),
    ("storage_wear", "Storage medium worn", "warning"),
    ("soc_temperature", "Station running hot", "warning"),
    ("disk_time_to_full", "Disk filling faster than retention frees it", "warning"),
    ("clock_unsynchronised", "Clock not synchronised", "warning"),
    ("weather_failing", "Weather API failing", "warning"),
)


def maintenance_conditions(
    signals: StationSignals, alerts: Callable[[], Any], clear_after_s: float
) -> list[AlertCondition]:
    """The maintenance alerts over ``signals``; ``alerts()`` is the current ``alerts``
    configuration section (thresholds are read at each evaluation)."""

    def io_errors(active: bool) -> tuple[bool, str]:
        return signals.storage_errors.check(alerts().io_error_window_h * 3600)

    def wear(active: bool) -> tuple[bool, str]:
        found = signals.wear()
        problem = None if found is None else found.worn(alerts().storage_wear_max_pct)
        return problem is not None, problem or ""

    def temperature(active: bool) -> tuple[bool, str]:
        temp = signals.soc_temp_c()
        limit = alerts().soc_temp_max_c
        if temp is None:
            return False, ""
        return temp > (limit - 5 if active else limit), f"SoC at {temp:.1f} °C (limit {limit:g})"

    def time_to_full(active: bool) -> tuple[bool, str]:
        section = alerts()
        mark = signals.watermark_pct()
        hours, rate = time_to_full_h(signals.usage.samples, mark, section.disk_fill_window_h * 3600)
        within = section.disk_full_within_h * (1.5 if active else 1.0)
        if hours is None or rate is None:
            return False, ""
        return hours < within, (
            f"reaches the {mark:g} % watermark in {hours:.1f} h at a net {rate / 1e6:+.1f} MB/h"
            f" over the last {section.disk_fill_window_h:g} h (alert within"
            f" {section.disk_full_within_h:g} h)"
        )

    def clock(active: bool) -> tuple[bool, str]:
        state = signals.clock()
        if state is None or state.synchronised:
            return False, ""
        return True, (
            f"the kernel's maximum clock error is {state.max_error_us / 1e6:.1f} s (synchronised"
            " below 16 s): is NTP (systemd-timesyncd, chrony) running and reachable?"
        )

    def weather(active: bool) -> tuple[bool, str]:
        failures = signals.weather_failures()
        limit = alerts().weather_failures
        if failures is None:
            return False, ""
        return failures >= limit, f"{failures} consecutive weather fetches failed"

    checks: dict[str, CheckFn] = {
        "storage_io_errors": io_errors,
        "storage_wear": wear,
        "soc_temperature": temperature,
        "disk_time_to_full": time_to_full,
        "clock_unsynchronised": clock,
        "weather_failing": weather,
    }
    return [
        AlertCondition(name, title, severity, "maintenance", checks[name], 0.0, clear_after_s)
        for name, title, severity in MAINTENANCE_ALERTS
    ]
