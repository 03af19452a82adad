"""`skylapse doctor`: is this machine ready to capture (or process), and if not, what to fix.

Each check returns a :class:`Check` with a status (``ok``, ``warn``, ``fail``), what was found,
and a concrete fix. The checks run the real things: camera auto-detection, the file system's
free space, the clock's synchronisation as systemd or chrony report it, an SSH login to the
processing host in batch mode, the H.265/H.264 encoders in PyAV, and rsync.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylapse.transfer.rsync import SshTarget, ssh_command

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def _run(argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str] | None:
    """Run a program; None when it is not installed or did not answer in time."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_camera(detect: Callable[[], Any] | None = None) -> Check:
    """Which camera the capture service would use (auto-detection, as `skylapse capture`)."""
    if detect is None:
        from skylapse.capture.cameras.factory import CameraFactory

        detect = CameraFactory.auto_detect_camera
    try:
        camera = detect()
    except Exception as exc:
        return Check(
            "camera",
            FAIL,
            f"detection failed: {exc}",
            "check the camera stack: `rpicam-hello --list-cameras` (libcamera)",
        )
    kind = type(camera).__name__
    if kind == "MissingCamera":  # a Pi (or libcamera) without a camera that works
        return Check(
            "camera",
            FAIL,
            getattr(camera, "reason", "no camera found"),
            "connect the camera, check `rpicam-hello --list-cameras`; if picamera2 cannot be "
            'imported, see README "Installing for real" (numpy and simplejpeg)',
        )
    if kind == "SimulatedCamera":
        return Check(
            "camera",
            WARN,
            "no camera found, capture would use the simulated camera",
            "connect the camera (ribbon or USB), set camera_auto_detect=1 in "
            "/boot/firmware/config.txt and reboot; check `rpicam-hello --list-cameras` or "
            "`v4l2-ctl --list-devices`; the user needs the video group",
        )
    details = {
        "Picamera2Camera": f"picamera2: {getattr(camera, 'sensor_model', '?')}",
        "UsbCamera": f"USB/V4L2 camera /dev/video{getattr(camera, 'device', '?')}",
    }
    return Check("camera", OK, details.get(kind, kind))


def check_disk(path: Path, min_free_gb: float = 2.0, max_used_pct: float = 90.0) -> Check:
    """Free space where the buffer lives (its nearest existing folder)."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gb = usage.free / 1e9
    used_pct = 100.0 * (usage.total - usage.free) / usage.total if usage.total else 100.0
    detail = f"{path}: {free_gb:.1f} GB free of {usage.total / 1e9:.1f} GB ({used_pct:.0f} % used)"
    if free_gb < min_free_gb or used_pct > max_used_pct:
        return Check(
            "disk space",
            FAIL,
            detail,
            f"free space on {probe} (keep at least {min_free_gb:g} GB and under "
            f"{max_used_pct:g} % used): lower capture.retention_h, check that transfers "
            "are verified, or use a larger card",
        )
    return Check("disk space", OK, detail)


def check_clock() -> Check:
    """Whether the system clock is synchronised (systemd-timesyncd/chrony), else unknown."""
    fix = (
        "enable time synchronisation: `timedatectl set-ntp true` (systemd-timesyncd) or "
        "install chrony; frames are scheduled by the sun, a wrong clock shoots the wrong light"
    )
    proc = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if proc is not None and proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"):
        if proc.stdout.strip() == "yes":
            return Check("clock sync", OK, "synchronised (timedatectl)")
        return Check("clock sync", FAIL, "not synchronised (timedatectl)", fix)
    proc = _run(["chronyc", "-n", "tracking"])
    if proc is not None and proc.returncode == 0:
        leap = re.search(r"^Leap status\s*:\s*(.+)$", proc.stdout, re.M)
        offset = re.search(r"^System time\s*:\s*(.+)$", proc.stdout, re.M)
        extra = f", {offset.group(1).strip()}" if offset else ""
        if leap and leap.group(1).strip() != "Not synchronised":
            return Check("clock sync", OK, f"synchronised (chrony{extra})")
        return Check("clock sync", FAIL, f"not synchronised (chrony{extra})", fix)
    return Check("clock sync", WARN, "unknown: neither timedatectl nor chronyc answered", fix)


def parse_ssh_target(text: str) -> SshTarget:
    """``[user@]host[:port]`` to an SSH target."""
    match = re.fullmatch(
        r"(?:(?P<user>[^@]+)@)?(?P<host>[^:@]+|\[[^\]]+\])(?::(?P<port>\d+))?", text
    )
    if match is None:
        raise ValueError(f"expected [user@]host[:port], got {text!r}")
    return SshTarget(
        host=match["host"].strip("[]"),
        inbox="",
        user=match["user"],
        port=int(match["port"] or 22),
        connect_timeout_s=5,
    )


def ssh_target_from_config(config: Any) -> SshTarget | None:
    """The processing host from a configuration's ``transfer`` section, when it has one."""
    section = getattr(config, "transfer", None)
    host = getattr(section, "host", None)
    if not host:
        return None
    return SshTarget(
        host=host,
        inbox=str(getattr(section, "inbox", "") or ""),
        user=getattr(section, "user", None),
        port=int(getattr(section, "port", 22) or 22),
        key_file=getattr(section, "key_file", None),
        known_hosts=getattr(section, "known_hosts", None),
        connect_timeout_s=5,
    )


