"""The record page (client card) and the create / edit forms of every entity type.

Routes (pages, outside the OpenAPI document):

- ``GET /{entity}/{id}``: the record page: its fields in groups (values the user may edit are
  edited in place by ``static/record.js`` through ``PATCH /api/{entity}/{id}`` with the version
  read, a 409 shows what changed), the related records (a company's contacts and deals...), the
  merged timeline with quick "log call / add note / add task" forms, the plugins' ``record.panel``
  items and ``record.action`` buttons, Edit and Delete (with a confirm step). A panel's template
  is rendered with the page's context: ``record``, ``entity`` (the :class:`EntityType`),
  ``records`` (the records service as the signed-in user), ``fmt``, ``item`` (its UIItem); an
  action's ``url`` gets ``?entity=&id=`` appended. The timeline pages with ``?tl=<cursor>``.
- ``GET|POST /{entity}/new``: the create form (``?field=value`` prefills, e.g. ``?company=7``).
- ``GET|POST /{entity}/{id}/edit``: the edit form; it posts the ``version`` it was read at, so
  a change made meanwhile is shown (the conflict) instead of being overwritten.
- ``POST /{entity}/{id}/delete``: moves the record to the trash (with the version read).
- ``POST /{entity}/{id}/activity``: the quick activity forms without JavaScript (the script
  posts to ``/api/activity`` instead).

Everything reads and writes through the records service as the signed-in user: a field the
role hides is never rendered, a field it may only read is shown but not editable, an action
it may not take is not offered (and the service refuses it anyway). Forms carry ``novalidate``:
the server's field errors are shown next to each field, with what was entered kept.

**Field groups.** :class:`~crmcore.entities.Field` has no group of its own, so a field's group
follows from where it comes from and what it is (:func:`field_group`): the entity's own fields
first ("Details"), then the address fields (``street``, ``city``, ``postal_code``, ``state``,
``region``, ``country``, ``address*``), then each other plugin's fields under the plugin's name,
then the custom fields ("Custom fields"), and last the record's owner and times ("Record").
Forms use the same groups as fieldsets.

**Form values.** A widget shows a field's value as text the browser edits (:func:`raw_value`:
a money value is ``{amount, currency}``, a date-time the local ``YYYY-MM-DDTHH:MM`` in the user's
time zone, a relation the record's id...); :func:`api_value` turns what was posted back into what
the records service accepts (a date-time becomes an aware ISO time in the user's zone). An edit
form posts back the values it was rendered with (``_original``) and saves only the fields the user
changed, at the version it read: another person's change to other fields is kept, and any change
made meanwhile is a conflict the user sees.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.response import Redirect

from ...api._http import _deployment
from ...auth.permissions import Scope
from ...entities import EntityType, Field, FieldType
from ...fieldvalues import Money, Phone
from ...records.errors import Conflict, FieldError, Forbidden, NotFound, ValidationError
from ...records.query import ListQuery
from ..fields import can, relation_titles, visible_fields
from ..render import page, record_title, user_format

if TYPE_CHECKING:
    from ...auth.permissions import Actor
    from ...deployment import Deployment
    from ..render import UserFormat

__all__ = ["ROUTES", "FormField", "field_group", "form_fields", "raw_value", "api_value"]

log = logging.getLogger(__name__)

TIMELINE_PAGE = 20
RELATED_SHOWN = 5
#: Field names that make the "Address" group.
ADDRESS_NAMES = {"street", "street2", "city", "postal_code", "zip", "state", "region", "province", "country"}
#: Groups in the order they are shown (plugins' groups come between address and custom).
GROUP_LABELS = {"main": "Details", "address": "Address", "custom": "Custom fields", "record": "Record"}
#: Entity types the quick activity forms are not offered on.
NO_QUICK_ACTIVITY = {"activity", "user"}
#: Currencies a money widget offers besides the deployment's and the value's own.
CURRENCIES = ("EUR", "USD", "GBP", "TRY", "CHF", "JPY", "CNY", "INR", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN",
              "CZK", "HUF", "RUB", "AED", "SAR", "IRR", "BRL", "MXN", "ZAR", "KRW", "SGD", "HKD", "NZD", "ILS")
OWNER = Field(name="owner_id", type=FieldType.RELATION, target="user", label="Owner")


# -- fields as widgets ----------------------------------------------------------------------------


class FormField:
    """A field as a page shows it: its widget ``kind`` (a field type, or ``choice`` for a
    pipeline's stages), the choices as ``(value, label)``, whether the user may ``edit`` it or
    only ``read`` it, and its group."""

    def __init__(self, field: Field, *, kind: str | None = None, choices: list[tuple[str, str]] | None = None,
                 access: str = "edit", group: str = "main"):
        self.field = field
        self.name = field.name
        self.kind = kind or field.type.value
        self.label = field.label
        self.required = field.required
        self.help = field.help_text
        self.target = field.target
        self.choices = choices if choices is not None else [(c, c) for c in field.choices]
        self.access = access
        self.group = group
        #: For relations: the target's title field and label (the search box shows titles).
        self.title_field: str | None = None
        self.target_label = ""

    @property
    def editable(self) -> bool:
        return self.access == "edit"

    @property
    def choice_values(self) -> list[str]:
        return [value for value, _ in self.choices]

    def choice_label(self, value: Any) -> str:
        return dict(self.choices).get(value, value)

    def __repr__(self) -> str:
        return f"<FormField {self.name} {self.kind} {self.access}>"


def field_group(entity: EntityType, field: Field) -> str:
    """The group a field is shown in (see the module's docstring)."""
    if field.custom or field.plugin == "custom":
        return "custom"
    if field.name in ADDRESS_NAMES or field.name.startswith("address"):
        return "address"
    if field.plugin and entity.plugin and field.plugin != entity.plugin:
        return f"plugin:{field.plugin}"
    return "main"


def group_label(key: str) -> str:
    if key.startswith("plugin:"):
        return key.split(":", 1)[1].replace("_", " ").capitalize()
    return GROUP_LABELS.get(key, key)


def grouped(fields: list[FormField]) -> list[tuple[str, str, list[FormField]]]:
    """``(key, label, fields)`` per group, in the order of the module's docstring."""
    groups: dict[str, list[FormField]] = {}
    for ff in fields:
        groups.setdefault(ff.group, []).append(ff)
    order = lambda key: (["main", "address"].index(key) if key in ("main", "address")  # noqa: E731
                         else 2 if key.startswith("plugin:") else 3 if key == "custom" else 4, key)
    return [(key, group_label(key), groups[key]) for key in sorted(groups, key=order)]


def _scope_reaches(actor: Actor, entity: str, action: str, record: dict[str, Any] | None) -> bool:
    """May the actor take ``action`` on ``record`` (on some record of ``entity`` when None)?"""
    if actor.system:
        return True
    scope = actor.scope(entity, action)
    if record is None:
        return scope is not Scope.NONE
    return actor.reaches(scope, record)


def form_fields(deployment: Deployment, actor: Actor, entity: EntityType, record: dict[str, Any] | None = None,
                *, editing: bool = True) -> list[FormField]:
    """The fields of ``entity`` the actor may read, as widgets: editable when ``editing`` and
    the role lets the actor change them (the owner only for whom may hand the record over)."""
    pipelines = [p for p in deployment.pipelines.values() if p.entity == entity.name]
    current = None
    if pipelines:
        name = (record or {}).get("pipeline") or next(
            (f.default for f in entity.fields if f.name == "pipeline" and f.default), None)
        current = (next((p for p in pipelines if p.name == name), None)
                   or deployment.pipeline_service.default_for(entity.name))
    result = []
    for field in visible_fields(entity, actor):
        access = "read" if not editing or actor.field_access(entity.name, field.name) == "read" else "edit"
        kind, choices = None, None
        if pipelines and field.name == "pipeline" and field.type is FieldType.TEXT:
            kind, choices = "choice", [(p.name, p.label or p.name) for p in pipelines]
        elif pipelines and current is not None and field.name == "stage" and field.type is FieldType.TEXT:
            kind, choices = "choice", [(s.name, s.label or s.name) for s in current.stages]
        result.append(FormField(field, kind=kind, choices=choices, access=access, group=field_group(entity, field)))
    may_assign = editing and _scope_reaches(actor, entity.name, "assign", record)
    if record is not None or may_assign:
        result.append(FormField(OWNER, access="edit" if may_assign else "read", group="record"))
    for ff in result:
        target = deployment.registry.get(ff.target) if ff.kind == "relation" and ff.target else None
        if target is not None:
            ff.title_field, ff.target_label = target.title_field, target.label
    return result


# -- values: record <-> form ----------------------------------------------------------------------


def _number_text(value: Any) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def raw_value(ff: FormField, value: Any, fmt: UserFormat) -> Any:
    """A field's value as its widget edits it."""
    kind = ff.kind
    if kind == "boolean":
        return bool(value)
    if kind == "multi_choice":
        return list(value or [])
    if kind == "money":
        if isinstance(value, Money):
            return {"amount": _number_text(value.amount), "currency": value.currency}
        if isinstance(value, dict):
            return {"amount": str(value.get("amount") or ""), "currency": value.get("currency") or fmt.currency}
        return {"amount": "" if value is None else _number_text(value), "currency": fmt.currency}
    if value is None:
        return ""
    if kind == "phone":
        return value.raw if isinstance(value, Phone) else str(value.get("raw") if isinstance(value, dict) else value)
    if kind == "tags":
        return ", ".join(value) if isinstance(value, list) else str(value)
    if kind == "datetime":
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value
        return fmt.local(value).strftime("%Y-%m-%dT%H:%M") if isinstance(value, dt.datetime) else str(value)
    if kind == "date":
        return value.isoformat()[:10] if isinstance(value, (dt.date, dt.datetime)) else str(value)[:10]
    if kind in ("integer", "decimal"):
        return _number_text(value)
    return str(value)


def posted_value(ff: FormField, form: Any) -> Any:
    """What the form posted for a field, in the shape :func:`raw_value` gives."""
    if ff.kind == "money":
        return {"amount": (form.get(ff.name) or "").strip(), "currency": form.get(f"{ff.name}__currency") or ""}
    if ff.kind == "boolean":
        return (form.get(ff.name) or "") not in ("", "false", "off", "0")
    if ff.kind == "multi_choice":
        return [v for v in form.getall(ff.name, []) if isinstance(v, str)]
    value = form.get(ff.name)
    return value if isinstance(value, str) else ""


def api_value(ff: FormField, raw: Any, fmt: UserFormat) -> Any:
    """A posted value as the records service takes it (None: empty). What cannot be converted
    is passed on as it was typed, so the service says what is wrong with it."""
    kind = ff.kind
    if kind == "boolean":
        return bool(raw)
    if kind == "multi_choice":
        return list(raw)
    if kind == "money":
        amount = (raw.get("amount") or "").strip()
        return {"amount": amount, "currency": raw.get("currency") or fmt.currency} if amount else None
    text = raw.strip() if kind not in ("long_text",) else raw
    if text == "" or (kind == "long_text" and not text.strip()):
        return None
    if kind == "datetime":
        try:
            local = dt.datetime.fromisoformat(text)
        except ValueError:
            return text
        return (local if local.tzinfo else local.replace(tzinfo=fmt.zone)).isoformat()
    if kind == "relation":
        return int(text) if text.isdigit() else text
    return text


def _same(ff: FormField, posted: Any, current: Any) -> bool:
    """Whether a posted value is the record's (untouched): an edit sends only the others."""
    if ff.kind == "multi_choice":
        return set(posted) == set(current)
    if ff.kind == "tags":
        split = lambda text: [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
        return split(posted) == split(current)
    if ff.kind == "money":
        if not posted["amount"] and not current["amount"]:
            return True
        try:
            return Decimal(posted["amount"]) == Decimal(current["amount"]) and posted["currency"] == current["currency"]
        except ArithmeticError:
            return False
    if isinstance(posted, str) and isinstance(current, str):
        if ff.kind == "long_text":
            return posted.replace("\r\n", "\n") == current.replace("\r\n", "\n")
        return posted.strip() == current.strip()
    return posted == current


def _shaped(ff: FormField, value: Any) -> bool:
    """Whether ``value`` has the shape :func:`raw_value` gives for the field (input checked)."""
    if ff.kind == "money":
        return isinstance(value, dict) and all(isinstance(value.get(k), str) for k in ("amount", "currency"))
    if ff.kind == "boolean":
        return isinstance(value, bool)
    if ff.kind == "multi_choice":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def _errors_by_field(errors: list[FieldError]) -> dict[str, list[str]]:
    by_field: dict[str, list[str]] = {}
    for error in errors:
        by_field.setdefault(error.field, []).append(error.message)
    return by_field


# -- helpers --------------------------------------------------------------------------------------


async def _user_fmt(request: Request) -> UserFormat:
    dep = _deployment(request)
    actor = request.scope["user"]
    user = await dep.records.get("user", actor.user_id) if actor.user_id else None
    return user_format(dep, user)


def _path(request: Request) -> tuple[str, int]:
    return request.path_params["entity"], request.path_params["record_id"]


def _entity(request: Request, name: str) -> EntityType:
    entity = _deployment(request).registry.get(name)
    if entity is None:
        raise NotFound("entity type", name)
    return entity


async def _titles(dep: Deployment, actor: Actor, entity: EntityType, values: dict[str, Any],
                  fields: list[FormField]) -> dict[tuple[str, int], str]:
    """Titles of the relation values (the owner included) the actor may read."""
    titles = await relation_titles(dep, actor, entity, [values])
    owners = [values.get("owner_id")] if isinstance(values.get("owner_id"), int) else []
    if owners and any(ff.name == "owner_id" for ff in fields):
        titles.update(await _names(dep, actor, owners))
    return titles


async def _names(dep: Deployment, actor: Actor, user_ids: list[int]) -> dict[tuple[str, int], str]:
    ids = sorted({i for i in user_ids if isinstance(i, int)})
    if not ids:
        return {}
    try:
        found = await dep.records.as_actor(actor).list("user", ListQuery(
            filter={"field": "id", "op": "in", "value": ids}, limit=len(ids)))
    except (Forbidden, ValidationError):
        return {}
    users = dep.registry.get("user")
    return {("user", u["id"]): record_title(users, u) for u in found.items}


def list_url(entity: str, filter_: dict[str, Any]) -> str:
    """The list page of ``entity`` filtered by ``filter_`` (the API's filter JSON)."""
    return f"/{entity}?filter=" + quote(json.dumps(filter_, separators=(",", ":")), safe="")


# -- the record page ------------------------------------------------------------------------------


async def _related(dep: Deployment, actor: Actor, entity: EntityType, record: dict[str, Any],
                   replaced: set[str] = frozenset()) -> list[dict[str, Any]]:
    """A panel per relation field of another entity type pointing to ``entity`` (a company's
    contacts and deals...): its first records, how many there are and the filtered list's link.
    Activities are left out: the timeline shows them; so are those a plugin's panel shows its
    own way (``replaced``: ``entity.field`` names, see ``UIItem.replaces``)."""
    panels = []
    records = dep.records.as_actor(actor)
    for other in dep.registry:
        if other.name == "activity" or not can(actor, other.name, "read"):
            continue
        links = [f for f in visible_fields(other, actor) if f.type is FieldType.RELATION and f.target == entity.name]
        for link in links:
            if f"{other.name}.{link.name}" in replaced:
                continue
            filter_ = {"field": link.name, "op": "eq", "value": record["id"]}
            try:
                found = await records.list(other.name, ListQuery(
                    filter=filter_, sort=["-created_at"], limit=RELATED_SHOWN, count=True))
            except (Forbidden, ValidationError):
                continue
            in_title = {other.title, *(("first_name", "last_name") if other.name == "contact" else ())}
            shown = [f for f in visible_fields(other, actor)
                     if f.in_list and f.name != link.name and f.name not in in_title
                     and f.type not in (FieldType.LONG_TEXT, FieldType.RELATION)][:2]
            may_add = (can(actor, other.name, "create") and actor.field_access(other.name, link.name) == "edit")
            panels.append({
                "entity": other, "field": link, "items": found.items, "total": found.total, "columns": shown,
                "by_field": len(links) > 1,
                "url": list_url(other.name, filter_),
                "new_url": f"/{other.name}/new?{link.name}={record['id']}" if may_add else None,
            })
    return panels


def _timeline_link(link: str | None) -> str | None:
    """A timeline item's API link as the page of the record it names."""
    if link and link.startswith("/api/"):
        parts = link.split("/")
        if len(parts) == 4 and parts[3].isdigit():
            return f"/{parts[2]}/{parts[3]}"
    return link if link and link.startswith("/") and not link.startswith("//") else None


async def _timeline(request: Request, entity: EntityType, record_id: int) -> dict[str, Any]:
    dep = _deployment(request)
    actor = request.scope["user"]
    cursor = request.query_params.get("tl") or None
    try:
        timeline = await dep.timeline.timeline(entity.name, record_id, actor=actor, limit=TIMELINE_PAGE, cursor=cursor)
    except ValidationError:  # a stale or mangled cursor: the newest page
        cursor = None
        timeline = await dep.timeline.timeline(entity.name, record_id, actor=actor, limit=TIMELINE_PAGE)
    users = [i.data.get("user_id") if i.source == "history" else i.data.get("created_by") for i in timeline.items]
    return {"items": timeline.items, "next_cursor": timeline.next_cursor, "paged": cursor is not None,
            "users": await _names(dep, actor, users), "link": _timeline_link}


async def _record_page(request: Request, entity_name: str, record_id: int, *, status: int = 200,
                       **extra: Any) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    entity = _entity(request, entity_name)
    records = dep.records.as_actor(actor)
    record = await records.get(entity.name, record_id)
    may_edit = _scope_reaches(actor, entity.name, "edit", record)
    fields = form_fields(dep, actor, entity, record, editing=may_edit)
    items = [i for i in dep.ui_items if i.entity in (None, entity.name)]
    panels = sorted((i for i in items if i.slot == "record.panel" and i.template), key=lambda i: (i.order, i.label))
    quick = (entity.name not in NO_QUICK_ACTIVITY and dep.registry.get("activity") is not None
             and can(actor, "activity", "create"))
    return await page(
        request, "record.html", status=status, entity=entity, record=record, records=records,
        title=record_title(entity, record), groups=grouped(fields), fields_by_name={f.name: f for f in fields},
        titles=await _titles(dep, actor, entity, record, fields), may_edit=may_edit,
        may_delete=_scope_reaches(actor, entity.name, "delete", record),
        related=await _related(dep, actor, entity, record, {name for i in panels for name in i.replaced}),
        timeline=await _timeline(request, entity, record_id),
        panels=panels, plugin_items=panels,
        actions=sorted((i for i in items if i.slot == "record.action" and i.url), key=lambda i: (i.order, i.label)),
        stage_labels={(p.entity, s.name): s.label or s.name for p in dep.pipelines.values() for s in p.stages},
        quick=quick, quick_kind=extra.pop("quick_kind", None), quick_values=extra.pop("quick_values", {}),
        quick_errors=extra.pop("quick_errors", {}), raw_value=raw_value,
        currencies=_currencies, action_url=_action_url, **extra,
    )


def _action_url(url: str, entity: str, record_id: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}entity={quote(entity)}&id={record_id}"


def _currencies(fmt: UserFormat, value: Any = None) -> list[str]:
    """The money widget's currencies: the deployment's first, then the value's, then the rest."""
    first = [fmt.currency] + ([value] if isinstance(value, str) and value and value != fmt.currency else [])
    return first + [c for c in CURRENCIES if c not in first]


@get("/{entity:str}/{record_id:int}", include_in_schema=False)
async def record_page(request: Request) -> Response:
    entity, record_id = _path(request)
    return await _record_page(request, entity, record_id)


# -- forms ----------------------------------------------------------------------------------------


async def _form_page(request: Request, entity: EntityType, fields: list[FormField], values: dict[str, Any], *,
                     record: dict[str, Any] | None, original: dict[str, Any] | None = None,
                     errors: list[FieldError] = (), conflict: dict | None = None, status: int = 200) -> Response:
    """The create or edit form; ``original``: the values an edit form was read with (posted back
    as ``_original``, so that only what the user changed is saved)."""
    dep = _deployment(request)
    actor = request.scope["user"]
    shown = {f.name for f in fields}
    ids = {f.name: int(values[f.name]) for f in fields
           if f.kind == "relation" and isinstance(values.get(f.name), str) and values[f.name].isdigit()}
    if record is not None:
        ids.setdefault("owner_id", record.get("owner_id"))
    by_field = _errors_by_field(list(errors))
    return await page(
        request, "form.html", status=status, entity=entity, record=record, groups=grouped(fields),
        fields_by_name={f.name: f for f in fields},
        original_json=json.dumps(original if original is not None else values, separators=(",", ":")),
        values=values, errors=by_field, other_errors=[e for e in errors if e.field not in shown],
        error_list=list(errors), titles=await _titles(dep, actor, entity, ids, fields), conflict=conflict,
        title=record_title(entity, record) if record is not None else None, currencies=_currencies,
    )


@get("/{entity:str}/new", include_in_schema=False)
async def new_form(request: Request) -> Response:
    entity = request.path_params["entity"]
    dep = _deployment(request)
    actor = request.scope["user"]
    entity_type = _entity(request, entity)
    if not can(actor, entity_type.name, "create"):
        raise Forbidden(f"your role may not create {entity_type.label_plural.lower()}")
    fmt = await _user_fmt(request)
    fields = form_fields(dep, actor, entity_type)
    values = {}
    for ff in fields:
        given = request.query_params.get(ff.name)
        if given is not None and ff.kind not in ("money", "multi_choice", "boolean"):
            values[ff.name] = given
        else:
            values[ff.name] = raw_value(ff, ff.field.default, fmt)
    return await _form_page(request, entity_type, fields, values, record=None)


@post("/{entity:str}/new", include_in_schema=False, status_code=303)
async def create_submit(request: Request) -> Response:
    entity = request.path_params["entity"]
    dep = _deployment(request)
    actor = request.scope["user"]
    entity_type = _entity(request, entity)
    fmt = await _user_fmt(request)
    form = await request.form()
    fields = form_fields(dep, actor, entity_type)
    posted = {ff.name: posted_value(ff, form) for ff in fields if ff.editable}
    data = {}
    for ff in fields:
        if ff.editable:
            value = api_value(ff, posted[ff.name], fmt)
            if value not in (None, []) or ff.kind == "boolean":
                data[ff.name] = value
    try:
        created = await dep.records.as_actor(actor).create(entity_type.name, data)
    except (ValidationError, Forbidden) as exc:
        if isinstance(exc, Forbidden) and not exc.errors:
            raise
        return await _form_page(request, entity_type, fields, posted, record=None, errors=exc.errors, status=422)
    return Redirect(f"/{entity_type.name}/{created['id']}", status_code=303)


async def _editable_record(request: Request, entity: EntityType, record_id: int) -> dict[str, Any]:
    dep = _deployment(request)
    actor = request.scope["user"]
    record = await dep.records.as_actor(actor).get(entity.name, record_id)
    if not _scope_reaches(actor, entity.name, "edit", record):
        raise Forbidden(f"your role may not edit this {entity.label.lower()}")
    return record


@get("/{entity:str}/{record_id:int}/edit", include_in_schema=False)
async def edit_form(request: Request) -> Response:
    entity, record_id = _path(request)
    dep = _deployment(request)
    actor = request.scope["user"]
    entity_type = _entity(request, entity)
    record = await _editable_record(request, entity_type, record_id)
    fmt = await _user_fmt(request)
    fields = form_fields(dep, actor, entity_type, record)
    values = {ff.name: raw_value(ff, record.get(ff.name), fmt) for ff in fields}
    return await _form_page(request, entity_type, fields, values, record=record)


def _version(form: Any) -> int | None:
    """The record version a form was read at (its ``version`` field)."""
    version = form.get("version")
    return int(version) if isinstance(version, str) and version.isdigit() else None


def _original(form: Any) -> dict[str, Any]:
    """The values the edit form was rendered with (its ``_original`` field), to tell which
    fields the user changed; empty when missing or mangled."""
    try:
        original = json.loads(form.get("_original") or "{}")
    except ValueError:
        return {}
    return original if isinstance(original, dict) else {}


@post("/{entity:str}/{record_id:int}/edit", include_in_schema=False, status_code=303)
async def edit_submit(request: Request) -> Response:
    """Saves the fields the user changed (posted values that differ from those the form was
    rendered with) at the version the form was read at. On a conflict the form comes back with
    the record as it is now, the user's changes over it, and what the other person changed."""
    entity, record_id = _path(request)
    dep = _deployment(request)
    actor = request.scope["user"]
    entity_type = _entity(request, entity)
    record = await _editable_record(request, entity_type, record_id)
    fmt = await _user_fmt(request)
    form = await request.form()
    fields = form_fields(dep, actor, entity_type, record)
    version = _version(form)
    current = {ff.name: raw_value(ff, record.get(ff.name), fmt) for ff in fields}
    original = _original(form)
    original = {ff.name: original[ff.name] if _shaped(ff, original.get(ff.name)) else current[ff.name] for ff in fields}
    posted = {ff.name: posted_value(ff, form) for ff in fields if ff.editable}
    changed = [ff for ff in fields if ff.editable and not _same(ff, posted[ff.name], original[ff.name])]
    data = {ff.name: api_value(ff, posted[ff.name], fmt) for ff in changed}
    try:
        await dep.records.as_actor(actor).update(entity_type.name, record_id, data, version=version)
    except (ValidationError, Forbidden) as exc:
        if isinstance(exc, Forbidden) and not exc.errors:
            raise
        record = {**record, "version": version if version is not None else record["version"]}
        return await _form_page(request, entity_type, fields, {**current, **posted}, original=original,
                                record=record, errors=exc.errors, status=422)
    except Conflict as exc:
        by_name = {ff.name: ff for ff in fields}
        theirs = [{"field": by_name[name], "value": exc.current.get(name)} for name in exc.changed if name in by_name]
        now = {ff.name: raw_value(ff, exc.current.get(ff.name), fmt) for ff in fields}
        mine = {ff.name: posted[ff.name] for ff in changed}
        return await _form_page(request, entity_type, fields, {**now, **mine}, original=now, record=exc.current,
                                conflict={"changed": theirs, "mine": [ff for ff in changed]}, status=409)
    return Redirect(f"/{entity_type.name}/{record_id}", status_code=303)


@post("/{entity:str}/{record_id:int}/delete", include_in_schema=False, status_code=303)
async def delete_submit(request: Request) -> Response:
    entity, record_id = _path(request)
    dep = _deployment(request)
    entity_type = _entity(request, entity)
    form = await request.form()
    try:
        await dep.records.as_actor(request.scope["user"]).delete(entity_type.name, record_id, version=_version(form))
    except Conflict:
        return await _record_page(request, entity_type.name, record_id, status=409, delete_conflict=True)
    return Redirect(f"/{entity_type.name}", status_code=303)


# -- quick activities (without JavaScript) ------------------------------------------------------


def activity_links(entity: str, record_id: int) -> dict[str, Any]:
    """How a new activity names the record it is on."""
    if entity in ("contact", "company", "deal"):
        return {entity: record_id}
    return {"related_entity": entity, "related_id": record_id}


@post("/{entity:str}/{record_id:int}/activity", include_in_schema=False, status_code=303)
async def quick_activity(request: Request) -> Response:
    entity, record_id = _path(request)
    dep = _deployment(request)
    actor = request.scope["user"]
    entity_type = _entity(request, entity)
    await dep.records.as_actor(actor).get(entity_type.name, record_id)  # readable, else NotFound
    fmt = await _user_fmt(request)
    form = await request.form()
    kind = form.get("kind") if form.get("kind") in ("call", "note", "task", "meeting", "email") else "note"
    values = {name: (form.get(name) or "") for name in ("subject", "body", "due_at")}
    subject = values["subject"].strip() or (values["body"].strip().splitlines() or [""])[0][:80]
    data: dict[str, Any] = {"kind": kind, "subject": subject, "body": values["body"] or None,
                            "done": kind != "task", **activity_links(entity_type.name, record_id)}
    if kind == "task":
        data["due_at"] = api_value(FormField(Field(name="due_at", type=FieldType.DATETIME)), values["due_at"], fmt)
        if actor.user_id:
            data["assignee"] = actor.user_id
    try:
        await dep.records.as_actor(actor).create("activity", data)
    except (ValidationError, Forbidden) as exc:
        if isinstance(exc, Forbidden) and not exc.errors:
            raise
        return await _record_page(request, entity_type.name, record_id, status=422, quick_kind=kind,
                                  quick_values=values, quick_errors=_errors_by_field(exc.errors))
    return Redirect(f"/{entity_type.name}/{record_id}#timeline", status_code=303)


ROUTES: list[Any] = [new_form, create_submit, record_page, edit_form, edit_submit, delete_submit, quick_activity]
