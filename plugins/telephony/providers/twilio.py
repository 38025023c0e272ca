"""Twilio Programmable Voice: calls to a Twilio number ring the caller's owner, every call is
logged, and click-to-call rings the user's phone first, then the customer.

Settings (``[plugin.telephony]`` in crm.toml)::

    twilio_auth_token = "..."           # checks X-Twilio-Signature; without it the webhook is 404
    twilio_account_sid = "AC..."        # with the token and twilio_number: click-to-call
    twilio_number = "+902320000000"     # the Twilio number calls come from (caller ID)
    twilio_webhook_url = "https://crm.example.com/api/telephony/webhooks/twilio"
                                        # the address Twilio calls, as Twilio sees it (default: the
                                        # deployment's base_url + the webhook's path)
    twilio_dial = "client:{extension}"  # how an extension is rung: client:{extension} (a Twilio
                                        # Voice SDK client, the default), sip:{extension}@pbx.example.com
                                        # (a SIP endpoint), or a phone number such as +90232555{extension}
    twilio_default_extension = "100"    # rung when the caller has no owner with an extension
    twilio_fallback = "+905320000000"   # a number rung when the extension does not answer
    twilio_voicemail = true             # then the caller may leave a message
    twilio_ring_seconds = 20            # how long each of them rings
    twilio_language = "en-US"           # the language of what callers hear (<Say>)
    twilio_unavailable_message = "Sorry, nobody can take your call right now. Please call again later."
    twilio_voicemail_message = "Please leave a message after the tone."
    provider = "twilio"                 # click-to-call goes through Twilio

In Twilio's console, under the number's *Voice configuration*, set "A call comes in" to
*Webhook*, ``https://<your CRM>/api/telephony/webhooks/twilio``, *HTTP POST*, and (optionally)
"Call status changes" to the same URL. Behind a proxy that changes the address, set
``twilio_webhook_url`` (or the deployment's ``base_url``) to the address written in the console:
Twilio signs the URL it calls, and a request whose signature does not match gets 403.

What happens to a call coming in:

1. The incoming-call webhook logs it (the caller is looked up; an unknown one becomes a lead) and
   answers TwiML that dials the caller's owner's extension (else ``twilio_default_extension``).
   The ``<Dial>``'s ``action`` and the dialled leg's ``statusCallback`` point back here, with a
   ``step`` in the query (Twilio signs it along with the URL):
2. ``step=agent``: the extension's leg rings (screen-pop), is answered, ends (its duration);
3. ``step=dialled``: the ``<Dial>`` is over. Not answered: ``twilio_fallback`` is dialled
   (``step=fallback``), else the caller may leave a message (``twilio_voicemail``,
   ``step=voicemail``: the call ends as voicemail with its recording), else hears
   ``twilio_unavailable_message``: the call is missed (busy when the extension was busy) and its
   owner gets a call-back task.

Click-to-call (``POST /api/telephony/calls``) asks Twilio's REST API to ring the user's phone (their
user record's phone, else ``twilio_dial`` with their extension), then dials the customer with
``twilio_number`` as caller ID; the customer's leg reports back with ``step=customer``, the user's
with ``step=outbound``. Twilio's refusal (bad credentials, a number it will not ring) is a 422
naming ``provider`` with Twilio's message; Twilio out of reach, a 502.

Status callbacks without a ``step`` (the number's "Call status changes", legs dialled by TwiML of
your own) are read from their ``Direction`` and ``ParentCallSid``: a child leg whose ``To`` is a
``client:`` or ``sip:`` address rings that extension. ``CallStatus`` completed ends a call answered
(when it was), busy busy, failed failed, no-answer and canceled missed; a recording of a call
nobody answered is a voicemail. Every request is answered TwiML (an empty ``<Response/>`` when
there is nothing to do); the same request twice changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import requests
from litestar import Request, Response
from litestar.datastructures import MultiDict
from litestar.exceptions import HTTPException
from twilio.base.exceptions import TwilioException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from crmcore import FieldError, Forbidden, ListQuery, ValidationError

from ..calls import CALL, CallEvent, Ingested, calls_of
from . import NotConfigured, Provider

if TYPE_CHECKING:
    from crmcore import Deployment

__all__ = ["TwilioProvider", "SIGNATURE_HEADER", "WEBHOOK_PATH"]

SIGNATURE_HEADER = "x-twilio-signature"
WEBHOOK_PATH = "/api/telephony/webhooks/twilio"
#: Seconds an extension, the fallback number or the user's phone rings by default.
RING_SECONDS = 20
#: Seconds the REST API may take to answer click-to-call.
HTTP_TIMEOUT = 15.0
#: The longest voicemail, in seconds.
VOICEMAIL_SECONDS = 120
#: Twilio's final call statuses, as a call ended so is logged.
ENDS = {"completed": "answered", "busy": "busy", "failed": "failed", "no-answer": "missed", "canceled": "missed"}
#: The progress a dialled leg reports.
LEG_EVENTS = "initiated ringing answered completed"
UNAVAILABLE = "Sorry, nobody can take your call right now. Please call again later."
LEAVE_A_MESSAGE = "Please leave a message after the tone."

#: What to answer Twilio once the events are in: TwiML, given the route (the extension to ring).
Plan = Callable[[str | None], VoiceResponse]


class TwilioProvider(Provider):
    """Twilio's voice webhooks in, click-to-call out (see the module's docstring)."""

    name = "twilio"
    label = "Twilio"
    #: Makes the HTTP client Twilio's REST client talks through (default: Twilio's own, with a
    #: timeout); tests set one answering as Twilio's API does.
    http_client_factory: ClassVar[Callable[[], HttpClient] | None] = None

    # -- webhooks -----------------------------------------------------------------------------

    async def webhook(self, deployment: Deployment, request: Request, body: bytes,
                      settings: dict[str, Any]) -> list[CallEvent]:
        token = settings.get("twilio_auth_token")
        if not token:
            raise NotConfigured(detail="the Twilio webhook is not configured (twilio_auth_token)")
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise Forbidden("the request is not signed (X-Twilio-Signature)")
        base = _webhook_base(deployment, request, settings)
        query = str(request.url).partition("?")[2]
        called = f"{base.partition('?')[0]}?{query}" if query else base.partition("?")[0]
        if not RequestValidator(token).validate(called, MultiDict(pairs), signature):
            raise Forbidden("the request's X-Twilio-Signature is wrong (twilio_webhook_url must be the "
                            "address Twilio calls, as written in Twilio's console)")
        _ring_seconds(settings)  # a wrong setting is said before anything is logged
        leg = _Leg(self, deployment, settings, base, dict(pairs), request.query_params)
        events, plan = await leg.read()
        request.state.twilio_plan = plan
        return events

    def answer(self, request: Request, results: list[Ingested]) -> Response:
        plan: Plan | None = getattr(request.state, "twilio_plan", None)
        route = next((r.route for r in results if r.route), None)
        twiml = plan(route) if plan is not None else VoiceResponse()
        return Response(str(twiml), media_type="application/xml")

    # -- click-to-call ------------------------------------------------------------------------

    def can_call(self, settings: dict[str, Any]) -> bool:
        return all(settings.get(k) for k in ("twilio_account_sid", "twilio_auth_token", "twilio_number"))

    async def originate(self, deployment: Deployment, *, extension: str | None, user_phone: str | None,
                        number: str, settings: dict[str, Any]) -> dict[str, Any]:
        base = settings.get("twilio_webhook_url") or (
            deployment.settings.base_url + WEBHOOK_PATH if deployment.settings.base_url else None)
        if base is None:
            raise ValidationError([FieldError("provider", "not_configured", (
                "Twilio reports the call to twilio_webhook_url (or the deployment's base_url): set one"))])
        first = user_phone or (_address(settings, extension) if extension else None)
        if first is None:
            raise ValidationError([FieldError("provider", "no_phone", (
                "Twilio rings your phone first: put a phone number on your user or give it a phone line"))])
        own = settings["twilio_number"]
        twiml = VoiceResponse()
        twiml.dial(caller_id=own).number(number, status_callback=_url(base, step="customer"),
                                         status_callback_event=LEG_EVENTS, status_callback_method="POST")
        client = Client(settings["twilio_account_sid"], settings["twilio_auth_token"], http_client=self._http_client())
        try:
            placed = await asyncio.to_thread(
                client.calls.create, to=first, from_=own, twiml=str(twiml), timeout=_ring_seconds(settings),
                status_callback=_url(base, step="outbound"), status_callback_method="POST")
        except TwilioException as exc:
            message = f"Twilio refused the call: {_message(exc)}"
            raise ValidationError([FieldError("provider", "refused", message)]) from None
        except requests.RequestException as exc:
            raise HTTPException(status_code=502, detail=f"Twilio could not be reached: {exc}") from None
        # Logged at once: the call shows in the log, linked to the customer, before Twilio reports.
        logged = await calls_of(deployment).ingest(CallEvent(
            provider=self.name, kind="ringing", call_id=placed.sid, direction="outbound", from_number=own,
            to_number=number, extension=extension))
        return {"call_id": placed.sid, "call": logged.call["id"]}

    def _http_client(self) -> HttpClient:
        factory = type(self).http_client_factory
        return factory() if factory is not None else TwilioHttpClient(timeout=HTTP_TIMEOUT)


class _Leg:
    """One request from Twilio, read into call events and what to answer."""

    def __init__(self, provider: TwilioProvider, deployment: Deployment, settings: dict[str, Any], base: str,
                 form: dict[str, str], query: Any):
        self.provider = provider
        self.deployment = deployment
        self.settings = settings
        self.base = base
        self.form = form
        self.step = query.get("step")
        self.ext = query.get("ext") or None
        self.sid = form.get("CallSid")
        if not self.sid:
            raise ValidationError([FieldError("CallSid", "required", "Twilio's id of the call is missing")])
        self.parent = form.get("ParentCallSid") or None
        self.status = form.get("CallStatus", "")
        self.to = form.get("To") or form.get("Called") or None
        self.caller = form.get("From") or form.get("Caller") or None
        self.at = _timestamp(form.get("Timestamp"))

    def event(self, kind: str, direction: str, **values: Any) -> CallEvent:
        return CallEvent(provider=self.provider.name, kind=kind, call_id=self.sid, linked_id=self.parent,
                         direction=direction, at=self.at, **values)

    async def read(self) -> tuple[list[CallEvent], Plan | None]:
        step = self.step
        if step is None:
            step = self._guess_step()
        read = {"incoming": self.incoming, "caller": self.caller_leg, "agent": self.agent, "dialled": self.dialled,
                "fallback": self.fallback, "voicemail": self.voicemail, "outbound": self.outbound,
                "customer": self.customer}.get(step)
        if read is None:
            raise ValidationError([FieldError("step", "invalid", f"no such step of a Twilio call: {step!r}")])
        return await read()

    def _guess_step(self) -> str:
        """What a request without ``step`` is: the number's incoming-call webhook or its status
        callback, or a leg dialled by someone else's TwiML."""
        if self.form.get("Direction") == "inbound" and self.parent is None:
            return "incoming" if self.status in ("ringing", "queued") else "caller"
        if self.parent is not None and _extension(self.to):
            return "agent"
        return "customer"

    # -- a call coming in -----------------------------------------------------------------------

    async def incoming(self):
        events = [self.event("incoming", "inbound", from_number=self.caller, to_number=self.to)]
        default = self.settings.get("twilio_default_extension")
        return events, lambda route: self._ring(route or (str(default) if default not in (None, "") else None))

    def _ring(self, extension: str | None) -> VoiceResponse:
        twiml = VoiceResponse()
        if not extension:  # nobody to ring: what comes after an unanswered extension, decided there
            twiml.redirect(_url(self.base, step="dialled"), method="POST")
            return twiml
        dial = twiml.dial(action=_url(self.base, step="dialled", ext=extension), method="POST",
                          timeout=_ring_seconds(self.settings))
        _dial_extension(dial, _address(self.settings, extension),
                        status_callback=_url(self.base, step="agent", ext=extension),
                        status_callback_event=LEG_EVENTS, status_callback_method="POST")
        return twiml

    async def agent(self):
        """The leg ringing an extension. Its end only counts answered: the ``<Dial>``'s action
        decides what an unanswered one leads to."""
        extension = _extension(self.to) or self.ext
        events = []
        if self.status in ("ringing", "in-progress"):
            kind = "ringing" if self.status == "ringing" else "answered"
            events.append(self.event(kind, "inbound", from_number=_number(self.caller), extension=extension))
        elif self.status == "completed":
            events.append(self.event("ended", "inbound", from_number=_number(self.caller), extension=extension,
                                     status="answered", duration=self._int("CallDuration")))
        return events, None

    async def dialled(self):
        return self._after_dial(forward=True, extension=self.ext)

    async def fallback(self):
        return self._after_dial(forward=False, extension=None)

    def _after_dial(self, *, forward: bool, extension: str | None):
        """A ``<Dial>`` is over: answered, the call ends so; else the next that may take it
        (``twilio_fallback`` when ``forward``, voicemail), or it ends missed."""
        outcome = self.form.get("DialCallStatus")
        if outcome in ("completed", "answered"):
            ended = self.event("ended", "inbound", extension=extension, status="answered",
                               duration=self._int("DialCallDuration"))
            return [ended], _hangup
        missed = "busy" if outcome == "busy" else "missed"
        if self.status not in ENDS:  # the caller still waits: the next that may take the call
            if forward and self.settings.get("twilio_fallback"):
                twiml = VoiceResponse()
                dial = twiml.dial(action=_url(self.base, step="fallback"), method="POST",
                                  timeout=_ring_seconds(self.settings))
                dial.number(self.settings["twilio_fallback"])
                return [], lambda route: twiml
            if _flag(self.settings.get("twilio_voicemail")):
                return [], lambda route: self._voicemail()
            twiml = VoiceResponse()
            twiml.say(self.settings.get("twilio_unavailable_message") or UNAVAILABLE,
                      language=self.settings.get("twilio_language"))
            twiml.hangup()
            return [self.event("ended", "inbound", status=missed)], lambda route: twiml
        return [self.event("ended", "inbound", status=missed)], None

    def _voicemail(self) -> VoiceResponse:
        twiml = VoiceResponse()
        twiml.say(self.settings.get("twilio_voicemail_message") or LEAVE_A_MESSAGE,
                  language=self.settings.get("twilio_language"))
        twiml.record(action=_url(self.base, step="voicemail"), method="POST", max_length=VOICEMAIL_SECONDS,
                     play_beep=True)
        # Twilio skips the action when nothing was recorded: then this ends the call.
        twiml.redirect(_url(self.base, step="voicemail"), method="POST")
        return twiml

    async def voicemail(self):
        recording = self.form.get("RecordingUrl") or None
        status = "voicemail" if recording else "missed"
        return [self.event("ended", "inbound", status=status, recording_url=recording)], _hangup

    async def caller_leg(self):
        """The caller's own leg (the number's "call status changes"): its end ends the call."""
        if self.status not in ENDS:
            return [], None
        recording = self.form.get("RecordingUrl") or None
        status = None if self.status == "completed" else ENDS[self.status]  # completed: answered if it was
        if recording and status is None and not await self._answered():
            status = "voicemail"
        return [self.event("ended", "inbound", from_number=self.caller, to_number=self.to, status=status,
                           recording_url=recording)], None

    async def _answered(self) -> bool:
        page = await self.deployment.records.list(CALL, ListQuery(filter={"and": [
            {"field": "provider", "op": "eq", "value": self.provider.name},
            {"or": [{"field": "call_id", "op": "eq", "value": self.sid},
                    {"field": "linked_id", "op": "eq", "value": self.sid}]},
        ]}, limit=1))
        return bool(page.items and page.items[0].get("answered_at"))

    # -- click-to-call --------------------------------------------------------------------------

    async def outbound(self):
        """The user's leg of click-to-call (the customer's is a child of it)."""
        if self.status not in ENDS:
            return [], None
        status = None if self.status == "completed" else ENDS[self.status]
        return [self.event("ended", "outbound", status=status)], None

    async def customer(self):
        """The customer's leg of click-to-call (or a call out of other TwiML)."""
        numbers = {"from_number": _number(self.caller), "to_number": _number(self.to), "extension": self.ext}
        if self.status in ("ringing", "in-progress"):
            kind = "ringing" if self.status == "ringing" else "answered"
            return [self.event(kind, "outbound", **numbers)], None
        if self.status in ENDS:
            duration = self._int("CallDuration") if self.status == "completed" else None
            return [self.event("ended", "outbound", status=ENDS[self.status], duration=duration, **numbers)], None
        return [], None

    def _int(self, name: str) -> int | None:
        value = self.form.get(name)
        if not value:
            return None
        if not value.isdigit():
            raise ValidationError([FieldError(name, "invalid", f"seconds, a whole number; not {value!r}")])
        return int(value)


