"""The `crm` commands of importing and exporting: ``crm import FILE``, ``crm import mappings``,
``crm import save-mapping``, ``crm export ENTITY`` / ``crm export --all``, ``crm vcard import`` and
``crm vcard export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def _helpers() -> Any:
    import cli  # the top-level module: imported lazily (it imports this one)

    return cli


def _parse_maps(values: tuple[str, ...]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for value in values:
        column, eq, field = value.partition("=")
        if not eq or not column:
            raise click.BadParameter(f"{value!r}: use COLUMN=FIELD (or COLUMN= to leave a column out)")
        found[column] = field.strip() or None
    return found


class _Bar:
    """A progress bar on standard error (shown on a terminal, or when asked for)."""

    WIDTH = 30

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        total = max(total, done, 1)
        filled = self.WIDTH * done // total
        sys.stderr.write(f"\rImporting [{'#' * filled}{'-' * (self.WIDTH - filled)}] "
                         f"{100 * done // total:3d}% {done:,}/{total:,} rows")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _print_result(result: Any) -> None:
    click.echo(("Dry run (nothing written): " if result.dry_run else "") + result.summary())
    mapped = ", ".join(f"{c} -> {f}" for c, f in result.mapping.items() if f)
    ignored = [c for c, f in result.mapping.items() if not f]
    click.echo(f"Columns: {mapped}" + (f"; not imported: {', '.join(ignored)}" if ignored else ""))
    if result.errors:
        for error in result.errors[:10]:
            click.echo(f"  row {error.row}, {error.column or 'row'}: {error.reason}", err=True)
        if result.error_count > 10:
            click.echo(f"  ... and {result.error_count - 10} more", err=True)
        if result.errors_file:
            click.echo(f"Error report: {result.errors_file}", err=True)
        else:
            click.echo("Write every error to a file with --errors FILE", err=True)


class _ImportGroup(click.Group):
    """``crm import FILE [options]`` runs an import; ``crm import mappings`` etc. are subcommands."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            return "run", self.commands["run"], args
        return super().resolve_command(ctx, args)


