"""``PUT /config`` persistence: the override file beside the config file, merged at load, written
atomically with real secrets only where changed; and the capture service through
`skylapse serve capture`, changed over its API and started again."""

from __future__ import annotations

import errno
import stat

import pytest
import structlog
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from skylapse.config import ConfigError, load_config, parse_config, reveal
from skylapse.config_store import ConfigFile, changed_paths

TOKEN = "store-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = """\
# The station's own file: its comments and layout must survive API changes.
capture:
  camera: simulated     # no hardware in tests
  unattended: false
  resolution: [320, 180]
  jpeg_quality: 85      # a comment on a changed value
weather:
  enabled: false
  api_key: old-key-0123   # a secret
"""


def test_changed_paths_are_the_differing_leaves():
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "s": {"k": {"v": 1}}}
    new = {"a": {"b": 2, "c": [1, 2]}, "d": "x", "s": {"k": {"v": 1}, "new.name": {"v": 2}}}
    assert changed_paths(old, new) == [("a", "b"), ("s", "new.name")]
    assert changed_paths(old, old) == []


def test_override_is_merged_over_the_file_and_errors_name_it(tmp_path):
    base = tmp_path / "site.yaml"
    base.write_text(BASE)
    assert load_config(base).capture.jpeg_quality == 85
    override = tmp_path / "site.override.yaml"
    override.write_text("capture:\n  jpeg_quality: 70\n")
    config = load_config(base)
    assert config.capture.jpeg_quality == 70 and config.capture.camera == "simulated"
    override.write_text("capture:\n  jpeg_quality: 0\n")
    with pytest.raises(
        ConfigError,
        match=r"site\.override\.yaml \(over .*site\.yaml\): "
        r"capture\.jpeg_quality: ",
    ):
        load_config(base)
    override.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"site\.override\.yaml: \(top level\): expected a map"):
        load_config(base)
    base.write_text("capture:\n  jpeg_quality: 500\n")  # the file alone is checked first
    with pytest.raises(ConfigError, match=r"^.*site\.yaml: capture\.jpeg_quality: "):
        load_config(base)


def test_save_writes_only_changed_fields_with_real_secrets_atomically(tmp_path):
    base = tmp_path / "skylapse.yaml"
    base.write_text(BASE)
    store = ConfigFile.for_service(base, tmp_path / "unused")
    assert store.override == tmp_path / "skylapse.override.yaml"
    old = store.load()
    doc = old.model_dump()
    doc["capture"]["jpeg_quality"] = 60
    new = parse_config(doc)
    saved = store.save(old, new)
    assert saved is not None and saved.changes == [("capture", "jpeg_quality")]
    assert saved.previous is None
    text = store.override.read_text()
    assert "old-key" not in text and "***" not in text  # an unchanged secret is not written
    assert stat.S_IMODE(store.override.stat().st_mode) == 0o600
    assert yaml.safe_load(text) == {"capture": {"jpeg_quality": 60}}
    doc["weather"]["api_key"] = "new-key-4567"
    newer = parse_config(doc)
    again = store.save(new, newer)
    assert yaml.safe_load(store.override.read_text()) == {
        "capture": {"jpeg_quality": 60},
        "weather": {"api_key": "new-key-4567"},  # the real value of a changed secret
    }
    assert reveal(store.load().weather.api_key) == "new-key-4567"
    assert base.read_text() == BASE  # the file itself, comments and all, untouched
    assert store.save(newer, newer) is None
    store.restore(again)
    assert yaml.safe_load(store.override.read_text()) == {"capture": {"jpeg_quality": 60}}
    store.restore(saved)
    assert not store.override.exists()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_without_a_config_file_the_override_lives_in_the_data_folder(tmp_path):
    store = ConfigFile.for_service(None, tmp_path / "buffer")
    assert store.override == tmp_path / "buffer" / "skylapse.override.yaml"
    old = store.load()
    doc = old.model_dump()
    doc["capture"]["retention_h"] = 12.0
    store.save(old, parse_config(doc))
    assert store.load().capture.retention_h == 12.0
    assert "the packaged defaults" in store.override.read_text()


# -- the capture service, started by `skylapse serve capture` ---------------------------------


@pytest.fixture
def serve(monkeypatch):
    """``serve(*args) -> (app | None, output)``: `skylapse serve capture` up to the point where it
    would listen, returning the app it built."""
    import skylapse.cli.serve
    import skylapse.log
    from skylapse.cli import app as cli

    monkeypatch.setenv("SKYLAPSE_API_TOKEN", TOKEN)
    # keep the test's logging: the runner's output stream is closed after each invocation
    monkeypatch.setattr(skylapse.log, "configure", lambda *a, **k: None)
    built = []
    monkeypatch.setattr(skylapse.cli.serve, "run_server", lambda app, *a, **k: built.append(app))

    def run(*args: str):
        built.clear()
        result = CliRunner().invoke(cli, ["serve", "capture", *args])
        return (built[0] if built else None), result.output

    return run


def test_a_config_changed_over_the_api_survives_a_restart(tmp_path, serve):
    base = tmp_path / "etc" / "skylapse.yaml"
    base.parent.mkdir()
    base.write_text(BASE)
    args = ("--config", str(base), "--data", str(tmp_path / "buffer"))
    app, output = serve(*args)
    assert app is not None, output
    override = base.parent / "skylapse.override.yaml"
    with TestClient(app, headers=AUTH) as client:
        before = client.get("/config").json()
        # invalid: neither the running configuration nor any file changes
        r = client.put("/config", json={"capture": {"jpeg_quality": 0, "retention_h": 5}})
        assert r.status_code == 422
        assert client.get("/config").json() == before and not override.exists()
        r = client.put(
            "/config", json={"capture": {"jpeg_quality": 70}, "weather": before["weather"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["saved_to"] == str(override) and r.json()["changed"] == [
            "capture.jpeg_quality"
        ]
        assert app.state.runtime.service.writer.quality == 70
        r = client.put("/config", json={"weather": {"api_key": "new-key-4567"}})
        assert r.status_code == 200 and r.json()["config"]["weather"]["api_key"] == "***"
        saved = override.read_text()
        r = client.put("/config", json={"capture": {"retention_h": -1}})
        assert r.status_code == 422 and override.read_text() == saved
    assert base.read_text() == BASE
    assert "***" not in saved and "old-key" not in saved

    app, output = serve(*args)  # the restart
    assert app is not None, output
    with TestClient(app, headers=AUTH) as client:
        config = client.get("/config").json()
        assert config["capture"]["jpeg_quality"] == 70
        assert config["capture"]["resolution"] == [320, 180]  # the file's own settings
    assert reveal(app.state.runtime.service.config.weather.api_key) == "new-key-4567"

    override.write_text("capture:\n  jpeg_quality: 0\n")  # broken by hand: refused, named
    app, output = serve(*args)
    assert app is None
    assert "skylapse.override.yaml (over" in output and "capture.jpeg_quality" in output


def test_without_config_the_change_is_kept_in_the_buffer_and_a_failed_save_changes_nothing(
    tmp_path, serve, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    buffer = tmp_path / "buffer"
    # the packaged defaults pick a camera automatically and fetch the weather: the data folder's
    # override (written before the start, as a previous PUT would have) makes that test-safe
    buffer.mkdir()
    (buffer / "skylapse.override.yaml").write_text(
        "capture: {camera: simulated, unattended: false, resolution: [320, 180]}\n"
        "weather: {enabled: false}\n"
    )
    app, output = serve("--data", str(buffer))
    assert app is not None, output
    with TestClient(app, headers=AUTH) as client:
        r = client.put("/config", json={"capture": {"retention_h": 6}})
        assert r.status_code == 200 and r.json()["saved_to"] == str(
            buffer / "skylapse.override.yaml"
        )
    app, _ = serve("--data", str(buffer))
    assert app is not None and app.state.runtime.service.config.capture.retention_h == 6
    assert app.state.runtime.service.config.capture.camera == "simulated"

    # a save that fails (a full disk): 503, and neither memory nor file changed
    import skylapse.config_store as config_store

    override = buffer / "skylapse.override.yaml"
    kept = override.read_text()

    def disk_full(tmp, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        before = client.get("/config").json()
        with monkeypatch.context() as m:
            m.setattr(config_store, "commit_temp", disk_full)
            r = client.put("/config", json={"capture": {"retention_h": 7}})
        assert r.status_code == 503, r.text
        assert "No space left on device; nothing was changed" in r.json()["detail"]
        assert client.get("/config").json() == before
        assert override.read_text() == kept and not list(buffer.glob(".*tmp-*"))
        # saved, but applying fails: the file is put back as it was
        with monkeypatch.context() as m, structlog.testing.capture_logs():  # no traceback dump
            m.setattr(app.state.runtime.service, "apply_config", lambda new: 1 / 0)
            r = client.put("/config", json={"capture": {"retention_h": 8}})
        assert r.status_code == 500
        assert client.get("/config").json() == before and override.read_text() == kept
