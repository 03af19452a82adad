"""The configuration's building blocks: the section base class, secrets, and YAML into models.

* :class:`Section` every section's base: unknown keys and non-finite floats refused, frozen,
  and :meth:`Section.from_env` for the environment variables that override fields.
* :data:`Secret`, :data:`REDACTED`, :func:`reveal`  a secret field's type, shown redacted (JSON
  ``"***"``) wherever the configuration is shown; only :func:`reveal` gives its text.
* :class:`ConfigError`, :func:`format_validation_errors`, :func:`validate_mapping`,
  :func:`parse_yaml`, :func:`read_yaml`, :func:`read_yaml_mapping`  YAML text or files into a
  pydantic model, with errors that name the file and the dotted path of each field (also used
  for the camera and lens profiles).
* :func:`deep_merge`  one mapping over another, as ``PUT /config`` and the override file merge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PlainSerializer, SecretStr, ValidationError

#: How a secret shows in JSON (``GET /config``, anything dumped with ``mode="json"``).
REDACTED = "***"

#: A secret field's type: redacted by type, wherever the configuration is shown. Its value is
#: a `pydantic.SecretStr` (``repr`` and ``str`` show ``**********``, JSON shows ``"***"``); only
#: :func:`reveal` gives the text, at the place that uses it.
Secret = Annotated[
    SecretStr, PlainSerializer(lambda _: REDACTED, return_type=str, when_used="json")
]


def reveal(secret: SecretStr | None) -> str | None:
    """A secret field's text (``None`` when unset)."""
    return None if secret is None else secret.get_secret_value()


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not validate; the message names both."""


class Section(BaseModel):
    """Every section's base: unknown keys are errors, the model is frozen, and (below) every
    float must be finite."""

    # every float finite: inf and nan are refused like out-of-range numbers
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Environment variables that override fields (field -> variable), for containers.
    _env_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, base: Self | None = None) -> Self:
        """``base`` (the YAML's section, else the defaults) with the set variables of
        ``_env_names`` on top, validated like the file."""
        env = os.environ if env is None else env
        given = {key: env[var] for key, var in cls._env_names.items() if env.get(var)}
        return cls(**{**(base.model_dump() if base else {}), **given})


Model = TypeVar("Model", bound=BaseModel)


def format_validation_errors(exc: ValidationError, source: str) -> str:
    """One line per problem, ``source: dotted.field: message``, so a reader finds it at once."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {err['msg']}")
    return "\n".join(lines)


def validate_mapping(
    model: type[Model], data: Any, source: str, error: type[ValueError] = ConfigError
) -> Model:
    """Validate parsed YAML against ``model``; ``error`` names ``source`` and the field."""
    if not isinstance(data, dict):
        raise error(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(format_validation_errors(exc, source)) from exc


def parse_yaml(
    model: type[Model],
    text: str,
    source: str,
    error: type[ValueError] = ConfigError,
    *,
    empty: dict[str, Any] | None = None,
) -> Model:
    """YAML text into ``model``; an empty document becomes ``empty`` when that is given."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if data is None and empty is not None:
        data = empty
    return validate_mapping(model, data, source, error)


def read_yaml(
    model: type[Model],
    path: str | Path,
    error: type[ValueError] = ConfigError,
    *,
    empty: dict[str, Any] | None = None,
) -> Model:
    """A YAML file into ``model``: the configuration, camera profiles and lens profiles."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_yaml(model, text, str(path), error, empty=empty)


def read_yaml_mapping(path: str | Path, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """A YAML file's top-level mapping, unvalidated (an empty file is ``{}``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise error(f"{path}: (top level): expected a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, object], patch: Mapping[str, object]) -> dict[str, object]:
    """``patch`` over ``base``: mappings key by key, anything else replaced (``PUT /config`` and
    an override file over its config file merge this way)."""
    out = dict(base)
    for key, value in patch.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = deep_merge(below, value)
        else:
            out[key] = value
    return out
