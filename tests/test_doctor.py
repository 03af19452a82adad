"""`skylapse doctor`: each check against the real thing (a private sshd, programs on PATH)."""

from __future__ import annotations

import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from servers import running_sshd
from skylapse.capture.cameras.factory import CameraFactory
from skylapse.cli import app
from skylapse.doctor import (
    FAIL,
    OK,
    WARN,
    check_camera,
    check_clock,
    check_codecs,
    check_disk,
    check_rsync,
    check_ssh,
    parse_ssh_target,
)
from tests_support import SSH_TRANSFER


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def target_for(server):
    return replace(
        parse_ssh_target(f"{server.user}@127.0.0.1:{server.port}"),
        key_file=server.client_key,
        known_hosts=server.known_hosts,
    )


@SSH_TRANSFER
def test_ssh_login_to_a_real_sshd(sshd):
    check = check_ssh(target_for(sshd))
    assert check.status == OK and f":{sshd.port}" in check.detail


@SSH_TRANSFER
def test_ssh_wrong_key_says_to_install_the_key(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    check = check_ssh(replace(target_for(sshd), key_file=other))
    assert check.status == FAIL and "Permission denied" in check.detail
    assert "ssh-copy-id" in check.fix


@SSH_TRANSFER
def test_ssh_unknown_host_key_and_closed_port(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    check = check_ssh(replace(target_for(sshd), known_hosts=empty))
    assert check.status == FAIL and "ssh-keyscan" in check.fix
    from servers import free_port

    closed = replace(target_for(sshd), port=free_port())
    check = check_ssh(closed)
    assert check.status == FAIL and "sshd running" in check.fix


def test_ssh_target_parsing_and_missing_target():
    t = parse_ssh_target("pi@proc.local:2222")
    assert (t.user, t.host, t.port) == ("pi", "proc.local", 2222)
    assert parse_ssh_target("proc").port == 22 and parse_ssh_target("proc").user is None
    with pytest.raises(ValueError):
        parse_ssh_target("a@b@c")
    assert check_ssh(None).status == WARN


def fake_program(folder: Path, name: str, stdout: str, code: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


CHRONY_SYNCED = """Reference ID    : C0A80101 (192.168.1.1)
Stratum         : 3
System time     : 0.000012345 seconds fast of NTP time
Leap status     : Normal"""


@pytest.mark.parametrize(
    ("programs", "status", "detail"),
    [
        ({"timedatectl": ("yes", 0)}, OK, "timedatectl"),
        ({"timedatectl": ("no", 0)}, FAIL, "not synchronised"),
        (
            {
                "timedatectl": ("System has not been booted with systemd", 1),
                "chronyc": (CHRONY_SYNCED, 0),
            },
            OK,
            "seconds fast",
        ),
        ({"chronyc": (CHRONY_SYNCED.replace("Normal", "Not synchronised"), 0)}, FAIL, "chrony"),
        ({}, WARN, "unknown"),
    ],
)
def test_clock_sync(tmp_path, monkeypatch, programs, status, detail):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, (out, code) in programs.items():
        fake_program(bin_dir, name, out, code)
    monkeypatch.setenv("PATH", f"{bin_dir}:/bin")  # /bin for sh and cat only
    check = check_clock()
    assert check.status == status and detail in check.detail
    if status != OK:
        assert "timedatectl set-ntp true" in check.fix


def test_disk_space_thresholds(tmp_path):
    ok = check_disk(tmp_path / "not" / "yet" / "buffer", min_free_gb=0.001, max_used_pct=100)
    assert ok.status == OK and "GB free" in ok.detail
    full = check_disk(tmp_path, min_free_gb=1e9)
    assert full.status == FAIL and "retention" in full.fix


class FakeV4l2:
    """cv2.VideoCapture stand-in: device 2 delivers a frame."""

    def __init__(self, device, api=None):
        self.device = device

    def isOpened(self):
        return self.device == 2

    def read(self):
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def no_picamera2():
    from skylapse.capture.cameras.base import CameraError

    raise CameraError("no picamera2 here")


def test_camera_detection_reports_which():
    usb = check_camera(
        lambda: CameraFactory.auto_detect_camera(
            picamera2_loader=no_picamera2, usb_devices=[0, 2], video_capture=FakeV4l2
        )
    )
    assert usb.status == OK and usb.detail == "USB/V4L2 camera /dev/video2"
    none = check_camera(
        lambda: CameraFactory.auto_detect_camera(
            picamera2_loader=no_picamera2, usb_devices=[0], video_capture=FakeV4l2
        )
    )
    assert none.status == WARN and "simulated" in none.detail and "video group" in none.fix


@pytest.mark.system("rsync")
def test_codecs_and_rsync():
    assert check_codecs().status == OK and "libx265" in check_codecs().detail
    assert check_rsync().status == OK


@SSH_TRANSFER
def test_doctor_command_exit_codes(sshd, tmp_path):
    args = [
        "doctor",
        "--buffer",
        str(tmp_path),
        "--ssh",
        f"{sshd.user}@127.0.0.1:{sshd.port}",
        "--ssh-key",
        str(sshd.client_key),
        "--known-hosts",
        str(sshd.known_hosts),
        "--skip",
        "camera",
        "--skip",
        "clock",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "all 4 checks passed" in result.output
    bad = CliRunner().invoke(
        app,
        [
            *args[:4],
            f"{sshd.user}@127.0.0.1:{sshd.port + 0}",
            "--skip",
            "camera",
            "--skip",
            "clock",
        ],
    )
    assert bad.exit_code == 1  # no key, no known host: the SSH check fails
    assert "ssh to processing host" in bad.output and "1 of 4 checks" in bad.output
    assert CliRunner().invoke(app, ["doctor", "--skip", "nonsense"]).exit_code == 2
