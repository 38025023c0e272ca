"""Documents from templates: contracts, quotes, letters filled from a record's data.

**Templates** are Jinja2, per entity type, stored in the database (``crm_document_template``:
name, entity, label, format ``html`` or ``pdf``, body) and managed by API
(``/api/document-templates``) and CLI (``crm documents templates``) by those with the
``manage_schema`` permission. Plugins ship templates of their own by convention: every file
``<name>.<entity>.html`` in a ``documents/`` folder beside the plugin's module is listed as the
read-only template ``<plugin>.<name>`` (default format ``pdf``); stored templates' names have no
dot, so the two never collide.

**Rendering** is sandboxed (admins edit templates: :class:`ImmutableSandboxedEnvironment`, with
autoescaping, and any attribute starting with ``_`` refused outright, both when a template is
saved and when it runs). A template sees:

- ``record``: the record as the requesting actor reads it (fields hidden from their role are
  absent, so print nothing);
- ``related``: ``related.contact``, ``related.company``... the records the record's relation
  fields point to (those the actor may read), ``related.owner`` (the owner's user record), and ``related("deal")``: the records of another
  entity type pointing to this one (a contact's or company's deals, a deal's activities), at
  most ``limit=100``;
- ``entity`` (``name``, ``label``), ``settings`` (``name``, ``locale``, ``currency``,
  ``timezone``, ``region``, ``base_url``), ``now``, ``user`` (who asked: ``name``, ``email``) and
  ``template`` (its name and label);
- filters ``money``, ``date``, ``datetime``, ``time`` and ``number`` in the deployment's locale
  and time zone. A value printed as it is shows the same way (``{{ record.amount }}`` is
  ``€2,400.00``, a datetime ``Mar 5, 2031 5:00 PM`` in the deployment's zone), an empty one as
  nothing.
- whatever plugins add for the record's entity type through ``crm_document_context`` (the
  invoicing plugin's ``invoice``: its computed lines, tax breakdown and parties).

A syntax or runtime error is a :class:`ValidationError` naming ``body`` with ``line N: ...``;
an attempt to reach past the sandbox (``{{ ''.__class__.__mro__ }}``) is refused the same way, as
are ``*`` and ``**`` making huge values, a document over :data:`MAX_OUTPUT` characters, one
taking over :data:`MAX_SECONDS` to fill (checked as it is written out), loops over ``range()``
running over :data:`MAX_RANGE` times in all, and more than :data:`MAX_RELATED_CALLS` calls of
``related()``.

**Output** is HTML, or PDF made from it by WeasyPrint (``pdf_a=True``: PDF/A-3b). WeasyPrint
fetches nothing: only ``data:`` URLs (inline images) are loaded, so a template can neither read
the server's files nor reach the network.

**Generated documents** are stored with their bytes in the database (``crm_document.content``:
one place to back up, the same on SQLite and PostgreSQL), attached to the record (listed by
``/api/documents?entity=&record_id=``, downloaded by ``/api/documents/{id}``) and shown on its
timeline (kind ``document``). Reading them needs read access to the record; and since a
document shows what its maker could see, one made by someone who saw fields hidden from the
reader (``crm_document.hidden`` keeps the fields hidden from the maker) is not the reader's to
see: they can make their own. The automation action ``generate_document`` makes one when a rule
fires (as the automation user).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import time
import traceback
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from .entities import FieldType
from .fieldvalues import Money, Phone
from .records.errors import FieldError, Forbidden, NotFound, ValidationError
from .records.query import ListQuery

if TYPE_CHECKING:
    from .auth.permissions import Actor
    from .deployment import Deployment

__all__ = ["DOCUMENT_TABLES", "DocumentService", "FORMATS", "MEDIA_TYPES"]

#: System tables (placeholders as in storage.schema.SYSTEM_TABLES). ``content`` is BYTEA: a
#: binary column on PostgreSQL; SQLite stores the bytes as a BLOB whatever the declared type.
DOCUMENT_TABLES: list[str] = [
    """CREATE TABLE IF NOT EXISTS crm_document_template (
        "id" {serial_kept}, "name" TEXT NOT NULL UNIQUE, "entity" TEXT NOT NULL, "label" TEXT NOT NULL,
        "format" TEXT NOT NULL, "body" TEXT NOT NULL, "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL,
        "created_by" BIGINT)""",
    """CREATE TABLE IF NOT EXISTS crm_document (
        "id" {serial_kept}, "template" TEXT NOT NULL, "entity" TEXT NOT NULL, "record_id" BIGINT NOT NULL,
        "format" TEXT NOT NULL, "filename" TEXT NOT NULL, "content" BYTEA NOT NULL, "size" BIGINT NOT NULL,
        "created_by" BIGINT, "created_at" TEXT NOT NULL, "hidden" TEXT NOT NULL DEFAULT '[]')""",
    """CREATE INDEX IF NOT EXISTS crm_document_record ON crm_document ("entity", "record_id", "id")""",
]

FORMATS = ("html", "pdf")
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_BODY = 200_000
MAX_LABEL = 200
#: At most this many records ``related("deal")`` gives.
MAX_RELATED = 500
#: The settings a template may read (never SMTP credentials and the like).
SHOWN_SETTINGS = ("name", "locale", "currency", "timezone", "region", "base_url")
#: ``related("deal")`` calls one render may make (each is a query).
MAX_RELATED_CALLS = 50
#: The largest document (characters of HTML) and the longest a template may take to fill.
MAX_OUTPUT = 20_000_000
#: How many numbers ``range()`` may give in one render, all loops together.
MAX_RANGE = 1_000_000
MAX_SECONDS = 30.0
#: What ``*`` may repeat and ``**`` raise to, at most.
MAX_REPEAT = 1_000_000
MAX_POWER = 1000
MAX_BITS = 100_000
#: A plugin's templates: ``documents/<name>.<entity>.html``.
PLUGIN_FOLDER = "documents"
_PLUGIN_FILE = re.compile(r"^([a-z0-9][a-z0-9_-]*)\.([a-z][a-z0-9_]*)\.html$")

_TEMPLATE_COLUMNS = '"id", "name", "entity", "label", "format", "body", "created_at", "updated_at", "created_by"'
_DOCUMENT_COLUMNS = ('"id", "template", "entity", "record_id", "format", "filename", "size", "created_by", "created_at", '
                     '"hidden"')


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _template_row(row: tuple) -> dict[str, Any]:
    return {"name": row[1], "entity": row[2], "label": row[3], "format": row[4], "body": row[5],
            "created_at": _time(row[6]), "updated_at": _time(row[7]), "created_by": row[8],
            "plugin": None, "read_only": False}


def _document_row(row: tuple) -> dict[str, Any]:
    return {"id": row[0], "template": row[1], "entity": row[2], "record_id": row[3], "format": row[4],
            "filename": row[5], "size": row[6], "created_by": row[7], "created_at": _time(row[8]),
            "media_type": MEDIA_TYPES.get(row[4], "application/octet-stream"),
            "_hidden": frozenset(msgspec.json.decode(row[9]))}


def hidden_of(actor: Actor) -> frozenset[str]:
    """``entity.field`` of every field hidden from ``actor`` (nothing for the system)."""
    if actor.system:
        return frozenset()
    return frozenset(f"{entity}.{field}" for entity, fields in actor.role.fields.items()
                     for field, access in fields.items() if access == "hidden")


def _public(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if not k.startswith("_")}


def _body_error(message: str, line: int | None = None) -> ValidationError:
    text = f"line {line}: {message}" if line else message
    return ValidationError([FieldError("body", "template_error", text)])


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, stricter: reaching for an unsafe attribute fails at once (the stock one
    returns an undefined value that fails only when used, or prints as nothing), and ``*`` and
    ``**`` refuse results too large to be a document's (``'x' * 10**10`` would take the memory;
    intercepted, they are not folded when the template is compiled either)."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed "
                            "in a document template")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and not isinstance(right, bool) and (abs(right) > MAX_POWER or (
                    isinstance(left, int) and abs(left) > 1 and abs(left).bit_length() * right > MAX_BITS)):
                raise SecurityError("a power this large is not allowed in a document template")
            return left ** right
        for text, times in ((left, right), (right, left)):
            if isinstance(text, (str, list, tuple)) and isinstance(times, int) and len(text) * times > MAX_REPEAT:
                raise SecurityError(f"a repetition longer than {MAX_REPEAT} is not allowed in a document template")
        return left * right


def _unsafe_names(tree: nodes.Template) -> list[tuple[int, str]]:
    """Attributes and keys a template names that start with ``_`` (the way out of a sandbox)."""
    found = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        if name is not None and name.startswith("_"):
            found.append((node.lineno, name))
    return found


def _template_line(exc: BaseException) -> int | None:
    """The template line a runtime error happened on (Jinja rewrites its traceback so)."""
    line = getattr(exc, "lineno", None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


class _Related(dict):
    """``related.contact``: the record a relation field points to; ``related("deal")``: records
    of another type pointing to this one."""

    def __init__(self, records: dict[str, Any], finder: Any):
        super().__init__(records)
        self._finder = finder

    async def __call__(self, entity: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._finder(entity, limit)


def html_to_pdf(html: str, *, pdf_a: bool = False) -> bytes:
    """A PDF of ``html`` (WeasyPrint; ``pdf_a``: PDF/A-3b)."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    options: dict[str, Any] = {"pdf_variant": "pdf/a-3b"} if pdf_a else {}
    # Inline data: URLs only (embedded images): no file of the server, no network.
    fetcher = URLFetcher(allowed_protocols=("data",), timeout=1)
    return HTML(string=html, url_fetcher=fetcher, base_url=None).write_pdf(**options)


