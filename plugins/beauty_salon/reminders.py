"""Appointment reminders, configured as automation rules without code.

*When* is the core's date trigger: a rule on ``beauty_salon_appointment`` with ``{"type":
"date", "field": "starts_at", "offset": "-24h"}`` fires 24 hours before the appointment; its
timer moves when the appointment is rescheduled and each rule has one per appointment, so a
second rule with ``"-2h"`` is the second reminder and neither ever sends twice (the core records
each firing once). *What* is this plugin's action ``beauty_salon.send_reminder``::

    {"name": "reminder-24h", "entity": "beauty_salon_appointment",
     "trigger": {"type": "date", "field": "starts_at", "offset": "-24h"},
     "actions": [{"type": "beauty_salon.send_reminder", "subject": "Your appointment",
                  "text": "Hello {{ record.client_name }}, see you {{ record.starts_at }} for "
                          "{{ record.services }} with {{ record.staff_name }}."}]}

``text`` and ``subject`` are sandboxed templates over the appointment (``record``), to which the
client's, the staff member's and the services' names are added as ``client_name``,
``staff_name`` and ``services``. A cancelled or missed appointment is not reminded of, whatever
the rule's condition says; with the condition ``{"field": "status", "op": "in", "value":
["booked", "confirmed"]}`` the firing log shows its firing as skipped rather than done.

The message is sent in a durable job (retried; a failing provider never fails the rule): through
the first plugin implementing ``beauty_salon_send_message`` (:mod:`.hookspecs`) that takes it,
else by e-mail to the client through the deployment's SMTP server (``smtp_host``...). Neither
possible (no provider took it, no SMTP server or no e-mail address): the job fails, and after its
retries is dead with that reason (``crm jobs list --status dead``). When it runs, an appointment
cancelled or moved since is not reminded of (the moved one's new timer reminds).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from typing import Any

import msgspec
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from crmcore import FieldError, NotFound, ValidationError
from crmcore.automation import ActionError
from crmcore.notifications import send_mail

from .booking import booked_services
from .entities import APPOINTMENT, SERVICE, STAFF

log = logging.getLogger(__name__)

SEND_JOB = "beauty_salon.send_message"
#: Statuses still worth a reminder.
WAITING = ("booked", "confirmed")
PARAMS = ("text", "subject")
DEFAULT_SUBJECT = "Appointment reminder"


class Message(msgspec.Struct, kw_only=True):
    """A message to a salon's client, as providers get it (see :mod:`.hookspecs`)."""

    text: str
    subject: str
    phone: str | None
    email: str | None
    name: str
    client: int
    appointment: int
    starts_at: dt.datetime
    rule: str
    key: str


def actions(register: Any) -> None:
    register("send_reminder", send_reminder, check=check, label="Send the client a reminder",
             description="A message from a template, through a messaging provider, else by e-mail")


def jobs(register: Any) -> None:
    register("send_message", deliver, max_attempts=6)


def check(params: dict[str, Any], entity: Any) -> dict[str, Any]:
    """A rule's ``send_reminder`` action: on appointments, a ``text`` template, maybe a ``subject``."""
    if entity is None or entity.name != APPOINTMENT:
        raise ValueError(f"send_reminder belongs to a rule on {APPOINTMENT}")
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValidationError([FieldError(unknown[0], "unknown_field", "send_reminder takes text and subject")])
    for name in PARAMS:
        value = params.get(name)
        if value is None and name == "subject":
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > 2000:
            raise ValidationError([FieldError(name, "required" if value is None else "invalid",
                                              "a text of at most 2000 characters (a template: {{ record.starts_at }})")])
        try:
            ImmutableSandboxedEnvironment().parse(value)
        except TemplateError as exc:
            raise ValidationError([FieldError(name, "invalid", f"not a valid template: {exc}")]) from None
    return params


async def send_reminder(context: Any) -> dict[str, Any]:
    """In the firing's transaction: render the message and enqueue its sending (it commits with
    the firing, so a firing that fails sends nothing)."""
    appointment = context.record
    if appointment["status"] not in WAITING:
        return {"skipped": f"the appointment is {appointment['status']}"}
    records = context.records
    client = await records.get("contact", appointment["client"])
    staff = await records.get(STAFF, appointment["staff"])
    services = [(await records.get(SERVICE, row["service"]))["name"]
                for row in await booked_services(records, appointment["id"])]
    name = " ".join(part for part in (client.get("first_name"), client.get("last_name")) if part)
    phone = client.get("mobile") or client.get("phone")
    if phone is None and not client.get("email"):
        raise ActionError(f"the client ({name}) has neither a phone number nor an e-mail address")
    shown = msgspec.structs.replace(context, record={
        **appointment, "client_name": name, "staff_name": staff["name"], "services": services})
    starts_at = _utc(appointment["starts_at"])
    message = Message(
        text=shown.render(context.params["text"]), subject=shown.render(context.params.get("subject") or DEFAULT_SUBJECT),
        phone=str(phone) if phone else None, email=client.get("email"), name=name, client=client["id"],
        appointment=appointment["id"], starts_at=starts_at, rule=context.rule.name,
        key=f"beauty_salon:reminder:{context.rule.id}:{appointment['id']}:{starts_at.isoformat()}")
    job = await context.deployment.jobs.enqueue(SEND_JOB, msgspec.to_builtins(message), key=message.key)
    return {"job": job, "phone": message.phone, "email": message.email}


async def deliver(deployment: Any, payload: dict[str, Any]) -> None:
    """The job: through a provider, else by e-mail; nothing for an appointment cancelled or moved."""
    message = msgspec.convert(payload, Message)
    try:
        appointment = await deployment.records.get(APPOINTMENT, message.appointment)
    except NotFound:
        return
    if appointment["status"] not in WAITING or _utc(appointment["starts_at"]) != message.starts_at:
        return
    answer = await _provider(deployment, message)
    if answer is not None:
        log.info("reminder %s sent by a provider: %r", message.key, answer)
        return
    settings = deployment.settings
    if not (settings.smtp_host and settings.smtp_from):
        raise RuntimeError("no messaging provider took the message and no SMTP server is configured")
    if not message.email:
        raise RuntimeError(f"no messaging provider took the message and the client ({message.name}) has no e-mail")
    await asyncio.to_thread(send_mail, settings, message.email, message.subject, message.text)


async def _provider(deployment: Any, message: Message) -> Any:
    """The first answer of the ``beauty_salon_send_message`` implementations, in pluggy's order
    (the last registered first), each awaited before the next is asked: pluggy's firstresult
    would stop at an async implementation's coroutine, whatever it comes to."""
    arguments = {"message": message, "deployment": deployment}
    for impl in reversed(deployment.pm.hook.beauty_salon_send_message.get_hookimpls()):
        answer = impl.function(**{name: arguments[name] for name in impl.argnames})
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is not None:
            return answer
    return None


def _utc(value: Any) -> dt.datetime:
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
