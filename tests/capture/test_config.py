import pytest

from skylapse.config import ConfigError, SkylapseConfig, default_config, load_config


def test_packaged_file_equals_model_defaults():
    assert default_config() == SkylapseConfig()
    assert load_config(None) == SkylapseConfig()


def test_empty_and_partial_files_keep_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == SkylapseConfig()
    part = tmp_path / "part.yaml"
    part.write_text("exposure:\n  max_step_ev: 0.2\nlocation:\n  timezone: Europe/Zurich\n")
    cfg = load_config(part)
    assert cfg.exposure.max_step_ev == 0.2
    assert cfg.exposure.night_darken_ev == SkylapseConfig().exposure.night_darken_ev
    assert cfg.location.timezone == "Europe/Zurich"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("exposure:\n  max_step_ev: -1\n", "exposure.max_step_ev"),
        ("exposure:\n  night_darken_ev: 3\n", "exposure.night_darken_ev"),
        ("exposure:\n  max_stepp_ev: 0.2\n", "exposure.max_stepp_ev"),
        ("location:\n  timezone: Mars/Olympus\n", "location.timezone"),
        ("strategies:\n  night:\n    white_balance: 99\n", "strategies.night.white_balance"),
    ],
)
def test_errors_name_file_and_field(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert where in str(err.value)


def test_schedule_is_checked_as_a_whole(tmp_path):
    path = tmp_path / "sched.yaml"
    path.write_text(
        "schedule:\n  phases:\n"
        "    - {name: day, from_elevation_deg: -4, interval_s: 30, strategy: day}\n"
        "    - {name: night, from_elevation_deg: 0, interval_s: 60, strategy: night}\n"
    )
    with pytest.raises(ConfigError, match="strictly falling"):
        load_config(path)
    path.write_text(
        "schedule:\n  phases:\n"
        "    - {name: day, from_elevation_deg: -90, interval_s: 30, strategy: day}\n"
    )
    # the default weather overrides name phases this schedule no longer has
    with pytest.raises(ConfigError, match=r"weather_overrides\.stormy names unknown phases"):
        load_config(path)
    path.write_text(
        "schedule:\n  weather_overrides: {}\n  phases:\n"
        "    - {name: day, from_elevation_deg: -90, interval_s: 30, strategy: sunny}\n"
    )
    with pytest.raises(ConfigError, match="sunny"):
        load_config(path)


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("exposure: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_archive_and_backup_sections_load_and_env_overrides(tmp_path):
    from skylapse.config import BackupConfig, load_config

    path = tmp_path / "s.yaml"
    path.write_text(
        "backup:\n  bucket: timelapses\n  endpoint_url: http://127.0.0.1:9000\n"
        "archive:\n  max_age_days: 30\n"
    )
    cfg = load_config(path)
    assert cfg.backup.bucket == "timelapses" and cfg.archive.max_age_days == 30
    merged = BackupConfig.from_env({"SKYLAPSE_BACKUP_PREFIX": "peak"}, base=cfg.backup)
    assert (merged.bucket, merged.prefix) == ("timelapses", "peak")
    path.write_text("backup:\n  part_size_mib: 1\n")
    with pytest.raises(ConfigError, match=r"backup\.part_size_mib"):
        load_config(path)