def _hangup(route: str | None) -> VoiceResponse:
    twiml = VoiceResponse()
    twiml.hangup()
    return twiml


def _webhook_base(deployment: Deployment, request: Request, settings: dict[str, Any]) -> str:
    """The webhook's address as Twilio calls it (without the request's query)."""
    if settings.get("twilio_webhook_url"):
        return settings["twilio_webhook_url"]
    if deployment.settings.base_url:
        return deployment.settings.base_url + request.url.path
    return str(request.url).partition("?")[0]


def _url(base: str, **query: str) -> str:
    return base + ("&" if "?" in base else "?") + urlencode(query)


def _address(settings: dict[str, Any], extension: str) -> str:
    """What Twilio dials to ring an extension (``twilio_dial``)."""
    return (settings.get("twilio_dial") or "client:{extension}").replace("{extension}", extension)


def _dial_extension(dial: Dial, address: str, **callback: str) -> None:
    if address.startswith("client:"):
        dial.client(address.removeprefix("client:"), **callback)
    elif address.startswith(("sip:", "sips:")):
        dial.sip(address, **callback)
    else:
        dial.number(address, **callback)


_EXTENSION = re.compile(r"^(?:client:(?P<client>[^?;]+)|sips?:(?P<sip>[^@;?]+)@.*)$")


def _extension(address: str | None) -> str | None:
    """The extension in ``client:101`` or ``sip:101@pbx.example.com``."""
    found = _EXTENSION.match(address or "")
    return (found.group("client") or found.group("sip")) if found else None


def _number(address: str | None) -> str | None:
    """A phone number, not a client or SIP address."""
    return None if address is None or address.startswith(("client:", "sip:", "sips:")) else address


def _timestamp(value: str | None) -> dt.datetime | None:
    """Twilio's ``Timestamp`` (RFC 2822)."""
    if not value:
        return None
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise ValidationError([FieldError("Timestamp", "invalid", f"an RFC 2822 time; not {value!r}")]) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.timezone.utc)


def _ring_seconds(settings: dict[str, Any]) -> int:
    value = settings.get("twilio_ring_seconds", RING_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 600:
        raise ValidationError([FieldError("twilio_ring_seconds", "invalid",
                                          f"seconds to ring, from 5 to 600; not {value!r}")])
    return value


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


def _message(exc: TwilioException) -> str:
    code = getattr(exc, "code", None)
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", None) or str(exc)
    text = text.removeprefix("Unable to create record: ")
    return f"{text} (Twilio error {code})" if code else text
