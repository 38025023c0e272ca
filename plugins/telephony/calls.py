"""Calls: what providers report, turned into call records, leads, tasks and screen-pops.

Every provider (Twilio, Asterisk, the generic webhook, a third party's) hands
:meth:`CallService.ingest` the same :class:`CallEvent`:

- ``incoming``: a call arrived, no extension rings yet. The answer carries the **route**: the
  extension to ring first (the known caller's owner's).
- ``ringing``: an extension rings. The user of that extension gets a **screen-pop** (the
  caller's card, live in the web UI).
- ``answered``, ``ended`` (with how it ended: answered, missed, busy, rejected, failed,
  voicemail; missed when it was never answered) and ``recording`` (its URL).

One call is one record (``telephony_call``), keyed by the provider and the id linking its legs
(``linked_id``, else ``call_id``): its legs and repeated deliveries of an event land on the same
record, and an event that changes nothing changes nothing (the same ``ended`` twice makes one
call-back task). Events may come out of order: an ``ended`` before its ``ringing`` makes the
record with what it knows.

The caller is looked up by the normalised number (E.164, read in the deployment's region) in
every phone field of every entity type the deployment has (core, plugins', custom ones): a
contact first, then a company, then anything else. An unknown inbound caller becomes a lead
contact with a "fill in the card" task; a missed inbound call gets a call-back task for the
client's owner (due ``callback_due`` after the call, 30 minutes by default), which an answered
call back to that number closes. ``telephony.call.answered`` and ``telephony.call.missed`` are
raised for automation rules.
"""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

from crmcore import SYSTEM, FieldError, FieldType, Forbidden, ListQuery, NotFound, ValidationError, normalize_phone
from crmcore.automation import parse_duration

from .live import LiveBus

if TYPE_CHECKING:
    from crmcore import Deployment

__all__ = ["CallEvent", "CallService", "Ingested", "calls_of", "KINDS", "STATUSES", "FINAL", "MISSED"]

log = logging.getLogger(__name__)

KINDS = ("incoming", "ringing", "answered", "ended", "recording")
DIRECTIONS = ("inbound", "outbound", "internal")
STATUSES = ("ringing", "in_progress", "answered", "missed", "busy", "rejected", "failed", "voicemail")
#: How a call can end.
FINAL = ("answered", "missed", "busy", "rejected", "failed", "voicemail")
#: Ends of an inbound call that want a call back.
MISSED = ("missed", "busy", "rejected", "voicemail")
CALL = "telephony_call"
LINE = "telephony_line"
#: Entity types a caller is never looked up in.
_NOT_CLIENTS = {CALL, LINE, "user", "activity"}
#: Where a caller found in these entity types is linked on the call (others: related_entity/id).
_LINKED = ("contact", "company", "deal")


class CallEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Something that happened to a call, as a provider reports it."""

    provider: str
    #: incoming, ringing, answered, ended or recording.
    kind: str
    #: The provider's id of this call or leg.
    call_id: str
    #: The id linking the legs of one call (Asterisk's Linkedid, Twilio's parent CallSid).
    linked_id: str | None = None
    direction: str = "inbound"
    #: The numbers as the provider sent them (normalised here).
    from_number: str | None = None
    to_number: str | None = None
    #: The extension that rings, answered or (outbound) dialled.
    extension: str | None = None
    #: When it happened; default: now.
    at: dt.datetime | None = None
    #: ``ended``: how it ended (default: answered when it was answered, else missed).
    status: str | None = None
    #: ``ended``: seconds talked (default: from answered to ended).
    duration: int | None = None
    recording_url: str | None = None


class Ingested(msgspec.Struct, kw_only=True):
    """What :meth:`CallService.ingest` did: the call, and the extension to ring first."""

    call: dict[str, Any]
    #: The extension a PBX should ring first (the known caller's owner's), if any.
    route: str | None = None
    #: The caller's record (``{"entity", "id", "title"}``), if found or made.
    client: dict[str, Any] | None = None
    #: Whether this event changed the call.
    changed: bool = True


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError([FieldError(field, "invalid", message)])


def check_event(event: CallEvent) -> None:
    """A clear ValidationError naming the field when an event cannot be used."""
    if event.kind not in KINDS:
        raise _invalid("kind", f"one of {', '.join(KINDS)}; not {event.kind!r}")
    if event.direction not in DIRECTIONS:
        raise _invalid("direction", f"one of {', '.join(DIRECTIONS)}; not {event.direction!r}")
    if not event.call_id or len(event.call_id) > 200:
        raise _invalid("call_id", "the provider's id of the call: 1 to 200 characters")
    if event.linked_id is not None and len(event.linked_id) > 200:
        raise _invalid("linked_id", "at most 200 characters")
    if event.status is not None and event.status not in FINAL:
        raise _invalid("status", f"how the call ended: one of {', '.join(FINAL)}")
    if event.duration is not None and not 0 <= event.duration <= 7 * 86400:
        raise _invalid("duration", "seconds, from 0 to a week")
    for name in ("from_number", "to_number", "extension"):
        value = getattr(event, name)
        if value is not None and len(value) > 64:
            raise _invalid(name, "at most 64 characters")
    if event.at is not None and event.at.tzinfo is None:
        raise _invalid("at", "a time with its offset or Z, e.g. 2026-11-25T10:00:00Z")


_services: weakref.WeakKeyDictionary[Any, CallService] = weakref.WeakKeyDictionary()


def calls_of(deployment: Deployment) -> CallService:
    """The deployment's call service (one per open deployment)."""
    service = _services.get(deployment)
    if service is None:
        service = _services[deployment] = CallService(deployment)
    return service