def check_ssh(target: SshTarget | None, timeout_s: float = 15.0) -> Check:
    """A batch-mode SSH login to the processing host (what every transfer needs)."""
    if target is None:
        return Check(
            "ssh to processing host",
            WARN,
            "no processing host configured",
            "set the transfer section's host, or pass --ssh user@host[:port]",
        )
    where = f"{target.destination}:{target.port}"
    argv = ssh_command(target, "true")
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return Check(
            "ssh to processing host", FAIL, "ssh is not installed", "apt-get install openssh-client"
        )
    except subprocess.TimeoutExpired:
        return Check(
            "ssh to processing host",
            FAIL,
            f"{where}: no answer in {timeout_s:g} s",
            "check the host is up and reachable (network, firewall, port)",
        )
    if proc.returncode == 0:
        return Check("ssh to processing host", OK, f"{where}: login works")
    message = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    if "Permission denied" in message:
        fix = (
            f"install this station's public key on the host: `ssh-copy-id -p {target.port} "
            f"{target.destination}` (or the key_file's .pub into authorized_keys)"
        )
    elif "Host key verification failed" in message or "host key" in message.lower():
        fix = (
            f"add the host's key to known_hosts after checking it: "
            f"`ssh-keyscan -p {target.port} {target.host}`"
        )
    elif "refused" in message or "timed out" in message or "No route" in message:
        fix = f"is sshd running on {target.host} and listening on port {target.port}?"
    else:
        fix = f"try by hand: {' '.join(argv)}"
    return Check("ssh to processing host", FAIL, f"{where}: {message}", fix)


def check_codecs() -> Check:
    """The H.265 (archive) and H.264 (preview) encoders that PyAV's wheels ship."""
    try:
        import av
    except ImportError as exc:
        return Check("codecs", FAIL, f"PyAV missing: {exc}", "pip install av")
    found, missing = [], []
    for name in ("libx265", "libx264"):
        try:
            av.codec.Codec(name, "w")
            found.append(name)
        except Exception:
            missing.append(name)
    if missing:
        return Check(
            "codecs",
            FAIL,
            f"missing encoders: {', '.join(missing)}",
            "reinstall PyAV from its wheels (pip install --force-reinstall av), which "
            "bundle libx264 and libx265",
        )
    return Check("codecs", OK, f"{', '.join(found)} (PyAV {av.__version__})")


def check_rsync() -> Check:
    proc = _run(["rsync", "--version"])
    if proc is None or proc.returncode != 0:
        return Check("rsync", FAIL, "rsync is not installed", "apt-get install rsync")
    return Check("rsync", OK, proc.stdout.splitlines()[0].strip())


CHECKS = ("camera", "disk", "clock", "ssh", "codecs", "rsync")


def run_checks(
    buffer_dir: Path,
    ssh_target: SshTarget | None,
    *,
    skip: tuple[str, ...] = (),
    detect_camera: Callable[[], Any] | None = None,
) -> list[Check]:
    """Every check not in ``skip`` (names from :data:`CHECKS`), in that order."""
    runners: dict[str, Callable[[], Check]] = {
        "camera": lambda: check_camera(detect_camera),
        "disk": lambda: check_disk(buffer_dir),
        "clock": check_clock,
        "ssh": lambda: check_ssh(ssh_target),
        "codecs": check_codecs,
        "rsync": check_rsync,
    }
    return [runners[name]() for name in CHECKS if name not in skip]
