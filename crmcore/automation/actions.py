"""The core's automation actions: create_task, notify, set_field, move_stage, create_record,
webhook, generate_document. Each is a pair: ``check(automation, params, entity)`` validates an action when its rule
is saved (and returns it normalised), ``run(context)`` does it when the rule fires, through the
records service as the automation user, inside the firing's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..entities import EntityType, FieldType
from ..records.errors import FieldError, NotFound, ValidationError
from .engine import ActionContext, ActionError, ActionType, _template, parse_duration

_EVENT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_TEMPLATED = "{{"


def _only(params: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValidationError([FieldError(extra[0], "unknown_field", f"this action takes {', '.join(sorted(allowed | {'type'}))}")])


def _needs_record(context: ActionContext) -> dict[str, Any]:
    if context.record is None:
        raise ActionError("this action needs a record; the rule has none (a schedule rule without an entity)")
    return context.record


def _link_fields(activity: EntityType, entity: str | None) -> list[str]:
    return [f.name for f in activity.fields if f.type is FieldType.RELATION and f.target == entity]


# -- create_task -----------------------------------------------------------------------------


async def _check_task(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    _only(params, {"subject", "body", "kind", "assignee", "due", "remind"})
    activity = automation.deployment.registry.get("activity")
    kinds = (activity.field("kind").choices or []) if activity else []
    out: dict[str, Any] = {"subject": _template(params.get("subject"), "subject", required=True, max_length=500),
                           "kind": params.get("kind", "task")}
    if out["kind"] not in kinds:
        raise ValidationError([FieldError("kind", "invalid", f"an activity kind: {', '.join(kinds)}")])
    if params.get("body") is not None:
        out["body"] = _template(params["body"], "body")
    out["assignee"] = await automation.check_recipient(params.get("assignee", "owner"), "assignee", entity)
    due = params.get("due")
    if isinstance(due, str):
        parse_duration(due, "due")
        out["due"] = due
    elif isinstance(due, dict):
        _only({f"due.{k}": v for k, v in due.items()}, {"due.field", "due.offset"})
        if entity is None:
            raise ValidationError([FieldError("due.field", "invalid", "a due date from a field needs a rule with an entity")])
        field = automation._field(entity, due.get("field"), "due.field", types=(FieldType.DATE, FieldType.DATETIME))
        offset = due.get("offset", "0m")
        parse_duration(offset, "due.offset", negative=True)
        out["due"] = {"field": field.name, "offset": offset}
    elif due is not None:
        raise ValidationError([FieldError("due", "invalid", 'a duration from now ("15m", "2d") or {"field": a date '
                                                            'field of the record, "offset": "-1h"}')])
    if params.get("remind") is not None:
        if "due" not in out:
            raise ValidationError([FieldError("remind", "invalid", "a reminder is before the due time: give due too")])
        parse_duration(params["remind"], "remind")
        out["remind"] = params["remind"]
    return out


def _due(context: ActionContext, due: Any) -> dt.datetime | None:
    now = context.deployment.clock.now()
    if due is None:
        return None
    if isinstance(due, str):
        return now + parse_duration(due, "due")
    record = _needs_record(context)
    anchor = context.automation._anchor(record.get(due["field"]))
    if anchor is None:
        raise ActionError(f"the {context.entity}'s {due['field']} is empty, so the task has no due time")
    return anchor + parse_duration(due["offset"], "due.offset", negative=True)


async def _create_task(context: ActionContext) -> dict[str, Any]:
    params = context.params
    [assignee] = await context.automation.recipients(params.get("assignee", "owner"), context, one=True)
    values: dict[str, Any] = {
        "kind": params.get("kind", "task"), "subject": context.render(params["subject"]),
        "assignee": assignee, "owner_id": assignee, "done": False,
    }
    if params.get("body"):
        values["body"] = context.render(params["body"])
    due = _due(context, params.get("due"))
    if due is not None:
        values["due_at"] = due.isoformat()
        if params.get("remind"):
            values["remind_at"] = (due - parse_duration(params["remind"], "remind")).isoformat()
    if context.record is not None:
        activity = context.deployment.registry.get("activity")
        links = _link_fields(activity, context.entity)
        if links:
            values[links[0]] = context.record["id"]
        else:
            values["related_entity"], values["related_id"] = context.entity, context.record["id"]
        # A deal's task also shows on its contact and company (their timelines, their lists).
        for name in ("contact", "company"):
            if name not in values and context.record.get(name) and activity.field(name) is not None:
                values[name] = context.record[name]
    created = await context.records.create("activity", values)
    return {"activity": created["id"], "assignee": assignee, "due_at": values.get("due_at")}


# -- notify ----------------------------------------------------------------------------------


async def _check_notify(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    _only(params, {"to", "title", "body"})
    if params.get("to") is None:
        raise ValidationError([FieldError("to", "required", "whom to notify: a recipient")])
    out = {"to": await automation.check_recipient(params["to"], "to", entity),
           "title": _template(params.get("title"), "title", required=True, max_length=500)}
    if params.get("body") is not None:
        out["body"] = _template(params["body"], "body")
    return out


async def _notify(context: ActionContext) -> dict[str, Any]:
    params = context.params
    users = await context.automation.recipients(params["to"], context)
    record_id = context.record["id"] if context.record else None
    made = await context.deployment.notifications.notify(
        users, context.render(params["title"]), context.render(params.get("body")) or None,
        f"/{context.entity}/{record_id}" if record_id else None, "automation",
        entity=context.entity if record_id else None, record_id=record_id)
    return {"notified": users, "notifications": made}


# -- set_field and move_stage ----------------------------------------------------------------


def _check_set_field(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    _only(params, {"field", "value"})
    if entity is None:
        raise ValidationError([FieldError("field", "invalid", "set_field needs a rule with an entity")])
    field = automation._field(entity, params.get("field"), "field")
    if "value" not in params:
        raise ValidationError([FieldError("value", "required", "the value to set (null clears the field)")])
    value = params["value"]
    if not (isinstance(value, str) and _TEMPLATED in value):
        automation._value(field, value, "value")
    else:
        _template(value, "value")
    return {"field": field.name, "value": value}


def _rendered(context: ActionContext, value: Any) -> Any:
    return context.render(value) if isinstance(value, str) and _TEMPLATED in value else value


async def _set_field(context: ActionContext) -> dict[str, Any]:
    record = _needs_record(context)
    name = context.params["field"]
    value = _rendered(context, context.params["value"])
    await context.records.update(context.entity, record["id"], {name: value})
    return {"field": name, "value": value}


def _check_move_stage(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    _only(params, {"stage", "pipeline", "lost_reason"})
    pipelines = automation.deployment.pipeline_service.list(entity.name) if entity else []
    if not pipelines:
        raise ValidationError([FieldError("stage", "invalid", "move_stage needs a rule on an entity with a pipeline")])
    if params.get("pipeline") is not None:
        pipelines = [p for p in pipelines if p.name == params["pipeline"]]
        if not pipelines:
            raise ValidationError([FieldError("pipeline", "invalid", "a pipeline of " + entity.name + ": " + ", ".join(
                p.name for p in automation.deployment.pipeline_service.list(entity.name)))])
    stages = list(dict.fromkeys(s.name for p in pipelines for s in p.stages))
    if params.get("stage") not in stages:
        raise ValidationError([FieldError("stage", "invalid", f"a stage: {', '.join(stages)}")])
    out = {"stage": params["stage"]}
    if params.get("pipeline") is not None:
        out["pipeline"] = params["pipeline"]
    if params.get("lost_reason") is not None:
        out["lost_reason"] = _template(params["lost_reason"], "lost_reason", max_length=2000)
    return out


async def _move_stage(context: ActionContext) -> dict[str, Any]:
    record = _needs_record(context)
    data = {"stage": context.params["stage"]}
    if context.params.get("pipeline"):
        data["pipeline"] = context.params["pipeline"]
    if context.params.get("lost_reason"):
        data["lost_reason"] = context.render(context.params["lost_reason"])
    if record.get("stage") == data["stage"] and record.get("pipeline", data.get("pipeline")) == data.get("pipeline", record.get("pipeline")):
        return {"stage": data["stage"], "moved": False}
    await context.records.update(context.entity, record["id"], data)
    return {"stage": data["stage"], "moved": True}


# -- create_record ---------------------------------------------------------------------------


def _check_create_record(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    _only(params, {"entity", "values", "link", "copy"})
    target = automation._entity(params.get("entity"), "entity")
    values = params.get("values") or {}
    if not isinstance(values, dict):
        raise ValidationError([FieldError("values", "invalid", "an object: field -> value (texts may be templates)")])
    for name, value in values.items():
        field = automation._field(target, name, f"values.{name}")
        if isinstance(value, str) and _TEMPLATED in value:
            _template(value, f"values.{name}")
        else:
            automation._value(field, value, f"values.{name}")
    copy = params.get("copy") or {}
    if not isinstance(copy, dict) or (copy and entity is None):
        raise ValidationError([FieldError("copy", "invalid", "an object: new record's field -> this record's field")])
    for name, source in copy.items():
        automation._field(target, name, f"copy.{name}")
        automation._field(entity, source, f"copy.{name}")
    out: dict[str, Any] = {"entity": target.name, "values": values}
    if copy:
        out["copy"] = copy
    links = _link_fields(target, entity.name) if entity else []
    link = params.get("link")
    if link is not None:
        if link not in links:
            raise ValidationError([FieldError("link", "invalid", f"a field of {target.name} pointing to "
                                                                 f"{entity.name if entity else 'the record'}: {', '.join(links) or 'none'}")])
        out["link"] = link
    elif len(links) == 1:
        out["link"] = links[0]
    return out


async def _create_record(context: ActionContext) -> dict[str, Any]:
    params = context.params
    values = {name: _rendered(context, value) for name, value in (params.get("values") or {}).items()}
    record = context.record or {}
    for name, source in (params.get("copy") or {}).items():
        values[name] = record.get(source)
    if params.get("link"):
        values[params["link"]] = _needs_record(context)["id"]
    if "owner_id" not in values and record.get("owner_id"):
        values["owner_id"] = record["owner_id"]  # the new record belongs to whoever owns this one
    created = await context.records.create(params["entity"], values)
    return {"entity": params["entity"], "id": created["id"]}


# -- webhook ---------------------------------------------------------------------------------


async def _check_webhook(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    _only(params, {"webhook_id", "event"})
    webhook_id = params.get("webhook_id")
    try:
        if isinstance(webhook_id, bool) or not isinstance(webhook_id, int):
            raise NotFound("webhook", webhook_id)
        await automation.deployment.webhooks.get(webhook_id)
    except NotFound:
        raise ValidationError([FieldError("webhook_id", "invalid", "the id of a webhook subscription "
                                                                   "(its URL and signing secret; see /api/webhooks)")]) from None
    out: dict[str, Any] = {"webhook_id": webhook_id}
    if params.get("event") is not None:
        if not isinstance(params["event"], str) or not _EVENT.match(params["event"]):
            raise ValidationError([FieldError("event", "invalid", "an event name of lower-case letters, digits, _ . -")])
        out["event"] = params["event"]
    return out


async def _webhook(context: ActionContext) -> dict[str, Any]:
    record = context.record
    event = context.params.get("event") or f"automation.{context.rule.name}"
    delivery = await context.deployment.webhooks.send(
        context.params["webhook_id"], event, entity=context.entity, record_id=record["id"] if record else None,
        data={"rule": context.rule.name, "entity": context.entity, "id": record["id"] if record else None,
              "record": record})
    return {"delivery": delivery}


# -- generate_document -----------------------------------------------------------------------


async def _check_generate_document(automation, params: dict[str, Any], entity: EntityType | None) -> dict[str, Any]:
    from ..documents import FORMATS

    _only(params, {"template", "format", "pdf_a"})
    if entity is None:
        raise ValidationError([FieldError("template", "invalid", "generate_document needs a rule with an entity")])
    try:
        template = await automation.deployment.documents.template(params.get("template"))
    except NotFound:
        names = [t["name"] for t in await automation.deployment.documents.templates(entity=entity.name)]
        raise ValidationError([FieldError("template", "invalid", f"a document template of {entity.name}: "
                                                                 f"{', '.join(names) or 'none yet'}")]) from None
    if template["entity"] != entity.name:
        raise ValidationError([FieldError("template", "invalid", f"template {template['name']!r} is for "
                                                                 f"{template['entity']} records, not {entity.name}")])
    out: dict[str, Any] = {"template": template["name"]}
    if params.get("format") is not None:
        if params["format"] not in FORMATS:
            raise ValidationError([FieldError("format", "invalid", f"format is one of {', '.join(FORMATS)}")])
        out["format"] = params["format"]
    if params.get("pdf_a") is not None:
        if not isinstance(params["pdf_a"], bool):
            raise ValidationError([FieldError("pdf_a", "invalid", "pdf_a is true (PDF/A-3b) or false")])
        out["pdf_a"] = params["pdf_a"]
    return out


async def _generate_document(context: ActionContext) -> dict[str, Any]:
    record = _needs_record(context)
    document = await context.deployment.documents.generate(
        context.params["template"], context.entity, record["id"], actor=context.actor,
        format=context.params.get("format"), pdf_a=bool(context.params.get("pdf_a")))
    return {"document": document["id"], "filename": document["filename"]}


CORE_ACTIONS: dict[str, ActionType] = {a.name: a for a in [
    ActionType(name="create_task", run=_create_task, check=_check_task, label="Create a task",
               description="a task (or call, meeting...) for a recipient, due in a while or at a date of the record"),
    ActionType(name="notify", run=_notify, check=_check_notify, label="Notify",
               description="an in-app notification (and e-mail when SMTP is set up) to a recipient"),
    ActionType(name="set_field", run=_set_field, check=_check_set_field, label="Set a field",
               description="give a field of the record a value"),
    ActionType(name="move_stage", run=_move_stage, check=_check_move_stage, label="Move to a stage",
               description="move the record to a stage of its pipeline"),
    ActionType(name="create_record", run=_create_record, check=_check_create_record, label="Create a record",
               description="a new record of any type, linked to this one"),
    ActionType(name="webhook", run=_webhook, check=_check_webhook, label="Call a webhook",
               description="a signed POST to a webhook subscription's URL, retried until it is taken"),
    ActionType(name="generate_document", run=_generate_document, check=_check_generate_document,
               label="Generate a document",
               description="fill a document template (HTML or PDF) with the record and attach it to the record"),
]}
