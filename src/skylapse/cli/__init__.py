"""The `skylapse` command line: `app`, with one module per command group.

==========================  ==================================================================
module                      commands
==========================  ==================================================================
`skylapse.cli.render`       ``render``
`skylapse.cli.demo`         ``demo``
`skylapse.cli.processing`   ``worker``, ``ingest``
`skylapse.cli.capture`      ``plan``, ``capture``, ``frames``
`skylapse.cli.deploy`       ``install-service``, ``doctor``, ``archive``, ``backup``
`skylapse.cli.serve`        ``serve``
`skylapse.cli.common`       the error console, usage errors, ``--data``
==========================  ==================================================================

Only this package imports typer; the commands call the services' own functions and turn their
errors into one-line messages and exit statuses (2 for a usage error).

Imports. A command module imports at its top what its options need (the configuration, the
render options' schema, the capture side's parsers) and no more: the processing code, PyAV,
huey, boto3 and the demo are imported inside the command that runs them. So every command is
registered, yet `skylapse serve capture` on a Pi loads none of it (its footprint: README,
"Capture footprint"; checked by ``tests/imaging/test_imaging.py``). Nothing is imported late
to break a cycle: there is none (``tests/test_layout.py``).
"""

from __future__ import annotations

import typer

from skylapse.cli import capture, demo, deploy, processing, render, serve

app = typer.Typer(
    name="skylapse",
    help="Unattended timelapse station and the service that turns its frames into timelapses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# In the order `skylapse --help` lists them.
app.command("render")(render.render)
app.command("demo")(demo.demo)
app.command("worker")(processing.worker)
app.command("ingest")(processing.ingest)
app.command("plan")(capture.plan)
app.command("capture")(capture.capture)
app.command("frames")(capture.frames)
app.command("sky")(capture.sky)
app.command("install-service")(deploy.install_service)
app.command("doctor")(deploy.doctor)
app.command("archive")(deploy.archive)
app.command("backup")(deploy.backup)
app.command("serve")(serve.serve)