def register(cli: Any) -> None:
    """Add this part's command group to the `crm` group."""

    @cli.group("import", cls=_ImportGroup, context_settings={"ignore_unknown_options": True})
    def import_() -> None:
        """Import records from CSV, XLSX or vCard: crm import FILE [options] (see: crm import run --help);
        saved mappings: crm import mappings, save-mapping, remove-mapping."""

    @import_.command("run")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--entity", default="contact", show_default=True, help="The entity type the rows become.")
    @click.option("--mapping", "mapping_name", help="A saved mapping's name (see: crm import mappings).")
    @click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD",
                  help="Map one column (COLUMN= leaves it out); repeatable; overrides the guess or mapping.")
    @click.option("--save-mapping", help="Save the mapping used under this name.")
    @click.option("--dedup", help="Find duplicates by email and/or phone (default: both; 'none' for no dedup).")
    @click.option("--key", help="Find duplicates by this field (or id) instead.")
    @click.option("--on-duplicate", type=click.Choice(["create", "update", "skip"]), default="skip", show_default=True)
    @click.option("--dry-run", is_flag=True, help="Show what would happen; write nothing.")
    @click.option("--errors", "errors_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write the per-row error report (CSV) here.")
    @click.option("--encoding", help="The CSV file's encoding when not UTF-8 (e.g. cp1252, latin-1).")
    @click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "vcf"]), help="Default: from the file's name.")
    @click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal).")
    @click.pass_context
    def run(ctx: click.Context, file: Path, entity: str, mapping_name: str | None, maps: tuple[str, ...],
                save_mapping: str | None, dedup: str | None, key: str | None, on_duplicate: str, dry_run: bool,
                errors_file: Path | None, encoding: str | None, fmt: str | None, progress: bool | None) -> None:
        """Import FILE (.csv, .xlsx or .vcf) as records of --entity.

        Columns are matched to fields by their headers (names, labels, synonyms such as E-mail,
        Tel, Surname) unless --mapping/--map say otherwise. Rows with errors are rejected and
        listed (--errors FILE for all of them); the rest are written in all-or-nothing batches.
        """
        helpers = _helpers()
        overrides = _parse_maps(maps)
        dedup_list = None if dedup is None else ([] if dedup.strip().lower() == "none" else
                                                 [d.strip() for d in dedup.split(",") if d.strip()])
        bar = _Bar(progress if progress is not None else sys.stderr.isatty())

        async def go(dep: Any) -> Any:
            actor = helpers._cli_actor()
            result = await dep.imports.import_file(
                file, entity, actor=actor, fmt=fmt, encoding=encoding, mapping=mapping_name, overrides=overrides,
                dedup=dedup_list, key=key, on_duplicate=on_duplicate, dry_run=dry_run, errors_file=errors_file,
                progress=bar,
            )
            if save_mapping:
                await dep.imports.save_mapping(save_mapping, entity, result.mapping, actor=actor)
            return result

        try:
            result = helpers.with_deployment(ctx.obj.path, go)
        finally:
            bar.close()
        _print_result(result)
        if save_mapping:
            click.echo(f"Saved mapping {save_mapping!r}")
        if result.rejected:
            click.echo(f"Error: {result.rejected} rows rejected (the other rows were "
                       f"{'checked' if result.dry_run else 'imported'})", err=True)
            ctx.exit(1)

    @import_.command("mappings")
    @click.option("--entity", help="Only the mappings of this entity type.")
    @click.pass_obj
    def mappings(obj: Any, entity: str | None) -> None:
        """The saved column mappings."""
        helpers = _helpers()
        found = helpers.with_deployment(obj.path, lambda dep: dep.imports.mappings(entity))
        if not found:
            click.echo("No saved mappings; save one with: crm import FILE --save-mapping NAME")
            return
        helpers._table([(m["name"], m["entity"], ", ".join(f"{c} -> {f}" for c, f in m["columns"].items() if f))
                        for m in found], ["name", "entity", "columns"])

    @import_.command("save-mapping")
    @click.argument("name")
    @click.option("--entity", default="contact", show_default=True)
    @click.option("--map", "maps", multiple=True, required=True, metavar="COLUMN=FIELD")
    @click.pass_obj
    def save_mapping_(obj: Any, name: str, entity: str, maps: tuple[str, ...]) -> None:
        """Save a mapping of column headers to fields under NAME."""
        helpers = _helpers()
        columns = _parse_maps(maps)
        helpers.with_deployment(obj.path, lambda dep: dep.imports.save_mapping(
            name, entity, columns, actor=helpers._cli_actor()))
        click.echo(f"Saved mapping {name!r}")

    @import_.command("remove-mapping")
    @click.argument("name")
    @click.pass_obj
    def remove_mapping(obj: Any, name: str) -> None:
        """Remove the saved mapping NAME."""
        _helpers().with_deployment(obj.path, lambda dep: dep.imports.delete_mapping(name))
        click.echo(f"Removed mapping {name!r}")

    @cli.command("export")
    @click.argument("entity", required=False)
    @click.option("--all", "everything", is_flag=True, help="Every entity type, one file each in --output DIR.")
    @click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "json", "vcf"]), default=None,
                  help="Default: from --output's name, else csv (vcf: contacts only).")
    @click.option("--output", "-o", type=click.Path(path_type=Path), help="The file (or folder with --all); default: stdout.")
    @click.option("--filter", "filter_", help='Only records matching this filter (JSON), e.g. {"field": "city", "value": "Izmir"}.')
    @click.option("--search", "-q", help="Only records matching this full-text search.")
    @click.option("--sort", help="Order by these fields, comma-separated; -field for descending (default: id).")
    @click.option("--fields", help="Only these columns, comma-separated (id always comes first).")
    @click.pass_obj
    def export(obj: Any, entity: str | None, everything: bool, fmt: str | None, output: Path | None,
               filter_: str | None, search: str | None, sort: str | None, fields: str | None) -> None:
        """Export ENTITY's records (or --all) as CSV, XLSX, JSON or vCard."""
        from crmcore.records.query import ListQuery

        helpers = _helpers()
        if everything == bool(entity):
            raise click.UsageError("name one ENTITY or give --all")
        if everything:
            if output is None:
                raise click.UsageError("--all needs --output DIR")
            counts = helpers.with_deployment(obj.path, lambda dep: dep.exports.export_all(
                output, fmt=fmt or "csv", actor=helpers._cli_actor()))
            for name, count in counts.items():
                click.echo(f"{name}: {count} records", err=True)
            click.echo(f"Exported {sum(counts.values())} records of {len(counts)} entity types to {output}", err=True)
            return
        if fmt is None:
            fmt = output.suffix.lstrip(".").lower() if output is not None and output.suffix else "csv"
            if fmt not in ("csv", "xlsx", "json", "vcf"):
                fmt = "csv"
        if fmt == "xlsx" and output is None:
            raise click.UsageError("XLSX needs --output FILE")
        query = ListQuery(filter=_json_option(filter_, "--filter"), search=search or None,
                          sort=[s for s in (sort or "").split(",") if s],
                          fields=[f for f in fields.split(",") if f] if fields else None)
        count = _export(helpers, obj.path, entity, fmt, output, query)
        if output is not None:
            click.echo(f"Exported {count} {entity} records to {output}", err=True)

    @cli.group("vcard")
    def vcard() -> None:
        """Contacts as vCards (.vcf): import, export."""

    @vcard.command("export")
    @click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
    @click.option("--filter", "filter_", help="Only contacts matching this filter (JSON).")
    @click.pass_obj
    def vcard_export(obj: Any, output: Path | None, filter_: str | None) -> None:
        """Every contact (or those matching --filter) as vCard 3.0."""
        from crmcore.records.query import ListQuery

        helpers = _helpers()
        count = _export(helpers, obj.path, "contact", "vcf", output, ListQuery(filter=_json_option(filter_, "--filter")))
        if output is not None:
            click.echo(f"Exported {count} contacts to {output}", err=True)

    @vcard.command("import")
    @click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
    @click.option("--on-duplicate", type=click.Choice(["create", "update", "skip"]), default="skip", show_default=True)
    @click.option("--dry-run", is_flag=True)
    @click.option("--errors", "errors_file", type=click.Path(dir_okay=False, path_type=Path))
    @click.pass_context
    def vcard_import(ctx: click.Context, file: Path, on_duplicate: str, dry_run: bool, errors_file: Path | None) -> None:
        """Import the cards of FILE as contacts (duplicates by e-mail and phone)."""
        helpers = _helpers()
        result = helpers.with_deployment(ctx.obj.path, lambda dep: dep.imports.import_file(
            file, "contact", actor=helpers._cli_actor(), fmt="vcf", on_duplicate=on_duplicate, dry_run=dry_run,
            errors_file=errors_file))
        _print_result(result)
        if result.rejected:
            click.echo(f"Error: {result.rejected} rows rejected (the other rows were "
                       f"{'checked' if result.dry_run else 'imported'})", err=True)
            ctx.exit(1)


def _json_option(text: str | None, name: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from None


def _export(helpers: Any, path: Any, entity: str, fmt: str, output: Path | None, query: Any) -> int:
    """Export to ``output`` (stdout when None); how many records."""

    async def go(dep: Any) -> int:
        if output is None:
            count = await dep.exports.export(entity, sys.stdout.buffer, fmt=fmt, actor=helpers._cli_actor(), query=query)
            sys.stdout.flush()
            return count
        part = output.with_name(output.name + ".part")  # a failed export leaves no half-written file
        try:
            with open(part, "wb") as f:
                count = await dep.exports.export(entity, f, fmt=fmt, actor=helpers._cli_actor(), query=query)
            part.replace(output)
            return count
        finally:
            part.unlink(missing_ok=True)

    return helpers.with_deployment(path, go)
