"""Outgoing webhooks: subscriptions, signed deliveries, the delivery log.

A subscription (``crm_webhook``) names a URL, the events it wants (``contact.created``,
``deal.*``, ``*.deleted``, ``*``) and optionally the entity types. Inside every write's
transaction the records service stores one delivery per matching subscription and record
(``crm_webhook_delivery``) and enqueues a ``webhook.deliver`` job: they commit with the write or
not at all, so a crash right after a commit loses no delivery. Sending happens later, in a job:
a failing receiver never fails the write.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com): the
body is JSON ``{"type": "contact.created", "timestamp": ..., "data": {...}}``, and the headers
``webhook-id`` (the same on every retry of one message, for the receiver's deduplication),
``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` with the
subscription's ``whsec_...`` secret) let a receiver verify it with the reference library::

    from standardwebhooks import Webhook
    payload = Webhook(secret).verify(body, headers)

A non-2xx answer, a timeout or a connection error is retried with the job queue's backoff (410
Gone turns the subscription off instead, as the specification asks); each
attempt is logged (``crm_webhook_attempt``: status code, a snippet of the answer, duration,
error). After the last attempt the delivery is ``dead``; ``redeliver`` sends it again.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from .records.errors import FieldError, NotFound, ValidationError

if TYPE_CHECKING:
    from .deployment import Deployment
    from .records.service import RecordEvent

__all__ = ["WEBHOOK_TABLES", "Webhooks", "DELIVER", "event_name", "DELIVERY_STATUSES"]

WEBHOOK_TABLES: list[str] = [
    # "events" and "entities" are JSON lists; no entities: every entity type. The secret is kept
    # as given (signing needs it), shown to those who manage integrations.
    """CREATE TABLE IF NOT EXISTS crm_webhook (
        "id" {serial_kept}, "url" TEXT NOT NULL, "events" TEXT NOT NULL, "entities" TEXT NOT NULL,
        "description" TEXT NOT NULL DEFAULT '', "secret" TEXT NOT NULL,
        "active" {bool} NOT NULL DEFAULT {true}, "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL,
        "created_by" BIGINT)""",
    # One message to one subscription: its body is fixed when the event happens, so every retry
    # (and a redelivery) sends the same bytes under the same webhook-id.
    """CREATE TABLE IF NOT EXISTS crm_webhook_delivery (
        "id" {serial}, "webhook_id" BIGINT NOT NULL, "msg_id" TEXT NOT NULL, "event" TEXT NOT NULL,
        "entity" TEXT NOT NULL, "record_id" BIGINT, "payload" TEXT NOT NULL, "status" TEXT NOT NULL,
        "attempts" INTEGER NOT NULL DEFAULT 0, "created_at" TEXT NOT NULL, "last_attempt_at" TEXT,
        "delivered_at" TEXT, "response_status" INTEGER, "last_error" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_webhook_delivery_webhook ON crm_webhook_delivery ("webhook_id", "id")""",
    """CREATE INDEX IF NOT EXISTS crm_webhook_delivery_status ON crm_webhook_delivery ("status", "id")""",
    """CREATE TABLE IF NOT EXISTS crm_webhook_attempt (
        "id" {serial}, "delivery_id" BIGINT NOT NULL, "attempt" INTEGER NOT NULL, "at" TEXT NOT NULL,
        "status_code" INTEGER, "response" TEXT, "duration_ms" INTEGER, "error" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_webhook_attempt_delivery ON crm_webhook_attempt ("delivery_id", "id")""",
]

#: The job kind that sends one delivery.
DELIVER = "webhook.deliver"
#: pending: queued; retrying: failed, will be tried again; delivered; dead: every attempt
#: failed; cancelled: its subscription was removed or turned off before it went out.
DELIVERY_STATUSES = ("pending", "retrying", "delivered", "dead", "cancelled")
#: Attempts per delivery; with the queue's backoff the last is about two hours after the first.
MAX_ATTEMPTS = 8
#: Seconds to connect, send and read the answer.
TIMEOUT = 10.0
#: How much of a receiver's answer the log keeps.
SNIPPET = 500
#: Seconds other processes' subscription changes may take to be seen (this process's: at once).
CACHE_SECONDS = 5.0
MAX_URL = 2000

_PAST = {"create": "created", "update": "updated", "delete": "deleted", "restore": "restored", "purge": "purged"}
_WORD = r"[a-z][a-z0-9_]*"
_PATTERN = re.compile(rf"^(\*|{_WORD}\.(\*|{_WORD})|\*\.{_WORD})$")


def event_name(entity: str, action: str) -> str:
    """``contact.created`` for a create of a contact."""
    return f"{entity}.{_PAST.get(action, action)}"


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class _Subscription(msgspec.Struct):
    id: int
    url: str
    events: list[str]
    entities: list[str]
    secret: str

    def wants(self, entity: str, name: str) -> bool:
        if self.entities and entity not in self.entities:
            return False
        action = name.split(".", 1)[1]
        return any(p in ("*", name, f"{entity}.*", f"*.{action}") for p in self.events)


_HOOK_COLUMNS = '"id", "url", "events", "entities", "description", "active", "created_at", "updated_at", "created_by", "secret"'
_DELIVERY_COLUMNS = ('"id", "webhook_id", "msg_id", "event", "entity", "record_id", "status", "attempts", "created_at", '
                     '"last_attempt_at", "delivered_at", "response_status", "last_error", "payload"')


def _hook(row: tuple, *, secret: bool) -> dict[str, Any]:
    hook = {
        "id": row[0], "url": row[1], "events": msgspec.json.decode(row[2]), "entities": msgspec.json.decode(row[3]),
        "description": row[4], "active": bool(row[5]), "created_at": _time(row[6]), "updated_at": _time(row[7]),
        "created_by": row[8],
    }
    if secret:
        hook["secret"] = row[9]
    return hook


def _delivery(row: tuple, *, payload: bool = False) -> dict[str, Any]:
    delivery = {
        "id": row[0], "webhook_id": row[1], "msg_id": row[2], "event": row[3], "entity": row[4], "record_id": row[5],
        "status": row[6], "attempts": row[7], "created_at": _time(row[8]), "last_attempt_at": _time(row[9]),
        "delivered_at": _time(row[10]), "response_status": row[11], "last_error": row[12],
    }
    if payload:
        delivery["payload"] = msgspec.json.decode(row[13])
    return delivery


class DeliveryFailed(Exception):
    """The receiver did not take the message (the job queue retries it)."""


class Webhooks:
    """Subscriptions and deliveries (``deployment.webhooks``)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.db = deployment.db
        self._cache: tuple[float, list[_Subscription]] | None = None
        deployment.jobs.handler(DELIVER, max_attempts=MAX_ATTEMPTS, on_dead=self._dead)(self._deliver)

    # -- subscriptions -----------------------------------------------------------------------

    def _check(self, url: Any = None, events: Any = None, entities: Any = None) -> None:
        errors: list[FieldError] = []
        if url is not None:
            parts = urlsplit(url) if isinstance(url, str) else None
            if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL
                    or any(ord(c) <= 32 or ord(c) == 127 for c in url)):
                errors.append(FieldError("url", "invalid", "url must be an http:// or https:// address, e.g. "
                                                           "https://example.com/hooks/crm"))
        known = {e.name for e in self.deployment.registry}
        if events is not None:
            if not isinstance(events, list) or not events:
                errors.append(FieldError("events", "required", 'events is a non-empty list, e.g. ["contact.created", "deal.*"]'))
            else:
                for pattern in events:
                    if not isinstance(pattern, str) or not _PATTERN.match(pattern):
                        errors.append(FieldError("events", "invalid", f"{pattern!r} is not an event: use entity.action "
                                                 "(contact.created, deal.updated, contact.deleted), entity.*, *.action or *"))
                        break
                    entity = pattern.split(".", 1)[0]
                    if entity != "*" and entity not in known:
                        errors.append(FieldError("events", "unknown_entity",
                                                 f"{pattern!r}: unknown entity {entity!r}; known: {', '.join(sorted(known))}"))
                        break
        if entities is not None:
            if not isinstance(entities, list) or not all(isinstance(e, str) for e in entities):
                errors.append(FieldError("entities", "invalid", "entities is a list of entity type names (empty: all)"))
            else:
                unknown = [e for e in entities if e not in known]
                if unknown:
                    errors.append(FieldError("entities", "unknown_entity",
                                             f"unknown entity {unknown[0]!r}; known: {', '.join(sorted(known))}"))
        if errors:
            raise ValidationError(errors)

    async def create(
        self, url: str, events: list[str], *, entities: list[str] | None = None, description: str = "",
        active: bool = True, secret: str | None = None, user_id: int | None = None,
    ) -> dict[str, Any]:
        """A new subscription; its answer holds the signing secret (``whsec_...``)."""
        entities = list(entities or [])
        self._check(url, events, entities)
        if secret is not None:
            _check_secret(secret)
        now = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            [hook_id] = await self.db.insert_returning_ids(
                'INSERT INTO crm_webhook ("url", "events", "entities", "description", "secret", "active", "created_at", '
                '"updated_at", "created_by") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                [(url, _list(events), _list(entities), description, secret or new_secret(), active, now, now, user_id)])
        self._cache = None
        return await self.get(hook_id, secret=True)

    async def get(self, hook_id: int, *, secret: bool = False) -> dict[str, Any]:
        row = await self.db.fetchrow(f'SELECT {_HOOK_COLUMNS} FROM crm_webhook WHERE "id" = ?', (hook_id,))
        if row is None:
            raise NotFound("webhook", hook_id)
        return _hook(row, secret=secret)

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch(f'SELECT {_HOOK_COLUMNS} FROM crm_webhook ORDER BY "id"')
        return [_hook(row, secret=False) for row in rows]

    async def update(self, hook_id: int, *, rotate_secret: bool = False, **changes: Any) -> dict[str, Any]:
        """Change ``url``, ``events``, ``entities``, ``description`` or ``active``;
        ``rotate_secret`` makes a new secret (in the answer)."""
        allowed = {"url", "events", "entities", "description", "active"}
        wrong = set(changes) - allowed
        if wrong:
            raise ValidationError([FieldError(sorted(wrong)[0], "unknown", f"changeable: {', '.join(sorted(allowed))}")])
        await self.get(hook_id)
        self._check(changes.get("url"), changes.get("events"), changes.get("entities"))
        values = {k: _list(v) if k in ("events", "entities") else v for k, v in changes.items()}
        if rotate_secret:
            values["secret"] = new_secret()
        values["updated_at"] = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            await self.db.execute(
                f'UPDATE crm_webhook SET {", ".join(f"{chr(34)}{k}{chr(34)} = ?" for k in values)} WHERE "id" = ?',
                (*values.values(), hook_id))
        self._cache = None
        return await self.get(hook_id, secret=rotate_secret)

    async def delete(self, hook_id: int) -> None:
        """Remove a subscription; its queued deliveries are cancelled, its log is kept."""
        await self.get(hook_id)
        async with self.db.transaction():
            pending = await self.db.fetch(
                """UPDATE crm_webhook_delivery SET "status" = 'cancelled' WHERE "webhook_id" = ?
                   AND "status" IN ('pending', 'retrying') RETURNING "id\"""", (hook_id,))
            for (delivery_id,) in pending:
                await self.deployment.jobs.cancel(_job_key(delivery_id))
            await self.db.execute('DELETE FROM crm_webhook WHERE "id" = ?', (hook_id,))
        self._cache = None

    async def _subscriptions(self) -> list[_Subscription]:
        # Read on every write otherwise; a few seconds' cache keeps writes cheap (monotonic
        # time: how fresh the cache is, nothing scheduled).
        if self._cache is not None and time.monotonic() - self._cache[0] < CACHE_SECONDS:
            return self._cache[1]
        rows = await self.db.fetch(
            'SELECT "id", "url", "events", "entities", "secret" FROM crm_webhook WHERE "active" = ? ORDER BY "id"', (True,))
        subscriptions = [_Subscription(r[0], r[1], msgspec.json.decode(r[2]), msgspec.json.decode(r[3]), r[4]) for r in rows]
        self._cache = (time.monotonic(), subscriptions)
        return subscriptions

    # -- events --------------------------------------------------------------------------------

    async def on_write(self, event: RecordEvent) -> int:
        """Store and enqueue a delivery per matching subscription and record; how many."""
        name = event_name(event.entity, event.action)
        matching = [s for s in await self._subscriptions() if s.wants(event.entity, name)]
        if not matching:
            return 0
        now = self.deployment.clock.now()
        count = 0
        async with self.db.transaction():
            for record_id, record, changes in zip(event.record_ids, event.records, event.changes):
                body = msgspec.json.encode({
                    "type": name, "timestamp": now,
                    "data": {"entity": event.entity, "action": event.action, "id": record_id, "record": record,
                             "changes": changes, "user_id": event.user_id},
                }).decode()
                for subscription in matching:
                    await self._queue(subscription.id, name, event.entity, record_id, body, now)
                    count += 1
        return count

    async def send(self, webhook_id: int, event: str, data: Any, *, entity: str | None = None,
                   record_id: int | None = None) -> int:
        """Queue one message of type ``event`` to a subscription, whatever events it follows
        (automation's webhook action); signed, retried and logged like every delivery."""
        hook = await self.get(webhook_id)
        if not hook["active"]:
            raise ValidationError([FieldError("webhook_id", "inactive", f"webhook {webhook_id} is turned off")])
        now = self.deployment.clock.now()
        body = msgspec.json.encode({"type": event, "timestamp": now, "data": data}).decode()
        async with self.db.transaction():
            return await self._queue(webhook_id, event, entity or "", record_id, body, now)

    async def _queue(self, webhook_id: int, name: str, entity: str, record_id: int | None, body: str,
                     now: dt.datetime) -> int:
        [delivery_id] = await self.db.insert_returning_ids(
            'INSERT INTO crm_webhook_delivery ("webhook_id", "msg_id", "event", "entity", "record_id", '
            '"payload", "status", "attempts", "created_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            [(webhook_id, f"msg_{uuid.uuid4().hex}", name, entity, record_id, body, "pending", 0, _ts(now))])
        await self.deployment.jobs.enqueue(DELIVER, {"delivery": delivery_id}, key=_job_key(delivery_id))
        return delivery_id

    # -- delivering ----------------------------------------------------------------------------

    async def _deliver(self, deployment: Deployment, payload: dict[str, Any]) -> None:
        """The ``webhook.deliver`` job: POST one delivery, log the attempt, raise to retry."""
        import httpx
        from standardwebhooks import Webhook

        delivery_id = payload["delivery"]
        row = await self.db.fetchrow(
            'SELECT d."msg_id", d."payload", d."status", h."url", h."secret", h."active", d."attempts", d."webhook_id" '
            'FROM crm_webhook_delivery d LEFT JOIN crm_webhook h ON h."id" = d."webhook_id" WHERE d."id" = ?',
            (delivery_id,))
        if row is None:
            return
        msg_id, body, status, url, secret, active, attempts, webhook_id = row
        if url is None or not active or status in ("cancelled", "delivered"):
            if status not in ("cancelled", "delivered"):
                await self._set(delivery_id, status="cancelled", last_error="the subscription was removed or turned off")
            return
        # The timestamp header is the real time of sending: receivers check it against their own
        # clock to refuse replays (the reference library allows five minutes either way).
        sent = dt.datetime.now(dt.timezone.utc)
        headers = {
            "content-type": "application/json", "user-agent": "crmcore-webhooks",
            "webhook-id": msg_id, "webhook-timestamp": str(int(sent.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, sent, body),
        }
        attempt = attempts + 1
        started = time.perf_counter()
        status_code = snippet = error = None
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
                response = await client.post(url, content=body.encode(), headers=headers)
            status_code, snippet = response.status_code, response.text[:SNIPPET]
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}"
        except httpx.TimeoutException:
            error = f"no answer within {TIMEOUT:g} seconds"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration = int((time.perf_counter() - started) * 1000)
        now = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            await self.db.execute(
                'INSERT INTO crm_webhook_attempt ("delivery_id", "attempt", "at", "status_code", "response", '
                '"duration_ms", "error") VALUES (?, ?, ?, ?, ?, ?, ?)',
                (delivery_id, attempt, now, status_code, snippet, duration, error))
            gone = status_code == 410
            if gone:  # Standard Webhooks: 410 Gone asks the sender to stop; turn the subscription off
                error = "the receiver answered 410 Gone: the subscription was turned off"
                await self.db.execute('UPDATE crm_webhook SET "active" = ?, "updated_at" = ? WHERE "id" = ?',
                                      (False, now, webhook_id))
            await self._set(delivery_id, status="cancelled" if gone else "retrying" if error else "delivered",
                            attempts=attempt, last_attempt_at=now, response_status=status_code, last_error=error,
                            delivered_at=None if error else now)
        if gone:
            self._cache = None
        elif error:
            raise DeliveryFailed(error)

    async def _dead(self, deployment: Deployment, payload: dict[str, Any], error: str) -> None:
        await self._set(payload["delivery"], status="dead")

    async def _set(self, delivery_id: int, **values: Any) -> None:
        async with self.db.transaction():
            await self.db.execute(
                f'UPDATE crm_webhook_delivery SET {", ".join(f"{chr(34)}{k}{chr(34)} = ?" for k in values)} WHERE "id" = ?',
                (*values.values(), delivery_id))

    # -- the log ---------------------------------------------------------------------------------

    async def deliveries(
        self, *, webhook_id: int | None = None, status: str | None = None, before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Deliveries, newest first."""
        if status is not None and status not in DELIVERY_STATUSES:
            raise ValidationError([FieldError("status", "invalid", f"status is one of {', '.join(DELIVERY_STATUSES)}")])
        rows = await self.db.newest(_DELIVERY_COLUMNS, "crm_webhook_delivery", limit=limit, before_id=before_id,
                                    webhook_id=webhook_id, status=status)
        return [_delivery(row) for row in rows]

    async def delivery(self, delivery_id: int) -> dict[str, Any]:
        """One delivery with its payload and every attempt."""
        row = await self.db.fetchrow(f'SELECT {_DELIVERY_COLUMNS} FROM crm_webhook_delivery WHERE "id" = ?', (delivery_id,))
        if row is None:
            raise NotFound("webhook delivery", delivery_id)
        attempts = await self.db.fetch(
            'SELECT "attempt", "at", "status_code", "response", "duration_ms", "error" FROM crm_webhook_attempt '
            'WHERE "delivery_id" = ? ORDER BY "id"', (delivery_id,))
        return {**_delivery(row, payload=True), "attempt_log": [
            {"attempt": a[0], "at": _time(a[1]), "status_code": a[2], "response": a[3], "duration_ms": a[4], "error": a[5]}
            for a in attempts]}

    async def redeliver(self, delivery_id: int) -> dict[str, Any]:
        """Send a delivery again now (same body and webhook-id), with a fresh set of attempts."""
        delivery = await self.delivery(delivery_id)
        hook = await self.get(delivery["webhook_id"]) if await self._exists(delivery["webhook_id"]) else None
        if hook is None:
            raise ValidationError([FieldError("webhook_id", "gone", "the subscription of this delivery was removed")])
        async with self.db.transaction():
            await self._set(delivery_id, status="pending", delivered_at=None)
            await self.deployment.jobs.enqueue(DELIVER, {"delivery": delivery_id}, key=_job_key(delivery_id))
        return await self.delivery(delivery_id)

    async def _exists(self, hook_id: int) -> bool:
        return await self.db.fetchval('SELECT 1 FROM crm_webhook WHERE "id" = ?', (hook_id,)) is not None


def _job_key(delivery_id: int) -> str:
    return f"webhook.delivery:{delivery_id}"


def _list(values: list[str]) -> str:
    return msgspec.json.encode(list(values)).decode()


def _check_secret(secret: str) -> None:
    try:
        ok = secret.startswith("whsec_") and len(base64.b64decode(secret[6:], validate=True)) >= 24
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ValidationError([FieldError("secret", "invalid", "a secret is whsec_ and at least 24 bytes in base64")])
