"""The ``crm salon`` commands."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from crmcore import Deployment


def commands(cli: Any) -> None:
    @cli.group()
    def salon() -> None:
        """Beauty salon commands."""

    @salon.command("recompute-metrics")
    @click.pass_obj
    def recompute_metrics(obj: Any) -> None:
        """Rebuild every client's salon metrics (after an import, or once the plugin is enabled on
        a deployment with history)."""
        from .metrics import recompute_all

        async def run() -> int:
            async with await Deployment.open(obj.path) as deployment:
                return await recompute_all(deployment)

        click.echo(f"{asyncio.run(run())} clients updated")
