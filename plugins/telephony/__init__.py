"""Telephony: the call log, screen-pop, missed-call handling and click-to-call, fed by Twilio,
Asterisk or any PBX.

Enable it with ``crm plugins enable telephony``; configure it in crm.toml::

    [plugin.telephony]
    webhook_secret = "..."          # the generic PBX webhook's HMAC key (providers/generic.py)
    provider = "twilio"             # who places click-to-call calls (none: tel: links)
    callback_due = "30m"            # a missed call's call-back task is due this long after it
    fill_in_due = "1h"              # an unknown caller's "fill in the card" task
    default_user = "desk@shop.example"   # gets the work of calls nobody owns
    unknown_caller_name = "Unknown caller"
    # Twilio: twilio_auth_token, twilio_account_sid, twilio_number... (providers/twilio.py)
    # Asterisk: ami_host, ami_port, ami_username, ami_secret, ami_channel, ami_context...
    # (providers/asterisk.py); run `crm telephony listen` beside `crm serve`

Entities: ``telephony_call`` (one per call, its legs joined) and ``telephony_line`` (a user's
extension and direct number). How events become calls, leads and tasks: :mod:`.calls`; the
providers: :mod:`.providers`; its HTTP routes: :mod:`.routes`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import crmcore
from crmcore import EntityType, Field, ListQuery, Permission, TimelineItem, UIItem, hookimpl

from . import hookspecs
from .calls import CALL, DIRECTIONS, LINE, STATUSES

PLUGIN = crmcore.PluginInfo(name="telephony", version="0.1.0",
                            description="Call log, screen-pop, missed calls and click-to-call (Twilio, Asterisk, any PBX)")
#: Other plugins add call providers through telephony_register_providers.
HOOKSPECS = hookspecs

T = crmcore.FieldType
#: Fields of a call that link it to a client's records (its timeline shows it there).
LINKS = ("contact", "company", "deal")
#: How long replay receipts of signed webhooks are kept (longer than the accepted clock skew).
RECEIPTS_KEPT = dt.timedelta(minutes=15)


@hookimpl
def crm_register_entities(register):
    register(EntityType(name="call", label="Call", title_field="caller_id", fields=[
        Field(name="direction", type=T.CHOICE, choices=list(DIRECTIONS), required=True, in_list=True),
        Field(name="status", type=T.CHOICE, choices=list(STATUSES), required=True, indexed=True, in_list=True),
        Field(name="from_number", type=T.PHONE, indexed=True, in_list=True, label="From"),
        Field(name="to_number", type=T.PHONE, indexed=True, in_list=True, label="To"),
        Field(name="caller_id", type=T.TEXT, help_text="the caller as the provider sent it"),
        Field(name="dialled", type=T.TEXT, help_text="what was dialled, as the provider sent it"),
        Field(name="started_at", type=T.DATETIME, indexed=True, in_list=True, label="Started"),
        Field(name="answered_at", type=T.DATETIME, label="Answered"),
        Field(name="ended_at", type=T.DATETIME, label="Ended"),
        Field(name="duration", type=T.INTEGER, in_list=True, help_text="seconds talked"),
        Field(name="recording_url", type=T.URL, label="Recording"),
        Field(name="user", type=T.RELATION, target="user", indexed=True, in_list=True, label="Handled by"),
        Field(name="extension", type=T.TEXT, indexed=True),
        Field(name="contact", type=T.RELATION, target="contact", indexed=True, in_list=True),
        Field(name="company", type=T.RELATION, target="company", indexed=True),
        Field(name="deal", type=T.RELATION, target="deal", indexed=True),
        Field(name="related_entity", type=T.TEXT, help_text="a caller found in another entity type: its type"),
        Field(name="related_id", type=T.INTEGER),
        Field(name="callback_task", type=T.RELATION, target="activity", label="Call-back task"),
        Field(name="called_back", type=T.BOOLEAN, default=False, indexed=True),
        Field(name="new_caller", type=T.BOOLEAN, default=False, help_text="the caller was unknown: this call made the lead"),
        Field(name="provider", type=T.TEXT, required=True),
        Field(name="call_id", type=T.TEXT, help_text="the provider's id of the call"),
        Field(name="linked_id", type=T.TEXT, indexed=True, help_text="the id joining the legs of one call"),
        Field(name="key", type=T.TEXT, unique=True, help_text="provider:linked id, one record per call"),
        Field(name="notes", type=T.LONG_TEXT),
    ]))
    register(EntityType(name="line", label="Phone line", title_field="extension", fields=[
        Field(name="user", type=T.RELATION, target="user", required=True, indexed=True, in_list=True),
        Field(name="extension", type=T.TEXT, required=True, unique=True, in_list=True),
        Field(name="number", type=T.PHONE, indexed=True, in_list=True, help_text="the direct number, if any"),
    ]))


@hookimpl
def crm_register_permissions(register):
    register(Permission(name="call", label="Place calls", description="Click-to-call through the phone system",
                        roles=("admin", "sales_manager", "agent")))


@hookimpl
def crm_register_routes(register):
    from .routes import ROUTES

    for route in ROUTES:
        register(route)


@hookimpl
async def crm_startup(deployment):
    await deployment.db.execute(
        'CREATE TABLE IF NOT EXISTS telephony_receipt ("digest" TEXT PRIMARY KEY, "at" TEXT NOT NULL)')


async def _receipt(deployment: Any, digest: str) -> bool:
    """Note a signed request; False when it was seen before (a replay). Old receipts go."""
    now = deployment.clock.now()
    async with deployment.db.transaction():
        await deployment.db.execute('DELETE FROM telephony_receipt WHERE "at" < ?',
                                    [(now - RECEIPTS_KEPT).isoformat()])
        rows = await deployment.db.fetch(
            'INSERT INTO telephony_receipt ("digest", "at") VALUES (?, ?) ON CONFLICT ("digest") DO NOTHING '
            'RETURNING "digest"', [digest, now.isoformat()])
    return bool(rows)


@hookimpl
def telephony_register_providers(register, deployment):
    from .providers.asterisk import AsteriskProvider
    from .providers.generic import GenericProvider
    from .providers.twilio import TwilioProvider

    register(GenericProvider(lambda digest: _receipt(deployment, digest)))
    register(TwilioProvider())
    register(AsteriskProvider())


@hookimpl
def crm_register_commands(cli):
    from .commands import register

    register(cli)


@hookimpl
def crm_automation_events(register):
    register("call.answered", CALL, label="A call was answered",
             description="inbound or outbound; the call's contact, company and deal are linked")
    register("call.missed", CALL, label="An inbound call was missed",
             description="not answered, busy, rejected or sent to voicemail; a call-back task is made")


@hookimpl
def crm_timeline_items(entity, record_id, before, limit, actor, deployment):
    if entity in LINKS:
        conditions: list[dict[str, Any]] = [{"field": entity, "op": "eq", "value": record_id}]
    elif deployment.registry.get(entity) is not None and entity not in (CALL, LINE):
        conditions = [{"field": "related_entity", "op": "eq", "value": entity},
                      {"field": "related_id", "op": "eq", "value": record_id}]
    else:
        return []
    if before is not None:
        conditions.append({"field": "started_at", "op": "lte", "value": before.isoformat()})

    async def calls() -> list[TimelineItem]:
        try:
            page = await deployment.records.as_actor(actor).list(CALL, ListQuery(
                filter={"and": conditions}, sort=["-started_at"], limit=limit))
        except crmcore.Forbidden:
            return []  # the reader may not see calls
        return [_timeline_item(call) for call in page.items if call.get("started_at")]

    return calls()


def _timeline_item(call: dict[str, Any]) -> TimelineItem:
    inbound = call["direction"] == "inbound"
    number = call.get("from_number" if inbound else "to_number")
    shown = number.raw if number is not None else call.get("caller_id" if inbound else "dialled") or ""
    verb = {"answered": "Call", "missed": "Missed call", "busy": "Busy call", "rejected": "Rejected call",
            "failed": "Failed call", "voicemail": "Voicemail"}.get(call["status"], "Call")
    title = f"{verb} {'from' if inbound else 'to'} {shown}".strip()
    body = None
    if call.get("duration"):
        minutes, seconds = divmod(call["duration"], 60)
        body = f"{minutes}:{seconds:02d}"
    return TimelineItem(at=call["started_at"], kind="call", id=call["id"], title=title, body=body,
                        link=f"/{CALL}/{call['id']}",
                        data={"direction": call["direction"], "status": call["status"], "duration": call.get("duration"),
                              "recording_url": call.get("recording_url"), "user": call.get("user")})


@hookimpl
def crm_ui_items(register):
    for entity in LINKS:  # with a player for recordings, instead of the core's plain list of calls
        register(UIItem(slot="record.panel", entity=entity, name=f"calls_{entity}", label="Calls",
                        template="telephony/calls_panel.html", order=20, replaces=f"{CALL}.{entity}"))
    register(UIItem(slot="dashboard.widget", name="missed_calls", label="Missed calls",
                    template="telephony/calls_widget.html", order=30))
    register(UIItem(slot="page.script", name="screen_pop", url="/static/plugins/telephony/telephony.js"))


@hookimpl
def crm_register_reports(register):
    register({"name": "calls_per_user_day", "label": "Calls per employee per day", "entity": CALL,
              "group_by": [{"field": "started_at", "bucket": "day"}, "user"], "measures": [{"op": "count"}],
              "sort": ["-started_at_day"], "chart": "bar"})
    register({"name": "answered_missed", "label": "Answered and missed calls", "entity": CALL,
              "filter": {"field": "direction", "op": "eq", "value": "inbound"},
              "group_by": ["status"], "measures": [{"op": "count"}], "chart": "pie"})
    register({"name": "average_duration", "label": "Average call duration by employee", "entity": CALL,
              "filter": {"field": "status", "op": "eq", "value": "answered"},
              "group_by": ["user"], "measures": [{"op": "avg", "field": "duration"}, {"op": "count"}], "chart": "bar"})
    register({"name": "missed_not_called_back", "label": "Missed calls not called back", "entity": CALL,
              "filter": {"and": [{"field": "direction", "op": "eq", "value": "inbound"},
                                 {"field": "status", "op": "in", "value": ["missed", "busy", "rejected", "voicemail"]},
                                 {"field": "called_back", "op": "eq", "value": False}]},
              "group_by": ["owner_id"], "measures": [{"op": "count"}], "chart": "bar"})
