"""``PUT /config``'s functional core: a patch merged into the running configuration.

The patch is shaped like the config file. It is merged into the running configuration
(objects key by key; lists and values replace) and the result is validated as a whole: nothing
is applied unless all of it is. Secrets (the fields typed `skylapse.config.Secret`) show as
``"***"`` in answers; sending ``"***"`` back keeps them. Fields in :data:`RESTART_ONLY` only
take effect when the service starts, so a change to them is refused (:class:`RestartOnly`).
"""

from __future__ import annotations

from collections.abc import Mapping

from skylapse.config import REDACTED, SkylapseConfig, deep_merge
from skylapse.config_store import changed_paths

#: Changes to these only take effect when the service starts.
RESTART_ONLY = (
    ("api",),
    ("transfer",),
    ("capture", "buffer_dir"),
    ("capture", "camera"),
    ("capture", "resolution"),
    ("capture", "raw"),
    ("capture", "writer_queue"),
    ("capture", "writer_queue_mb"),
    ("capture", "unattended"),
    ("weather", "base_url"),
    ("weather", "cache_path"),
    ("alerts", "webhook_url"),
    ("alerts", "mqtt"),
    ("alerts", "evaluate_every_s"),
)


class RestartOnly(ValueError):
    """A patch changes a field that only takes effect at a restart; ``field`` is its dotted
    path."""

    def __init__(self, field: str):
        super().__init__(
            "takes effect only when the service starts; change it in the config file and restart"
        )
        self.field = field


def merge_config(
    current: SkylapseConfig, patch: Mapping[str, object]
) -> tuple[SkylapseConfig, list[str]]:
    """The configuration with ``patch`` applied and the dotted paths that changed, sorted.

    Raises pydantic's ``ValidationError`` for an invalid result (locations as in the config
    file) and :class:`RestartOnly` for a change that needs a restart.
    """
    # Python mode: secrets stay `SecretStr` values, so a merged document keeps them
    old = current.model_dump()
    new = SkylapseConfig.model_validate(deep_merge(old, _drop_redacted(patch)))
    new_doc = new.model_dump()
    for path in RESTART_ONLY:
        if _get(new_doc, path) != _get(old, path):
            raise RestartOnly(".".join(path))
    return new, [".".join(path) for path in changed_paths(old, new_doc)]


def _get(doc: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _drop_redacted(patch: Mapping[str, object]) -> dict[str, object]:
    return {
        k: _drop_redacted(v) if isinstance(v, Mapping) else v
        for k, v in patch.items()
        if v != REDACTED
    }
