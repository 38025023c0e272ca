"""Web UI pages: settings, everything a consultant configures without writing code.

``/settings`` links the sections the signed-in user may use; each section is a page of its own
and needs the permission its JSON API needs (a user without it gets 403):

- ``/settings/fields`` (``manage_schema``): custom fields per entity type: add, change options,
  remove (hidden, data kept) and restore.
- ``/settings/pipelines`` (``manage_schema``): pipelines and their stages: add a pipeline; add,
  relabel, reorder and remove stages, their probability and kind; delete a stored pipeline or a
  plugin pipeline's customisation.
- ``/settings/automation`` (``manage_automation``): rules (a JSON editor for trigger, condition,
  unless and actions), turned on and off, deleted, run by hand on one record; the firing log.
- ``/settings/users`` (``manage_users``): add users; change role, teams, active, password; make a
  one-time password reset link.
- ``/settings/roles`` (``manage_roles``; ``manage_users`` may look): roles (scopes per entity type
  and action, field rules, grants) and teams.
- ``/settings/tokens`` (everyone): the user's own API tokens (made, shown once, revoked); with
  ``manage_tokens`` everyone's.
- ``/settings/plugins`` (``manage_schema``): installed plugins, enabled and disabled live.
- ``/settings/webhooks`` (``manage_integrations``): subscriptions, their signing secret (shown,
  rotated), the delivery log and redelivery.
- ``/settings/forms`` (``manage_schema``): web forms (field mapping, required fields, dedup,
  owner, rate limit, redirect) and their submission logs.

Every change is a plain HTML form posting ``_csrf`` to a route here, which calls the same
service the JSON API calls, as the signed-in user. Refused input re-renders the page with the
service's messages next to the fields they name (status 422); success redirects (303) back with
a notice, except where a secret is shown once (a new API token, a reset link).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.response import Redirect

from ...api._http import _deployment
from ...api.auth import link_base_url
from ...auth.permissions import ACTIONS, Role, Scope, check_role
from ...automation import OUTCOMES, TRIGGERS
from ...entities import Field, FieldType, RegistryError
from ...plugins import PluginError, discover
from ...records.errors import FieldError, Forbidden, NotFound, ValidationError
from ...webforms import WebForm
from ...webhooks import DELIVERY_STATUSES
from ..render import page, user_format

__all__ = ["ROUTES", "SECTIONS"]


def N_(text: str) -> str:
    """Marks a string for the translation catalog; templates translate it when shown."""
    return text


@dataclass(frozen=True)
class Section:
    slug: str
    label: str
    description: str
    #: Any one of them opens the section (``all_of``: every one of them); none: every signed-in user.
    permissions: tuple[str, ...]
    all_of: bool = False

    def allowed(self, actor: Any) -> bool:
        held = [actor.has(p) for p in self.permissions]
        return not held or (all(held) if self.all_of else any(held))


SECTIONS = [
    Section("fields", N_("Custom fields"), N_("Fields of your own on contacts, deals and every other record type."),
            ("manage_schema",)),
    Section("pipelines", N_("Pipelines"), N_("Sales pipelines and their stages."), ("manage_schema",)),
    Section("automation", N_("Automation"), N_("Rules: triggers, conditions, actions; the firing log."),
            ("manage_automation",)),
    Section("users", N_("Users"), N_("People who sign in: role, teams, password."), ("manage_users",)),
    Section("roles", N_("Roles and teams"), N_("Who sees and changes which records and fields."),
            ("manage_roles", "manage_users")),
    Section("tokens", N_("API tokens"), N_("Personal tokens for the REST API."), ()),
    Section("plugins", N_("Plugins"), N_("Turn installed plugins on and off."), ("manage_schema",)),
    Section("webhooks", N_("Webhooks"), N_("Record changes sent to other systems, signed."), ("manage_integrations",)),
    Section("forms", N_("Web forms"), N_("Lead capture from your website."), ("manage_schema",)),
    Section("documents", N_("Document templates"), N_("Quotes, contracts and letters made from records, as HTML or PDF."),
            ("manage_schema",)),
    Section("bundle", N_("Configuration bundle"),
            N_("Everything configured here in one file: download it, or apply one from another deployment."),
            ("manage_schema", "manage_roles", "manage_automation"), all_of=True),
]
_BY_SLUG = {s.slug: s for s in SECTIONS}

#: ``?ok=<code>`` after a change: the notice shown.
NOTICES = {
    "field_added": N_("Field added."), "field_saved": N_("Field saved."), "field_removed": N_("Field removed; its data is kept."),
    "field_restored": N_("Field restored."),
    "pipeline_added": N_("Pipeline added."), "pipeline_saved": N_("Pipeline saved."),
    "pipeline_deleted": N_("Pipeline deleted."), "pipeline_reset": N_("Pipeline reset to the plugin's definition."),
    "rule_added": N_("Rule added."), "rule_saved": N_("Rule saved."), "rule_deleted": N_("Rule deleted."),
    "rule_on": N_("Rule turned on."), "rule_off": N_("Rule turned off."),
    "user_added": N_("User added."), "user_saved": N_("User saved."),
    "role_added": N_("Role added."), "role_saved": N_("Role saved."), "role_deleted": N_("Role deleted."),
    "team_added": N_("Team added."), "team_deleted": N_("Team deleted."),
    "token_revoked": N_("Token revoked."),
    "plugin_enabled": N_("Plugin enabled."), "plugin_disabled": N_("Plugin disabled; its data is kept."),
    "webhook_added": N_("Webhook added. Verify deliveries with its signing secret below."),
    "webhook_saved": N_("Webhook saved."), "webhook_deleted": N_("Webhook deleted."),
    "secret_rotated": N_("New signing secret made; the old one no longer signs deliveries."),
    "redelivered": N_("Delivery queued again."),
    "form_added": N_("Web form added."), "form_saved": N_("Web form saved."), "form_deleted": N_("Web form deleted."),
}

#: Words the pages show from data (stage kinds, outcomes, statuses, scopes, actions), so that the
#: catalog has them.
_SHOWN_WORDS = (
    N_("open"), N_("won"), N_("lost"), N_("done"), N_("skipped"), N_("failed"), N_("pending"), N_("retrying"),
    N_("delivered"), N_("dead"), N_("cancelled"), N_("none"), N_("own"), N_("team"), N_("all"), N_("read"),
    N_("create"), N_("edit"), N_("delete"), N_("export"), N_("assign"), N_("created"), N_("duplicate"), N_("spam"),
    N_("invalid"), N_("rate_limited"),
)

AUTOMATION_EXAMPLE = {
    "entity": "contact",
    "trigger": {"type": "created", "delay": "15m"},
    "condition": None,
    "unless": {"has": {"entity": "activity", "via": "contact"}},
    "actions": [{"type": "create_task", "subject": "Call {{ record.first_name }} {{ record.last_name }}",
                 "assignee": "owner", "due": "1h"}],
}


# -- helpers --------------------------------------------------------------------------------------


def _actor(request: Request) -> Any:
    return request.scope["user"]


def _need(request: Request, slug: str, *permissions: str) -> Any:
    """The actor, when it has one of section ``slug``'s permissions (or of ``permissions``); else
    Forbidden. A section needing all of them (``all_of``) checks the rest itself, naming what is missing."""
    actor = _actor(request)
    wanted = permissions or _BY_SLUG[slug].permissions
    if wanted and not any(actor.has(p) for p in wanted):
        raise Forbidden(f"this needs the {' or '.join(wanted)} permission")
    return actor


def _done(path: str, code: str, **params: Any) -> Redirect:
    query = urlencode({"ok": code, **{k: v for k, v in params.items() if v is not None}})
    return Redirect(f"{path}{'&' if '?' in path else '?'}{query}", status_code=303)


def _text(form: FormMultiDict, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _flag(form: FormMultiDict, name: str) -> bool:
    return form.get(name) in ("on", "true", "1", "yes")


def _all(form: FormMultiDict, name: str) -> list[str]:
    return [v.strip() for v in form.getall(name, []) if isinstance(v, str) and v.strip()]


def _split(text: str) -> list[str]:
    """Items of a comma-, space- or line-separated list."""
    return [item for item in re.split(r"[\s,]+", text) if item]


def _lines(text: str) -> list[str]:
    """Items one per line (or comma-separated on one line)."""
    parts = text.splitlines() if "\n" in text.strip() else text.split(",")
    return [p.strip() for p in parts if p.strip()]


def _int(value: str) -> int | str | None:
    """A whole number as typed, or the text itself (for the service to name), or None."""
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _refused(exc: Exception, field: str = "") -> list[FieldError]:
    if isinstance(exc, ValidationError):
        return list(exc.errors)
    if isinstance(exc, msgspec.ValidationError):
        where = str(exc).rsplit("at `$.", 1)
        name = where[1].rstrip("`").split("[")[0].split(".")[0] if len(where) == 2 else field
        return [FieldError(name, "invalid", str(exc))]
    return [FieldError(field, "refused", str(exc))]


async def _attempt(action: Callable[[], Awaitable[Any]], field: str = "") -> tuple[Any, list[FieldError]]:
    """Run a service call: (its result, []) or (None, the errors saying why it was refused)."""
    try:
        return await action(), []
    except (ValidationError, RegistryError, PluginError, msgspec.ValidationError, ValueError) as exc:
        return None, _refused(exc, field)


async def _render(request: Request, template: str, slug: str, status: int = 200, **context: Any) -> Response:
    """A settings page: its section, the sections' navigation, the notice of ``?ok=``."""
    actor = _actor(request)
    notice = NOTICES.get(request.query_params.get("ok") or "")
    context.setdefault("notice", notice)
    context.setdefault("notice_subject", (request.query_params.get("what") or "")[:100] if notice else None)
    context.setdefault("errors", [])
    context.setdefault("values", {})
    context.setdefault("on", _on)
    return await page(request, template, status=status, section=_BY_SLUG.get(slug), sections=[
        s for s in SECTIONS if s.allowed(actor)], **context)