class DocumentService:
    """Templates, rendering and generated documents (``deployment.documents``)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self._env: _Sandbox | None = None
        self._env_key: Any = None

    @property
    def db(self):
        return self.deployment.db

    # -- the sandbox -------------------------------------------------------------------------

    def _format(self):
        from .web.render import UserFormat

        settings = self.deployment.settings
        return UserFormat(settings.locale, settings.timezone, settings.currency)

    def environment(self) -> _Sandbox:
        """The sandboxed environment, with the formatting filters of the deployment's locale."""
        settings = self.deployment.settings
        key = (settings.locale, settings.timezone, settings.currency)
        if self._env is None or self._env_key != key:
            fmt = self._format()

            def display(value: Any) -> Any:
                if value is None or isinstance(value, ChainableUndefined):
                    return ""
                if isinstance(value, Money):
                    return fmt.money(value)
                if isinstance(value, dt.datetime):
                    return fmt.datetime(value)
                if isinstance(value, dt.date):
                    return fmt.date(value)
                if isinstance(value, Phone):
                    return value.raw
                if isinstance(value, (list, tuple)):
                    return ", ".join(str(display(v)) for v in value)
                return value

            def money(value: Any, currency: str | None = None) -> str:
                if value is None or isinstance(value, ChainableUndefined) or value == "":
                    return ""
                return fmt.money(value, currency)

            def number(value: Any, digits: int | None = None) -> str:
                if value is None or isinstance(value, ChainableUndefined) or value == "":
                    return ""
                if digits is not None:
                    value = Decimal(str(value)).quantize(Decimal(1).scaleb(-int(digits)))
                return fmt.number(value)

            def blank_or(fn):
                return lambda value, *args: "" if isinstance(value, ChainableUndefined) else fn(value, *args)

            env = _Sandbox(autoescape=True, enable_async=True, trim_blocks=True, lstrip_blocks=True,
                           undefined=ChainableUndefined, finalize=display)
            env.filters.update({
                "money": money, "number": number, "date": blank_or(fmt.date), "datetime": blank_or(fmt.datetime),
                "time": blank_or(lambda v: fmt.time(dt.datetime.fromisoformat(v) if isinstance(v, str) else v)),
            })
            self._env, self._env_key = env, key
        return self._env

    def check_body(self, body: Any) -> str:
        """``body`` if it is a template that parses and names nothing unsafe; a ValidationError
        naming ``body`` with the line otherwise."""
        if not isinstance(body, str) or not body.strip():
            raise ValidationError([FieldError("body", "required", "the template's text (Jinja2 HTML)")])
        if len(body) > MAX_BODY:
            raise ValidationError([FieldError("body", "invalid", f"a template has at most {MAX_BODY} characters")])
        try:
            tree = self.environment().parse(body)
            self.environment().from_string(body)  # compiling finds unknown filters and tests
        except TemplateSyntaxError as exc:
            raise _body_error(exc.message or str(exc), exc.lineno) from None
        unsafe = sorted(_unsafe_names(tree))
        if unsafe:
            line, name = unsafe[0]
            raise _body_error(f"{name!r} is not allowed in a document template (names starting with _ are "
                              "internals the sandbox refuses)", line)
        return body

    # -- templates ---------------------------------------------------------------------------

    def plugin_templates(self) -> list[dict[str, Any]]:
        """The templates enabled plugins ship (``documents/<name>.<entity>.html``), read-only."""
        from .web.render import plugin_dirs

        found = []
        for plugin, folder in sorted(plugin_dirs(self.deployment, PLUGIN_FOLDER).items()):
            for file in sorted(folder.iterdir()):
                match = _PLUGIN_FILE.match(file.name)
                if not match:
                    continue
                name, entity = match.groups()
                if self.deployment.registry.get(entity) is None:
                    continue  # for an entity type of a plugin that is not enabled
                found.append({"name": f"{plugin}.{name}", "entity": entity, "label": name.replace("_", " ").capitalize(),
                              "format": "pdf", "body": None, "path": file, "created_at": None, "updated_at": None,
                              "created_by": None, "plugin": plugin, "read_only": True})
        return found

    async def templates(self, *, entity: str | None = None) -> list[dict[str, Any]]:
        """Every template (stored ones, then the plugins'), without their bodies."""
        rows = await self.db.fetch(f'SELECT {_TEMPLATE_COLUMNS} FROM crm_document_template ORDER BY "name"')
        found = [_template_row(row) for row in rows] + self.plugin_templates()
        out = []
        for template in found:
            if entity is None or template["entity"] == entity:
                out.append({k: v for k, v in template.items() if k not in ("body", "path")})
        return out

    async def template(self, name: Any) -> dict[str, Any]:
        """One template with its body; NotFound when there is none of that name."""
        if isinstance(name, str) and "." not in name:
            row = await self.db.fetchrow(f'SELECT {_TEMPLATE_COLUMNS} FROM crm_document_template WHERE "name" = ?', (name,))
            if row is not None:
                return _template_row(row)
        elif isinstance(name, str):
            for template in self.plugin_templates():
                if template["name"] == name:
                    path: Path = template.pop("path")
                    template["body"] = path.read_text(encoding="utf-8")
                    return template
        raise NotFound("document template", name)

    @staticmethod
    def _check_manager(actor: Actor) -> None:
        if not actor.has("manage_schema"):
            raise Forbidden("managing document templates needs the manage_schema permission")

    def _check(self, data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        allowed = {"name", "entity", "label", "format", "body"}
        errors: list[FieldError] = []
        wrong = sorted(set(data) - allowed)
        if wrong:
            raise ValidationError([FieldError(wrong[0], "unknown_field", f"a template has {', '.join(sorted(allowed))}")])
        out: dict[str, Any] = {}
        if not partial or "name" in data:
            name = data.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                errors.append(FieldError("name", "invalid", "a name of lower-case letters, digits, _ and - "
                                                            "(at most 100), e.g. contract"))
            out["name"] = name
        if not partial or "entity" in data:
            entity = data.get("entity")
            if not isinstance(entity, str) or self.deployment.registry.get(entity) is None:
                known = ", ".join(sorted(e.name for e in self.deployment.registry))
                errors.append(FieldError("entity", "invalid", f"an entity type: {known}"))
            out["entity"] = entity
        if "label" in data:
            label = data["label"]
            if not isinstance(label, str) or len(label) > MAX_LABEL:
                errors.append(FieldError("label", "invalid", f"a text of at most {MAX_LABEL} characters"))
            out["label"] = label
        if not partial or "format" in data:
            fmt = data.get("format", "pdf")
            if fmt not in FORMATS:
                errors.append(FieldError("format", "invalid", f"format is one of {', '.join(FORMATS)}"))
            out["format"] = fmt
        if not partial or "body" in data:
            try:
                out["body"] = self.check_body(data.get("body"))
            except ValidationError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ValidationError(errors)
        return out

    async def create_template(self, data: Any, *, actor: Actor) -> dict[str, Any]:
        """Add a template: ``{"name", "entity", "body", "format": "html"|"pdf", "label"}``."""
        self._check_manager(actor)
        if not isinstance(data, dict):
            raise ValidationError([FieldError("body", "invalid", "a template is an object: name, entity, format, body")])
        values = self._check(data, partial=False)
        if values["name"] == "new":  # /settings/documents/new is the page for a new template
            raise ValidationError([FieldError("name", "reserved", "'new' is reserved; choose another name")])
        exists = await self.db.fetchval('SELECT 1 FROM crm_document_template WHERE "name" = ?', (values["name"],))
        if exists:
            raise ValidationError([FieldError("name", "taken", f"there is a template {values['name']!r} already")])
        now = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            await self.db.execute(
                'INSERT INTO crm_document_template ("name", "entity", "label", "format", "body", "created_at", '
                '"updated_at", "created_by") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                (values["name"], values["entity"], values.get("label") or values["name"], values["format"],
                 values["body"], now, now, actor.user_id))
        return await self.template(values["name"])

    async def _stored(self, name: str) -> dict[str, Any]:
        template = await self.template(name)
        if template["read_only"]:
            raise Forbidden(f"template {name!r} comes with plugin {template['plugin']!r}: it cannot be changed; "
                            "copy its body into a template of your own")
        return template

    async def update_template(self, name: str, changes: Any, *, actor: Actor) -> dict[str, Any]:
        """Change a stored template's ``entity``, ``label``, ``format`` or ``body``."""
        self._check_manager(actor)
        await self._stored(name)
        if not isinstance(changes, dict):
            raise ValidationError([FieldError("body", "invalid", "the changes are an object: entity, label, format, body")])
        if "name" in changes and changes["name"] != name:
            raise ValidationError([FieldError("name", "invalid", "a template's name cannot change; add a new one")])
        values = self._check({k: v for k, v in changes.items() if k != "name"}, partial=True)
        if not values:
            return await self.template(name)
        values["updated_at"] = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            await self.db.execute(
                f'UPDATE crm_document_template SET {", ".join(f"{chr(34)}{k}{chr(34)} = ?" for k in values)} '
                'WHERE "name" = ?', (*values.values(), name))
        return await self.template(name)

    async def delete_template(self, name: str, *, actor: Actor) -> None:
        """Remove a stored template; the documents made with it stay."""
        self._check_manager(actor)
        await self._stored(name)
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_document_template WHERE "name" = ?', (name,))

    # -- rendering ---------------------------------------------------------------------------

    async def _context(self, template: dict[str, Any], entity_name: str, record_id: Any, actor: Actor) -> dict[str, Any]:
        registry = self.deployment.registry
        entity = registry.get(entity_name) if isinstance(entity_name, str) else None
        if entity is None:
            raise ValidationError([FieldError("entity", "invalid", "an entity type: " + ", ".join(
                sorted(e.name for e in registry)))])
        if entity.name != template["entity"]:
            raise ValidationError([FieldError("entity", "invalid", f"template {template['name']!r} is for "
                                                                   f"{template['entity']} records, not {entity.name}")])
        if isinstance(record_id, bool) or not isinstance(record_id, int):
            raise ValidationError([FieldError("record_id", "invalid", f"the id of a {entity.name}")])
        records = self.deployment.records.as_actor(actor)
        record = await records.get(entity.name, record_id)  # NotFound unless the actor may read it
        linked: dict[str, Any] = {}
        for field in entity.fields:
            value = record.get(field.name)
            if field.type is FieldType.RELATION and isinstance(value, int) and field.target:
                try:
                    linked[field.name] = await records.get(field.target, value)
                except (NotFound, Forbidden):
                    pass
        if isinstance(record.get("owner_id"), int) and "owner" not in linked:
            try:
                linked["owner"] = await records.get("user", record["owner_id"])
            except (NotFound, Forbidden):
                pass

        calls = 0

        async def find(other: Any, limit: Any = 100) -> list[dict[str, Any]]:
            nonlocal calls
            calls += 1
            if calls > MAX_RELATED_CALLS:
                raise SecurityError(f"related() may be called at most {MAX_RELATED_CALLS} times in a document; "
                                    "set its result to a variable: {% set deals = related('deal') %}")
            target = registry.get(other) if isinstance(other, str) else None
            if target is None:
                raise ValueError(f"related({other!r}): no such entity type")
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RELATED:
                raise ValueError(f"related(): limit is between 1 and {MAX_RELATED}")
            links: list[dict[str, Any]] = [
                {"field": f.name, "op": "eq", "value": record_id} for f in target.fields
                if f.type is FieldType.RELATION and f.target == entity.name]
            if target.field("related_entity") is not None and target.field("related_id") is not None:
                links.append({"and": [{"field": "related_entity", "op": "eq", "value": entity.name},
                                      {"field": "related_id", "op": "eq", "value": record_id}]})
            if not links:
                return []
            try:
                page = await records.list(target.name, ListQuery(filter={"or": links}, sort=["id"], limit=limit))
            except (Forbidden, ValidationError):  # not readable, or the link field is hidden from the actor
                return []
            return page.items

        counted = 0

        def range_(*args: Any) -> range:
            """The sandbox's range, counted over the whole render (nested loops multiply)."""
            nonlocal counted
            numbers = safe_range(*args)
            counted += len(numbers)
            if counted > MAX_RANGE:
                raise SecurityError(f"the template's loops would run over {MAX_RANGE:,} times")
            return numbers

        settings = self.deployment.settings
        user = {}
        if actor.user_id:
            try:
                found = await self.deployment.records.get("user", actor.user_id)
                user = {"id": found["id"], "name": found.get("name"), "email": found.get("email")}
            except NotFound:
                pass
        context = {
            "record": record, "related": _Related(linked, find),
            "entity": {"name": entity.name, "label": entity.label, "label_plural": entity.label_plural},
            "settings": {name: getattr(settings, name) for name in SHOWN_SETTINGS},
            "now": self.deployment.clock.now(), "user": user,
            "template": {"name": template["name"], "label": template["label"]}, "range": range_,
        }
        kwargs = {"template": template, "entity": entity.name, "record": record, "actor": actor,
                  "deployment": self.deployment}
        for impl in self.deployment.pm.hook.crm_document_context.get_hookimpls():
            extra = impl.function(**{a: kwargs[a] for a in impl.argnames})
            if inspect.isawaitable(extra):
                extra = await extra
            for name, value in (extra or {}).items():
                context.setdefault(name, value)
        return context

    async def render(
        self, name: str, entity: str, record_id: int, *, actor: Actor, format: str | None = None, pdf_a: bool = False,
    ) -> tuple[bytes, str, str]:
        """Fill template ``name`` with a record as ``actor`` reads it: ``(content, format,
        filename)``; nothing stored. NotFound when the actor may not read the record."""
        template = await self.template(name)
        fmt = format or template["format"]
        if fmt not in FORMATS:
            raise ValidationError([FieldError("format", "invalid", f"format is one of {', '.join(FORMATS)}")])
        if not isinstance(pdf_a, bool):
            raise ValidationError([FieldError("pdf_a", "invalid", "pdf_a is true or false")])
        context = await self._context(template, entity, record_id, actor)
        body = self.check_body(template["body"])
        html = await self._fill(body, context)
        if fmt == "pdf":
            content = await asyncio.to_thread(html_to_pdf, html, pdf_a=pdf_a)
        else:
            content = html.encode("utf-8")
        return content, fmt, f"{template['name']}-{entity}-{record_id}.{fmt}"

    async def _fill(self, body: str, context: dict[str, Any]) -> str:
        env = self.environment()
        try:
            compiled = env.from_string(body)
        except TemplateSyntaxError as exc:
            raise _body_error(exc.message or str(exc), exc.lineno) from None
        parts: list[str] = []
        size = 0
        deadline = time.monotonic() + MAX_SECONDS
        try:
            async for part in compiled.generate_async(context):
                parts.append(part)
                size += len(part)
                if size > MAX_OUTPUT:
                    raise SecurityError(f"the document would be larger than {MAX_OUTPUT:,} characters")
                if time.monotonic() > deadline:
                    raise SecurityError(f"filling the template took longer than {MAX_SECONDS:g} seconds")
            return "".join(parts)
        except SecurityError as exc:
            raise _body_error(f"refused: {exc}", _template_line(exc)) from None
        except RecursionError as exc:
            raise _body_error("the template calls itself too deeply (a macro calling itself?)", _template_line(exc)) from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise _body_error(f"{type(exc).__name__}: {message}" if not isinstance(exc, TemplateError) else message,
                              _template_line(exc)) from None

    async def generate(
        self, name: str, entity: str, record_id: int, *, actor: Actor, format: str | None = None, pdf_a: bool = False,
    ) -> dict[str, Any]:
        """Render a template for a record and store the document, attached to the record."""
        content, fmt, filename = await self.render(name, entity, record_id, actor=actor, format=format, pdf_a=pdf_a)
        now = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            [document_id] = await self.db.insert_returning_ids(
                'INSERT INTO crm_document ("template", "entity", "record_id", "format", "filename", "content", "size", '
                '"created_by", "created_at", "hidden") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                [(name, entity, record_id, fmt, filename, content, len(content), actor.user_id, now,
                  msgspec.json.encode(sorted(hidden_of(actor))).decode())])
        return _public(await self._document(document_id))

    # -- generated documents -----------------------------------------------------------------

    async def _document(self, document_id: Any) -> dict[str, Any]:
        if isinstance(document_id, bool) or not isinstance(document_id, int):
            raise NotFound("document", document_id)
        row = await self.db.fetchrow(f'SELECT {_DOCUMENT_COLUMNS} FROM crm_document WHERE "id" = ?', (document_id,))
        if row is None:
            raise NotFound("document", document_id)
        return _document_row(row)

    async def _readable(self, entity: str, record_id: int, actor: Actor) -> None:
        if self.deployment.registry.get(entity) is None:
            raise NotFound("entity type", entity)
        await self.deployment.records.as_actor(actor).get(entity, record_id)

    async def documents(self, entity: str, record_id: int, *, actor: Actor) -> list[dict[str, Any]]:
        """The documents attached to a record the actor may read, newest first (NotFound unless
        the actor may read the record). A document made by someone who saw fields hidden from
        the actor is left out: it may show them."""
        await self._readable(entity, record_id, actor)
        rows = await self.db.fetch(
            f'SELECT {_DOCUMENT_COLUMNS} FROM crm_document WHERE "entity" = ? AND "record_id" = ? ORDER BY "id" DESC',
            (entity, record_id))
        hidden = hidden_of(actor)
        return [_public(d) for d in map(_document_row, rows) if hidden <= d["_hidden"]]

    async def document(self, document_id: int, *, actor: Actor) -> dict[str, Any]:
        """One document's description (NotFound unless the actor may read its record, and every
        field hidden from the actor was hidden from whoever made it)."""
        document = await self._document(document_id)
        try:
            await self._readable(document["entity"], document["record_id"], actor)
        except NotFound:
            raise NotFound("document", document_id) from None
        if not hidden_of(actor) <= document["_hidden"]:
            raise NotFound("document", document_id)
        return _public(document)

    async def content(self, document_id: int, *, actor: Actor) -> tuple[dict[str, Any], bytes]:
        """A document and its bytes."""
        document = await self.document(document_id, actor=actor)
        content = await self.db.fetchval('SELECT "content" FROM crm_document WHERE "id" = ?', (document_id,))
        return document, bytes(content)

    async def delete_document(self, document_id: int, *, actor: Actor) -> None:
        """Remove a document: who may edit its record."""
        document = await self.document(document_id, actor=actor)
        records = self.deployment.records.as_actor(actor)
        entity = records.entity(document["entity"])
        if not actor.system and not actor.reaches(actor.scope(entity.name, "edit"), await records.get(
                entity.name, document["record_id"])):
            raise Forbidden(f"removing a document needs edit access to the {entity.label.lower()}")
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_document WHERE "id" = ?', (document_id,))

    async def timeline_items(self, entity: str, record_id: int, before: dt.datetime | None,
                             limit: int, actor: Actor) -> list[dict[str, Any]]:
        """Timeline items of a record's documents (the timeline checked the record is readable)."""
        sql = f'SELECT {_DOCUMENT_COLUMNS} FROM crm_document WHERE "entity" = ? AND "record_id" = ?'
        params: list[Any] = [entity, record_id]
        if before is not None:
            sql += ' AND "created_at" <= ?'
            params.append(_ts(before))
        rows = await self.db.fetch(sql + ' ORDER BY "created_at" DESC, "id" DESC LIMIT ?', (*params, limit))
        items = []
        hidden = hidden_of(actor)
        for row in rows:
            document = _document_row(row)
            if not hidden <= document["_hidden"]:
                continue
            items.append({
                "at": document["created_at"], "kind": "document", "id": document["id"],
                "title": f"Document {document['filename']}", "link": f"/api/documents/{document['id']}",
                "data": {k: document[k] for k in ("template", "format", "filename", "size", "created_by", "media_type")},
            })
        return items
