"""Saving configuration changes made over the API (``PUT /config``) so they survive a restart.

The config file the service was started with is never rewritten (its comments and layout stay
the operator's). The settings a ``PUT /config`` changed go into an override file beside it,
``<stem>.override.yaml`` (``/etc/skylapse/skylapse.yaml`` -> ``skylapse.override.yaml``); a
service started without ``--config`` (the packaged defaults) keeps it in its data folder as
``skylapse.override.yaml``. At start `skylapse.config.load_config` merges the override over the
file with the same validation, errors naming the override file and the field.

The override holds only what was changed over the API, accumulated: each save merges the changed
fields into what it already holds. A secret (`skylapse.config.Secret`) is written with its real
value only when the request changed it (a request sending ``"***"`` leaves it alone), never as
``"***"``; the file is created ``0600`` because of that. Every save is atomic: a temporary file
beside it, fsync, rename over the old one, fsync of the folder, so a crash leaves the old
override or the new one, never half of one.

API
---
``ConfigFile(base, override)`` / ``ConfigFile.for_service(config_path, data_dir)``;
``.load() -> SkylapseConfig``; ``.save(old, new) -> Saved | None`` (where, what, the previous
text); ``.restore(saved)`` undoes a save whose change could not be applied.
``changed_paths(old, new) -> list[tuple[str, ...]]``  leaves that differ between two dumps.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from skylapse.capture.storage import commit_temp, temp_path
from skylapse.config import (
    DEFAULT_OVERRIDE_NAME,
    SkylapseConfig,
    load_config,
    override_path_for,
    read_yaml_mapping,
)

_HEADER = """\
# Settings changed over the API (PUT /config), merged over {base} at start.
# Written by the service: edit it only while the service is stopped (comments here are not kept).
"""


def changed_paths(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The leaves (mapping keys, recursively; anything else is a leaf) that differ, sorted."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, ...]] = []
        for key in sorted(set(old) | set(new), key=str):
            out += changed_paths(old.get(key), new.get(key), (*prefix, str(key)))
        return out
    return [] if old == new else [prefix]


def _revealed(json_value: Any, python_value: Any) -> Any:
    """A JSON dump's value with every secret's real text in place of ``"***"``."""
    if isinstance(python_value, SecretStr):
        return python_value.get_secret_value()
    if isinstance(json_value, dict) and isinstance(python_value, dict):
        return {k: _revealed(v, python_value.get(k)) for k, v in json_value.items()}
    if isinstance(json_value, list) and isinstance(python_value, list | tuple):
        return [_revealed(j, p) for j, p in zip(json_value, python_value, strict=True)]
    return json_value


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        child = doc.get(key)
        if not isinstance(child, dict):
            child = doc[key] = {}
        doc = child
    doc[path[-1]] = value


def write_private_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) so that it is the old file or the new one."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ConfigFile:
    """The config file a service was started with (``None``: the packaged defaults) and the
    override file its API changes are saved to."""

    base: Path | None
    override: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def for_service(cls, config_path: str | Path | None, data_dir: str | Path) -> ConfigFile:
        """Beside ``config_path``; without one, ``<data_dir>/skylapse.override.yaml``."""
        if config_path is not None:
            return cls(Path(config_path), override_path_for(config_path))
        return cls(None, Path(data_dir) / DEFAULT_OVERRIDE_NAME)

    def load(self) -> SkylapseConfig:
        """The configuration with the override merged over it (raises `ConfigError`)."""
        return load_config(self.base, override=self.override)

    def save(self, old: SkylapseConfig, new: SkylapseConfig) -> Saved | None:
        """Write the fields that differ from ``old`` to ``new`` into the override file, on top
        of what it holds (None, and nothing written, when none does). Raises ``OSError`` when
        the file cannot be written, leaving the previous one as it was."""
        changes = changed_paths(old.model_dump(), new.model_dump())
        if not changes:
            return None
        values = _revealed(new.model_dump(mode="json"), new.model_dump())
        with self._lock:
            previous = self.override.read_text() if self.override.exists() else None
            doc = read_yaml_mapping(self.override) if previous is not None else {}
            for path in changes:
                _put(doc, path, _at(values, path))
            base = str(self.base) if self.base is not None else "the packaged defaults"
            text = _HEADER.format(base=base) + yaml.safe_dump(doc, sort_keys=False)
            self.override.parent.mkdir(parents=True, exist_ok=True)
            write_private_atomic(self.override, text)
        return Saved(self.override, previous, changes)

    def restore(self, saved: Saved) -> None:
        """Undo a :meth:`save` whose change could not be applied after all."""
        with self._lock:
            if saved.previous is None:
                saved.path.unlink(missing_ok=True)
            else:
                write_private_atomic(saved.path, saved.previous)


@dataclass(frozen=True)
class Saved:
    """A change :meth:`ConfigFile.save` wrote: where, the file's text before, which fields."""

    path: Path
    previous: str | None  # None: there was no override file
    changes: list[tuple[str, ...]]


__all__ = ["ConfigFile", "Saved", "changed_paths", "write_private_atomic"]
