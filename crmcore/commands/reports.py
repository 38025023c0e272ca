"""The `crm reports` commands: list, show, run (table, CSV, JSON, XLSX), add, remove."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def register(cli: Any) -> None:
    """Add this part's command group to the `crm` group."""
    import cli as crm_cli  # the root module: its helpers (opened lazily, no import cycle)

    @cli.group()
    def reports() -> None:
        """Reports (built-in, plugins' and saved): list, show, run, add, remove."""

    @reports.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def list_(obj: Any, as_json: bool) -> None:
        """Every report: its name, entity, source and chart."""
        found = crm_cli.with_deployment(obj.path, lambda dep: dep.reports.list())
        if as_json:
            crm_cli._json_out(found)
            return
        crm_cli._table([(r["name"], r["entity"], r["source"], r["chart"], r["label"]) for r in found],
                       ["name", "entity", "source", "chart", "label"])

    @reports.command()
    @click.argument("name")
    @click.pass_obj
    def show(obj: Any, name: str) -> None:
        """Show report NAME's definition as JSON (the form crm reports add takes)."""
        crm_cli._json_out(crm_cli.with_deployment(obj.path, lambda dep: dep.reports.get(name)))

    @reports.command()
    @click.argument("name")
    @click.option("--format", "form", type=click.Choice(["table", "csv", "json", "xlsx"]), default=None,
                  help="table (default on screen), csv, json or xlsx (default for an --output ending in .xlsx).")
    @click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
    @click.option("--filter", "extra", help="An extra filter: JSON in the filter language.")
    @click.pass_obj
    def run(obj: Any, name: str, form: str | None, output: Path | None, extra: str | None) -> None:
        """Run report NAME (as the system: every record) and print or save its figures."""
        import msgspec

        from crmcore.reports import json_default, table, to_csv, to_xlsx

        narrowed = None
        if extra:
            try:
                narrowed = msgspec.json.decode(extra)
            except msgspec.DecodeError as exc:
                raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--filter") from None
        if form is None:
            form = {".xlsx": "xlsx", ".csv": "csv", ".json": "json"}.get(output.suffix.lower(), "table") if output else "table"
        result = crm_cli.with_deployment(obj.path, lambda dep: dep.reports.run(name, filter=narrowed))
        if form == "xlsx":
            if output is None:
                raise click.BadParameter("xlsx needs --output FILE", param_hint="--format")
            output.write_bytes(to_xlsx(result))
            click.echo(f"Wrote {len(result['rows'])} rows to {output}", err=True)
            return
        if form == "csv":
            text = to_csv(result)
        elif form == "json":
            text = msgspec.json.format(msgspec.json.encode(result, enc_hook=json_default), indent=2).decode() + "\n"
        else:
            headers, rows = table(result)
            if output is None:
                click.echo(f"{result['label']}")
                if not rows:
                    click.echo("No figures: no records match.")
                else:
                    crm_cli._table(rows, headers)
                if result["truncated"]:
                    click.echo("(more groups than the report's limit)")
                return
            text = "\n".join("\t".join(r) for r in [headers, *rows]) + "\n"
        if output is None:
            click.echo(text, nl=False)
        else:
            output.write_text(text, encoding="utf-8")
            click.echo(f"Wrote {len(result['rows'])} rows to {output}", err=True)

    @reports.command()
    @click.argument("file")
    @click.pass_obj
    def add(obj: Any, file: str) -> None:
        """Save the report defined in FILE (JSON; - for standard input), or replace it."""
        from crmcore.auth import SYSTEM

        data = crm_cli._read_json(file)
        saved = crm_cli.with_deployment(obj.path, lambda dep: dep.reports.save(data, SYSTEM))
        click.echo(f"Saved report {saved['name']} ({saved['entity']}); run it with: crm reports run {saved['name']}")

    @reports.command()
    @click.argument("name")
    @click.pass_obj
    def remove(obj: Any, name: str) -> None:
        """Remove saved report NAME."""
        from crmcore.auth import SYSTEM

        crm_cli.with_deployment(obj.path, lambda dep: dep.reports.remove(name, SYSTEM))
        click.echo(f"Removed report {name}")
