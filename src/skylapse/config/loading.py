"""The whole file, :class:`SkylapseConfig`, and loading it with its override file.

Changes made over the API (``PUT /config``) are kept in an override file beside the config file,
``<stem>.override.yaml`` (`skylapse.config_store`); :func:`load_config` merges it over the file
(mappings key by key, lists and values replaced), so the config file itself, and its comments,
are never rewritten.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from skylapse.config.base import Section, deep_merge, read_yaml_mapping, validate_mapping
from skylapse.config.capture import (
    CaptureConfig,
    ExposureConfig,
    LocationConfig,
    ScheduleConfig,
    StrategyConfig,
    TransferConfig,
    WeatherConfig,
    default_strategies,
)
from skylapse.config.services import (
    AlertsConfig,
    ApiConfig,
    ArchiveConfig,
    BackupConfig,
    ProcessingConfig,
)

DEFAULT_CONFIG_RESOURCE = "data/skylapse.yaml"


class SkylapseConfig(Section):
    """The whole file. Add a section by adding a field with a default model."""

    location: LocationConfig = Field(default_factory=LocationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    strategies: dict[str, StrategyConfig] = Field(default_factory=default_strategies)
    exposure: ExposureConfig = Field(default_factory=ExposureConfig)
    weather: WeatherConfig = Field(default_factory=WeatherConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)

    @model_validator(mode="after")
    def _strategies_exist(self) -> SkylapseConfig:
        used = {p.strategy for p in self.schedule.phases}
        used |= {ov.strategy for ov in self.schedule.weather_overrides.values()}
        missing = used - set(self.strategies)
        if missing:
            raise ValueError(f"schedule names strategies not in `strategies`: {sorted(missing)}")
        return self


def parse_config(data: Any, source: str = "<config>") -> SkylapseConfig:
    """Validate an already-parsed mapping; ``source`` names it in error messages."""
    return validate_mapping(SkylapseConfig, {} if data is None else data, source)


#: What ``PUT /config`` writes its changes to (`skylapse.config_store`): ``<stem>.override.yaml``
#: beside the config file (``skylapse.yaml`` -> ``skylapse.override.yaml``), or
#: ``<data>/skylapse.override.yaml`` for a service started without ``--config``.
OVERRIDE_SUFFIX = ".override.yaml"
DEFAULT_OVERRIDE_NAME = "skylapse" + OVERRIDE_SUFFIX


def override_path_for(config_path: str | Path) -> Path:
    """The override file beside a config file: ``<dir>/<stem>.override.yaml``."""
    path = Path(config_path)
    return path.with_name(path.stem + OVERRIDE_SUFFIX)


def load_config(
    path: str | Path | None = None, *, override: str | Path | None = None
) -> SkylapseConfig:
    """Read and validate a YAML configuration file (the packaged default when ``path`` is None),
    with its override file merged over it when that exists: ``override``, else the one beside
    ``path`` (:func:`override_path_for`). The file alone must validate (errors name it), then
    the merge (errors name the override file and the field)."""
    if path is None:
        source = f"skylapse/{DEFAULT_CONFIG_RESOURCE}"
        text = resources.files("skylapse").joinpath(DEFAULT_CONFIG_RESOURCE).read_text()
        base = yaml.safe_load(text) or {}
    else:
        source, base = str(path), read_yaml_mapping(path)
        override = override if override is not None else override_path_for(path)
    config = parse_config(base, source)
    if override is None or not Path(override).exists():
        return config
    merged = deep_merge(base, read_yaml_mapping(override))
    return parse_config(merged, f"{override} (over {source})")


def default_config() -> SkylapseConfig:
    """The configuration shipped with the package (``skylapse/data/skylapse.yaml``)."""
    return load_config()
