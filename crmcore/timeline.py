"""Activities on any record and the record timeline (the client card's history).

The timeline of a record merges, newest first:

- its **activities** (calls, meetings, e-mails, notes, tasks) linked by the activity's
  ``contact``/``company``/``deal`` relation or by ``related_entity``/``related_id`` (plugin
  entities). A contact's timeline also shows the activities of its deals; a company's those of
  its contacts and deals. An activity is placed at the time it was logged (``created_at``);
  ``due_at`` is in its ``data``.
- its **field-change history** (the audit entries of :meth:`RecordsService.history`), hidden
  fields left out as everywhere.
- **items plugins contribute** through ``crm_timeline_items`` (calls, invoices, visits...).

Read permissions apply: the record must be readable by the actor (NotFound otherwise) and only
activities the actor may read are shown (the scope is applied in SQL by the records service).

Paging is by keyset: an item's position is ``(at, source, id)``; the ``next_cursor`` of a page
names the last item shown, and the next page holds the items strictly after it.

The tables of notifications (:mod:`crmcore.notifications`) and web forms
(:mod:`crmcore.webforms`) are declared here too, so the schema manager creates them with the
other system tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import inspect
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from .auth.permissions import Actor
from .records.errors import FieldError, Forbidden, ValidationError
from .records.query import ListQuery

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["TIMELINE_TABLES", "TimelineItem", "TimelinePage", "TimelineService"]

log = logging.getLogger(__name__)
UTC = dt.timezone.utc

# Placeholders as in storage.schema.SYSTEM_TABLES: {serial}, {bool}, {false}, {true}. Times are
# TEXT, ISO 8601 in UTC with microseconds (fixed width: they compare and sort as text).
TIMELINE_TABLES: list[str] = [
    # In-app notifications of a user. "dedup_key" (unique when set) makes a notification that
    # must exist once (a reminder) idempotent, whichever process or retry writes it.
    """CREATE TABLE IF NOT EXISTS crm_notification (
        "id" {serial}, "user_id" BIGINT NOT NULL, "kind" TEXT NOT NULL, "title" TEXT NOT NULL,
        "body" TEXT, "link" TEXT, "entity" TEXT, "record_id" BIGINT, "created_at" TEXT NOT NULL,
        "read_at" TEXT, "emailed_at" TEXT, "dedup_key" TEXT UNIQUE)""",
    """CREATE INDEX IF NOT EXISTS crm_notification_user ON crm_notification ("user_id", "id")""",
    # Web forms: the definition is a WebForm as JSON.
    """CREATE TABLE IF NOT EXISTS crm_form (
        "name" TEXT PRIMARY KEY, "definition" TEXT NOT NULL, "created_at" TEXT NOT NULL,
        "updated_at" TEXT NOT NULL)""",
    # Every submission of a web form: created / duplicate / spam / invalid / rate_limited.
    # The rate limit counts the recent rows of one form and address (so every process agrees).
    """CREATE TABLE IF NOT EXISTS crm_form_submission (
        "id" {serial}, "form" TEXT NOT NULL, "at" TEXT NOT NULL, "ip" TEXT, "outcome" TEXT NOT NULL,
        "entity" TEXT, "record_id" BIGINT, "errors" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_form_submission_ip ON crm_form_submission ("form", "ip", "at")""",
    """CREATE INDEX IF NOT EXISTS crm_form_submission_form ON crm_form_submission ("form", "id")""",
]

#: At most this many related records (a contact's deals...) whose activities a timeline shows.
MAX_RELATED = 500
MAX_LIMIT = 200


class TimelineItem(msgspec.Struct, kw_only=True):
    """One entry of a record's timeline.

    ``at`` is when it happened (timezone-aware); ``kind`` what it is (``call``, ``note``,
    ``task``, ``change``, ``invoice``...); ``id`` names it within its ``source`` (an activity's
    or audit entry's id, a plugin's own key): ``(at, source, id)`` orders the timeline.
    ``source`` is ``activity``, ``history`` or the plugin's name (filled in by the core for
    plugin items). ``link`` is where the UI sends a click (``/api/telephony_call/7``...);
    ``data`` anything else worth showing (the activity, the changed fields).
    """

    at: dt.datetime
    kind: str
    title: str
    id: str | int = ""
    body: str | None = None
    source: str = ""
    link: str | None = None
    data: dict[str, Any] = {}


class TimelinePage(msgspec.Struct):
    items: list[TimelineItem]
    next_cursor: str | None = None


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _id_key(value: Any) -> str:
    """Ids compare as numbers when they are numbers (``9`` before ``10``), else as text."""
    text = str(value)
    return f"{int(text):020d}" if text.isdigit() else text


def _key(item: TimelineItem) -> tuple[dt.datetime, str, str]:
    return (item.at, item.source, _id_key(item.id))


def encode_cursor(item: TimelineItem) -> str:
    raw = msgspec.json.encode([item.at.isoformat(), item.source, str(item.id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, source, item_id = msgspec.json.decode(raw, type=tuple[str, str, str])
        return _aware(at), source, _id_key(item_id)
    except Exception:
        raise ValidationError([FieldError("cursor", "invalid", "not a cursor this timeline gave")]) from None


def _history_title(action: str, changes: dict[str, Any], entity_label: str) -> str:
    if action == "create":
        return f"{entity_label} created"
    if action == "delete":
        return f"{entity_label} moved to the trash"
    if action == "restore":
        return f"{entity_label} restored"
    if action == "purge":
        return f"{entity_label} purged"
    names = ", ".join(sorted(changes)) or "nothing"
    return f"Changed {names}"


class TimelineService:
    """``deployment.timeline``: the merged history of one record, as an actor sees it."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    async def timeline(
        self, entity_name: str, record_id: int, *, actor: Actor, limit: int = 50, cursor: str | None = None,
    ) -> TimelinePage:
        """A page of the record's timeline, newest first; NotFound when the actor may not read
        the record. ``cursor``: the previous page's ``next_cursor``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError([FieldError("limit", "invalid", f"limit must be between 1 and {MAX_LIMIT}")])
        records = self.deployment.records.as_actor(actor)
        entity = records.entity(entity_name)
        record = await records.get(entity.name, record_id)  # NotFound when unreadable
        after = decode_cursor(cursor) if cursor else None
        wanted = limit + 1
        items: list[TimelineItem] = []
        items += await self._activities(records, entity.name, record, after, wanted)
        items += await self._history(records, entity, record_id, after, wanted)
        items += await self._plugin_items(entity.name, record_id, actor, after, wanted)
        if after is not None:
            items = [i for i in items if _key(i) < after]
        items.sort(key=_key, reverse=True)
        more = len(items) > limit
        items = items[:limit]
        return TimelinePage(items=items, next_cursor=encode_cursor(items[-1]) if more and items else None)

    # -- activities --------------------------------------------------------------------------

    async def _linked(self, records, entity: str, record: dict[str, Any]) -> dict | None:
        """The filter selecting the activities on ``record``."""
        record_id = record["id"]
        direct = {"and": [{"field": "related_entity", "op": "eq", "value": entity},
                          {"field": "related_id", "op": "eq", "value": record_id}]}
        links: list[dict] = [direct]
        if entity in ("contact", "company", "deal"):
            links.append({"field": entity, "op": "eq", "value": record_id})
        if entity in ("contact", "company"):
            deals = await self._ids(records, "deal", {"field": entity, "op": "eq", "value": record_id})
            if deals:
                links.append({"field": "deal", "op": "in", "value": deals})
        if entity == "company":
            contacts = await self._ids(records, "contact", {"field": "company", "op": "eq", "value": record_id})
            if contacts:
                links.append({"field": "contact", "op": "in", "value": contacts})
        return {"or": links}

    @staticmethod
    async def _ids(records, entity: str, filter_: dict) -> list[int]:
        """Ids of the actor's readable ``entity`` records matching ``filter_`` (at most MAX_RELATED)."""
        try:
            page = await records.list(entity, ListQuery(filter=filter_, sort=["-id"], limit=MAX_RELATED))
        except Forbidden:
            return []
        return [r["id"] for r in page.items]

    async def _activities(self, records, entity: str, record: dict[str, Any], after, wanted: int) -> list[TimelineItem]:
        linked = await self._linked(records, entity, record)
        conditions = [linked]
        if after is not None:
            at, source, item_id = after
            stamp = at.isoformat()
            if source > "activity":  # every activity at that instant comes after the cursor
                conditions.append({"field": "created_at", "op": "lte", "value": stamp})
            elif source < "activity":
                conditions.append({"field": "created_at", "op": "lt", "value": stamp})
            else:
                conditions.append({"or": [
                    {"field": "created_at", "op": "lt", "value": stamp},
                    {"and": [{"field": "created_at", "op": "eq", "value": stamp},
                             {"field": "id", "op": "lt", "value": int(item_id)}]},
                ]})
        try:
            page = await records.list("activity", ListQuery(
                filter={"and": conditions}, sort=["-created_at", "-id"], limit=wanted))
        except Forbidden:  # the role may not read activities at all
            return []
        items = []
        for activity in page.items:
            data = {k: v for k, v in activity.items() if k not in ("subject", "body")}
            items.append(TimelineItem(
                at=_aware(activity["created_at"]), kind=activity.get("kind") or "activity",
                title=activity.get("subject") or "", body=activity.get("body"), id=activity["id"],
                source="activity", link=f"/api/activity/{activity['id']}", data=msgspec.to_builtins(data),
            ))
        return items

    # -- field-change history ----------------------------------------------------------------

    async def _history(self, records, entity, record_id: int, after, wanted: int) -> list[TimelineItem]:
        before_id = None
        if after is not None:
            at, source, item_id = after
            if source == "history":
                before_id = int(item_id)
            else:
                newest = await self.deployment.db.fetchval(
                    'SELECT max("id") FROM crm_audit WHERE "entity" = ? AND "record_id" = ? AND "at" <= ?',
                    (entity.name, record_id, at.isoformat()))
                if newest is None:
                    return []
                before_id = newest + 1
        entries = await records.history(entity.name, record_id, limit=wanted, before_id=before_id)
        items = []
        for entry in entries:
            changes = entry["changes"]
            if entry["action"] == "update" and not changes:
                continue  # only hidden fields changed
            items.append(TimelineItem(
                at=_aware(entry["at"]), kind="created" if entry["action"] == "create" else
                "change" if entry["action"] == "update" else entry["action"],
                title=_history_title(entry["action"], changes, entity.label), id=entry["id"], source="history",
                data={"action": entry["action"], "user_id": entry["user_id"], "changes": changes},
            ))
        return items

    # -- plugins -----------------------------------------------------------------------------

    async def _plugin_items(self, entity: str, record_id: int, actor: Actor, after, wanted: int) -> list[TimelineItem]:
        before = after[0] if after is not None else None
        kwargs = {"entity": entity, "record_id": record_id, "before": before, "limit": wanted,
                  "actor": actor, "deployment": self.deployment}
        items: list[TimelineItem] = []
        for impl in self.deployment.pm.hook.crm_timeline_items.get_hookimpls():
            try:
                result = impl.function(**{a: kwargs[a] for a in impl.argnames})
                if inspect.isawaitable(result):
                    result = await result
                for item in result or ():
                    if isinstance(item, dict):
                        item = msgspec.convert(item, TimelineItem)
                    item = msgspec.structs.replace(item, source=impl.plugin_name, at=_aware(item.at))
                    items.append(item)
            except Exception:  # one broken plugin does not take the client card down
                log.exception("plugin %r failed in crm_timeline_items for %s %s", impl.plugin_name, entity, record_id)
        return items
