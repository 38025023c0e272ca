"""The generic PBX webhook: any PBX (or a script beside it) posts signed JSON call events.

``POST /api/telephony/webhooks/generic`` with

- ``X-Telephony-Timestamp``: the Unix time (seconds) it was sent;
- ``X-Telephony-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``
  with ``webhook_secret`` (``[plugin.telephony]`` in crm.toml);
- a JSON body: one event, or ``{"events": [...]}`` (at most 100)::

    {"event": "ringing",              # incoming | ringing | answered | ended | recording
     "call_id": "1732528800.42",      # the PBX's id of the call (or leg)
     "linked_id": "1732528800.41",    # optional: the id joining the legs of one call
     "direction": "inbound",          # inbound (default) | outbound | internal
     "from": "+90 532 123 45 67",     # as the PBX has them; normalised here
     "to": "+90 232 000 00 00",
     "extension": "101",              # the extension that rings / answered / dialled
     "at": "2026-11-25T09:30:00Z",    # optional, default: when received
     "status": "missed",              # ended: answered | missed | busy | rejected | failed | voicemail
     "duration": 125,                 # ended: seconds talked
     "recording_url": "https://..."}

The answer is ``{"route": "101", "calls": [42]}``: for an ``incoming`` event of a known caller,
``route`` is the extension to ring first (the caller's owner's). A request signed wrongly or not
at all gets 403, one sent more than five minutes ago (or ahead) 403, the same request twice 409,
a body over 64 KB 413, a bad event 422 naming the field (a ``recording`` of a call never reported
names ``call_id``); none of them changes anything. Other events may come first and in any order.

Signing in a shell::

    ts=$(date +%s); body='{"event":"ringing","call_id":"c1","from":"+905321234567","extension":"101"}'
    sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.* //')
    curl -X POST https://crm.example.com/api/telephony/webhooks/generic \\
         -H "X-Telephony-Timestamp: $ts" -H "X-Telephony-Signature: sha256=$sig" \\
         -H 'Content-Type: application/json' -d "$body"
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException

from crmcore import FieldError, Forbidden, ValidationError

from ..calls import CallEvent, check_event
from . import NotConfigured, Provider

__all__ = ["GenericProvider", "sign", "TIMESTAMP_HEADER", "SIGNATURE_HEADER", "MAX_SKEW"]

TIMESTAMP_HEADER = "x-telephony-timestamp"
SIGNATURE_HEADER = "x-telephony-signature"
#: How far a request's timestamp may be from now.
MAX_SKEW = dt.timedelta(minutes=5)
MAX_EVENTS = 100


class _Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    event: str
    call_id: str
    linked_id: str | None = None
    direction: str = "inbound"
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    extension: str | None = None
    at: dt.datetime | None = None
    status: str | None = None
    duration: int | None = None
    recording_url: str | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Event]


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Telephony-Signature`` of a request (for senders and tests)."""
    import hmac

    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class GenericProvider(Provider):
    name = "generic"
    label = "Any PBX (signed JSON webhook)"

    def __init__(self, receipts: Any):
        #: ``await receipts(digest)``: False when the digest was seen before (a replay).
        self._receipts = receipts

    async def webhook(self, deployment: Any, request: Request, body: bytes, settings: dict[str, Any]) -> list[CallEvent]:
        secret = settings.get("webhook_secret")
        if not secret:
            raise NotConfigured(detail="the generic webhook is not configured (webhook_secret)")
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not stamp.isdigit():
            raise Forbidden(f"the request has no {TIMESTAMP_HEADER} header (Unix seconds)")
        signature = request.headers.get(SIGNATURE_HEADER)
        self.verify_hmac(f"{stamp}.".encode() + body, signature, secret)
        sent = dt.datetime.fromtimestamp(int(stamp), dt.timezone.utc)
        if abs(deployment.clock.now() - sent) > MAX_SKEW:
            raise Forbidden("the request's timestamp is more than five minutes from now (a replay, or a wrong clock)")
        data = self.json(body, Any)
        if isinstance(data, dict) and "events" in data:
            items = self.json(body, _Batch).events
            if len(items) > MAX_EVENTS:
                raise ValidationError([FieldError("events", "too_many", f"at most {MAX_EVENTS} events a request")])
        else:
            items = [self.json(body, _Event)]
        events = [CallEvent(provider=self.name, kind=e.event, call_id=e.call_id, linked_id=e.linked_id,
                            direction=e.direction, from_number=e.from_, to_number=e.to, extension=e.extension,
                            at=e.at, status=e.status, duration=e.duration, recording_url=e.recording_url)
                  for e in items]
        for index, event in enumerate(events):
            try:
                check_event(event)
            except ValidationError as exc:
                prefix = f"events[{index}]." if len(events) > 1 else ""
                raise ValidationError([FieldError(prefix + _WIRE.get(e.field, e.field), e.code, e.message)
                                       for e in exc.errors]) from None
        # Last, once the request is known good: a correct request sent again is refused.
        if not await self._receipts(hashlib.sha256(signature.encode()).hexdigest()):
            raise HTTPException(status_code=409, detail="this request was received already (a replay)")
        return events


#: Event fields as the JSON names them.
_WIRE = {"kind": "event", "from_number": "from", "to_number": "to"}
