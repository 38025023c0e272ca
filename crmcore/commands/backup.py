"""``crm backup`` and ``crm restore``: a whole deployment in one file and back (see crmcore.backup)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click


def register(cli: Any) -> None:
    @cli.command("backup")
    @click.argument("target", required=False, type=click.Path(path_type=Path))
    @click.pass_obj
    def backup_command(obj: Any, target: Path | None) -> None:
        """Back the deployment up: its settings and its whole database, in one file (TARGET: a
        file or a folder; default: the deployment's backups/ folder)."""
        from crmcore.backup import BackupError, backup
        from crmcore.deployment import DeploymentError

        try:
            made = asyncio.run(backup(obj.path, target))
        except (BackupError, DeploymentError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Backed up to {made} ({made.stat().st_size:,} bytes)")

    @cli.command("restore")
    @click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--yes", is_flag=True, help="Replace a database that holds records, without asking.")
    @click.pass_obj
    def restore_command(obj: Any, source: Path, yes: bool) -> None:
        """Restore a backup into the deployment (a new folder gets the backup's settings). The
        database's content is replaced exactly; stop the deployment's servers first."""
        from crmcore.backup import BackupError, read_manifest, restore
        from crmcore.deployment import DeploymentError

        try:
            manifest = read_manifest(source)
            try:
                asyncio.run(restore(obj.path, source, force=yes))
            except BackupError as exc:
                if yes or "holds records" not in str(exc):
                    raise
                click.confirm(f"{exc}. Replace them with the backup of {manifest['created_at']}?", abort=True)
                asyncio.run(restore(obj.path, source, force=True))
        except (BackupError, DeploymentError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Restored {manifest['name']} ({manifest['dialect']}, backed up {manifest['created_at']})")