def _on(value: Any) -> bool:
    """Whether a checkbox is ticked: a stored flag, or a form's value as sent."""
    return value is True or value in ("on", "true", "1", "yes")


def _entities(request: Request) -> list[Any]:
    order = {"contact": 0, "company": 1, "deal": 2, "activity": 3, "user": 9}
    return sorted(_deployment(request).registry, key=lambda e: (order.get(e.name, 5), e.label.lower()))


# -- the index ------------------------------------------------------------------------------------


@get("/settings", include_in_schema=False)
async def settings_index(request: Request) -> Response:
    return await _render(request, "settings/index.html", "")


# -- custom fields --------------------------------------------------------------------------------

#: Options the change form sends (a field's type and name never change here).
_CHANGEABLE = ("label", "help_text", "required", "default", "indexed", "unique", "in_list", "hidden")


def _default(kind: FieldType, raw: str) -> Any:
    if raw == "":
        return None
    if kind is FieldType.BOOLEAN:
        return raw.lower() in ("true", "yes", "1", "on")
    if kind is FieldType.INTEGER:
        return _int(raw)
    if kind in (FieldType.MULTI_CHOICE, FieldType.TAGS):
        return [v.strip() for v in raw.split(",") if v.strip()]
    return raw


def _field_values(field: Field) -> dict[str, Any]:
    default = field.default
    if isinstance(default, bool):
        default = "true" if default else "false"
    elif isinstance(default, list):
        default = ", ".join(str(v) for v in default)
    return {"label": field.label, "help_text": field.help_text, "choices": "\n".join(field.choices),
            "default": "" if default is None else default, "required": field.required, "unique": field.unique,
            "indexed": field.indexed, "in_list": field.in_list, "hidden": field.hidden,
            "max_length": field.max_length or ""}


def _field_options(form: FormMultiDict, kind: FieldType) -> dict[str, Any]:
    options: dict[str, Any] = {
        "label": _text(form, "label"), "help_text": _text(form, "help_text"), "required": _flag(form, "required"),
        "default": _default(kind, _text(form, "default")), "indexed": _flag(form, "indexed"),
        "unique": _flag(form, "unique"), "in_list": _flag(form, "in_list"),
    }
    if kind in (FieldType.CHOICE, FieldType.MULTI_CHOICE):
        options["choices"] = _lines(form.get("choices") or "")
    if kind is FieldType.TEXT:
        options["max_length"] = _int(_text(form, "max_length"))
    return options


async def _fields_page(request: Request, entity_name: str, status: int = 200, **context: Any) -> Response:
    dep = _deployment(request)
    entities = _entities(request)
    entity = dep.registry.get(entity_name)
    if entity is None:
        raise NotFound("entity type", entity_name[:60])
    custom = await dep.custom_fields(entity.name)
    editing = context.pop("editing", None) or request.query_params.get("edit") or None
    field = next((f for f, removed in custom if f.name == editing and not removed), None) if editing else None
    if field is None:
        editing = None
    else:
        context["values"] = {**context.get("values", _field_values(field)), "kind": field.type.value}
    return await _render(request, "settings/fields.html", "fields", status, entity=entity, entities=entities,
                         custom=custom, builtin=[f for f in entity.fields if not f.custom],
                         types=[t.value for t in FieldType], editing=editing, **context)


