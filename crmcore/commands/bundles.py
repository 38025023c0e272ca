"""``crm bundle``: export a deployment's configuration to one file, show what applying one would
change, apply it (see crmcore.bundles)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click


def _open_and(path: Path, action: Any) -> Any:
    import crmcore

    async def go() -> Any:
        async with await crmcore.Deployment.open(path) as dep:
            return await action(dep)
    return asyncio.run(go())


def _show(steps: list[dict[str, Any]]) -> None:
    marks = {"add": "+", "change": "~", "same": "=", "only_here": " "}
    for step in steps:
        keys = f" ({', '.join(step['keys'])})" if step["keys"] else ""
        note = "  (only here: kept)" if step["change"] == "only_here" else ""
        click.echo(f"{marks[step['change']]} {step['section']}: {step['item']}{keys}{note}")


def register(cli: Any) -> None:
    @cli.group("bundle")
    def bundle() -> None:
        """Configuration bundles: custom fields, pipelines, roles, rules, web forms, plugins."""

    @bundle.command("export")
    @click.argument("target", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.pass_obj
    def export_command(obj: Any, target: Path | None) -> None:
        """Write the deployment's configuration as a bundle (JSON) to TARGET or standard output."""
        from crmcore.bundles import export_bundle
        from crmcore.deployment import DeploymentError

        try:
            data = _open_and(obj.path, export_bundle)
        except DeploymentError as exc:
            raise click.ClickException(str(exc)) from None
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        if target is None:
            click.echo(text)
        else:
            target.write_text(text + "\n", encoding="utf-8")
            click.echo(f"Wrote {target}", err=True)

    @bundle.command("diff")
    @click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.pass_obj
    def diff_command(obj: Any, source: Path) -> None:
        """Show what applying the bundle SOURCE would change (+ add, ~ change, = same)."""
        from crmcore.bundles import BundleError, load_bundle, plan
        from crmcore.deployment import DeploymentError

        try:
            data = load_bundle(source)
            steps = _open_and(obj.path, lambda dep: plan(dep, data))
        except (BundleError, DeploymentError) as exc:
            raise click.ClickException(str(exc)) from None
        _show(steps)

    @bundle.command("apply")
    @click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--yes", is_flag=True, help="Apply without asking.")
    @click.pass_obj
    def apply_command(obj: Any, source: Path, yes: bool) -> None:
        """Apply the bundle SOURCE: shows what changes, asks, applies (nothing is deleted)."""
        from crmcore.bundles import BundleError, apply, load_bundle, plan
        from crmcore.deployment import DeploymentError

        try:
            data = load_bundle(source)
            steps = [s for s in _open_and(obj.path, lambda dep: plan(dep, data)) if s["change"] in ("add", "change")]
            if not steps:
                click.echo("Nothing to change: the deployment already has this configuration.")
                return
            _show(steps)
            if not yes:
                click.confirm(f"Apply these {len(steps)} changes?", abort=True)
            done = _open_and(obj.path, lambda dep: apply(dep, data))
        except (BundleError, DeploymentError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Applied {len(done)} changes.")