class CallService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        #: Screen-pops: live events per user, read by ``/api/telephony/live``.
        self.live = LiveBus()

    @property
    def settings(self) -> dict[str, Any]:
        return self.deployment.plugin_settings("telephony")

    @property
    def records(self):
        return self.deployment.records

    def normalize(self, number: str | None) -> str | None:
        if not number:
            return None
        return normalize_phone(number, self.deployment.settings.region)

    # -- who is calling -----------------------------------------------------------------------

    async def lookup(self, number: str | None, *, actor: Any = SYSTEM) -> list[dict[str, Any]]:
        """Records having this number in a phone field, as ``{"entity", "id", "title",
        "owner_id", "field"}``: contacts first, then companies, then other entity types; the
        most recently changed first within each. Read as ``actor``."""
        e164 = self.normalize(number)
        if e164 is None:
            return []
        records = self.records.as_actor(actor)
        found: list[dict[str, Any]] = []
        entities = sorted((e for e in self.deployment.registry.entities.values() if e.name not in _NOT_CLIENTS),
                          key=lambda e: (_LINKED.index(e.name) if e.name in _LINKED else len(_LINKED), e.name))
        for entity in entities:
            phones = [f.name for f in entity.visible_fields if f.type is FieldType.PHONE]
            if not phones:
                continue
            condition = {"or": [{"field": name, "op": "eq", "value": e164} for name in phones]}
            try:
                page = await records.list(entity.name, ListQuery(filter=condition, sort=["-updated_at"], limit=5))
            except (Forbidden, ValidationError) as exc:  # a type the actor may not read (or filter on)
                log.debug("caller lookup skips %s: %s", entity.name, exc)
                continue
            for item in page.items:
                field = next((n for n in phones if getattr(item.get(n), "e164", None) == e164), phones[0])
                found.append({"entity": entity.name, "id": item["id"], "title": _title(entity, item),
                              "owner_id": item.get("owner_id"), "field": field,
                              "company": item.get("company") if entity.name == "contact" else None})
        return found

    async def line_user(self, extension: str | None) -> int | None:
        """The user of an extension (``telephony_line``)."""
        if not extension:
            return None
        page = await self.records.list(LINE, ListQuery(filter={"field": "extension", "op": "eq", "value": extension},
                                                       limit=1))
        return page.items[0]["user"] if page.items else None

    async def extension_of(self, user_id: int | None) -> str | None:
        """A user's first extension."""
        if user_id is None:
            return None
        page = await self.records.list(LINE, ListQuery(filter={"field": "user", "op": "eq", "value": user_id},
                                                       sort=["id"], limit=1))
        return page.items[0]["extension"] if page.items else None

    async def _default_user(self) -> int | None:
        """``default_user`` (an e-mail) of the settings: who gets the work nobody else owns."""
        email = self.settings.get("default_user")
        if not email:
            return None
        try:
            return (await self.deployment.auth.user_by_email(email))["id"]
        except NotFound:
            log.warning("telephony default_user %r is not a user", email)
            return None

    # -- events -------------------------------------------------------------------------------

    async def check_known(self, events: list[CallEvent]) -> None:
        """A ValidationError naming ``call_id`` for an event that can only follow others (a
        ``recording``) of a call never reported, before any of ``events`` is applied. Every
        other event may come first: PBXs report what they see, and not always in order."""
        keys = {f"{e.provider}:{e.linked_id or e.call_id}" for e in events if e.kind != "recording"}
        for index, event in enumerate(events):
            key = f"{event.provider}:{event.linked_id or event.call_id}"
            if event.kind != "recording" or key in keys:
                continue
            page = await self.records.list(CALL, ListQuery(filter={"field": "key", "op": "eq", "value": key}, limit=1))
            if not page.items:
                where = f"events[{index}].call_id" if len(events) > 1 else "call_id"
                raise ValidationError([FieldError(where, "unknown", f"no call {event.call_id!r} was reported before "
                                                                   "its recording")])

    async def ingest(self, event: CallEvent) -> Ingested:
        """Apply one event (see the module's docstring); the call as it is now."""
        check_event(event)
        at = event.at or self.deployment.clock.now()
        key = f"{event.provider}:{event.linked_id or event.call_id}"
        db = self.deployment.db
        pop: dict[str, Any] | None = None
        async with db.transaction():
            if db.dialect == "postgres":
                # Events of one call arrive together (a leg's end and the dial's answer): one at a
                # time per call, so two never both see it unended or both make it. SQLite's
                # writer already runs one transaction at a time.
                await db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", [key])
            page = await self.records.list(CALL, ListQuery(filter={"field": "key", "op": "eq", "value": key}, limit=1))
            call = page.items[0] if page.items else None
            client = None
            if call is None:
                call, client = await self._new_call(event, key, at)
            else:
                client = _client_of(call)
                if client is not None and event.kind == "ringing":  # its screen-pop names the caller
                    client = await self._titled(client)
            changes = await self._changes(call, event, at)
            route = None
            if changes:
                call = await self.records.update(CALL, call["id"], changes)
                if changes.get("user") and call.get("new_caller") and call.get("contact"):
                    await self._adopt_lead(call["contact"], changes["user"])
            if event.kind == "incoming" and event.direction == "inbound" and client is not None:
                route = await self.extension_of(client.get("owner_id"))
            ended = changes.get("status") in FINAL
            if ended and event.direction == "inbound" and changes["status"] in MISSED:
                await self._missed(call, client, at)
                await self.deployment.automation.emit("telephony.call.missed", [call["id"]])
            if changes.get("answered_at") is not None:  # answered now (an answered end sets it too)
                if event.direction == "outbound":
                    await self._called_back(call, at)
                await self.deployment.automation.emit("telephony.call.answered", [call["id"]])
            if event.kind == "ringing" and event.direction == "inbound":
                ringing = await self.line_user(event.extension) or call.get("user")
                if ringing:
                    pop = {**_screen_pop(call, client), "extension": event.extension or call.get("extension")}
        await self.deployment.automation.after_commit()
        if pop is not None:  # once per call and user: a repeated ringing event pops nothing more
            self.live.publish(ringing, pop, once=(call["id"], ringing))
        return Ingested(call=call, route=route, client=client, changed=bool(changes))

    async def _new_call(self, event: CallEvent, key: str, at: dt.datetime) -> tuple[dict[str, Any], dict | None]:
        inbound = event.direction == "inbound"
        client_number = event.from_number if inbound else event.to_number
        user = await self.line_user(event.extension)
        matches = await self.lookup(client_number)
        values: dict[str, Any] = {
            "key": key, "provider": event.provider, "call_id": event.call_id, "linked_id": event.linked_id,
            "direction": event.direction, "status": "ringing", "started_at": at, "extension": event.extension,
            "caller_id": event.from_number, "dialled": event.to_number, "user": user,
        }
        for name, raw in (("from_number", event.from_number), ("to_number", event.to_number)):
            if self.normalize(raw):
                values[name] = raw
        client = None
        if matches:
            client = matches[0]
            for match in matches:  # the first of each linked type, and the company of the contact
                if match["entity"] in _LINKED and values.get(match["entity"]) is None:
                    values[match["entity"]] = match["id"]
                if match["entity"] == "contact" and match.get("company") and values.get("company") is None:
                    values["company"] = match["company"]
            if client["entity"] not in _LINKED:
                values["related_entity"], values["related_id"] = client["entity"], client["id"]
        elif inbound and self.normalize(client_number):
            client = await self._new_lead(event, user, at)
            values["contact"], values["new_caller"] = client["id"], True
        values["owner_id"] = user or (client or {}).get("owner_id")
        call = await self.records.create(CALL, {k: v for k, v in values.items() if v is not None})
        return call, client

    async def _new_lead(self, event: CallEvent, user: int | None, at: dt.datetime) -> dict[str, Any]:
        """An unknown caller: a lead contact and a task to fill in its card."""
        owner = user or await self._default_user()
        contact = await self.records.create("contact", {
            "last_name": self.settings.get("unknown_caller_name") or "Unknown caller",
            "phone": event.from_number, "source": "phone call", "owner_id": owner,
        })
        due = at + parse_duration(self.settings.get("fill_in_due") or "1h", "fill_in_due")
        await self.records.create("activity", {
            "kind": "task", "subject": f"Fill in the card of the caller {event.from_number}", "contact": contact["id"],
            "assignee": owner, "due_at": due, "owner_id": owner,
        })
        return {"entity": "contact", "id": contact["id"], "title": contact["last_name"], "owner_id": owner, "new": True}

    async def _titled(self, client: dict[str, Any]) -> dict[str, Any]:
        """The client of a call logged before, with its record's title (for its screen-pop)."""
        entity = self.deployment.registry.get(client["entity"])
        try:
            record = await self.records.get(client["entity"], client["id"])
        except (NotFound, Forbidden) as exc:  # removed meanwhile: the pop still names the number
            log.info("caller %s %s: %s", client["entity"], client["id"], exc)
            return client
        return {**client, "title": _title(entity, record)}

    async def _adopt_lead(self, contact_id: int, user: int) -> None:
        """A lead made before any extension rang (a hunt group) goes to the user who got the
        call, with its "fill in the card" task, unless someone has them already."""
        lead = await self.records.get("contact", contact_id)
        if lead.get("owner_id") is None:
            await self.records.update("contact", contact_id, {"owner_id": user})
        tasks = await self.records.list("activity", ListQuery(filter={"and": [
            {"field": "contact", "op": "eq", "value": contact_id}, {"field": "kind", "op": "eq", "value": "task"},
            {"field": "assignee", "op": "is_null", "value": True}]}, limit=10))
        for task in tasks.items:
            await self.records.update("activity", task["id"], {"assignee": user, "owner_id": user})

    async def _changes(self, call: dict[str, Any], event: CallEvent, at: dt.datetime) -> dict[str, Any]:
        """What ``event`` changes on ``call`` (nothing, for a repeat or a late event)."""
        changes: dict[str, Any] = {}
        final = call.get("status") in FINAL
        if event.extension and not call.get("extension"):
            changes["extension"] = event.extension
        if event.extension and not call.get("user"):
            user = await self.line_user(event.extension)
            if user is not None:
                changes["user"] = user
                if call.get("owner_id") is None:
                    changes["owner_id"] = user
        if event.kind == "answered" and not final:
            if call.get("answered_at") is None:
                changes["answered_at"] = at
            if call.get("status") != "in_progress":
                changes["status"] = "in_progress"
        elif event.kind == "ended" and not final:
            answered_at = call.get("answered_at")
            if event.status == "answered" and answered_at is None:
                answered_at = changes["answered_at"] = (
                    at - dt.timedelta(seconds=event.duration) if event.duration is not None else at)
            status = event.status or ("answered" if answered_at is not None else "missed")
            changes["status"] = status
            changes["ended_at"] = at
            if event.duration is not None:
                changes["duration"] = event.duration
            elif answered_at is not None and status == "answered":
                changes["duration"] = max(0, int((at - answered_at).total_seconds()))
            else:
                changes["duration"] = 0
        if event.recording_url and call.get("recording_url") != event.recording_url:
            changes["recording_url"] = event.recording_url
        return changes

    async def _missed(self, call: dict[str, Any], client: dict[str, Any] | None, at: dt.datetime) -> None:
        """A call-back task for the client's owner (else the extension's user, else default_user)."""
        assignee = (client or {}).get("owner_id") or call.get("user") or await self._default_user()
        due = at + parse_duration(self.settings.get("callback_due") or "30m", "callback_due")
        number = call["from_number"].raw if call.get("from_number") else call.get("caller_id") or "?"
        who = (client or {}).get("title")
        task = await self.records.create("activity", {
            "kind": "call", "subject": f"Call back {who} ({number})" if who else f"Call back {number}",
            "assignee": assignee, "due_at": due, "owner_id": assignee, "contact": call.get("contact"),
            "company": call.get("company"), "deal": call.get("deal"),
            "related_entity": CALL, "related_id": call["id"],
        })
        await self.records.update(CALL, call["id"], {"callback_task": task["id"]})

    async def _called_back(self, call: dict[str, Any], at: dt.datetime) -> None:
        """An outbound call was answered: the missed calls from that number are called back and
        their call-back tasks done."""
        number = call.get("to_number")
        if number is None:
            return
        waiting = await self.records.list(CALL, ListQuery(filter={"and": [
            {"field": "from_number", "op": "eq", "value": number.e164},
            {"field": "direction", "op": "eq", "value": "inbound"},
            {"field": "status", "op": "in", "value": list(MISSED)},
            {"field": "called_back", "op": "eq", "value": False},
        ]}, limit=100))
        for missed in waiting.items:
            await self.records.update(CALL, missed["id"], {"called_back": True})
            if missed.get("callback_task"):
                try:
                    await self.records.update("activity", missed["callback_task"], {"done": True})
                except (NotFound, ValidationError) as exc:  # removed meanwhile: still marked called back
                    log.info("call-back task %s of call %s: %s", missed["callback_task"], missed["id"], exc)


