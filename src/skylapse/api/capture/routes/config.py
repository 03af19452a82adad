"""``GET /config`` and ``PUT /config``: the running configuration.

``PUT`` takes part of the config file as JSON, merged and validated whole
(`skylapse.api.capture.config_patch`), and applies it at once: phases, intervals and
strategies from the next frame, exposure settings from the next session, JPEG quality,
retention and the watermark from the next write or storage check, weather thresholds at the
next fetch, alert thresholds at the next evaluation. Nothing is applied unless all of it is;
fields that need a restart are refused with 422 naming them. The change is saved before it is
applied, atomically, to the override file beside the config file (``<stem>.override.yaml``, or
``<buffer>/skylapse.override.yaml`` without ``--config``; see `skylapse.config_store`), which is
merged over the config file at the next start; 503 with nothing changed when it cannot be
written. Secrets show as ``"***"``; sending ``"***"`` back keeps them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException
from pydantic import JsonValue, ValidationError

from skylapse.api.capture.config_patch import RestartOnly, merge_config
from skylapse.api.capture.models import ConfigChange
from skylapse.api.capture.runtime import Runtime, log
from skylapse.api.common import invalid
from skylapse.api.middleware import validation_details
from skylapse.config import SkylapseConfig
from skylapse.config_store import ConfigFile, Saved

router = APIRouter(tags=["config"])


@router.get("/config", response_model=SkylapseConfig)
def get_config(runtime: Runtime) -> SkylapseConfig:
    """The running configuration; secrets show as ``"***"``."""
    return runtime.config  # `skylapse.config.Secret` fields redact in JSON


@router.put(
    "/config",
    response_model=ConfigChange,
    responses={
        422: {"description": "invalid, or needs a restart; nothing applied"},
        503: {"description": "the change could not be saved; nothing applied"},
    },
)
def put_config(
    runtime: Runtime,
    patch: Annotated[dict[str, JsonValue], Body(description="part of the config file, as JSON")],
) -> ConfigChange:
    """Change the running configuration (merged, validated whole, applied at once)."""
    try:
        new, changed = merge_config(runtime.config, patch)
    except ValidationError as exc:
        errors = [dict(e, loc=("body", *e["loc"])) for e in exc.errors()]
        raise HTTPException(422, detail=validation_details(errors)) from None
    except RestartOnly as exc:
        raise invalid(exc.field, str(exc)) from None
    saved = _save(runtime.config_file, runtime.config, new)  # first: 503 if it cannot be
    try:
        runtime.service.apply_config(new)  # whole or not at all; the runtime follows once it took
    except Exception:
        if runtime.config_file is not None and saved is not None:
            runtime.config_file.restore(saved)  # neither in memory nor in the file
        raise
    runtime.config = new
    saved_to = str(saved.path) if saved is not None else None
    if changed:
        log.info("configuration changed", fields=changed, saved_to=saved_to)
    return ConfigChange(changed=changed, config=new, saved_to=saved_to)


def _save(config_file: ConfigFile | None, old: SkylapseConfig, new: SkylapseConfig) -> Saved | None:
    """Save a change before it is applied; 503 (nothing changed) when it cannot be."""
    if config_file is None:
        return None
    try:
        return config_file.save(old, new)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise HTTPException(
            503,
            detail=f"cannot save the configuration to {config_file.override}: {reason}; "
            "nothing was changed",
        ) from None
