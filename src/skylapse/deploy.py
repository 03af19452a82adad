"""The capture station's systemd unit, and installing it (`skylapse install-service`).

The unit runs `skylapse serve capture` (the capture service with its API, see
`skylapse.api.capture`) as an unprivileged user with ``Type=notify``: the service says READY once
the camera is open and feeds the watchdog (`skylapse.capture.watchdog`) while its capture loop
makes progress, so systemd restarts it when the loop hangs, not only when it exits. The API
token comes from ``/etc/skylapse/skylapse.env`` (``SKYLAPSE_API_TOKEN=...``, optional: else
``api.token`` in the config file); `install_capture_service` creates that file with a random
token when it is missing. The sandbox allows what capture needs and nothing
more: the camera devices (V4L2, media controller, DMA heaps for libcamera buffers), the network
(weather, transfer), and writing to the state folder, the buffer and the config file's folder
(where ``PUT /config`` saves ``skylapse.override.yaml``; the folder is sticky, so the service
replaces only its own files there) only.

``deploy/systemd/skylapse-capture.service`` in the repository is this template rendered with
:data:`DEFAULTS`; a test keeps the two equal.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "skylapse-capture.service"
STATE_DIR = Path("/var/lib/skylapse")
#: ``SKYLAPSE_API_TOKEN=...`` for the service (root-owned, readable by the service's group).
ENV_FILE = Path("/etc/skylapse/skylapse.env")
#: The config file's folder: root's, writable by the service's group so that ``PUT /config`` can
#: save ``skylapse.override.yaml`` there (`skylapse.config_store`), and sticky, so the service
#: can replace only the files it created, never root's config or token file.
CONFIG_DIR_MODE = 0o1770


@dataclass(frozen=True)
class UnitSettings:
    executable: Path
    user: str = "skylapse"
    buffer_dir: Path = STATE_DIR / "buffer"
    config: Path | None = None
    watchdog_s: int = 30


#: The service's environment. glibc's allocator gets two arenas at most (by default up to 8 per
#: core, each keeping the blocks its threads freed) and maps blocks of 1 MB and more on their own,
#: so the buffers of a frame's analysis and encoding go back to the system when freed rather than
#: staying in the heap (README: footprint; measured with ``bench/capture_bench.py``). OpenBLAS
#: (numpy's, and OpenCV's own copy) starts no worker threads: by default each starts one per
#: core less one at import, idle for good, since capture's only BLAS calls are the 3-weight
#: luminance products (threads, and a few hundred kB, fewer; OpenCV's own threads stay).
SERVICE_ENVIRONMENT = {
    "PYTHONUNBUFFERED": "1",
    "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576",
    "OPENBLAS_NUM_THREADS": "1",
}

DEFAULTS = UnitSettings(
    executable=Path("/opt/skylapse/venv/bin/skylapse"),
    config=Path("/etc/skylapse/skylapse.yaml"),
)

_TEMPLATE = """\
# Skylapse capture station: `skylapse install-service` writes this unit.
[Unit]
Description=Skylapse capture station (timelapse frames into the local buffer)
Wants=network-online.target time-sync.target
After=network-online.target time-sync.target
# never give up: an unattended station must keep trying
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=always
RestartSec=10
WatchdogSec={watchdog_s}
TimeoutStartSec=120
TimeoutStopSec=60
# the API's connections and the capture loop's files share this budget
LimitNOFILE=8192
User={user}
Group={user}
SupplementaryGroups=video
{environment}
EnvironmentFile=-{env_file}
StateDirectory=skylapse
WorkingDirectory=/var/lib/skylapse
UMask=0027

# sandbox
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={protect_home}
PrivateTmp=yes
ReadWritePaths={read_write}
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
DevicePolicy=closed
DeviceAllow=char-video4linux rw
DeviceAllow=char-media rw
DeviceAllow=char-dma_heap rw
DeviceAllow=/dev/vchiq rw

