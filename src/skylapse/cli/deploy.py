"""`skylapse install-service`, `skylapse doctor`, `skylapse archive` and `skylapse backup`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from skylapse import log
from skylapse.cli.common import DataOption, config_or_exit
from skylapse.config import ArchiveConfig, BackupConfig, default_data_dir
from skylapse.deploy import (
    UnitSettings,
    current_executable,
    install_capture_service,
    render_capture_unit,
)
from skylapse.doctor import CHECKS, parse_ssh_target, run_checks, ssh_target_from_config
from skylapse.transfer.rsync import SshTarget

_STATUS_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


def install_service(
    user: Annotated[str, typer.Option(help="Unprivileged user the service runs as.")] = "skylapse",
    buffer: Annotated[Path, typer.Option(help="The local frame buffer.")] = Path(
        "/var/lib/skylapse/buffer"
    ),
    config: Annotated[
        Path | None, typer.Option(help="Configuration YAML the service reads.")
    ] = None,
    unit_dir: Annotated[Path, typer.Option(help="Where unit files go.")] = Path(
        "/etc/systemd/system"
    ),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unit and the plan; change nothing.")
    ] = False,
) -> None:
    """Install the capture station as a systemd service (watchdog, restarts, sandbox)."""
    if config is None and Path("/etc/skylapse/skylapse.yaml").exists():
        config = Path("/etc/skylapse/skylapse.yaml")
    settings = UnitSettings(
        executable=current_executable(),
        user=user,
        buffer_dir=buffer.absolute(),
        config=config.absolute() if config else None,
    )
    if dry_run:
        typer.echo(render_capture_unit(settings), nl=False)
    try:
        done = install_capture_service(settings, unit_dir, dry_run=dry_run)
    except (PermissionError, OSError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    prefix = "would have: " if dry_run else ""
    for line in done:
        typer.echo(f"# {prefix}{line}" if dry_run else line)


def doctor(
    config: Annotated[Path | None, typer.Option(help="Configuration YAML.")] = None,
    buffer: Annotated[
        Path | None, typer.Option(help="Frame buffer to check (default: capture.buffer_dir).")
    ] = None,
    ssh: Annotated[
        str | None, typer.Option(help="Processing host as user@host[:port] (default: config).")
    ] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="Private key for --ssh.")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="known_hosts file for --ssh.")] = None,
    skip: Annotated[
        list[str], typer.Option(help="Skip a check: camera, disk, clock, ssh, codecs, rsync.")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
) -> None:
    """Check camera, disk space, clock sync, SSH to the processing host, codecs and rsync."""
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise typer.BadParameter(
            f"unknown checks {sorted(unknown)}; choose from {CHECKS}", param_hint="--skip"
        )
    cfg = config_or_exit(config)
    target: SshTarget | None
    if ssh is not None:
        try:
            target = parse_ssh_target(ssh)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--ssh") from None
        target = replace(target, key_file=ssh_key, known_hosts=known_hosts)
    else:
        target = ssh_target_from_config(cfg)
    checks = run_checks(buffer or cfg.capture.buffer_dir, target, skip=tuple(skip))
    table = Table(title="skylapse doctor", title_justify="left")
    table.add_column("check", style="bold")
    table.add_column("status")
    table.add_column("found")
    table.add_column("what to do")
    for c in checks:
        table.add_row(c.name, _STATUS_STYLE[c.status], c.detail, c.fix)
    console = Console(width=160)
    console.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        console.print(f"{len(bad)} of {len(checks)} checks need attention.")
        raise typer.Exit(1)
    console.print(f"all {len(checks)} checks passed.")


def archive(
    data: DataOption = None,
    frames: Annotated[
        bool | None, typer.Option(help="Keep source frames with each timelapse.")
    ] = None,
    max_age_days: Annotated[
        float | None, typer.Option(help="Delete backed-up timelapses older than this.")
    ] = None,
    max_total_gb: Annotated[
        float | None, typer.Option(help="Delete the oldest backed-up ones above this size.")
    ] = None,
    backup: Annotated[
        bool, typer.Option(help="Back up to S3 first, when a bucket is configured.")
    ] = True,
) -> None:
    """Archive finished renders, clean working folders, back up, then apply retention.

    Settings not given as options come from SKYLAPSE_ARCHIVE_* and SKYLAPSE_BACKUP_*.
    """
    from skylapse.processing.archive import Archive
    from skylapse.processing.backup import S3Backup

    log.configure()
    cfg = ArchiveConfig.from_env()
    updates = {"include_frames": frames, "max_age_days": max_age_days, "max_total_gb": max_total_gb}
    given = {k: v for k, v in updates.items() if v is not None}
    cfg = ArchiveConfig(**{**cfg.model_dump(), **given})
    data_dir = data or default_data_dir()
    store = Archive(data_dir, root=cfg.dir)
    archived = 0
    for job in store.catalog.jobs(state="done", limit=1_000_000):
        if job.kind == "render" and store.catalog.timelapse_for_job(job.id) is None:
            store.archive_job_outputs(job.id, include_frames=cfg.include_frames)
            archived += 1
    removed = store.cleanup_working()
    failed: dict[int, str] = {}
    backup_cfg = BackupConfig.from_env()
    backed: list[int] = []
    if backup and backup_cfg.enabled:
        backed, failed = S3Backup(backup_cfg, store.root / ".backup-state").backup_pending(store)
    report = store.enforce_retention(cfg.max_age, cfg.max_total_bytes)
    typer.echo(
        f"archived {archived}, backed up {len(backed)}, deleted {len(report.deleted)} "
        f"(kept {len(report.kept_not_backed_up)} not backed up), working folders removed "
        f"{len(removed)}; archive holds {report.total_bytes / 1e9:.2f} GB"
    )
    for tid, error in failed.items():
        typer.echo(f"backup of timelapse {tid} failed: {error}", err=True)
    if failed:
        raise typer.Exit(1)


def backup(
    data: DataOption = None,
    bucket: Annotated[
        str | None, typer.Option(help="Bucket (default $SKYLAPSE_BACKUP_BUCKET).")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint (default: AWS).")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Key prefix in the bucket.")] = None,
    part_size_mib: Annotated[int | None, typer.Option(help="Multipart part size.", min=5)] = None,
) -> None:
    """Back up every archived timelapse not yet backed up; verified by checksum, resumable.

    Credentials come from the standard AWS_* environment (or AWS_PROFILE).
    """
    from skylapse.processing.archive import Archive
    from skylapse.processing.backup import S3Backup

    log.configure()
    cfg = BackupConfig.from_env()
    updates = {
        "bucket": bucket,
        "endpoint_url": endpoint_url,
        "prefix": prefix,
        "part_size_mib": part_size_mib,
    }
    given = {k: v for k, v in updates.items() if v is not None}
    cfg = BackupConfig(**{**cfg.model_dump(), **given})
    if not cfg.enabled:
        raise typer.BadParameter(
            "no bucket: pass --bucket or set SKYLAPSE_BACKUP_BUCKET", param_hint="--bucket"
        )
    store = Archive(data or default_data_dir(), root=ArchiveConfig.from_env().dir)
    done, failed = S3Backup(cfg, store.root / ".backup-state").backup_pending(store)
    typer.echo(f"backed up {len(done)} timelapses to s3://{cfg.bucket}/{cfg.prefix}")
    for tid, error in failed.items():
        typer.echo(f"timelapse {tid} failed: {error}", err=True)
    if failed:
        raise typer.Exit(1)
