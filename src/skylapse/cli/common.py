"""What the command modules share: the error console, one-line failures, usage errors from a
pydantic validation or the configuration file, and the ``--data`` option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from skylapse.config import DATA_DIR_ENV, ConfigError, SkylapseConfig, load_config

#: Progress, errors and summaries go to stderr; stdout is for what a command outputs.
console = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help=f"Processing data folder (default ${DATA_DIR_ENV} or ./skylapse-data)."
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def bad_parameter(exc: ValidationError, flags: dict[str, str] | None = None) -> typer.BadParameter:
    """The first error of a validation as typer's usage error (exit status 2), naming the flag:
    ``--name`` for the field ``name``, unless ``flags`` names it otherwise."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    flag = (flags or {}).get(field, "--" + field.replace("_", "-"))
    message = str(error["msg"]).removeprefix("Value error, ")
    return typer.BadParameter(message, param_hint=flag)


def config_or_exit(path: Path | None) -> SkylapseConfig:
    """The configuration (``--config``, else the packaged default); a bad file is a usage error
    naming it."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