@get("/settings/fields", include_in_schema=False)
async def fields_page(request: Request) -> Response:
    _need(request, "fields")
    return await _fields_page(request, request.query_params.get("entity") or "contact")


@post("/settings/fields/{entity:str}/add", include_in_schema=False, status_code=303)
async def field_add(request: Request) -> Response:
    _need(request, "fields")
    dep = _deployment(request)
    entity = request.path_params["entity"]
    form = await request.form()
    raw_type = _text(form, "type")
    errors: list[FieldError] = []
    try:
        kind = FieldType(raw_type)
    except ValueError:
        kind, errors = FieldType.TEXT, [FieldError("type", "invalid", f"one of {', '.join(t.value for t in FieldType)}")]
    field = None
    if not errors:
        data = {"name": _text(form, "name"), "type": kind.value, **_field_options(form, kind)}
        if kind is FieldType.RELATION:
            data["target"] = _text(form, "target") or None
        if not data["label"]:
            data.pop("label")
        field, errors = await _attempt(lambda: _convert_field(data))
    if field is not None:
        _, errors = await _attempt(lambda: dep.add_custom_field(entity, field))
    if errors:
        return await _fields_page(request, entity, 422, errors=errors, values=dict(form), adding=True)
    return _done(f"/settings/fields?entity={quote(entity)}", "field_added", what=field.name)


async def _convert_field(data: dict[str, Any]) -> Field:
    return msgspec.convert(data, Field)


async def _custom_field(request: Request, entity: str, name: str) -> Field:
    for field, _removed in await _deployment(request).custom_fields(entity):
        if field.name == name:
            return field
    raise NotFound("custom field", name[:60])


@post("/settings/fields/{entity:str}/{name:str}/update", include_in_schema=False, status_code=303)
async def field_update(request: Request) -> Response:
    _need(request, "fields")
    dep = _deployment(request)
    entity, name = request.path_params["entity"], request.path_params["name"]
    if dep.registry.get(entity) is None:
        raise NotFound("entity type", entity[:60])
    current = await _custom_field(request, entity, name)
    form = await request.form()
    changes = {**_field_options(form, current.type), "hidden": _flag(form, "hidden")}
    if not changes["label"]:
        changes.pop("label")
    _, errors = await _attempt(lambda: dep.update_custom_field(entity, name, **changes))
    if errors:
        return await _fields_page(request, entity, 422, errors=errors, values=dict(form), editing=name)
    return _done(f"/settings/fields?entity={quote(entity)}", "field_saved", what=name)


@post("/settings/fields/{entity:str}/{name:str}/remove", include_in_schema=False, status_code=303)
async def field_remove(request: Request) -> Response:
    return await _field_removal(request, remove=True)


@post("/settings/fields/{entity:str}/{name:str}/restore", include_in_schema=False, status_code=303)
async def field_restore(request: Request) -> Response:
    return await _field_removal(request, remove=False)


async def _field_removal(request: Request, *, remove: bool) -> Response:
    _need(request, "fields")
    dep = _deployment(request)
    entity, name = request.path_params["entity"], request.path_params["name"]
    action = dep.remove_custom_field if remove else dep.restore_custom_field
    _, errors = await _attempt(lambda: action(entity, name))
    if errors:
        if dep.registry.get(entity) is None:
            raise NotFound("entity type", entity[:60])
        return await _fields_page(request, entity, 422, errors=errors)
    return _done(f"/settings/fields?entity={quote(entity)}", "field_removed" if remove else "field_restored", what=name)


# -- pipelines ------------------------------------------------------------------------------------

KINDS = ("open", "won", "lost")


def _stage_rows(form: FormMultiDict) -> list[dict[str, Any]]:
    """The stage editor's rows as sent (``stages-<i>-name`` ...), in the order they ask for."""
    indices = sorted({int(key.split("-")[1]) for key in form.keys()
                      if key.startswith("stages-") and key.count("-") == 2 and key.split("-")[1].isdigit()})
    rows = []
    for i in indices:
        prefix = f"stages-{i}-"
        order = _text(form, prefix + "order")
        try:
            position = float(order) if order else float("inf")
        except ValueError:
            position = float("inf")
        rows.append({
            "name": _text(form, prefix + "name"), "label": _text(form, prefix + "label"),
            "probability": _text(form, prefix + "probability"), "kind": _text(form, prefix + "kind") or "open",
            "remove": _flag(form, prefix + "remove"), "existing": _flag(form, prefix + "existing"),
            "errors": [], "_sort": (position, i),
        })
    rows.sort(key=lambda r: r["_sort"])
    return rows


