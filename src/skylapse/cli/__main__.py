"""``python -m skylapse.cli``: the `skylapse` command."""

from skylapse.cli import app

app()
