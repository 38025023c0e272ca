"""Automation rules: trigger -> conditions -> actions, stored in the database.

A consultant configures them by API (``/api/automation/rules``) or CLI (``crm rules``), without
code. A rule is data::

    {"name": "lead-first-contact", "entity": "contact",
     "trigger": {"type": "created"},
     "condition": {"field": "source", "op": "startswith", "value": "web form"},
     "actions": [{"type": "create_task", "subject": "Contact {{ record.first_name }} within 15 minutes",
                  "assignee": "owner", "due": "15m"}]}

**Triggers** (``trigger.type``):

- ``created``: a record was created.
- ``updated``: a record was changed (``fields``: only when one of these changed).
- ``field_changed``: ``field`` changed, optionally ``to`` and/or ``from`` a value. A record
  created with the field set counts as a change from nothing.
- ``stage_entered``: the record entered ``stage`` (any stage when left out), optionally only in
  ``pipeline``; a record created in a stage enters it.
- ``event``: a plugin's ``event`` about the record happened (``telephony.call.missed``...;
  plugins declare them with ``crm_automation_events``, ``/api/automation/events`` lists them).
- ``date``: ``offset`` (``-1d``, ``2h``...) from the value of the date/datetime ``field``: it is
  scheduled when the field is set, moved when it changes, withdrawn when it is cleared. A time
  already past when the field is set is not scheduled (an import of old records fires nothing).
  A date without a time counts from its midnight in the deployment's time zone. A new date
  rule (or one turned on again) also times the records already there, in a background job.
- ``schedule``: a ``cron`` expression (``0 9 * * 1-5``) in the deployment's time zone (or
  ``timezone``): at each tick the actions run for every record of ``entity`` that meets
  ``condition``, or once without a record when the rule names no entity.

The event triggers take a ``delay`` (``15m``, ``2h``, ``3d``, ``1w``): the rule then fires that
long after the event, **unless** its ``unless`` filter matches the record by then ("15 minutes
after a lead is created, unless an activity was logged": ``{"has": {"entity": "activity", "via":
"contact"}}``). The same event again before then restarts the wait.

**Conditions** are the API's filter language (:mod:`crmcore.records.query`), ``has`` nodes
included: ``condition`` must hold when the rule fires; ``unless`` (delayed and date rules) must not.

**Actions** run in order, in one transaction: all of them happen or, when one fails, none does
(the firing is logged as failed with the action and the reason). Core actions: ``create_task``,
``notify``, ``set_field``, ``move_stage``, ``create_record``, ``webhook`` and
``generate_document`` (a document from a template, attached to the record); plugins add more
through ``crm_automation_actions``. Texts are sandboxed Jinja templates over ``record`` (its
values), ``entity``, ``rule`` and ``now``; money and times print in the deployment's locale
(``€2,400.00``, ``Mar 5, 2031 5:00 PM``), times in its time zone, a phone number in E.164, an
empty value as nothing. People are named by a
*recipient*: ``"owner"``, ``"owner_manager"`` (the ``manager`` of the record's owner),
``{"user": id or e-mail}``, ``{"role": name}`` (notify: every active user with the role; a
task: the one of them with the fewest open tasks) or ``{"field": name}`` (a user field of the
record).

**How it runs.** Rules are matched inside the write's transaction (a ``Change.after_write``
callback), and what they will do is enqueued there as a durable job, committed or rolled back
with the write: a crash right after the commit loses nothing. The writer then runs the job at
once (so a new lead's task exists when the API answers); should it stop first, any worker runs
it. Delayed, date and schedule rules are jobs due later, keyed so that one record has one
pending timer per rule. Each record's firing is recorded once (``crm_rule_firing``, unique per
job and record), so a job run again after a crash does not act twice. Rules act as
``Deployment.automation_actor()`` (setting ``automation_user``), whose role limits what they may
read and change. A failing rule never fails the write that triggered it. Writes made by a rule
trigger other rules, up to :data:`MAX_CHAIN` deep, and never the same rule again.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import inspect
import logging
import re
import time
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..auth.permissions import Actor
from ..entities import EntityType, FieldType
from ..fieldvalues import FieldValueError, Money, parse_value
from ..plugins import PluginError, call_each
from ..records.errors import FieldError, Forbidden, NotFound, ValidationError
from ..records.query import ListQuery
from ..storage.database import IntegrityError

if TYPE_CHECKING:
    from ..deployment import Deployment
    from ..records.service import Change, RecordsService

__all__ = [
    "AUTOMATION_TABLES", "Automation", "ActionContext", "ActionError", "Rule", "parse_duration",
    "TRIGGERS", "OUTCOMES", "FIRE", "SCHEDULE",
]

log = logging.getLogger("crmcore.automation")
UTC = dt.timezone.utc

AUTOMATION_TABLES: list[str] = [
    # A rule: "trigger", "condition", "unless" and "actions" are JSON as given (normalised).
    """CREATE TABLE IF NOT EXISTS crm_rule (
        "id" {serial_kept}, "name" TEXT NOT NULL UNIQUE, "description" TEXT NOT NULL DEFAULT '',
        "entity" TEXT, "trigger" TEXT NOT NULL, "condition" TEXT, "unless" TEXT, "actions" TEXT NOT NULL,
        "active" {bool} NOT NULL DEFAULT {true}, "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL,
        "created_by" BIGINT)""",
    # Every firing: which rule, which record, what came of it. "token" (unique) names the job's
    # firing for one record, so a job run again after a crash does not fire twice.
    """CREATE TABLE IF NOT EXISTS crm_rule_firing (
        "id" {serial}, "rule_id" BIGINT NOT NULL, "rule" TEXT NOT NULL, "entity" TEXT, "record_id" BIGINT,
        "trigger" TEXT NOT NULL, "at" TEXT NOT NULL, "outcome" TEXT NOT NULL, "error" TEXT, "results" TEXT,
        "token" TEXT UNIQUE)""",
    """CREATE INDEX IF NOT EXISTS crm_rule_firing_rule ON crm_rule_firing ("rule_id", "id")""",
    """CREATE INDEX IF NOT EXISTS crm_rule_firing_record ON crm_rule_firing ("entity", "record_id", "id")""",
    """CREATE INDEX IF NOT EXISTS crm_rule_firing_outcome ON crm_rule_firing ("outcome", "id")""",
]

#: The job that runs a rule's actions for records (now, or later for delayed and date rules).
FIRE = "automation.fire"
#: The job of a schedule rule's next tick.
SCHEDULE = "automation.schedule"
#: The job making a new date rule's timers for the records there already.
PLAN = "automation.plan"
TRIGGERS = ("created", "updated", "field_changed", "stage_entered", "event", "date", "schedule")
#: done: every action ran; skipped: the rule was due but its condition no longer held (or its
#: ``unless`` did); failed: an action failed and none of them took effect.
OUTCOMES = ("done", "skipped", "failed")
#: Rules triggered by rules' writes, at most this deep.
MAX_CHAIN = 5
MAX_ACTIONS = 20
MAX_TEXT = 10_000
#: Seconds other processes' rule changes may take to be seen (this process's: at once).
CACHE_SECONDS = 5.0
#: Records a schedule tick reads at a time.
PAGE = 500
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_DURATION = re.compile(r"^\s*(-?)\s*(\d{1,6})\s*(m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)\s*$", re.I)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RECIPIENT_HELP = ('a recipient: "owner", "owner_manager", {"user": id or e-mail}, {"role": name} '
                   'or {"field": a user field of the record}')


def parse_duration(value: Any, where: str, *, negative: bool = False) -> dt.timedelta:
    """``15m``, ``2 hours``, ``3d``, ``1w`` (``-1d`` where ``negative``) as a timedelta."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None or (match.group(1) and not negative):
        sign = "an optional minus and " if negative else ""
        raise ValidationError([FieldError(where, "invalid", f"a duration: {sign}a number and m, h, d or w, "
                                                            "e.g. 15m, 2h, 3d, 1w")])
    amount = int(match.group(2)) * (-1 if match.group(1) else 1)
    return dt.timedelta(**{_UNITS[match.group(3)[0].lower()]: amount})