[Install]
WantedBy=multi-user.target
"""


def render_capture_unit(settings: UnitSettings) -> str:
    """The unit file's text for these settings."""
    argv = [str(settings.executable), "serve", "capture", "--data", str(settings.buffer_dir)]
    if settings.config is not None:
        argv += ["--config", str(settings.config)]
    under_home = [
        p
        for p in (settings.executable, settings.buffer_dir, settings.config)
        if p is not None and _under_home(p)
    ]
    writable = [str(STATE_DIR)]
    if not settings.buffer_dir.is_relative_to(STATE_DIR):
        writable.append(str(settings.buffer_dir))
    if settings.config is not None:  # PUT /config saves <stem>.override.yaml beside the file
        writable.append(f"-{settings.config.parent}")
    return _TEMPLATE.format(
        exec_start=shlex.join(argv),
        watchdog_s=settings.watchdog_s,
        user=settings.user,
        # a venv or buffer in a home folder must stay reachable
        protect_home="read-only" if under_home else "yes",
        read_write=" ".join(writable),
        env_file=ENV_FILE,
        environment="\n".join(f"Environment={k}={v}" for k, v in SERVICE_ENVIRONMENT.items()),
    )


def _under_home(path: Path) -> bool:
    return path.is_relative_to("/home") or path.is_relative_to("/root")


def current_executable() -> Path:
    """The `skylapse` program of this installation (the venv's console script)."""
    beside = Path(sys.executable).parent / "skylapse"
    if beside.exists():
        return beside
    found = shutil.which("skylapse")
    if found:
        return Path(found)
    return Path(sys.argv[0]).resolve()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def write_secret_file(path: Path, text: str, gid: int | None = None) -> None:
    """Create ``path`` holding ``text``, mode 0640 from its first byte (never world-readable,
    whatever the umask), owned by root (or whoever runs this) and group ``gid``.

    Refuses to replace an existing file (``FileExistsError``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o640)  # the umask may have taken bits off; it never adds any
        if gid is not None:
            os.fchown(fd, -1, gid)
        f.write(text)


def install_capture_service(
    settings: UnitSettings,
    unit_dir: Path = Path("/etc/systemd/system"),
    *,
    dry_run: bool = False,
    state_dir: Path = STATE_DIR,
    env_file: Path = ENV_FILE,
) -> list[str]:
    """Write the unit and, as root, create the user and folders; returns what was done.

    With ``dry_run`` nothing is changed and the list says what would be.
    """
    done: list[str] = []
    unit_path = unit_dir / UNIT_NAME
    root = os.geteuid() == 0
    if not _user_exists(settings.user):
        if not root and not dry_run:
            raise PermissionError(f"no user {settings.user!r}; run as root to create it")
        argv = [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            str(STATE_DIR),
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            settings.user,
        ]
        # the unit adds the video group itself (SupplementaryGroups=)
        if not dry_run:
            subprocess.run(argv, check=True, capture_output=True, text=True)
        done.append(f"created system user {settings.user}")
    for folder in (state_dir, settings.buffer_dir):
        if root or dry_run:
            if not dry_run:
                folder.mkdir(parents=True, exist_ok=True)
                entry = pwd.getpwnam(settings.user)
                os.chown(folder, entry.pw_uid, entry.pw_gid)
                folder.chmod(0o750)
            done.append(f"created {folder} owned by {settings.user}")
    if not env_file.exists() and (root or dry_run):
        if not dry_run:
            import secrets

            env_file.parent.mkdir(parents=True, exist_ok=True)
            write_secret_file(
                env_file,
                f"SKYLAPSE_API_TOKEN={secrets.token_urlsafe(32)}\n",
                gid=pwd.getpwnam(settings.user).pw_gid,
            )
        done.append(f"wrote a new API token to {env_file}")
    if settings.config is not None and (root or dry_run):
        folder = settings.config.parent
        if not dry_run:
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, 0, pwd.getpwnam(settings.user).pw_gid)
            folder.chmod(CONFIG_DIR_MODE)
        done.append(
            f"let {settings.user} save its own files in {folder} (the PUT /config override)"
        )
    text = render_capture_unit(settings)
    if not dry_run:
        unit_dir.mkdir(parents=True, exist_ok=True)
        tmp = unit_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, unit_path)
    done.append(f"wrote {unit_path}")
    if Path("/run/systemd/system").is_dir() and root and unit_dir == Path("/etc/systemd/system"):
        if not dry_run:
            subprocess.run(["systemctl", "daemon-reload"], check=False)
        done.append("ran systemctl daemon-reload")
    done.append(f"start it with: systemctl enable --now {UNIT_NAME}")
    return done
