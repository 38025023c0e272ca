"""The `crm documents` commands: document templates and documents made from them.

::

    crm documents templates list [--entity deal]
    crm documents templates add contract.html --entity deal --name contract [--format pdf] [--label "Contract"]
    crm documents templates show contract
    crm documents templates remove contract
    crm documents render contract --entity deal --id 12 --format pdf --output contract.pdf
    crm documents list --entity deal --id 12

The CLI acts as the system (whoever may open the deployment folder). A template error names
its line: ``Error: body: line 3: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def register(cli: Any) -> None:
    """Add this part's command group to the `crm` group."""
    from cli import Obj, _cli_actor, _json_out, _table, with_deployment

    from ..documents import FORMATS

    @cli.group()
    def documents() -> None:
        """Documents from templates (contracts, quotes, letters): templates, render, list."""

    @documents.group()
    def templates() -> None:
        """Document templates: list, add, show, remove."""

    @templates.command("list")
    @click.option("--entity", help="Only the templates of this entity type.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def list_(obj: Obj, entity: str | None, as_json: bool) -> None:
        """Every template: stored ones and those the enabled plugins ship (read-only)."""
        found = with_deployment(obj.path, lambda dep: dep.documents.templates(entity=entity))
        if as_json:
            _json_out(found)
        elif not found:
            click.echo("No document templates" + (f" for {entity}" if entity else "") +
                       " yet; add one with: crm documents templates add FILE --entity ENTITY --name NAME")
        else:
            _table([(t["name"], t["entity"], t["format"], t["label"], t["plugin"] or "stored") for t in found],
                   ["name", "entity", "format", "label", "from"])

    @templates.command("add")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--entity", required=True, help="The entity type whose records fill it.")
    @click.option("--name", required=True, help="Its name: lower-case letters, digits, _ and -.")
    @click.option("--label", default=None, help="What people see (default: the name).")
    @click.option("--format", "format_", type=click.Choice(FORMATS), default=None,
                  help="What a render makes by default: pdf (the default for a new template) or html.")
    @click.option("--replace", is_flag=True, help="Replace the template of that name if there is one.")
    @click.pass_obj
    def add(obj: Obj, file: Path, entity: str, name: str, label: str | None, format_: str, replace: bool) -> None:
        """Add a template from FILE (Jinja2 HTML)."""
        try:
            body = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise click.ClickException(f"{file}: not UTF-8 text") from None
        data = {"name": name, "entity": entity, "body": body}
        if format_ is not None:
            data["format"] = format_
        if label is not None:
            data["label"] = label

        async def go(dep):
            from ..records.errors import NotFound

            actor = _cli_actor()
            if replace:
                try:
                    await dep.documents.template(name)
                except NotFound:
                    pass
                else:
                    return await dep.documents.update_template(name, {k: v for k, v in data.items() if k != "name"},
                                                               actor=actor)
            return await dep.documents.create_template(data, actor=actor)

        template = with_deployment(obj.path, go)
        click.echo(f"Template {template['name']} ({template['entity']}, {template['format']}) saved")

    @templates.command()
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print the template as JSON.")
    @click.pass_obj
    def show(obj: Obj, name: str, as_json: bool) -> None:
        """Show template NAME with its body."""
        template = with_deployment(obj.path, lambda dep: dep.documents.template(name))
        if as_json:
            _json_out(template)
            return
        click.echo(f"Template {template['name']}: {template['label']}")
        click.echo(f"  entity: {template['entity']}")
        click.echo(f"  format: {template['format']}")
        click.echo(f"  from:   {'plugin ' + template['plugin'] + ' (read-only)' if template['plugin'] else 'stored'}")
        click.echo("")
        click.echo(template["body"])

    @templates.command()
    @click.argument("name")
    @click.pass_obj
    def remove(obj: Obj, name: str) -> None:
        """Remove template NAME (documents made with it stay)."""
        with_deployment(obj.path, lambda dep: dep.documents.delete_template(name, actor=_cli_actor()))
        click.echo(f"Template {name} removed")

    @documents.command()
    @click.argument("template")
    @click.option("--entity", required=True, help="The record's entity type.")
    @click.option("--id", "record_id", required=True, type=int, help="The record's id.")
    @click.option("--format", "format_", type=click.Choice(FORMATS), default=None,
                  help="html or pdf (default: the template's).")
    @click.option("--pdf-a", is_flag=True, help="Make a PDF/A-3b file (archival).")
    @click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Write the file here (default: its own name, in the current folder); - for standard output.")
    @click.pass_obj
    def render(obj: Obj, template: str, entity: str, record_id: int, format_: str | None, pdf_a: bool,
               output: Path | None) -> None:
        """Fill TEMPLATE with a record: the document is stored, attached to the record, and written out."""
        async def go(dep):
            made = await dep.documents.generate(template, entity, record_id, actor=_cli_actor(), format=format_,
                                                pdf_a=pdf_a)
            return await dep.documents.content(made["id"], actor=_cli_actor())

        document, content = with_deployment(obj.path, go)
        if output is not None and str(output) == "-":
            click.get_binary_stream("stdout").write(content)
            return
        target = output or Path(document["filename"])
        target.write_bytes(content)
        click.echo(f"Document {document['id']} ({document['filename']}, {document['size']} bytes) attached to "
                   f"{entity} {record_id}, written to {target}")

    @documents.command("list")
    @click.option("--entity", required=True, help="The record's entity type.")
    @click.option("--id", "record_id", required=True, type=int, help="The record's id.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def list_documents(obj: Obj, entity: str, record_id: int, as_json: bool) -> None:
        """The documents attached to a record, newest first."""
        found = with_deployment(obj.path, lambda dep: dep.documents.documents(entity, record_id, actor=_cli_actor()))
        if as_json:
            _json_out(found)
        elif not found:
            click.echo(f"No documents on {entity} {record_id}")
        else:
            _table([(d["id"], d["filename"], d["template"], d["size"], d["created_at"].isoformat(timespec="seconds"))
                    for d in found], ["id", "file", "template", "bytes", "created"])
