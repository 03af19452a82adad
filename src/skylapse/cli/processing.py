"""`skylapse worker` and `skylapse ingest`: the processing service's command-line side."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from skylapse import log
from skylapse.cli.common import DataOption, config_or_exit
from skylapse.config import default_data_dir


def worker(
    data: DataOption = None,
    workers: Annotated[int, typer.Option(help="Jobs run at once by this process.", min=1)] = 1,
    queue_url: Annotated[
        str | None,
        typer.Option(
            help="redis://… to share jobs between machines (default $SKYLAPSE_QUEUE_URL)."
        ),
    ] = None,
) -> None:
    """Run processing jobs from the queue until interrupted (start as many as you like)."""
    from skylapse.processing.jobs import JobService  # run, not registered (`skylapse.cli`)

    log.configure()
    service = JobService(data or default_data_dir(), queue_url)
    service.consumer(workers).run()


def ingest(
    data: DataOption = None,
    inbox: Annotated[
        Path | None, typer.Option(help="Where the capture side delivers (default DATA/inbox).")
    ] = None,
    watch: Annotated[bool, typer.Option(help="Keep scanning every --every seconds.")] = False,
    every: Annotated[float, typer.Option(help="Seconds between scans with --watch.")] = 5.0,
    render_after: Annotated[
        float | None,
        typer.Option(help="Queue a render once a sequence got no frame for this many minutes."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Skylapse YAML config file (processing.max_frame_pixels, processing.render).",
        ),
    ] = None,
) -> None:
    """Verify arriving frames into the store and catalog; quarantine what fails."""
    from skylapse.processing.ingest import Ingestor, align_pillow_pixel_limit
    from skylapse.processing.jobs import JobService

    settings = config_or_exit(config).processing
    max_pixels = settings.max_frame_pixels
    log.configure()
    align_pillow_pixel_limit(max_pixels)
    data_dir = data or default_data_dir()
    service = JobService(data_dir)
    ingestor = Ingestor(
        inbox or data_dir / "inbox",
        service.store,
        data_dir / "quarantine",
        service.catalog,
        max_pixels=max_pixels,
    )
    while True:
        report = ingestor.scan()
        if report.ingested or report.quarantined:
            typer.echo(
                f"ingested {report.ingested}, quarantined {len(report.quarantined)}, "
                f"already had {report.already_ingested}"
            )
        for where, why in report.refused + report.failed:
            typer.echo(f"{where}: {why}", err=True)
        if render_after is not None:
            idle = timedelta(minutes=render_after)
            for job in service.close_idle_sequences(idle, settings.render):
                typer.echo(f"queued render job {job}")
        if not watch:
            if report.failed:
                raise typer.Exit(1)
            return
        time.sleep(every)