def _ts(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _json(value: Any) -> Any:
    return msgspec.to_builtins(value)


class ActionError(Exception):
    """An action cannot be done; the message says why (it is the firing log's error)."""


class Rule(msgspec.Struct, kw_only=True):
    """A stored rule, as the API shows it."""

    id: int
    name: str
    description: str = ""
    entity: str | None = None
    trigger: dict[str, Any]
    condition: dict[str, Any] | None = None
    unless: dict[str, Any] | None = None
    actions: list[dict[str, Any]]
    active: bool = True
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    created_by: int | None = None


class ActionContext(msgspec.Struct, kw_only=True):
    """What an action gets: the rule, the record (None for a schedule rule without an entity),
    the action's ``params`` as stored, and ``records``: the records service acting as the
    automation user. ``render(text)`` fills a template."""

    deployment: Any
    rule: Rule
    entity: str | None
    record: dict[str, Any] | None
    params: dict[str, Any]
    actor: Actor
    records: Any
    automation: Any

    def render(self, template: Any) -> str:
        return self.automation.render(template, self)


class ActionType(msgspec.Struct, kw_only=True):
    name: str
    run: Callable[[ActionContext], Any]
    #: ``check(params, entity) -> params``: validate (and normalise) an action when a rule is
    #: saved; raise ValidationError (field paths relative to the action) or ValueError.
    check: Callable[..., Any] | None = None
    label: str = ""
    description: str = ""
    plugin: str = "core"


class EventType(msgspec.Struct, kw_only=True):
    """An event a plugin raises about records of ``entity`` (``crm_automation_events``)."""

    name: str
    entity: str
    label: str = ""
    description: str = ""
    plugin: str = ""


class _Cached(msgspec.Struct):
    at: float
    by_entity: dict[str, list[Rule]]


_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=False, trim_blocks=True)


def _template(value: Any, where: str, *, required: bool = False, max_length: int = MAX_TEXT) -> str | None:
    if value is None or value == "":
        if required:
            raise ValidationError([FieldError(where, "required", "a text (a template: {{ record.field }} fills a value in)")])
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationError([FieldError(where, "invalid", f"a text of at most {max_length} characters")])
    try:
        _TEMPLATES.parse(value)
    except TemplateError as exc:
        raise ValidationError([FieldError(where, "invalid", f"not a valid template: {exc}")]) from None
    return value


