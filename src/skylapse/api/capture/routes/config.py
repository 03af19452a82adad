"""``GET /config`` and ``PUT /config``: the running configuration.

``PUT`` takes part of the config file as JSON, merged and validated whole
(`skylapse.api.capture.config_patch`), and applies it at once: phases, intervals and
strategies from the next frame, exposure settings from the next session, JPEG quality,
retention and the watermark from the next write or storage check, weather thresholds at the
next fetch, alert thresholds at the next evaluation. Nothing is applied unless all of it is;
fields that need a restart are refused with 422 naming them. The change lives in memory: edit
the config file to keep it across restarts. Secrets show as ``"***"``; sending ``"***"`` back
keeps them.
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

router = APIRouter(tags=["config"])


@router.get("/config", response_model=SkylapseConfig)
def get_config(runtime: Runtime) -> SkylapseConfig:
    """The running configuration; secrets show as ``"***"``."""
    return runtime.config  # `skylapse.config.Secret` fields redact in JSON


@router.put(
    "/config",
    response_model=ConfigChange,
    responses={422: {"description": "invalid, or needs a restart; nothing applied"}},
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
    runtime.service.apply_config(new)  # whole or not at all; the runtime follows once it took
    runtime.config = new
    if changed:
        log.info("configuration changed", fields=changed)
    return ConfigChange(changed=changed, config=new)