def _stages_from(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stages to send (kept rows with a name) and, for each, its row."""
    stages, sent = [], []
    for row in rows:
        if row["remove"] or not row["name"]:
            continue
        stage: dict[str, Any] = {"name": row["name"], "kind": row["kind"]}
        if row["label"]:
            stage["label"] = row["label"]
        probability = _int(row["probability"])
        stage["probability"] = 0 if probability is None else probability
        stages.append(stage)
        sent.append(row)
    return stages, sent


def _place_errors(errors: list[FieldError], sent: list[dict[str, Any]]) -> list[FieldError]:
    """Errors of ``stages[i]...`` go to their row; the rest are returned."""
    others = []
    for error in errors:
        match = re.match(r"^stages\[(\d+)\]\.?(.*)$", error.field)
        if match and int(match.group(1)) < len(sent):
            sent[int(match.group(1))]["errors"].append(error)
        else:
            others.append(error)
    return others


def _rows_of(pipeline: Any) -> list[dict[str, Any]]:
    return [{"name": s.name, "label": s.label, "probability": str(s.probability), "kind": s.kind, "remove": False,
             "existing": True, "errors": []} for s in pipeline.stages]


async def _pipelines_page(request: Request, status: int = 200, **context: Any) -> Response:
    dep = _deployment(request)
    with_stage = [e for e in _entities(request) if e.field("stage") is not None]
    context.setdefault("rows", [])
    return await _render(request, "settings/pipelines.html", "pipelines", status,
                         pipelines=dep.pipeline_service.list(), stage_entities=with_stage, kinds=KINDS, **context)


@get("/settings/pipelines", include_in_schema=False)
async def pipelines_page(request: Request) -> Response:
    _need(request, "pipelines")
    return await _pipelines_page(request)


@post("/settings/pipelines", include_in_schema=False, status_code=303)
async def pipeline_add(request: Request) -> Response:
    actor = _need(request, "pipelines")
    dep = _deployment(request)
    form = await request.form()
    rows = _stage_rows(form)
    stages, sent = _stages_from(rows)
    data = {"name": _text(form, "name"), "entity": _text(form, "entity") or "deal", "stages": stages}
    if _text(form, "label"):
        data["label"] = _text(form, "label")
    created, errors = await _attempt(lambda: dep.pipeline_service.create(data, actor=actor))
    if errors:
        return await _pipelines_page(request, 422, errors=_place_errors(errors, sent), values=dict(form), rows=rows)
    return _done(f"/settings/pipelines/{quote(created.name)}", "pipeline_added")


async def _pipeline_page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    dep = _deployment(request)
    pipeline = dep.pipeline_service.get(name)  # NotFound
    counts: dict[str, int] = {}
    try:
        summary = await dep.pipeline_service.summary(name, actor=_actor(request))
        counts = {s["name"]: s["count"] for s in summary.get("stages", [])}
    except (Forbidden, ValidationError):
        pass
    context.setdefault("rows", _rows_of(pipeline))
    return await _render(request, "settings/pipeline.html", "pipelines", status, pipeline=pipeline, counts=counts,
                         kinds=KINDS, declared=name in dep.pipeline_service.declared, **context)


@get("/settings/pipelines/{name:str}", include_in_schema=False)
async def pipeline_page(request: Request) -> Response:
    _need(request, "pipelines")
    return await _pipeline_page(request, request.path_params["name"])


@post("/settings/pipelines/{name:str}", include_in_schema=False, status_code=303)
async def pipeline_update(request: Request) -> Response:
    actor = _need(request, "pipelines")
    dep = _deployment(request)
    name = request.path_params["name"]
    dep.pipeline_service.get(name)  # NotFound
    form = await request.form()
    rows = _stage_rows(form)
    stages, sent = _stages_from(rows)
    data: dict[str, Any] = {"stages": stages}
    if _text(form, "label"):
        data["label"] = _text(form, "label")
    _, errors = await _attempt(lambda: dep.pipeline_service.update(name, data, actor=actor))
    if errors:
        return await _pipeline_page(request, name, 422, errors=_place_errors(errors, sent), values=dict(form), rows=rows)
    return _done(f"/settings/pipelines/{quote(name)}", "pipeline_saved")


@post("/settings/pipelines/{name:str}/delete", include_in_schema=False, status_code=303)
async def pipeline_delete(request: Request) -> Response:
    actor = _need(request, "pipelines")
    dep = _deployment(request)
    name = request.path_params["name"]
    dep.pipeline_service.get(name)  # NotFound
    restored, errors = await _attempt(lambda: dep.pipeline_service.delete(name, actor=actor))
    if errors:
        return await _pipeline_page(request, name, 422, errors=errors)
    if restored is not None:
        return _done(f"/settings/pipelines/{quote(name)}", "pipeline_reset")
    return _done("/settings/pipelines", "pipeline_deleted", what=name)


# -- automation -----------------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def _rule_values(rule: Any) -> dict[str, Any]:
    data = msgspec.to_builtins(rule) if not isinstance(rule, dict) else rule
    return {"name": data.get("name") or "", "description": data.get("description") or "",
            "entity": data.get("entity") or "", "active": data.get("active", True),
            **{key: _json_text(data.get(key)) for key in ("trigger", "condition", "unless", "actions")}}


def _rule_input(form: FormMultiDict) -> tuple[dict[str, Any], list[FieldError]]:
    data: dict[str, Any] = {"name": _text(form, "name"), "description": _text(form, "description"),
                            "entity": _text(form, "entity") or None, "active": _flag(form, "active")}
    errors = []
    for key, required in (("trigger", True), ("condition", False), ("unless", False), ("actions", True)):
        raw = (form.get(key) or "").strip()
        if not raw:
            data[key] = None
            if required:
                errors.append(FieldError(key, "required", "JSON is required here"))
            continue
        try:
            data[key] = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            errors.append(FieldError(key, "invalid_json", f"not valid JSON: {exc}"))
    return data, errors


def _rule_filters(request: Request) -> dict[str, Any]:
    params = request.query_params
    rule, outcome, before = params.get("rule") or "", params.get("outcome") or "", params.get("before") or ""
    return {"rule_id": int(rule) if rule.isdigit() else None, "outcome": outcome if outcome in OUTCOMES else None,
            "before_id": int(before) if before.isdigit() else None}


@get("/settings/automation", include_in_schema=False)
async def automation_page(request: Request) -> Response:
    _need(request, "automation")
    dep = _deployment(request)
    filters = _rule_filters(request)
    rules = await dep.automation.list()
    firings = await dep.automation.firings(limit=50, **filters)
    return await _render(request, "settings/automation.html", "automation", rules=rules, firings=firings,
                         filters=filters, outcomes=OUTCOMES, rule_names={r.id: r.name for r in rules})


async def _rule_page(request: Request, rule: Any, status: int = 200, **context: Any) -> Response:
    dep = _deployment(request)
    firings = await dep.automation.firings(rule_id=rule.id, limit=20) if rule is not None else []
    actions = sorted(dep.automation.action_types().values(), key=lambda a: (a.plugin != "core", a.name))
    context.setdefault("values", _rule_values(rule) if rule is not None else
                       {**_rule_values(AUTOMATION_EXAMPLE), "active": True})
    return await _render(request, "settings/rule.html", "automation", status, rule=rule, firings=firings,
                         actions=actions, triggers=TRIGGERS, entities=_entities(request), **context)


@get("/settings/automation/new", include_in_schema=False)
async def rule_new(request: Request) -> Response:
    _need(request, "automation")
    return await _rule_page(request, None)


@post("/settings/automation", include_in_schema=False, status_code=303)
async def rule_add(request: Request) -> Response:
    actor = _need(request, "automation")
    dep = _deployment(request)
    form = await request.form()
    data, errors = _rule_input(form)
    rule = None
    if not errors:
        rule, errors = await _attempt(lambda: dep.automation.create(data, actor=actor))
    if errors:
        return await _rule_page(request, None, 422, errors=errors, values={**dict(form), "active": _flag(form, "active")})
    return _done("/settings/automation", "rule_added", what=rule.name)


@get("/settings/automation/{rule_id:int}", include_in_schema=False)
async def rule_page(request: Request) -> Response:
    _need(request, "automation")
    return await _rule_page(request, await _deployment(request).automation.get(request.path_params["rule_id"]))


@post("/settings/automation/{rule_id:int}", include_in_schema=False, status_code=303)
async def rule_update(request: Request) -> Response:
    actor = _need(request, "automation")
    dep = _deployment(request)
    rule = await dep.automation.get(request.path_params["rule_id"])
    form = await request.form()
    data, errors = _rule_input(form)
    if not errors:
        _, errors = await _attempt(lambda: dep.automation.update(rule.id, data, actor=actor))
    if errors:
        return await _rule_page(request, rule, 422, errors=errors, values={**dict(form), "active": _flag(form, "active")})
    return _done(f"/settings/automation/{rule.id}", "rule_saved")


@post("/settings/automation/{rule_id:int}/active", include_in_schema=False, status_code=303)
async def rule_active(request: Request) -> Response:
    actor = _need(request, "automation")
    dep = _deployment(request)
    rule = await dep.automation.get(request.path_params["rule_id"])
    active = _flag(await request.form(), "active")
    _, errors = await _attempt(lambda: dep.automation.update(rule.id, {"active": active}, actor=actor))
    if errors:
        return await _rule_page(request, rule, 422, errors=errors)
    return _done("/settings/automation", "rule_on" if active else "rule_off", what=rule.name)


@post("/settings/automation/{rule_id:int}/delete", include_in_schema=False, status_code=303)
async def rule_delete(request: Request) -> Response:
    actor = _need(request, "automation")
    dep = _deployment(request)
    rule = await dep.automation.get(request.path_params["rule_id"])
    await dep.automation.delete(rule.id, actor=actor)
    return _done("/settings/automation", "rule_deleted", what=rule.name)


@post("/settings/automation/{rule_id:int}/run", include_in_schema=False, status_code=200)
async def rule_run(request: Request) -> Response:
    actor = _need(request, "automation")
    dep = _deployment(request)
    rule = await dep.automation.get(request.path_params["rule_id"])
    form = await request.form()
    raw = _text(form, "record_id")
    record_id = int(raw) if raw.isdigit() else None
    errors: list[FieldError] = []
    firing = None
    if rule.entity is not None and record_id is None:
        errors = [FieldError("record_id", "required", f"the id of a {rule.entity} to run the rule on")]
    else:
        try:
            firing, errors = await _attempt(lambda: dep.automation.run(rule.id, record_id, actor=actor), "record_id")
        except NotFound as exc:
            errors = [FieldError("record_id", "not_found", str(exc))]
    return await _rule_page(request, rule, 422 if errors else 200, errors=errors, run_result=firing,
                            run_record=raw)


# -- users ----------------------------------------------------------------------------------------


async def _users_page(request: Request, status: int = 200, **context: Any) -> Response:
    auth = _deployment(request).auth
    return await _render(request, "settings/users.html", "users", status, users=await auth.users(),
                         roles=await auth.roles(), teams=await auth.teams(), **context)


@get("/settings/users", include_in_schema=False)
async def users_page(request: Request) -> Response:
    _need(request, "users")
    return await _users_page(request)


@post("/settings/users", include_in_schema=False, status_code=303)
async def user_add(request: Request) -> Response:
    actor = _need(request, "users")
    auth = _deployment(request).auth
    form = await request.form()
    password = form.get("password") or None
    user, errors = await _attempt(lambda: auth.create_user(
        name=_text(form, "name"), email=_text(form, "email"), password=password, role=_text(form, "role") or "agent",
        teams=_all(form, "teams"), actor=actor))
    if errors:
        values = {**dict(form), "teams": _all(form, "teams"), "password": ""}
        return await _users_page(request, 422, errors=errors, values=values, adding=True)
    return _done("/settings/users", "user_added", what=user["email"])


@post("/settings/users/{user_id:int}", include_in_schema=False, status_code=303)
async def user_update(request: Request) -> Response:
    actor = _need(request, "users")
    auth = _deployment(request).auth
    user_id = request.path_params["user_id"]
    user = await auth.user(user_id)  # NotFound
    form = await request.form()
    active = _flag(form, "active")
    password = form.get("password") or ""

    async def change() -> None:
        if not active and user_id == actor.user_id:
            raise ValidationError([FieldError("active", "invalid", "you cannot disable yourself")])
        await auth.set_role(user_id, _text(form, "role") or user["role"] or "agent", actor=actor)
        await auth.set_teams(user_id, _all(form, "teams"), actor=actor)
        await auth.set_active(user_id, active, actor=actor)
        if password:
            credentials = request.scope.get("auth")
            keep = credentials.token if credentials is not None and credentials.via == "session" else None
            await auth.set_password(user_id, password, actor=actor, keep_session=keep)

    _, errors = await _attempt(change)
    if errors:
        values = {**dict(form), "teams": _all(form, "teams"), "active": active, "password": ""}
        return await _users_page(request, 422, errors=errors, values=values, editing=user_id)
    return _done("/settings/users", "user_saved", what=user["email"])


@post("/settings/users/{user_id:int}/reset-link", include_in_schema=False, status_code=200)
async def user_reset_link(request: Request) -> Response:
    actor = _need(request, "users")
    dep = _deployment(request)
    user = await dep.auth.user(request.path_params["user_id"])
    base = dep.settings.base_url or link_base_url(request)
    if base is None:
        return await _users_page(request, 422, errors=[FieldError(
            "base_url", "missing", "set base_url in crm.toml to the web app's address: reset links point there")])
    link = await dep.auth.reset_link(user["id"], base_url=base, actor=actor)
    return await _users_page(request, reset={"user": user, "link": link})


# -- roles and teams ------------------------------------------------------------------------------


async def _roles_page(request: Request, status: int = 200, **context: Any) -> Response:
    auth = _deployment(request).auth
    users = {u["id"]: u for u in await auth.users()}
    roles = await auth.roles()
    holders: dict[str, int] = {}
    for user in users.values():
        holders[user["role"]] = holders.get(user["role"], 0) + 1
    return await _render(request, "settings/roles.html", "roles", status, roles=roles, teams=await auth.teams(),
                         users=users, holders=holders, can_edit=_actor(request).has("manage_roles"), **context)


@get("/settings/roles", include_in_schema=False)
async def roles_page(request: Request) -> Response:
    _need(request, "roles")
    return await _roles_page(request)


@post("/settings/roles", include_in_schema=False, status_code=303)
async def role_add(request: Request) -> Response:
    actor = _need(request, "roles", "manage_roles")
    auth = _deployment(request).auth
    form = await request.form()
    name, base = _text(form, "name"), _text(form, "copy_from")

    async def create() -> Role:
        existing = {r.name for r in await auth.roles()}
        if name in existing:
            raise ValidationError([FieldError("name", "taken", f"a role named {name!r} exists; open it to change it")])
        data = msgspec.to_builtins(await auth.role(base)) if base else {}
        data.update({"name": name, "label": _text(form, "label"), "builtin": False})
        return await auth.save_role(check_role(data), actor=actor)

    role, errors = await _attempt(create)
    if errors:
        return await _roles_page(request, 422, errors=errors, values=dict(form), adding=True)
    return _done(f"/settings/roles/{quote(role.name)}", "role_added")


def _role_table(request: Request, role: Role) -> list[dict[str, Any]]:
    """Rows of the scope table: ``*`` (every other entity type), then each entity type; a cell
    is a scope, or "" where the row follows ``*``."""
    rows = [{"entity": "*", "label": None, "cells": {a: role.entities.get("*", {}).get(a, Scope.NONE).value for a in ACTIONS}}]
    for entity in _entities(request):
        rules = role.entities.get(entity.name)
        cells = {a: (rules.get(a, Scope.NONE).value if rules is not None else "") for a in ACTIONS}
        rows.append({"entity": entity.name, "label": entity.label_plural, "cells": cells})
    return rows


def _role_from(form: FormMultiDict, role: Role, request: Request) -> dict[str, Any]:
    everyone = {a: form.get(f"scope-*-{a}") or "none" for a in ACTIONS}
    entities: dict[str, dict[str, str]] = {"*": everyone}
    for entity in _entities(request):
        cells = {a: form.get(f"scope-{entity.name}-{a}") or "" for a in ACTIONS}
        if any(cells.values()):
            entities[entity.name] = {a: (v or everyone[a]) for a, v in cells.items()}
    fields: dict[str, dict[str, str]] = {}
    for entity in _entities(request):
        for field in entity.fields:
            access = form.get(f"field-{entity.name}-{field.name}") or ""
            if access:
                fields.setdefault(entity.name, {})[field.name] = access
    return {"name": role.name, "label": _text(form, "label"), "description": _text(form, "description"),
            "entities": entities, "fields": fields, "grants": _all(form, "grants")}


async def _role_page(request: Request, role: Role, status: int = 200, **context: Any) -> Response:
    dep = _deployment(request)
    users = [u for u in await dep.auth.users() if u["role"] == role.name]
    permissions = sorted(dep.permissions.values(), key=lambda p: p.name)
    return await _render(request, "settings/role.html", "roles", status, role=role, table=_role_table(request, role),
                         actions=ACTIONS, scopes=[s.value for s in Scope], entities=_entities(request),
                         permissions=permissions, members=users, can_edit=_actor(request).has("manage_roles"), **context)


@get("/settings/roles/{name:str}", include_in_schema=False)
async def role_page(request: Request) -> Response:
    _need(request, "roles")
    return await _role_page(request, await _deployment(request).auth.role(request.path_params["name"]))


@post("/settings/roles/{name:str}", include_in_schema=False, status_code=303)
async def role_update(request: Request) -> Response:
    actor = _need(request, "roles", "manage_roles")
    auth = _deployment(request).auth
    role = await auth.role(request.path_params["name"])  # NotFound
    form = await request.form()
    data = _role_from(form, role, request)
    saved, errors = await _attempt(lambda: _save_role(auth, data, actor))
    if errors:  # the page again as sent (a scope it does not know shown as none)
        known = {s.value for s in Scope}
        entities = {name: {a: Scope(v) if v in known else Scope.NONE for a, v in rules.items()}
                    for name, rules in data["entities"].items()}
        shown = msgspec.structs.replace(role, label=data["label"], description=data["description"], entities=entities,
                                        fields=data["fields"], grants=data["grants"])
        return await _role_page(request, shown, 422, errors=errors)
    return _done(f"/settings/roles/{quote(saved.name)}", "role_saved")


async def _save_role(auth: Any, data: dict[str, Any], actor: Any) -> Role:
    return await auth.save_role(check_role(data), actor=actor)


@post("/settings/roles/{name:str}/delete", include_in_schema=False, status_code=303)
async def role_delete(request: Request) -> Response:
    actor = _need(request, "roles", "manage_roles")
    auth = _deployment(request).auth
    role = await auth.role(request.path_params["name"])  # NotFound
    _, errors = await _attempt(lambda: auth.delete_role(role.name, actor=actor))
    if errors:
        return await _role_page(request, role, 422, errors=errors)
    return _done("/settings/roles", "role_deleted", what=role.name)


@post("/settings/teams/add", include_in_schema=False, status_code=303)
async def team_add(request: Request) -> Response:
    actor = _need(request, "roles", "manage_roles")
    auth = _deployment(request).auth
    form = await request.form()
    team, errors = await _attempt(lambda: auth.create_team(_text(form, "team"), actor=actor), "team")
    if errors:
        errors = [FieldError("team" if e.field == "name" else e.field, e.code, e.message) for e in errors]
        return await _roles_page(request, 422, errors=errors, values={"team": _text(form, "team")})
    return _done("/settings/roles", "team_added", what=team["name"])


@post("/settings/teams/delete", include_in_schema=False, status_code=303)
async def team_delete(request: Request) -> Response:
    actor = _need(request, "roles", "manage_roles")
    auth = _deployment(request).auth
    name = _text(await request.form(), "team")
    _, errors = await _attempt(lambda: auth.delete_team(name, actor=actor), "team")
    if errors:
        return await _roles_page(request, 422, errors=errors)
    return _done("/settings/roles", "team_deleted", what=name)


# -- API tokens -----------------------------------------------------------------------------------


async def _tokens_page(request: Request, status: int = 200, **context: Any) -> Response:
    actor = _actor(request)
    auth = _deployment(request).auth
    everyone = actor.has("manage_tokens")
    users = {u["id"]: u for u in await auth.users()} if everyone else {}
    return await _render(request, "settings/tokens.html", "tokens", status, mine=await auth.tokens(user_id=actor.user_id),
                         others=[t for t in await auth.tokens() if t["user_id"] != actor.user_id] if everyone else [],
                         users=users, everyone=everyone, **context)


@get("/settings/tokens", include_in_schema=False)
async def tokens_page(request: Request) -> Response:
    _need(request, "tokens")
    return await _tokens_page(request)


@post("/settings/tokens", include_in_schema=False, status_code=200)
async def token_add(request: Request) -> Response:
    actor = _need(request, "tokens")
    dep = _deployment(request)
    form = await request.form()
    errors: list[FieldError] = []
    user_id = actor.user_id
    raw_user = _text(form, "user_id")
    if raw_user and raw_user != str(actor.user_id):
        if not actor.has("manage_tokens"):
            raise Forbidden("this needs the manage_tokens permission")
        user_id = int(raw_user) if raw_user.isdigit() else None
        if user_id is None:
            errors.append(FieldError("user_id", "invalid", "choose a user"))
    expires_at = None
    raw_expiry = _text(form, "expires")
    if raw_expiry:
        try:
            day = dt.date.fromisoformat(raw_expiry)
        except ValueError:
            errors.append(FieldError("expires_at", "invalid", "a date such as 2031-12-31"))
        else:  # the end of that day where the user lives
            me = await dep.records.get("user", actor.user_id) if actor.user_id else None
            zone = user_format(dep, me).zone
            expires_at = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=zone)
            if expires_at <= dt.datetime.now(dt.timezone.utc):
                errors.append(FieldError("expires_at", "in_past", "the expiry must be in the future"))
    new = None
    if not errors:
        new, errors = await _attempt(lambda: dep.auth.create_token(
            user_id, _text(form, "name"), read_only=_flag(form, "read_only"), expires_at=expires_at, actor=actor))
    if errors:
        return await _tokens_page(request, 422, errors=errors, values=dict(form))
    return await _tokens_page(request, new_token={**new.info, "token": new.token})


@post("/settings/tokens/{token_id:int}/revoke", include_in_schema=False, status_code=303)
async def token_revoke(request: Request) -> Response:
    actor = _need(request, "tokens")
    await _deployment(request).auth.revoke_token(request.path_params["token_id"], actor=actor)
    return _done("/settings/tokens", "token_revoked")


# -- plugins --------------------------------------------------------------------------------------


async def _plugins_page(request: Request, status: int = 200, **context: Any) -> Response:
    dep = _deployment(request)
    enabled = set(dep.settings.plugins)
    installed = sorted(discover().values(), key=lambda p: p.name)
    extra = [getattr(p, "PLUGIN", None) for p in dep.extra_plugins]
    return await _render(request, "settings/plugins.html", "plugins", status, installed=installed, enabled=enabled,
                         extra=[p for p in extra if p is not None], **context)


@get("/settings/plugins", include_in_schema=False)
async def plugins_page(request: Request) -> Response:
    _need(request, "plugins")
    return await _plugins_page(request)


@post("/settings/plugins/{name:str}/{action:str}", include_in_schema=False, status_code=303)
async def plugin_switch(request: Request) -> Response:
    _need(request, "plugins")
    from ...api.app import set_plugins  # the API's own way: also registers the plugin's routes

    dep = _deployment(request)
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ("enable", "disable"):
        raise NotFound("plugin action", action[:20])
    plugins = list(dep.settings.plugins)
    wanted = plugins + [name] if action == "enable" and name not in plugins else [p for p in plugins if p != name]
    _, errors = await _attempt(lambda: set_plugins(request, wanted), "plugins")
    if errors:
        return await _plugins_page(request, 422, errors=errors)
    return _done("/settings/plugins", "plugin_enabled" if action == "enable" else "plugin_disabled", what=name)


# -- webhooks -------------------------------------------------------------------------------------


def _webhook_input(form: FormMultiDict) -> dict[str, Any]:
    return {"url": _text(form, "url"), "events": _split(_text(form, "events")), "entities": _all(form, "entities"),
            "description": _text(form, "description"), "active": _flag(form, "active")}


async def _webhooks_page(request: Request, status: int = 200, **context: Any) -> Response:
    context.setdefault("values", {"events": "*.created, *.updated", "active": True})
    return await _render(request, "settings/webhooks.html", "webhooks", status,
                         webhooks=await _deployment(request).webhooks.list(), entities=_entities(request), **context)


@get("/settings/webhooks", include_in_schema=False)
async def webhooks_page(request: Request) -> Response:
    _need(request, "webhooks")
    return await _webhooks_page(request)


@post("/settings/webhooks", include_in_schema=False, status_code=303)
async def webhook_add(request: Request) -> Response:
    actor = _need(request, "webhooks")
    webhooks = _deployment(request).webhooks
    form = await request.form()
    data = _webhook_input(form)
    if len(data["description"]) > 1000:
        hook, errors = None, [FieldError("description", "invalid", "at most 1000 characters")]
    else:
        hook, errors = await _attempt(lambda: webhooks.create(
            data["url"], data["events"], entities=data["entities"], description=data["description"],
            active=data["active"], user_id=actor.user_id))
    if errors:
        return await _webhooks_page(request, 422, errors=errors,
                                    values={**dict(form), "entities": data["entities"], "active": data["active"]})
    return _done(f"/settings/webhooks/{hook['id']}", "webhook_added")


async def _webhook_page(request: Request, hook_id: int, status: int = 200, **context: Any) -> Response:
    webhooks = _deployment(request).webhooks
    hook = await webhooks.get(hook_id, secret=True)  # NotFound
    params = request.query_params
    wanted = params.get("status") or ""
    before = params.get("before") or ""
    deliveries = await webhooks.deliveries(webhook_id=hook_id, status=wanted if wanted in DELIVERY_STATUSES else None,
                                           before_id=int(before) if before.isdigit() else None, limit=50)
    context.setdefault("values", {**hook, "events": ", ".join(hook["events"])})
    return await _render(request, "settings/webhook.html", "webhooks", status, hook=hook, deliveries=deliveries,
                         statuses=DELIVERY_STATUSES, status_filter=wanted, entities=_entities(request),
                         request_open_secret=params.get("ok") in ("webhook_added", "secret_rotated"), **context)


@get("/settings/webhooks/{hook_id:int}", include_in_schema=False)
async def webhook_page(request: Request) -> Response:
    _need(request, "webhooks")
    return await _webhook_page(request, request.path_params["hook_id"])


@post("/settings/webhooks/{hook_id:int}", include_in_schema=False, status_code=303)
async def webhook_update(request: Request) -> Response:
    _need(request, "webhooks")
    webhooks = _deployment(request).webhooks
    hook_id = request.path_params["hook_id"]
    await webhooks.get(hook_id)  # NotFound
    form = await request.form()
    data = _webhook_input(form)
    _, errors = await _attempt(lambda: webhooks.update(hook_id, **data))
    if errors:
        return await _webhook_page(request, hook_id, 422, errors=errors,
                                   values={**dict(form), "entities": data["entities"], "active": data["active"]})
    return _done(f"/settings/webhooks/{hook_id}", "webhook_saved")


@post("/settings/webhooks/{hook_id:int}/rotate", include_in_schema=False, status_code=303)
async def webhook_rotate(request: Request) -> Response:
    _need(request, "webhooks")
    hook_id = request.path_params["hook_id"]
    await _deployment(request).webhooks.update(hook_id, rotate_secret=True)
    return _done(f"/settings/webhooks/{hook_id}", "secret_rotated")


@post("/settings/webhooks/{hook_id:int}/delete", include_in_schema=False, status_code=303)
async def webhook_delete(request: Request) -> Response:
    _need(request, "webhooks")
    hook_id = request.path_params["hook_id"]
    await _deployment(request).webhooks.delete(hook_id)
    return _done("/settings/webhooks", "webhook_deleted")


@get("/settings/webhooks/deliveries/{delivery_id:int}", include_in_schema=False)
async def delivery_page(request: Request) -> Response:
    _need(request, "webhooks")
    delivery = await _deployment(request).webhooks.delivery(request.path_params["delivery_id"])
    return await _render(request, "settings/delivery.html", "webhooks", delivery=delivery,
                         payload=_json_text(delivery["payload"]))


@post("/settings/webhooks/deliveries/{delivery_id:int}/redeliver", include_in_schema=False, status_code=303)
async def delivery_redeliver(request: Request) -> Response:
    _need(request, "webhooks")
    webhooks = _deployment(request).webhooks
    delivery = await webhooks.delivery(request.path_params["delivery_id"])  # NotFound
    _, errors = await _attempt(lambda: webhooks.redeliver(delivery["id"]))
    if errors:
        return await _render(request, "settings/delivery.html", "webhooks", 422, delivery=delivery, errors=errors,
                             payload=_json_text(delivery["payload"]))
    return _done(f"/settings/webhooks/{delivery['webhook_id']}", "redelivered")


# -- web forms ------------------------------------------------------------------------------------


def _form_values(form: WebForm) -> dict[str, Any]:
    data = msgspec.to_builtins(form)
    data["fields"] = "\n".join(f"{k} = {v}" for k, v in form.fields.items())
    data["required"] = ", ".join(form.required)
    data["dedup"] = ", ".join(form.dedup)
    return data


def _webform_input(form: FormMultiDict, name: str) -> tuple[dict[str, Any], list[FieldError]]:
    errors: list[FieldError] = []
    mapping: dict[str, str] = {}
    for line in (form.get("fields") or "").splitlines():
        if not line.strip():
            continue
        source, sep, target = line.partition("=") if "=" in line else line.partition(":")
        if not sep or not source.strip() or not target.strip():
            errors.append(FieldError("fields", "invalid", f"{line.strip()!r}: write each line as form_field = entity_field"))
            continue
        mapping[source.strip()] = target.strip()

    def user(key: str) -> int | None:
        raw = _text(form, key)
        return int(raw) if raw.isdigit() else None

    rate = _text(form, "rate_limit")
    data = {
        "name": name, "entity": _text(form, "entity") or "contact", "fields": mapping,
        "required": _split(_text(form, "required")), "dedup": _split(_text(form, "dedup")),
        "owner_id": user("owner_id"), "team_id": user("team_id"), "as_user_id": user("as_user_id"),
        "honeypot": _text(form, "honeypot") or None, "rate_limit": int(rate) if rate.isdigit() else 10,
        "redirect_url": _text(form, "redirect_url") or None,
        "success_message": _text(form, "success_message") or "Thank you, we will be in touch.",
        "active": _flag(form, "active"),
    }
    if rate and not rate.isdigit():
        errors.append(FieldError("rate_limit", "invalid", "a whole number of submissions per minute"))
    return data, errors


async def _form_choices(request: Request) -> dict[str, Any]:
    auth = _deployment(request).auth
    return {"users": await auth.users(), "teams": await auth.teams(), "entities": _entities(request)}


async def _forms_page(request: Request, status: int = 200, **context: Any) -> Response:
    context.setdefault("values", _form_values(WebForm(name="")))
    return await _render(request, "settings/forms.html", "forms", status, forms=await _deployment(request).forms.list(),
                         **await _form_choices(request), **context)


@get("/settings/forms", include_in_schema=False)
async def forms_page(request: Request) -> Response:
    _need(request, "forms")
    return await _forms_page(request)


async def _save_form(request: Request, data: dict[str, Any], *, new: bool) -> WebForm:
    forms = _deployment(request).forms
    form = msgspec.convert(data, WebForm)
    if new and form.name in {f.name for f in await forms.list()}:
        raise ValidationError([FieldError("name", "unique", f"a form named {form.name!r} exists; open it to change it")])
    return await forms.save(form)


@post("/settings/forms", include_in_schema=False, status_code=303)
async def form_add(request: Request) -> Response:
    _need(request, "forms")
    form = await request.form()
    data, errors = _webform_input(form, _text(form, "name"))
    saved = None
    if not errors:
        saved, errors = await _attempt(lambda: _save_form(request, data, new=True))
    if errors:
        return await _forms_page(request, 422, errors=errors, values={**dict(form), "active": _flag(form, "active")},
                                 adding=True)
    return _done(f"/settings/forms/{quote(saved.name)}", "form_added")


async def _form_page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    forms = _deployment(request).forms
    definition = await forms.get(name)  # NotFound
    before = request.query_params.get("before") or ""
    submissions = await forms.submissions(name, limit=50, before_id=int(before) if before.isdigit() else None)
    context.setdefault("values", _form_values(definition))
    entity = _deployment(request).registry.get(definition.entity)
    return await _render(request, "settings/form.html", "forms", status, definition=definition, submissions=submissions,
                         form_entity=entity, **await _form_choices(request), **context)


@get("/settings/forms/{name:str}", include_in_schema=False)
async def form_page(request: Request) -> Response:
    _need(request, "forms")
    return await _form_page(request, request.path_params["name"])


@post("/settings/forms/{name:str}", include_in_schema=False, status_code=303)
async def form_update(request: Request) -> Response:
    _need(request, "forms")
    name = request.path_params["name"]
    await _deployment(request).forms.get(name)  # NotFound
    form = await request.form()
    data, errors = _webform_input(form, name)
    if not errors:
        _, errors = await _attempt(lambda: _save_form(request, data, new=False))
    if errors:
        return await _form_page(request, name, 422, errors=errors, values={**dict(form), "active": _flag(form, "active")})
    return _done(f"/settings/forms/{quote(name)}", "form_saved")


@post("/settings/forms/{name:str}/delete", include_in_schema=False, status_code=303)
async def form_delete(request: Request) -> Response:
    _need(request, "forms")
    name = request.path_params["name"]
    await _deployment(request).forms.remove(name)
    return _done("/settings/forms", "form_deleted", what=name)


ROUTES: list[Any] = [
    settings_index,
    fields_page, field_add, field_update, field_remove, field_restore,
    pipelines_page, pipeline_add, pipeline_page, pipeline_update, pipeline_delete,
    automation_page, rule_new, rule_add, rule_page, rule_update, rule_active, rule_delete, rule_run,
    users_page, user_add, user_update, user_reset_link,
    roles_page, role_add, role_page, role_update, role_delete, team_add, team_delete,
    tokens_page, token_add, token_revoke,
    plugins_page, plugin_switch,
    webhooks_page, webhook_add, webhook_page, webhook_update, webhook_rotate, webhook_delete, delivery_page,
    delivery_redeliver,
    forms_page, form_add, form_page, form_update, form_delete,
]