class Automation:
    """Rules, their firing and their log (``deployment.automation``)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self._cache: _Cached | None = None
        self._actions: dict[str, ActionType] | None = None
        self._actions_pm: Any = None
        self._events: dict[str, EventType] | None = None
        self._events_pm: Any = None
        # Per instance (two deployments may share a process): the rules a running firing
        # descends from, and the jobs this task enqueued that it runs itself after commit.
        self._chain: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(f"chain{id(self)}", default=())
        self._eager: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(f"eager{id(self)}", default=None)
        #: Templates of texts: values show as people read them (see _display).
        self._templates = ImmutableSandboxedEnvironment(autoescape=False, trim_blocks=True, finalize=self._display)
        deployment.jobs.handler(FIRE)(self._fire_job)
        deployment.jobs.handler(SCHEDULE, max_attempts=3)(self._schedule_job)
        deployment.jobs.handler(PLAN)(self._plan_job)

    @property
    def db(self):
        return self.deployment.db

    def _now(self) -> dt.datetime:
        return self.deployment.clock.now()

    def _zone(self, name: str | None = None) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(name or self.deployment.settings.timezone or "UTC")

    # -- action types ------------------------------------------------------------------------

    def action_types(self) -> dict[str, ActionType]:
        """The core's actions and those of the enabled plugins (``plugin.name``)."""
        if self._actions is None or self._actions_pm is not self.deployment.pm:
            from .actions import CORE_ACTIONS

            def action(full: str, plugin: str, run: Callable[[ActionContext], Any], *, check: Any = None,
                       label: str = "", description: str = "") -> ActionType:
                return ActionType(name=full, run=run, check=check, label=label or full, description=description,
                                  plugin=plugin)

            self._actions = self._declared("crm_automation_actions", "action", action, dict(CORE_ACTIONS))
            self._actions_pm = self.deployment.pm
        return self._actions

    def event_types(self) -> dict[str, EventType]:
        """The events the enabled plugins raise (``plugin.name``), for ``event`` triggers."""
        if self._events is None or self._events_pm is not self.deployment.pm:
            def event(full: str, plugin: str, entity: str, *, label: str = "", description: str = "") -> EventType:
                return EventType(name=full, entity=entity, label=label or full, description=description, plugin=plugin)

            self._events, self._events_pm = self._declared("crm_automation_events", "event", event, {}), self.deployment.pm
        return self._events

    def _declared(self, hook: str, what: str, make_one: Callable[..., Any], found: dict[str, Any]) -> dict[str, Any]:
        """What the plugins declare through ``hook``: ``register(name, ...)`` named ``plugin.name``
        (the core's own unprefixed). A plugin failing its registration is left out, logged."""
        def make(plugin: str) -> dict[str, Any]:
            def register(name: str, *args: Any, **kwargs: Any) -> None:
                full = name if plugin == "core" else f"{plugin}.{name}"
                if not re.match(r"^[a-z][a-z0-9_.]*$", full) or full in found:
                    raise PluginError(f"plugin {plugin!r}: automation {what} {full!r} is taken or not a name")
                found[full] = make_one(full, plugin, *args, **kwargs)
            return {"register": register, "deployment": self.deployment}

        try:
            call_each(self.deployment.pm, hook, make)
        except PluginError:  # a broken plugin's are missing; the others still work
            log.exception("a plugin failed declaring automation %ss", what)
        return found

    # -- validating rules --------------------------------------------------------------------

    def _entity(self, name: Any, where: str = "entity") -> EntityType:
        entity = self.deployment.registry.get(name) if isinstance(name, str) else None
        if entity is None:
            known = ", ".join(sorted(e.name for e in self.deployment.registry))
            raise ValidationError([FieldError(where, "invalid", f"an entity type: {known}")])
        return entity

    def _field(self, entity: EntityType, name: Any, where: str, *, types: tuple[FieldType, ...] | None = None):
        field = entity.field(name) if isinstance(name, str) else None
        if name in ("owner_id", "team_id") and types is None:
            from ..entities import Field

            return Field(name=name, type=FieldType.INTEGER)
        if field is None or field.hidden or (types is not None and field.type not in types):
            fitting = [f.name for f in entity.visible_fields if types is None or f.type in types]
            kind = f" of type {', '.join(t.value for t in types)}" if types else ""
            raise ValidationError([FieldError(where, "invalid", f"a field{kind} of {entity.name}: {', '.join(fitting) or 'none'}")])
        return field

    def _value(self, field: Any, raw: Any, where: str) -> Any:
        settings = self.deployment.settings
        try:
            return _json(parse_value(field, raw, region=settings.region, currency=settings.currency))
        except FieldValueError as exc:
            raise ValidationError([FieldError(where, exc.code, exc.message)]) from None

    async def _check_filter(self, entity: EntityType, node: Any, where: str) -> dict[str, Any] | None:
        if node is None:
            return None
        if not isinstance(node, dict) or not node:
            raise ValidationError([FieldError(where, "invalid", "a filter: {field, op, value}, {and: [...]}, {has: {...}}")])
        try:
            await self.deployment.records.list(entity.name, ListQuery(filter=node, limit=1))
        except ValidationError as exc:
            raise ValidationError([
                FieldError(where + e.field[len("filter"):] if e.field.startswith("filter") else f"{where}.{e.field}",
                           e.code, e.message) for e in exc.errors]) from None
        return node

    def _check_trigger(self, entity: EntityType | None, trigger: Any) -> dict[str, Any]:
        if not isinstance(trigger, dict):
            raise ValidationError([FieldError("trigger", "required", f"an object with type: {', '.join(TRIGGERS)}")])
        kind = trigger.get("type")
        if kind not in TRIGGERS:
            raise ValidationError([FieldError("trigger.type", "invalid", f"one of {', '.join(TRIGGERS)}")])
        allowed = {"type", "delay"} | {
            "created": set(), "updated": {"fields"}, "field_changed": {"field", "to", "from"},
            "stage_entered": {"stage", "pipeline"}, "event": {"event"}, "date": {"field", "offset"},
            "schedule": {"cron", "timezone"},
        }[kind]
        if kind in ("date", "schedule"):
            allowed.discard("delay")
        extra = sorted(set(trigger) - allowed)
        if extra:
            raise ValidationError([FieldError(f"trigger.{extra[0]}", "unknown_field",
                                              f"a {kind} trigger takes {', '.join(sorted(allowed))}")])
        out: dict[str, Any] = {"type": kind}
        if kind != "schedule" and entity is None:
            raise ValidationError([FieldError("entity", "required", f"a {kind} trigger needs the entity type it watches")])
        if "delay" in trigger:
            delay = parse_duration(trigger["delay"], "trigger.delay")
            if delay <= dt.timedelta():
                raise ValidationError([FieldError("trigger.delay", "invalid", "a delay is more than nothing, e.g. 15m")])
            out["delay"] = trigger["delay"]
        if kind == "updated":
            fields = trigger.get("fields") or []
            if not isinstance(fields, list):
                raise ValidationError([FieldError("trigger.fields", "invalid", "a list of field names")])
            out["fields"] = [self._field(entity, f, "trigger.fields").name for f in fields]
        elif kind == "field_changed":
            field = self._field(entity, trigger.get("field"), "trigger.field")
            out["field"] = field.name
            for key in ("to", "from"):
                if key in trigger:
                    out[key] = self._value(field, trigger[key], f"trigger.{key}")
        elif kind == "stage_entered":
            if entity.field("stage") is None or not self.deployment.pipeline_service.list(entity.name):
                raise ValidationError([FieldError("trigger.type", "invalid", f"{entity.name} has no pipeline")])
            pipelines = self.deployment.pipeline_service.list(entity.name)
            if trigger.get("pipeline") is not None:
                pipelines = [p for p in pipelines if p.name == trigger["pipeline"]]
                if not pipelines:
                    names = ", ".join(p.name for p in self.deployment.pipeline_service.list(entity.name))
                    raise ValidationError([FieldError("trigger.pipeline", "invalid", f"a pipeline of {entity.name}: {names}")])
                out["pipeline"] = trigger["pipeline"]
            if trigger.get("stage") is not None:
                stages = [s.name for p in pipelines for s in p.stages]
                if trigger["stage"] not in stages:
                    raise ValidationError([FieldError("trigger.stage", "invalid", f"a stage: {', '.join(dict.fromkeys(stages))}")])
                out["stage"] = trigger["stage"]
        elif kind == "event":
            events = {name: e for name, e in self.event_types().items() if e.entity == entity.name}
            if trigger.get("event") not in events:
                listed = ", ".join(sorted(events)) or f"none: no enabled plugin raises events about {entity.name}"
                raise ValidationError([FieldError("trigger.event", "invalid", f"an event about {entity.name}: {listed}")])
            out["event"] = trigger["event"]
        elif kind == "date":
            field = self._field(entity, trigger.get("field"), "trigger.field", types=(FieldType.DATE, FieldType.DATETIME))
            out["field"] = field.name
            out["offset"] = trigger.get("offset") or "0m"
            parse_duration(out["offset"], "trigger.offset", negative=True)
        elif kind == "schedule":
            from croniter import croniter

            cron = trigger.get("cron")
            if not isinstance(cron, str) or not croniter.is_valid(cron) or len(cron) > 200:
                raise ValidationError([FieldError("trigger.cron", "invalid", "a cron expression: minute hour day month "
                                                                            "weekday, e.g. 0 9 * * 1-5 (9:00 on weekdays)")])
            out["cron"] = cron
            if trigger.get("timezone") is not None:
                try:
                    self._zone(trigger["timezone"])
                except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
                    raise ValidationError([FieldError("trigger.timezone", "invalid",
                                                      "an IANA time zone such as Europe/Istanbul")]) from None
                out["timezone"] = trigger["timezone"]
        return out

    async def check_recipient(self, value: Any, where: str, entity: EntityType | None) -> Any:
        """A recipient normalised (a user e-mail becomes the user's id); ValidationError."""
        if value in ("owner", "owner_manager"):
            if entity is None:
                raise ValidationError([FieldError(where, "invalid", f"{value} needs a rule with an entity")])
            return value
        if isinstance(value, dict) and len(value) == 1:
            (key, item), = value.items()
            if key == "user":
                try:
                    if isinstance(item, str):
                        return {"user": (await self.deployment.auth.user_by_email(item))["id"]}
                    if isinstance(item, int) and not isinstance(item, bool):
                        await self.deployment.auth.user(item)
                        return {"user": item}
                except NotFound:
                    raise ValidationError([FieldError(f"{where}.user", "not_found", f"no user {item!r}")]) from None
            elif key == "role":
                try:
                    await self.deployment.auth.role(item)
                except NotFound:
                    roles = ", ".join(r.name for r in await self.deployment.auth.roles())
                    raise ValidationError([FieldError(f"{where}.role", "invalid", f"a role: {roles}")]) from None
                return {"role": item}
            elif key == "field" and entity is not None:
                field = entity.field(item) if isinstance(item, str) else None
                if field is None or field.type is not FieldType.RELATION or field.target != "user":
                    users = [f.name for f in entity.visible_fields if f.type is FieldType.RELATION and f.target == "user"]
                    raise ValidationError([FieldError(f"{where}.field", "invalid",
                                                      f"a user field of {entity.name}: {', '.join(users) or 'none'}")])
                return {"field": item}
        raise ValidationError([FieldError(where, "invalid", _RECIPIENT_HELP)])

    async def _check_actions(self, entity: EntityType | None, actions: Any) -> list[dict[str, Any]]:
        if not isinstance(actions, list) or not actions or len(actions) > MAX_ACTIONS:
            raise ValidationError([FieldError("actions", "required", f"a list of 1 to {MAX_ACTIONS} actions, each {{type, ...}}")])
        types = self.action_types()
        out = []
        for index, action in enumerate(actions):
            where = f"actions[{index}]"
            if not isinstance(action, dict) or action.get("type") not in types:
                raise ValidationError([FieldError(f"{where}.type", "invalid", f"an action: {', '.join(sorted(types))}")])
            kind = types[action["type"]]
            params = {k: v for k, v in action.items() if k != "type"}
            if kind.check is not None:
                try:
                    checked = kind.check(self, params, entity) if kind.plugin == "core" else kind.check(params, entity)
                    if inspect.isawaitable(checked):
                        checked = await checked
                except ValidationError as exc:
                    raise ValidationError([FieldError(f"{where}.{e.field}", e.code, e.message) for e in exc.errors]) from None
                except ValueError as exc:
                    raise ValidationError([FieldError(where, "invalid", str(exc))]) from None
                if checked is not None:
                    params = checked
            out.append({"type": kind.name, **params})
        return out

    async def _parse(self, data: Any, current: Rule | None = None) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError([FieldError("body", "invalid", "a rule: {name, entity, trigger, condition, actions}")])
        known = {"name", "description", "entity", "trigger", "condition", "unless", "actions", "active"}
        ignored = {"id", "created_at", "updated_at", "created_by"}  # as read: a GET's answer may be sent back
        extra = sorted(k for k in data if k not in known | ignored)
        if extra:
            raise ValidationError([FieldError(str(extra[0]), "unknown_field", f"a rule has {', '.join(sorted(known))}")])
        merged = {**(msgspec.to_builtins(current) if current else {}), **{k: v for k, v in data.items() if k in known}}
        name = merged.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ValidationError([FieldError("name", "invalid", "a name of lower-case letters, digits, _ . - (at most 100)")])
        description = merged.get("description") or ""
        if not isinstance(description, str) or len(description) > 2000:
            raise ValidationError([FieldError("description", "invalid", "a text of at most 2000 characters")])
        entity = self._entity(merged["entity"]) if merged.get("entity") is not None else None
        trigger = self._check_trigger(entity, merged.get("trigger"))
        condition = unless = None
        if merged.get("condition") is not None:
            if entity is None:
                raise ValidationError([FieldError("condition", "invalid", "a condition needs the rule's entity")])
            condition = await self._check_filter(entity, merged["condition"], "condition")
        if merged.get("unless") is not None:
            if trigger["type"] not in ("date",) and "delay" not in trigger:
                raise ValidationError([FieldError("unless", "invalid", "unless belongs to a rule that waits: "
                                                                      "give the trigger a delay, or use a date trigger")])
            unless = await self._check_filter(entity, merged["unless"], "unless")
        actions = await self._check_actions(entity, merged.get("actions"))
        active = merged.get("active", True)
        if not isinstance(active, bool):
            raise ValidationError([FieldError("active", "invalid", "true or false")])
        return {"name": name, "description": description, "entity": entity.name if entity else None,
                "trigger": trigger, "condition": condition, "unless": unless, "actions": actions, "active": active}

    # -- managing rules ----------------------------------------------------------------------

    @staticmethod
    def _check_manager(actor: Actor) -> None:
        if not actor.has("manage_automation"):
            raise Forbidden("managing automation rules needs the manage_automation permission")

    async def create(self, data: Any, *, actor: Actor) -> Rule:
        """Store a new rule (``{name, entity, trigger, condition, unless, actions, active}``)."""
        self._check_manager(actor)
        values = await self._parse(data)
        now = _ts(self._now())
        encoded = self._encoded(values)
        try:
            async with self.db.transaction():
                [rule_id] = await self.db.insert_returning_ids(
                    'INSERT INTO crm_rule ("name", "description", "entity", "trigger", "condition", "unless", "actions", '
                    '"active", "created_at", "updated_at", "created_by") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    [(*encoded, now, now, actor.user_id)])
                rule = await self.get(rule_id)
                await self._schedule(rule)
        except IntegrityError:
            raise ValidationError([FieldError("name", "taken", f"a rule named {values['name']!r} exists")]) from None
        self._cache = None
        return rule

    @staticmethod
    def _encoded(values: dict[str, Any]) -> tuple:
        def enc(value: Any) -> str | None:
            return None if value is None else msgspec.json.encode(value).decode()

        return (values["name"], values["description"], values["entity"], enc(values["trigger"]),
                enc(values["condition"]), enc(values["unless"]), enc(values["actions"]), values["active"])

    async def update(self, rule_id: int, data: Any, *, actor: Actor) -> Rule:
        """Change a rule; keys left out keep their value. A new trigger withdraws the pending
        timers of the old one."""
        self._check_manager(actor)
        current = await self.get(rule_id)
        values = await self._parse(data, current)
        try:
            async with self.db.transaction():
                await self.db.execute(
                    'UPDATE crm_rule SET "name" = ?, "description" = ?, "entity" = ?, "trigger" = ?, "condition" = ?, '
                    '"unless" = ?, "actions" = ?, "active" = ?, "updated_at" = ? WHERE "id" = ?',
                    (*self._encoded(values), _ts(self._now()), rule_id))
                rule = await self.get(rule_id)
                retimed = rule.trigger != current.trigger or rule.entity != current.entity
                if retimed or not rule.active:
                    await self.deployment.jobs.cancel_prefix(_key_prefix(rule_id))
                await self._schedule(rule, fresh=retimed or not current.active)
        except IntegrityError:
            raise ValidationError([FieldError("name", "taken", f"a rule named {values['name']!r} exists")]) from None
        self._cache = None
        return rule

    async def delete(self, rule_id: int, *, actor: Actor) -> None:
        """Remove a rule and its pending timers; its firing log stays."""
        self._check_manager(actor)
        await self.get(rule_id)
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_rule WHERE "id" = ?', (rule_id,))
            await self.deployment.jobs.cancel_prefix(_key_prefix(rule_id))
        self._cache = None

    async def get(self, rule_id: Any) -> Rule:
        """A rule by id (or by name)."""
        column = "name" if isinstance(rule_id, str) and not rule_id.isdigit() else "id"
        key = int(rule_id) if column == "id" and isinstance(rule_id, (int, str)) and not isinstance(rule_id, bool) else rule_id
        row = await self.db.fetchrow(f'SELECT {_RULE_COLUMNS} FROM crm_rule WHERE "{column}" = ?', (key,))
        if row is None:
            raise NotFound("rule", rule_id)
        return _rule(row)

    async def list(self, *, entity: str | None = None) -> list[Rule]:
        where, params = ('WHERE "entity" = ?', (entity,)) if entity else ("", ())
        return [_rule(r) for r in await self.db.fetch(f'SELECT {_RULE_COLUMNS} FROM crm_rule {where} ORDER BY "id"', params)]

    async def _rules(self, entity: str) -> list[Rule]:
        """Active rules watching writes of ``entity`` (cached a few seconds: read on every write)."""
        cache = self._cache
        if cache is None or time.monotonic() - cache.at >= CACHE_SECONDS:
            by_entity: dict[str, list[Rule]] = {}
            rows = await self.db.fetch(f'SELECT {_RULE_COLUMNS} FROM crm_rule WHERE "active" = ? ORDER BY "id"', (True,))
            for row in rows:
                rule = _rule(row)
                if rule.entity and rule.trigger["type"] != "schedule":
                    by_entity.setdefault(rule.entity, []).append(rule)
            cache = self._cache = _Cached(time.monotonic(), by_entity)
        return cache.by_entity.get(entity, [])

    # -- matching writes ---------------------------------------------------------------------

    def before_save(self, change: Change) -> Awaitable[None] | None:
        """The core's ``crm_before_save``: match the write against the rules once it is written."""
        if change.action not in ("create", "update"):
            return None
        return self._watch(change)

    async def _watch(self, change: Change) -> None:
        rules = await self._rules(change.entity)
        if rules:
            change.after_write(functools.partial(self._on_write, change, rules))

    async def _on_write(self, change: Change, rules: list[Rule], record_ids: list[int]) -> None:
        """Inside the write's transaction: enqueue what the matching rules will do."""
        chain = self._chain.get()
        rules = [r for r in rules if r.id not in chain]
        if not rules:
            return
        if len(chain) >= MAX_CHAIN:
            log.warning("rules %s triggered a write %s rules deep: no further rule runs", chain, len(chain))
            return
        if change.batch is not None:
            befores = change.befores or [{} for _ in change.batch]
            writes = zip(record_ids, befores, change.batch)
        else:
            writes = [(record_ids[0], change.before or {}, change.values)]
        fired: list[tuple[Rule, int, str]] = []
        for record_id, before, values in writes:
            for rule in rules:
                if rule.trigger["type"] == "date":
                    await self._plan_date(rule, record_id, before, values, self._now())
                    continue
                label = self._matches(rule.trigger, change.action, before, values)
                if label is not None:
                    fired.append((rule, record_id, label))
        await self._enqueue(fired, chain)

    async def emit(self, event: str, record_ids: list[int]) -> None:
        """A plugin's event (``crm_automation_events``) happened to these records: the rules
        triggered by it fire. Call it inside the transaction that made the event true, so their
        work commits (or not) with it; rules without a delay run after that commit (see
        :meth:`after_commit`)."""
        declared = self.event_types().get(event)
        if declared is None:
            raise ValueError(f"no enabled plugin declares the automation event {event!r}")
        chain = self._chain.get()
        if len(chain) >= MAX_CHAIN:
            log.warning("rules %s raised event %s %s rules deep: no further rule runs", chain, event, len(chain))
            return
        rules = [r for r in await self._rules(declared.entity)
                 if r.trigger["type"] == "event" and r.trigger["event"] == event and r.id not in chain]
        await self._enqueue([(rule, record_id, self._label(rule.trigger)) for record_id in record_ids
                             for rule in rules], chain)

    async def _enqueue(self, fired: list[tuple[Rule, int, str]], chain: tuple[int, ...]) -> None:
        """Inside the transaction: a job per delayed firing (one pending per rule and record),
        and the immediate ones as jobs this task runs itself after commit."""
        now = self._now()
        immediate: dict[int, list[int]] = {}
        jobs = self.deployment.jobs
        by_id = {}
        for rule, record_id, label in fired:
            by_id[rule.id] = rule
            if "delay" in rule.trigger:
                run_at = now + parse_duration(rule.trigger["delay"], "trigger.delay")
                await jobs.enqueue(FIRE, self._payload(rule, [record_id], label, chain, delayed=True),
                                   run_at=run_at, key=_key(rule.id, rule.entity, record_id))
            else:
                immediate.setdefault(rule.id, []).append(record_id)
        if not immediate:
            return
        eager = self._eager.get()
        if eager is None:
            eager = []
            self._eager.set(eager)
        for rule_id, ids in immediate.items():
            rule = by_id[rule_id]
            for start in range(0, len(ids), PAGE):
                eager.append(await jobs.enqueue(FIRE, self._payload(
                    rule, ids[start:start + PAGE], self._label(rule.trigger), chain)))

    @staticmethod
    def _payload(rule: Rule, record_ids: list[int], trigger: str, chain: tuple[int, ...], **extra: Any) -> dict[str, Any]:
        return {"rule": rule.id, "entity": rule.entity, "records": record_ids, "trigger": trigger,
                "chain": [*chain, rule.id], "token": uuid.uuid4().hex, **extra}

    @staticmethod
    def _label(trigger: dict[str, Any]) -> str:
        kind = trigger["type"]
        detail = trigger.get("field") or trigger.get("stage") or trigger.get("event") or trigger.get("cron") or ""
        text = f"{kind} {detail}".strip()
        if "to" in trigger:
            text += f" to {trigger['to']!r}"
        if "delay" in trigger:
            text += f" + {trigger['delay']}"
        if "offset" in trigger:
            text += f" {trigger['offset']}"
        return text

    def _matches(self, trigger: dict[str, Any], action: str, before: dict[str, Any], values: dict[str, Any]) -> str | None:
        """The trigger's label when this write fires it, else None."""
        kind = trigger["type"]

        def changed(name: str) -> bool:
            return name in values and _json(values[name]) != _json(before.get(name))

        if kind == "created":
            return self._label(trigger) if action == "create" else None
        if kind == "updated":
            if action != "update":
                return None
            fields = trigger.get("fields") or []
            return self._label(trigger) if not fields or any(changed(f) for f in fields) else None
        if kind == "field_changed":
            name = trigger["field"]
            if not changed(name):
                return None
            if action == "create" and values.get(name) is None:
                return None
            if "to" in trigger and _json(values[name]) != trigger["to"]:
                return None
            if "from" in trigger and _json(before.get(name)) != trigger["from"]:
                return None
            return self._label(trigger)
        if kind == "stage_entered":
            if not changed("stage") or values.get("stage") is None:
                return None
            if trigger.get("stage") is not None and values["stage"] != trigger["stage"]:
                return None
            if trigger.get("pipeline") is not None and values.get("pipeline", before.get("pipeline")) != trigger["pipeline"]:
                return None
            return self._label(trigger)
        return None

    def _anchor(self, value: Any) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value) if "T" in value or " " in value else dt.date.fromisoformat(value)
            except ValueError:
                return None
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, dt.date):
            return dt.datetime.combine(value, dt.time(), tzinfo=self._zone())
        return None

    async def _plan_date(self, rule: Rule, record_id: int, before: dict[str, Any], values: dict[str, Any],
                         now: dt.datetime, *, planning: bool = False) -> None:
        """The timer of a date rule for a record whose field was written (or, ``planning``, for a
        record there before the rule: then a timer due already is one a write made meanwhile,
        maybe firing now; it is left alone, neither made again nor withdrawn)."""
        field = rule.trigger["field"]
        if field not in values or _json(values[field]) == _json(before.get(field)):
            return
        key = _key(rule.id, rule.entity, record_id)
        anchor = self._anchor(values[field])
        run_at = anchor + parse_duration(rule.trigger["offset"], "trigger.offset", negative=True) if anchor else None
        if planning and (run_at is None or run_at <= now):
            return
        if run_at is None or run_at < now:
            await self.deployment.jobs.cancel(key)
            return
        await self.deployment.jobs.enqueue(
            FIRE, self._payload(rule, [record_id], self._label(rule.trigger), self._chain.get(), delayed=True,
                                anchor=_ts(anchor)),
            run_at=run_at, key=key)

    async def after_commit(self) -> None:
        """The core's ``crm_after_commit``: run now what this task's writes enqueued for now."""
        pending = self._eager.get()
        if not pending or self.db.in_transaction():
            return  # inside a rule's firing: its actions' rules run when the firing commits
        ids = list(pending)
        pending.clear()
        await self.deployment.jobs.run_now(ids)

    # -- firing ------------------------------------------------------------------------------

    async def _load(self, rule_id: int) -> Rule | None:
        try:
            return await self.get(rule_id)
        except NotFound:
            return None

    async def _fire_job(self, deployment: Deployment, payload: dict[str, Any]) -> None:
        """The ``automation.fire`` job: the rule's actions for each record of the payload."""
        rule = await self._load(payload["rule"])
        if rule is None or not rule.active:
            return  # removed or turned off since: its pending work lapses
        actor = await deployment.automation_actor()
        for record_id in payload["records"]:
            await self._run_firing(
                rule, actor, record_id, trigger=payload.get("trigger") or self._label(rule.trigger),
                token=f"{payload['token']}:{record_id}", chain=tuple(payload.get("chain") or (rule.id,)),
                delayed=bool(payload.get("delayed")), anchor=payload.get("anchor"))

    async def _run_firing(self, rule: Rule, actor: Actor, record_id: int | None, *, trigger: str, token: str,
                          chain: tuple[int, ...], delayed: bool = False, anchor: str | None = None,
                          condition_checked: bool = False) -> str | None:
        """Check the rule's conditions for one record and run its actions; the outcome logged
        (None: nothing to do, nothing logged)."""
        records = self.deployment.records.as_actor(actor)
        record = None
        if record_id is not None:
            try:
                record = await records.get(rule.entity, record_id)
            except NotFound:
                try:
                    await self.deployment.records.get(rule.entity, record_id)
                except NotFound:  # deleted meanwhile: nothing to act on
                    return await self._log(rule, record_id, trigger, token, "skipped", "the record was deleted") \
                        if delayed else None
                return await self._log(rule, record_id, trigger, token, "failed",
                                       f"the automation user's role cannot read this {rule.entity}")
            if anchor is not None and _ts(self._anchor(record.get(rule.trigger["field"])) or self._now()) != anchor:
                return None  # the date moved: the job of the new date fires instead
            if rule.condition and not condition_checked and not await self._holds(records, rule, rule.condition, record_id):
                return await self._log(rule, record_id, trigger, token, "skipped", "the condition no longer held") \
                    if delayed else None
            if rule.unless and await self._holds(records, rule, rule.unless, record_id):
                return await self._log(rule, record_id, trigger, token, "skipped", "its unless-condition became true")
        chain_token = self._chain.set(chain)
        eager_token = self._eager.set([])
        outcome, error, results, step = "done", None, [], None
        try:
            try:
                async with self.db.transaction():
                    claimed = await self._log(rule, record_id, trigger, token, "running")
                    if claimed is None:
                        return None  # this job fired for this record already (run again after a crash)
                    for index, action in enumerate(rule.actions):
                        step = f"actions[{index}] ({action['type']})"
                        results.append(await self._act(rule, action, record, actor, records))
                    await self.db.execute(
                        'UPDATE crm_rule_firing SET "outcome" = ?, "results" = ? WHERE "token" = ?',
                        ("done", msgspec.json.encode(results).decode(), token))
            except (ActionError, ValidationError, Forbidden, NotFound, TemplateError, ValueError) as exc:
                outcome, error = "failed", f"{step}: {_message(exc)}"
            except Exception as exc:  # a plugin's action or a database error: logged, never raised into a write
                log.exception("rule %s (%s) failed on %s %s", rule.id, rule.name, rule.entity, record_id)
                outcome, error = "failed", f"{step}: {type(exc).__name__}: {exc}"
            chained = self._eager.get() or []
        finally:
            self._chain.reset(chain_token)
            self._eager.reset(eager_token)
        if outcome == "failed":
            await self._log(rule, record_id, trigger, token, "failed", error[:2000])
        elif chained:
            await self.deployment.jobs.run_now(chained)
        return outcome

    async def _holds(self, records: RecordsService, rule: Rule, node: dict[str, Any], record_id: int) -> bool:
        page = await records.list(rule.entity, ListQuery(
            filter={"and": [node, {"field": "id", "op": "eq", "value": record_id}]}, limit=1, fields=[]))
        return bool(page.items)

    async def _log(self, rule: Rule, record_id: int | None, trigger: str, token: str, outcome: str,
                   error: str | None = None) -> str | None:
        """Record a firing; None when this token's firing is recorded already."""
        async with self.db.transaction():
            row = await self.db.fetchrow(
                'INSERT INTO crm_rule_firing ("rule_id", "rule", "entity", "record_id", "trigger", "at", "outcome", '
                '"error", "token") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT ("token") DO NOTHING RETURNING "id"',
                (rule.id, rule.name, rule.entity, record_id, trigger, _ts(self._now()), outcome, error, token))
        return outcome if row is not None else None

    async def _act(self, rule: Rule, action: dict[str, Any], record: dict[str, Any] | None, actor: Actor,
                   records: RecordsService) -> Any:
        kind = self.action_types().get(action["type"])
        if kind is None:
            raise ActionError(f"no action {action['type']!r} (is the plugin that adds it enabled?)")
        context = ActionContext(
            deployment=self.deployment, rule=rule, entity=rule.entity, record=record,
            params={k: v for k, v in action.items() if k != "type"}, actor=actor, records=records, automation=self)
        result = kind.run(context)
        if inspect.isawaitable(result):
            result = await result
        return _json(result) if result is not None else None

    async def run(self, rule_id: int, record_id: int | None, *, actor: Actor) -> dict[str, Any]:
        """Fire a rule now for one record, as if triggered (its condition and ``unless`` are
        checked): a consultant trying a rule out. Returns the firing (its ``outcome`` is
        ``skipped`` when a condition stops it)."""
        self._check_manager(actor)
        rule = await self.get(rule_id)
        if rule.entity is not None:
            if isinstance(record_id, bool) or not isinstance(record_id, int):
                raise ValidationError([FieldError("record_id", "required", f"the id of a {rule.entity} to run the rule on")])
            await self.deployment.records.as_actor(actor).get(rule.entity, record_id)  # NotFound unless visible
        else:
            record_id = None
        token = f"manual:{uuid.uuid4().hex}"
        automation = await self.deployment.automation_actor()
        outcome = await self._run_firing(rule, automation, record_id, trigger="run by hand", token=token,
                                         chain=(rule.id,), delayed=True)
        if outcome is None:  # nothing was due (e.g. the date moved): say so rather than nothing
            await self._log(rule, record_id, "run by hand", token, "skipped", "nothing to do")
        return _firing(await self.db.fetchrow(f'SELECT {_FIRING_COLUMNS} FROM crm_rule_firing WHERE "token" = ?', (token,)))

    # -- schedules ---------------------------------------------------------------------------

    def _next_tick(self, rule: Rule, after: dt.datetime) -> dt.datetime:
        from croniter import croniter

        zone = self._zone(rule.trigger.get("timezone"))
        return croniter(rule.trigger["cron"], after.astimezone(zone)).get_next(dt.datetime).astimezone(UTC)

    async def _schedule(self, rule: Rule, *, fresh: bool = True) -> None:
        """Keep a schedule rule's next tick queued (or none when it is off); have a new (or
        newly active, or re-timed) date rule's timers made for the records there already."""
        if rule.trigger["type"] == "date" and rule.active and fresh:
            await self.deployment.jobs.enqueue(PLAN, {"rule": rule.id, "cursor": None},
                                               key=f"{_key_prefix(rule.id)}plan")
        if rule.trigger["type"] != "schedule":
            return
        key = f"{_key_prefix(rule.id)}schedule"
        if not rule.active:
            await self.deployment.jobs.cancel(key)
            return
        tick = self._next_tick(rule, self._now())
        await self.deployment.jobs.enqueue(SCHEDULE, {"rule": rule.id, "at": _ts(tick)}, run_at=tick, key=key)

    async def _plan_job(self, deployment: Deployment, payload: dict[str, Any]) -> None:
        """Timers of a date rule for records written before it existed: a page at a time (each
        page a job of its own, so a large table never holds one job for long)."""
        rule = await self._load(payload["rule"])
        if rule is None or not rule.active or rule.trigger["type"] != "date":
            return
        field = rule.trigger["field"]
        now = self._now()
        since = now - parse_duration(rule.trigger["offset"], "trigger.offset", negative=True) - dt.timedelta(days=1)
        page = await deployment.records.list(rule.entity, ListQuery(
            filter={"field": field, "op": "gte", "value": since.date().isoformat() if self._is_date(rule) else
                    since.isoformat()}, limit=PAGE, cursor=payload.get("cursor"), fields=[field]))
        for record in page.items:
            await self._plan_date(rule, record["id"], {}, record, now, planning=True)
        if page.next_cursor is not None:
            await deployment.jobs.enqueue(PLAN, {"rule": rule.id, "cursor": page.next_cursor},
                                          key=f"{_key_prefix(rule.id)}plan")

    def _is_date(self, rule: Rule) -> bool:
        entity = self.deployment.registry.get(rule.entity)
        field = entity.field(rule.trigger["field"]) if entity else None
        return field is not None and field.type is FieldType.DATE

    async def _schedule_job(self, deployment: Deployment, payload: dict[str, Any]) -> None:
        """A schedule rule's tick: queue the next one first (a crash here loses no tick), then
        fire for every matching record (or once). Ticks missed while nothing ran fire once."""
        rule = await self._load(payload["rule"])
        if rule is None or not rule.active or rule.trigger["type"] != "schedule":
            return
        at = _time(payload["at"])
        tick = self._next_tick(rule, max(at, self._now()))
        await deployment.jobs.enqueue(SCHEDULE, {"rule": rule.id, "at": _ts(tick)}, run_at=tick,
                                      key=f"{_key_prefix(rule.id)}schedule")
        actor = await deployment.automation_actor()
        token = f"schedule:{rule.id}:{payload['at']}"
        label = self._label(rule.trigger)
        if rule.entity is None:
            await self._run_firing(rule, actor, None, trigger=label, token=f"{token}:0", chain=(rule.id,))
            return
        records = deployment.records.as_actor(actor)
        cursor = None
        while True:
            page = await records.list(rule.entity, ListQuery(filter=rule.condition, limit=PAGE, cursor=cursor, fields=[]))
            for item in page.items:
                await self._run_firing(rule, actor, item["id"], trigger=label, token=f"{token}:{item['id']}",
                                       chain=(rule.id,), condition_checked=True)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

    # -- the firing log ----------------------------------------------------------------------

    async def firings(
        self, *, rule_id: int | None = None, entity: str | None = None, record_id: int | None = None,
        outcome: str | None = None, before_id: int | None = None, limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Firings, newest first."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValidationError([FieldError("outcome", "invalid", f"outcome is one of {', '.join(OUTCOMES)}")])
        rows = await self.db.newest(_FIRING_COLUMNS, "crm_rule_firing", limit=limit, before_id=before_id,
                                    rule_id=rule_id, entity=entity, record_id=record_id, outcome=outcome)
        return [_firing(row) for row in rows]

    # -- helpers for actions -----------------------------------------------------------------

    def render(self, template: Any, context: ActionContext) -> str:
        """Fill a template (sandboxed) with ``record``, ``entity``, ``rule`` and ``now``."""
        if template is None:
            return ""
        text = self._templates.from_string(str(template)).render(
            record=context.record or {}, entity=context.entity, rule=context.rule.name, now=self._now())
        return text[:MAX_TEXT]

    def _display(self, value: Any) -> Any:
        """How a value prints in a template: money and times in the deployment's locale, times
        in its time zone, nothing for an empty value."""
        from babel.dates import format_date, format_time
        from babel.numbers import format_currency

        locale = self.deployment.settings.locale or "en"
        if value is None:
            return ""
        if isinstance(value, Money):
            return format_currency(value.amount, value.currency, locale=locale)
        if isinstance(value, dt.datetime):
            local = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(self._zone())
            return f"{format_date(local, 'medium', locale=locale)} {format_time(local, 'short', locale=locale)}"
        if isinstance(value, dt.date):
            return format_date(value, "medium", locale=locale)
        if isinstance(value, (list, tuple)):
            return ", ".join(str(self._display(v)) for v in value)
        return value

    async def recipients(self, spec: Any, context: ActionContext, *, one: bool = False) -> list[int]:
        """The users a recipient names (one of them when ``one``: for a role, the user with the
        fewest open tasks). ActionError when it names nobody."""
        record = context.record or {}
        users: list[int] = []
        if spec == "owner":
            users = [record["owner_id"]] if record.get("owner_id") else []
            if not users:
                raise ActionError(f"the {context.entity} has no owner")
        elif spec == "owner_manager":
            if not record.get("owner_id"):
                raise ActionError(f"the {context.entity} has no owner, so no owner's manager")
            owner = await self.deployment.records.get("user", record["owner_id"])
            if not owner.get("manager"):
                raise ActionError(f"the owner ({owner.get('name')}) has no manager")
            users = [owner["manager"]]
        elif isinstance(spec, dict) and "user" in spec:
            users = [spec["user"]]
        elif isinstance(spec, dict) and "role" in spec:
            users = await self.deployment.notifications.users_with_role(spec["role"])
            if not users:
                raise ActionError(f"no active user has the role {spec['role']!r}")
            if one and len(users) > 1:
                users = [await self._least_busy(users)]
        elif isinstance(spec, dict) and "field" in spec:
            value = record.get(spec["field"])
            if not value:
                raise ActionError(f"the {context.entity}'s {spec['field']} is empty")
            users = [value]
        else:
            raise ActionError(f"not {_RECIPIENT_HELP}")
        return users[:1] if one else users

    async def _least_busy(self, users: list[int]) -> int:
        table = self.deployment.records.entity("activity").table
        marks = ", ".join("?" for _ in users)
        counts = dict(await self.db.fetch(
            f'SELECT "assignee", COUNT(*) FROM "{table}" WHERE "deleted_at" IS NULL AND "done" = ? '
            f'AND "assignee" IN ({marks}) GROUP BY "assignee"', (False, *users)))
        return min(users, key=lambda u: (counts.get(u, 0), u))


_RULE_COLUMNS = ('"id", "name", "description", "entity", "trigger", "condition", "unless", "actions", "active", '
                 '"created_at", "updated_at", "created_by"')


def _rule(row: tuple) -> Rule:
    def dec(value: str | None) -> Any:
        return None if value is None else msgspec.json.decode(value)

    return Rule(id=row[0], name=row[1], description=row[2], entity=row[3], trigger=dec(row[4]), condition=dec(row[5]),
                unless=dec(row[6]), actions=dec(row[7]), active=bool(row[8]), created_at=_time(row[9]),
                updated_at=_time(row[10]), created_by=row[11])


_FIRING_COLUMNS = '"id", "rule_id", "rule", "entity", "record_id", "trigger", "at", "outcome", "error", "results"'


def _firing(row: tuple) -> dict[str, Any]:
    return {"id": row[0], "rule_id": row[1], "rule": row[2], "entity": row[3], "record_id": row[4], "trigger": row[5],
            "at": _time(row[6]), "outcome": row[7], "error": row[8],
            "results": msgspec.json.decode(row[9]) if row[9] else None}


def _key_prefix(rule_id: int) -> str:
    return f"automation:{rule_id}:"


def _key(rule_id: int, entity: str | None, record_id: int) -> str:
    return f"{_key_prefix(rule_id)}{entity}:{record_id}"


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    if isinstance(exc, Forbidden):
        detail = "; ".join(f"{e.field}: {e.message}" for e in getattr(exc, "errors", None) or [])
        return f"{exc}{' (' + detail + ')' if detail else ''}"
    return str(exc)

