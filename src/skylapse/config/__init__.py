"""Skylapse configuration: one YAML file, validated with pydantic when it is loaded.

The file has one top-level section per service part, each a model with defaults, so older files
keep loading; add a section by adding a field to :class:`SkylapseConfig`. Import every name from
here (``from skylapse.config import X``); the modules behind it are:

* `skylapse.config.base`      the section base class, secrets (redacted wherever shown, text
  only through :func:`reveal`), YAML into models with errors naming the file and the dotted
  field, :func:`deep_merge`.
* `skylapse.config.capture`   the station's sections: ``location``, ``schedule``,
  ``strategies``, ``exposure``, ``weather``, ``capture``, ``transfer``.
* `skylapse.config.services`  the services' sections: ``api``, ``processing`` (with
  ``processing.render`` and ``processing.retention``), ``alerts``, ``archive``, ``backup``.
* `skylapse.config.loading`   the whole file (:class:`SkylapseConfig`) and loading it, with the
  override file that ``PUT /config`` saves merged over it.

Every field has a default, so an empty file is a valid configuration; the shipped defaults live in
``skylapse/data/skylapse.yaml``. Unknown keys are errors (a misspelt key would otherwise be
silently ignored). :func:`load_config` raises :class:`ConfigError` naming the file and the dotted
path of each offending field.

API
---
``load_config(path=None, *, override=None) -> SkylapseConfig``  the file (the packaged default
when ``None``) with its override file, what ``PUT /config`` saved, merged over it.
``parse_config(data, source) -> SkylapseConfig``  an already-parsed mapping (``source`` names it).
``default_config() -> SkylapseConfig``          the packaged default file.
"""

from skylapse.config.base import (
    REDACTED,
    ConfigError,
    Secret,
    deep_merge,
    format_validation_errors,
    parse_yaml,
    read_yaml,
    read_yaml_mapping,
    reveal,
    validate_mapping,
)
from skylapse.config.capture import (
    CaptureConfig,
    ExposureConfig,
    LocationConfig,
    PhaseConfig,
    ScheduleConfig,
    SessionWindowConfig,
    StrategyConfig,
    TransferConfig,
    WeatherConfig,
    WeatherOverride,
)
from skylapse.config.loading import (
    DEFAULT_CONFIG_RESOURCE,
    DEFAULT_OVERRIDE_NAME,
    OVERRIDE_SUFFIX,
    SkylapseConfig,
    default_config,
    load_config,
    override_path_for,
    parse_config,
)
from skylapse.config.services import (
    DATA_DIR_ENV,
    DEFAULT_MAX_FRAME_PIXELS,
    MIN_TOKEN_LENGTH,
    AlertsConfig,
    ApiConfig,
    ArchiveConfig,
    BackupConfig,
    MqttConfig,
    ProcessingConfig,
    RetentionConfig,
    default_data_dir,
)

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_CONFIG_RESOURCE",
    "DEFAULT_MAX_FRAME_PIXELS",
    "DEFAULT_OVERRIDE_NAME",
    "MIN_TOKEN_LENGTH",
    "OVERRIDE_SUFFIX",
    "REDACTED",
    "AlertsConfig",
    "ApiConfig",
    "ArchiveConfig",
    "BackupConfig",
    "CaptureConfig",
    "ConfigError",
    "ExposureConfig",
    "LocationConfig",
    "MqttConfig",
    "PhaseConfig",
    "ProcessingConfig",
    "RetentionConfig",
    "ScheduleConfig",
    "Secret",
    "SessionWindowConfig",
    "SkylapseConfig",
    "StrategyConfig",
    "TransferConfig",
    "WeatherConfig",
    "WeatherOverride",
    "deep_merge",
    "default_config",
    "default_data_dir",
    "format_validation_errors",
    "load_config",
    "override_path_for",
    "parse_config",
    "parse_yaml",
    "read_yaml",
    "read_yaml_mapping",
    "reveal",
    "validate_mapping",
]