def _title(entity: Any, item: dict[str, Any]) -> str:
    if entity.name == "contact":
        return " ".join(p for p in (item.get("first_name"), item.get("last_name")) if p) or f"#{item['id']}"
    value = item.get(entity.title_field) if entity.title_field else None
    return str(value) if value else f"{entity.label} #{item['id']}"


def _client_of(call: dict[str, Any]) -> dict[str, Any] | None:
    for name in _LINKED:
        if call.get(name):
            return {"entity": name, "id": call[name], "title": None, "owner_id": call.get("owner_id"),
                    "new": bool(call.get("new_caller")) and name == "contact"}
    if call.get("related_entity") and call.get("related_id"):
        return {"entity": call["related_entity"], "id": call["related_id"], "title": None,
                "owner_id": call.get("owner_id")}
    return None


def _screen_pop(call: dict[str, Any], client: dict[str, Any] | None) -> dict[str, Any]:
    number = call["from_number"].raw if call.get("from_number") else call.get("caller_id")
    pop = {"type": "ringing", "call": call["id"], "number": number, "extension": call.get("extension")}
    if client is not None:
        pop["record"] = {"entity": client["entity"], "id": client["id"], "title": client.get("title"),
                         "url": f"/{client['entity']}/{client['id']}", "new": bool(client.get("new"))}
    return pop
