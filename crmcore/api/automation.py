"""HTTP routes of automation rules and their firing log.

Every route needs the ``manage_automation`` permission (admins have it). Rules:
``/api/automation/rules`` (list, create), ``/api/automation/rules/{id}`` (get, patch, delete),
``.../run`` (fire now for one record, to try a rule out). The firing log:
``/api/automation/firings`` (by rule, record, outcome). The actions rules can take, the
plugins' included: ``/api/automation/actions``. What a rule holds is described in
:mod:`crmcore.automation.engine`; every problem with one is a 422 naming the key
(``trigger.delay``, ``actions[1].assignee.role``...).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from ..automation import OUTCOMES, TRIGGERS
from ..records.errors import FieldError, ValidationError
from ._http import _body, _deployment, _int_param, _json
from .auth import _actor, _require

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths"]

PERMISSION = "manage_automation"


class RuleInput(msgspec.Struct, kw_only=True):
    """A rule as sent (a patch sends only what changes)."""

    #: Lower-case letters, digits, ``_ . -``; unique.
    name: str
    description: str = ""
    #: The entity type it watches (a schedule rule may have none).
    entity: str | None = None
    #: ``{"type": "created" | "updated" | "field_changed" | "stage_entered" | "date" | "schedule", ...}``,
    #: e.g. ``{"type": "created", "delay": "15m"}``, ``{"type": "field_changed", "field": "paid", "to": true}``,
    #: ``{"type": "schedule", "cron": "0 9 * * 1-5"}``.
    trigger: dict[str, Any]
    #: A filter (the API's filter language) the record must meet when the rule fires.
    condition: dict[str, Any] | None = None
    #: For rules that wait (a delay, a date): a filter that, met by then, cancels the firing.
    unless: dict[str, Any] | None = None
    #: ``[{"type": "create_task" | "notify" | "set_field" | "move_stage" | "create_record" | "webhook" | plugin action, ...}]``.
    actions: list[dict[str, Any]]
    active: bool = True


class Rule(RuleInput, kw_only=True):
    id: int
    created_at: dt.datetime
    updated_at: dt.datetime
    created_by: int | None


class RuleRun(msgspec.Struct, kw_only=True):
    #: The record to run the rule on (none for a schedule rule without an entity).
    record_id: int | None = None


class Firing(msgspec.Struct, kw_only=True):
    id: int
    rule_id: int
    rule: str
    entity: str | None
    record_id: int | None
    #: What fired it: ``created``, ``field_changed paid to True``, ``created + 15m``, ``run by hand``...
    trigger: str
    at: dt.datetime
    #: done | skipped | failed
    outcome: str
    #: Why it failed (the action and the reason) or was skipped.
    error: str | None
    #: What each action did (the task's id, who was notified...), when done.
    results: list[Any] | None


class ActionInfo(msgspec.Struct, kw_only=True):
    name: str
    label: str
    description: str
    #: ``core`` or the plugin adding it.
    plugin: str


class EventInfo(msgspec.Struct, kw_only=True):
    """An event a plugin raises, usable as ``{"type": "event", "event": name}`` on ``entity``."""

    name: str
    entity: str
    label: str
    description: str
    plugin: str


SCHEMA_TYPES = [RuleInput, Rule, RuleRun, Firing, ActionInfo, EventInfo]


def _allowed(request: Request):
    actor = _actor(request)
    _require(actor, PERMISSION)
    return actor


@get("/api/automation/rules", include_in_schema=False)
async def list_rules(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).automation.list(entity=request.query_params.get("entity") or None))


@post("/api/automation/rules", include_in_schema=False, status_code=201)
async def create_rule(request: Request) -> Response:
    actor = _allowed(request)
    return _json(await _deployment(request).automation.create(await _body(request), actor=actor), 201)


@get("/api/automation/rules/{rule_id:int}", include_in_schema=False)
async def get_rule(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).automation.get(request.path_params["rule_id"]))


@patch("/api/automation/rules/{rule_id:int}", include_in_schema=False)
async def update_rule(request: Request) -> Response:
    actor = _allowed(request)
    return _json(await _deployment(request).automation.update(request.path_params["rule_id"], await _body(request),
                                                              actor=actor))


@delete("/api/automation/rules/{rule_id:int}", include_in_schema=False, status_code=204)
async def delete_rule(request: Request) -> None:
    actor = _allowed(request)
    await _deployment(request).automation.delete(request.path_params["rule_id"], actor=actor)


@post("/api/automation/rules/{rule_id:int}/run", include_in_schema=False)
async def run_rule(request: Request) -> Response:
    actor = _allowed(request)
    data = await _body(request) if await request.body() else {}
    if not isinstance(data, dict) or set(data) - {"record_id"}:
        raise ValidationError([FieldError("body", "invalid", 'expected {"record_id": id}')])
    return _json(await _deployment(request).automation.run(request.path_params["rule_id"], data.get("record_id"),
                                                           actor=actor))


@get("/api/automation/firings", include_in_schema=False)
async def list_firings(request: Request) -> Response:
    _allowed(request)
    params = request.query_params
    limit = _int_param("limit", params.get("limit"), 50)
    if not 1 <= limit <= 1000:
        raise ValidationError([FieldError("limit", "invalid", "limit must be between 1 and 1000")])
    return _json(await _deployment(request).automation.firings(
        rule_id=_int_param("rule_id", params.get("rule_id")), entity=params.get("entity") or None,
        record_id=_int_param("record_id", params.get("record_id")), outcome=params.get("outcome") or None,
        before_id=_int_param("before", params.get("before")), limit=limit))


@get("/api/automation/actions", include_in_schema=False)
async def list_actions(request: Request) -> Response:
    _allowed(request)
    return _json([{"name": a.name, "label": a.label, "description": a.description, "plugin": a.plugin}
                  for a in _deployment(request).automation.action_types().values()])


@get("/api/automation/events", include_in_schema=False)
async def list_events(request: Request) -> Response:
    _allowed(request)
    return _json([msgspec.structs.asdict(e) for e in _deployment(request).automation.event_types().values()])


ROUTES = [list_rules, create_rule, get_rule, update_rule, delete_rule, run_rule, list_firings, list_actions, list_events]


def openapi_paths(problem: Any) -> dict[str, Any]:
    """The OpenAPI path items of these routes; ``problem(description)`` makes a problem response."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    ok = lambda schema, what="OK": {"description": what, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    many = lambda name: {"type": "array", "items": ref(name)}  # noqa: E731
    body = lambda name: {"required": True, "content": {"application/json": {"schema": ref(name)}}}  # noqa: E731
    tag = ["automation"]
    needs = {"403": problem(f"Needs the {PERMISSION} permission")}
    bad = {"422": problem("Invalid rule: errors name each key (trigger.delay, actions[0].assignee...)")}
    gone = {"404": problem("No such rule")}
    rule_id = [{"name": "rule_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    return {
        "/api/automation/rules": {
            "get": {"operationId": "automation_rules_list", "tags": tag, "summary": "Automation rules",
                    "parameters": [{"name": "entity", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": ok(many("Rule")), **needs}},
            "post": {"operationId": "automation_rules_create", "tags": tag,
                     "summary": f"Add a rule: trigger ({', '.join(TRIGGERS)}), condition, actions",
                     "requestBody": body("RuleInput"), "responses": {"201": ok(ref("Rule"), "Created"), **needs, **bad}}},
        "/api/automation/rules/{rule_id}": {
            "parameters": rule_id,
            "get": {"operationId": "automation_rules_get", "tags": tag, "summary": "A rule",
                    "responses": {"200": ok(ref("Rule")), **needs, **gone}},
            "patch": {"operationId": "automation_rules_update", "tags": tag,
                      "summary": "Change a rule (keys left out keep their value; active: false turns it off)",
                      "requestBody": body("RuleInput"), "responses": {"200": ok(ref("Rule")), **needs, **gone, **bad}},
            "delete": {"operationId": "automation_rules_delete", "tags": tag,
                       "summary": "Remove a rule and its pending timers (its firing log stays)",
                       "responses": {"204": {"description": "Removed"}, **needs, **gone}}},
        "/api/automation/rules/{rule_id}/run": {
            "parameters": rule_id,
            "post": {"operationId": "automation_rules_run", "tags": tag,
                     "summary": "Fire a rule now for one record (its conditions are checked); the firing",
                     "requestBody": body("RuleRun"), "responses": {"200": ok(ref("Firing")), **needs, **gone, **bad}}},
        "/api/automation/firings": {
            "get": {"operationId": "automation_firings", "tags": tag, "summary": "The firing log, newest first",
                    "parameters": [
                        {"name": "rule_id", "in": "query", "schema": {"type": "integer"}},
                        {"name": "entity", "in": "query", "schema": {"type": "string"}},
                        {"name": "record_id", "in": "query", "schema": {"type": "integer"}},
                        {"name": "outcome", "in": "query", "schema": {"type": "string", "enum": list(OUTCOMES)}},
                        {"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "older than this id"},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                    "responses": {"200": ok(many("Firing")), **needs, **bad}}},
        "/api/automation/actions": {
            "get": {"operationId": "automation_actions", "tags": tag,
                    "summary": "The actions rules can take, the enabled plugins' included",
                    "responses": {"200": ok(many("ActionInfo")), **needs}}},
        "/api/automation/events": {
            "get": {"operationId": "automation_events", "tags": tag,
                    "summary": "The events plugins raise that rules can be triggered by",
                    "responses": {"200": ok(many("EventInfo")), **needs}}},
    }
