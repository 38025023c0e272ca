"""Asterisk through its Manager Interface (AMI): its call events become call records, and
click-to-call goes out as an AMI ``Originate``.

**Listening.** ``crm telephony listen`` (:func:`listen`) keeps one AMI connection open, logs in,
turns Asterisk's call events into :class:`~plugins.telephony.calls.CallEvent` values
(:class:`AmiConsumer`) and reconnects after a drop. It is a process of its own, run beside
``crm serve`` (a systemd unit, a container): Asterisk sends every event to every connection, so
one listener per deployment is right, and one per web worker would record each event once per
worker and keep N connections open for nothing.

How the events are read (Asterisk 12 or later; legs joined by ``Linkedid``, ``Uniqueid`` is the
call id):

- ``Newchannel`` of a call's first channel: the call starts. It is *outbound* when the caller
  (the channel's peer, e.g. ``101`` of ``PJSIP/101-0000002a``, or ``CallerIDNum``) is one of our
  extensions (a ``telephony_line``), *internal* when what it dialled (``Exten``) is one too, else
  *inbound* (``incoming``, from ``CallerIDNum`` to ``Exten``).
- ``DialBegin``: an extension rings (``ringing``: the first of the destination channel's peer,
  ``DestCallerIDNum`` and ``DestExten`` that is an extension; the screen-pop); outbound, the
  number dialled becomes known. ``DialEnd`` with ``DialStatus: ANSWER`` and ``BridgeEnter`` (two
  channels in a bridge) answer it; BUSY, NOANSWER, CANCEL, CONGESTION and CHANUNAVAIL are kept for
  its end.
- ``Hangup`` of the last channel of a ``Linkedid`` ends the call: after ``ami_cdr_wait`` seconds,
  so that its ``Cdr`` events (one per leg; authoritative: ``Disposition`` ANSWERED, NO ANSWER,
  BUSY or FAILED, ``BillableSeconds``, ``RecordingFile`` or ``UserField``) come first. A ``Cdr``
  of a call the listener did not follow ends it by itself. A caller who reached no phone (FAILED,
  CHANUNAVAIL) is a missed call, to be called back.

Per call, what the listener knows lives in memory while the call lives (and the ids of the last
few thousand ended ones, for a late ``Cdr``). Recording the same event twice changes nothing
(:meth:`~plugins.telephony.calls.CallService.ingest` is idempotent), so a restarted listener, a
replayed stream, or ``Hangup`` and ``Cdr`` both ending a call make one record and one task.
Event times are the ``Timestamp`` header (``timestampevents = yes``), else when received.

**Click-to-call.** :meth:`AsteriskProvider.originate` logs in for a moment and sends
``Originate``: ``Channel`` the user's phone (``ami_channel``), which rings first; once answered,
Asterisk runs ``Context``/``Exten``/``Priority 1``, i.e. dials the customer's number there.

Settings (``[plugin.telephony]`` in crm.toml)::

    provider = "asterisk"             # click-to-call through Asterisk
    ami_host = "pbx.example.com"      # the AMI's address (required)
    ami_port = 5038
    ami_username = "crm"              # a manager.conf user (required)
    ami_secret = "..."                # (required)
    ami_channel = "PJSIP/{extension}" # the user's phone; e.g. "SIP/{extension}", "Local/{extension}@from-internal"
    ami_context = "from-internal"     # where the customer's number is dialled
    ami_number_format = "e164"        # the number as Exten: "e164" (+905321234567) or "national" (05321234567)
    ami_recording_url = "https://pbx.example.com/recordings/{file}"  # a CDR's recording file as a URL
    ami_cdr_wait = 2                  # seconds a hung-up call waits for its CDRs
    ami_reconnect = 2                 # seconds between reconnection attempts
    ami_timeout = 10                  # seconds click-to-call waits for Asterisk

On the Asterisk side, ``manager.conf``::

    [general]
    enabled = yes
    port = 5038
    bindaddr = 0.0.0.0
    timestampevents = yes             ; events carry their time (else: when received)

    [crm]
    secret = ...
    deny = 0.0.0.0/0.0.0.0
    permit = 192.0.2.10/255.255.255.255   ; the CRM's address only
    read = call,cdr                   ; the events the listener reads
    write = originate                 ; click-to-call

``cdr_manager.conf`` (``Cdr`` events; the mappings name each CDR's call and recording)::

    [general]
    enabled = yes

    [mappings]
    linkedid => LinkedID
    recordingfile => RecordingFile

and a dialplan context for ``Originate`` (``ami_context``) that dials outside numbers::

    [from-internal]
    exten => _+X.,1,Dial(PJSIP/${EXTEN}@trunk,60)
    exten => _X.,1,Dial(PJSIP/${EXTEN}@trunk,60)

AMI only listens; to ring the known caller's owner first, the inbound dialplan asks the CRM
(``GET /api/telephony/route``, with an API token of a user who may read contacts)::

    [from-trunk]
    exten => _X.,1,Set(CURLOPT(httpheader)=Authorization: Bearer ${CRM_TOKEN})
     same => n,Set(OWNER=${CURL(https://crm.example.com/api/telephony/route?format=text&number=${URIENCODE(${CALLERID(num)})})})
     same => n,GotoIf($["${OWNER}" = ""]?queue)
     same => n,Dial(PJSIP/${OWNER},20)
     same => n(queue),Queue(sales)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import phonenumbers
from panoramisk import Manager

from crmcore import FieldError, ValidationError

from ..calls import CallEvent, calls_of
from . import Provider

if TYPE_CHECKING:
    from crmcore import Deployment

__all__ = ["AsteriskProvider", "AmiConsumer", "AmiError", "AmiSettings", "Listened", "listen"]

log = logging.getLogger(__name__)

#: What Asterisk sends for "none" (caller ids; ``s``, the extension of a channel not dialled yet).
_NO_VALUE = {"", "<unknown>", "unknown", "anonymous", "s"}
_AUDIO = (".wav", ".wav49", ".gsm", ".mp3", ".ogg", ".opus", ".flac")
#: Ended calls whose channel ids are kept for a late Cdr.
_ENDED_KEPT = 5000
#: A call with no event for this long is forgotten (its hangup was missed, e.g. during a reconnect).
_STALE_SECONDS = 6 * 3600
#: How a dial that was not answered ends the call; a CDR says it better when one comes.
_DIAL_STATUS = {"BUSY": "busy", "CONGESTION": "failed", "CHANUNAVAIL": "failed"}
_DISPOSITION = {"ANSWERED": "answered", "NO ANSWER": "missed", "BUSY": "busy", "FAILED": "failed",
                "CONGESTION": "failed"}


class AmiError(Exception):
    """Asterisk could not be reached, or refused the login; the message says which and why."""


def _invalid(name: str, message: str) -> ValidationError:
    return ValidationError([FieldError(name, "invalid", message)])


def _number(settings: dict[str, Any], name: str, default: float, *, low: float, high: float) -> float:
    value = settings.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not low <= number <= high:
        raise _invalid(name, f"a number of seconds from {low:g} to {high:g}; not {value!r}")
    return number


@dataclass(frozen=True)
class AmiSettings:
    """The ``ami_*`` settings, checked: a ValidationError names the setting that is wrong."""

    host: str
    port: int
    username: str
    secret: str
    channel: str = "PJSIP/{extension}"
    context: str = "from-internal"
    number_format: str = "e164"
    reconnect: int = 2
    timeout: float = 10.0

    @staticmethod
    def configured(settings: dict[str, Any]) -> bool:
        return all(settings.get(name) for name in ("ami_host", "ami_username", "ami_secret"))

    @classmethod
    def of(cls, settings: dict[str, Any]) -> AmiSettings:
        for name in ("ami_host", "ami_username", "ami_secret"):
            if not settings.get(name):
                raise ValidationError([FieldError(name, "required",
                                                  f"set {name} under [plugin.telephony] in crm.toml")])
        port = settings.get("ami_port", 5038)
        if isinstance(port, bool) or not str(port).isdigit() or not 0 < int(port) < 65536:
            raise _invalid("ami_port", f"a TCP port (5038 by default); not {port!r}")
        channel = str(settings.get("ami_channel") or cls.channel)
        if "{extension}" not in channel:
            raise _invalid("ami_channel", "the user's phone with {extension} in it, e.g. PJSIP/{extension}; "
                                          f"not {channel!r}")
        number_format = str(settings.get("ami_number_format") or cls.number_format)
        if number_format not in ("e164", "national"):
            raise _invalid("ami_number_format", f"e164 or national; not {number_format!r}")
        return cls(host=str(settings["ami_host"]), port=int(port), username=str(settings["ami_username"]),
                   secret=str(settings["ami_secret"]), channel=channel,
                   context=str(settings.get("ami_context") or cls.context), number_format=number_format,
                   reconnect=int(_number(settings, "ami_reconnect", cls.reconnect, low=1, high=3600)),
                   timeout=_number(settings, "ami_timeout", cls.timeout, low=0.1, high=120))

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def dialled(self, e164: str) -> str:
        """The number as Asterisk's dialplan gets it (``Exten``)."""
        if self.number_format == "national":
            return re.sub(r"\D", "", phonenumbers.format_number(phonenumbers.parse(e164),
                                                                phonenumbers.PhoneNumberFormat.NATIONAL))
        return e164


class _QuietLog(logging.LoggerAdapter):
    """panoramisk's log at debug level: the listener says what it says (connection lost...) itself."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


_PANORAMISK_LOG = _QuietLog(logging.getLogger(f"{__name__}.panoramisk"), {})


class _Manager(Manager):
    """panoramisk's Manager that stays closed once closed (no reconnection scheduled before
    ``close()`` fires after it) and tells when Asterisk refuses the login or cannot be reached."""

    def __init__(self, **config: Any):
        super().__init__(log=_PANORAMISK_LOG, **config)
        self.closed = False
        self.on_refused = config.get("on_refused") or (lambda manager, message: None)
        self.on_unreachable = config.get("on_unreachable") or (lambda manager, error: None)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            return None
        return super().connect(*args, **kwargs)

    def connection_made(self, f: Any) -> None:
        if f.cancelled():
            return
        if f.exception() is not None and not self.closed:
            self.loop.call_soon(self.on_unreachable, self, f.exception())
        super().connection_made(f)

    def login(self, future: Any) -> bool:
        accepted = super().login(future)
        if not accepted:
            self.loop.call_soon(self.on_refused, self, future.result().message or "login refused")
        return accepted

    def close(self) -> None:
        self.closed = True
        super().close()


# -- events -> calls ------------------------------------------------------------------------------

def _value(raw: Any) -> str | None:
    if isinstance(raw, list):  # a header repeated: the last one
        raw = raw[-1] if raw else None
    text = str(raw).strip() if raw is not None else ""
    return None if text.lower() in _NO_VALUE else text


def _peer(channel: Any) -> str | None:
    """The endpoint of a channel name: ``101`` of ``PJSIP/101-0000002a`` or ``Local/101@ctx-00000001;1``."""
    name = _value(channel)
    if not name or "/" not in name:
        return None
    resource = name.split("/", 1)[1].split(";", 1)[0]
    if "@" in resource:
        return resource.split("@", 1)[0] or None
    base, dash, suffix = resource.rpartition("-")
    return base if dash and re.fullmatch(r"[0-9a-fA-F]{6,}", suffix) else resource


def _dialable(value: str | None) -> bool:
    return value is not None and re.fullmatch(r"\+?\d{2,}", value) is not None


def _dial_string_number(value: Any) -> str | None:
    """The number in a Dial string: ``05321234567`` of ``05321234567@trunk`` or ``trunk/05321234567``."""
    text = _value(value)
    if not text:
        return None
    return text.split("@", 1)[0].split("/")[-1].removeprefix("sip:") or None


def _clip(value: str | None) -> str | None:
    return value[:64] if value else value


def _time(message: Any) -> dt.datetime | None:
    stamp = _value(message.get("Timestamp"))
    try:
        return dt.datetime.fromtimestamp(float(stamp), dt.timezone.utc) if stamp else None
    except (ValueError, OverflowError, OSError):
        return None


#: What tells one CDR from another (the same CDR may be delivered twice).
_CDR_KEY = ("UniqueID", "Channel", "DestinationChannel", "StartTime", "AnswerTime", "EndTime", "Disposition",
            "BillableSeconds")


@dataclass
class _Cdr:
    key: tuple[str | None, ...]
    disposition: str
    billable: int
    voicemail: bool
    recording: str | None


@dataclass
class _Call:
    """What the listener knows of one live call (all its legs)."""

    linked_id: str
    call_id: str
    direction: str
    from_number: str | None = None
    to_number: str | None = None
    #: The caller's extension (outbound), else the extension that rang first.
    extension: str | None = None
    #: Channels still up (Uniqueid), and every channel it had.
    live: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    #: Extension ringing per dialled channel.
    ringing: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    answered_by: str | None = None
    dial_status: str | None = None
    cdrs: list[_Cdr] = field(default_factory=list)
    ended_at: dt.datetime | None = None
    waiting: asyncio.TimerHandle | None = None
    seen: float = field(default_factory=time.monotonic)


class _Due:
    """A queue item: the call waited long enough for its CDRs."""

    def __init__(self, linked_id: str):
        self.linked_id = linked_id


@dataclass
class Listened:
    """What a listener did: AMI events read, calls recorded."""

    events: int
    calls: int


class AmiConsumer:
    """Asterisk's events, in the order they came, turned into calls of one deployment.

    ``async with AmiConsumer(deployment) as consumer:`` then hand it events with
    ``manager.register_event("*", consumer.receive)`` (panoramisk). Events are queued and applied
    one at a time; leaving the block applies what is queued and ends the calls still waiting for
    their CDRs."""

    def __init__(self, deployment: Deployment):
        settings = deployment.plugin_settings("telephony")
        self.deployment = deployment
        self.cdr_wait = _number(settings, "ami_cdr_wait", 2, low=0, high=600)
        self.recording_url = settings.get("ami_recording_url") or None
        if self.recording_url is not None and (not re.match(r"https?://", str(self.recording_url))
                                               or "{file}" not in str(self.recording_url)):
            raise _invalid("ami_recording_url", "an http(s) URL with {file} in it, e.g. "
                                                "https://pbx.example.com/recordings/{file}")
        self.events = 0
        #: Linked ids of the calls recorded.
        self.recorded: set[str] = set()
        self._calls: dict[str, _Call] = {}
        self._linked: dict[str, str] = {}  # Uniqueid -> Linkedid of live calls
        self._ended: OrderedDict[str, str] = OrderedDict()  # the same, of calls ended lately
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def __aenter__(self) -> AmiConsumer:
        self._worker = asyncio.create_task(self._work())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._queue.join()
            for call in [c for c in self._calls.values() if not c.live]:  # hung up, waiting for CDRs
                await self._safely(self._end, call.linked_id)
        finally:
            for call in self._calls.values():
                if call.waiting is not None:
                    call.waiting.cancel()
            if self._worker is not None:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker

    def receive(self, manager: Any, message: Any) -> None:
        """panoramisk's event callback: queue the event (applied in order, one at a time)."""
        self._queue.put_nowait(message)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Due):
                    await self._safely(self._end, item.linked_id)
                else:
                    self.events += 1
                    await self._safely(self._handle, item)
            finally:
                self._queue.task_done()

    async def _safely(self, action: Any, item: Any) -> None:
        try:
            await action(item)
        except Exception:  # one bad event (or a database hiccup) must not stop the listener
            log.exception("an AMI event could not be recorded: %r", item)

    async def _handle(self, message: Any) -> None:
        handler = _HANDLERS.get(str(message.get("Event", "")).lower())
        if handler is not None:
            await handler(self, message, _time(message))

    # -- the events ---------------------------------------------------------------------------

    async def _newchannel(self, m: Any, at: dt.datetime | None) -> None:
        uid = _value(m.get("Uniqueid"))
        linked = _value(m.get("Linkedid")) or uid
        if not uid:
            return
        call = self._calls.get(linked)
        if call is not None:
            self._join(call, uid)  # another leg
            return
        if uid != linked:
            return  # a leg of a call that began before we listened: its CDR will tell
        call = await self._start(m, linked)
        self._join(call, uid)
        await self._emit(call, "incoming" if call.direction == "inbound" else "ringing", at)

    async def _dial_begin(self, m: Any, at: dt.datetime | None) -> None:
        call = await self._call_of_dial(m)
        if call is None:
            return
        dest = _value(m.get("DestUniqueid"))
        if call.direction == "outbound":
            if call.to_number is None:
                for candidate in (_value(m.get("Exten")), _value(m.get("DestCallerIDNum")),
                                  _dial_string_number(m.get("DialString"))):
                    if _dialable(candidate) and not await self._extension(candidate):
                        call.to_number = candidate
                        break
            await self._emit(call, "ringing", at)
            return
        extension = await self._extension(_peer(m.get("DestChannel")), _value(m.get("DestCallerIDNum")),
                                          _value(m.get("DestExten")))
        if extension is None:
            return
        if dest:
            call.ringing[dest] = extension
        call.extension = call.extension or extension
        await self._emit(call, "ringing", at, extension=extension)

    async def _dial_end(self, m: Any, at: dt.datetime | None) -> None:
        call = await self._call_of_dial(m)
        if call is None:
            return
        status = (_value(m.get("DialStatus")) or "").upper()
        if status != "ANSWER":
            call.dial_status = status or call.dial_status
            return
        if call.direction == "outbound":
            extension = call.extension
        else:
            extension = call.ringing.get(_value(m.get("DestUniqueid")) or "") or await self._extension(
                _peer(m.get("DestChannel")), _value(m.get("DestCallerIDNum")))
        await self._answered(call, extension, at)

    async def _bridge_enter(self, m: Any, at: dt.datetime | None) -> None:
        call = self._calls.get(self._linked.get(_value(m.get("Uniqueid")) or "") or _value(m.get("Linkedid")) or "")
        if call is None or call.answered:
            return
        members = _value(m.get("BridgeNumChannels")) or "0"
        if _value(m.get("BridgeTechnology")) == "holding_bridge" or not members.isdigit() or int(members) < 2:
            return  # alone in a bridge (a queue's hold, a parked call) is not a conversation
        extension = call.extension if call.direction == "outbound" else (
            await self._extension(_peer(m.get("Channel"))) or next(iter(call.ringing.values()), None))
        await self._answered(call, extension, at)

    async def _hangup(self, m: Any, at: dt.datetime | None) -> None:
        uid = _value(m.get("Uniqueid")) or ""
        call = self._calls.get(self._linked.get(uid) or _value(m.get("Linkedid")) or "")
        if call is None:
            return  # a call we did not follow: its CDR will tell
        call.seen = time.monotonic()
        call.live.discard(uid)
        call.ended_at = at or call.ended_at
        if call.live:
            return
        if self.cdr_wait <= 0:
            await self._end(call.linked_id)
        elif call.waiting is None:
            call.waiting = asyncio.get_running_loop().call_later(self.cdr_wait, self._queue.put_nowait,
                                                                 _Due(call.linked_id))

    async def _cdr(self, m: Any, at: dt.datetime | None) -> None:
        uid = _value(m.get("UniqueID")) or ""
        linked = (_value(m.get("LinkedID")) or self._linked.get(uid) or self._ended.get(uid) or uid)
        if not linked:
            return
        disposition = (_value(m.get("Disposition")) or "").upper()
        billable = _value(m.get("BillableSeconds")) or "0"
        cdr = _Cdr(key=tuple(_value(m.get(name)) for name in _CDR_KEY), disposition=disposition,
                   billable=int(billable) if billable.isdigit() else 0,
                   voicemail=(_value(m.get("LastApplication")) or "").lower() == "voicemail",
                   recording=self._recording(m))
        call = self._calls.get(linked)
        if call is not None:
            if all(c.key != cdr.key for c in call.cdrs):
                call.cdrs.append(cdr)  # the end (after the last hangup) reads them
            return
        # A call we did not follow (or ended already: then only a recording can still be added).
        source, destination = _value(m.get("Source")), _value(m.get("Destination"))
        caller = await self._extension(_peer(m.get("Channel")), source)
        callee = await self._extension(_peer(m.get("DestinationChannel")), destination)
        direction = "internal" if caller and callee else "outbound" if caller else "inbound"
        call = _Call(linked_id=linked, call_id=uid or linked, direction=direction, from_number=source,
                     to_number=destination if direction != "outbound" or _dialable(destination) else None,
                     extension=caller or callee, cdrs=[cdr], ended_at=at)
        await self._emit_end(call)

    # -- helpers ------------------------------------------------------------------------------

    async def _extension(self, *candidates: str | None) -> str | None:
        """The first candidate that is one of our extensions (a ``telephony_line``)."""
        service = calls_of(self.deployment)
        for candidate in candidates:
            if candidate and await service.line_user(candidate) is not None:
                return candidate
        return None

    async def _start(self, m: Any, linked: str) -> _Call:
        """A new call, from its first channel (or the caller's side of a dial)."""
        self._forget_stale()
        caller = await self._extension(_peer(m.get("Channel")), _value(m.get("CallerIDNum")))
        exten = _value(m.get("Exten"))
        uid = _value(m.get("Uniqueid")) or linked
        if caller is None:
            call = _Call(linked_id=linked, call_id=uid, direction="inbound",
                         from_number=_value(m.get("CallerIDNum")), to_number=exten if _dialable(exten) else None)
        elif exten and await self._extension(exten):
            call = _Call(linked_id=linked, call_id=uid, direction="internal", from_number=caller, to_number=exten,
                         extension=caller)
        else:
            call = _Call(linked_id=linked, call_id=uid, direction="outbound", from_number=caller,
                         to_number=exten if _dialable(exten) else None, extension=caller)
        self._calls[linked] = call
        return call

    async def _call_of_dial(self, m: Any) -> _Call | None:
        """The call of a DialBegin/DialEnd (begun now if we missed its start), its legs joined."""
        linked = _value(m.get("Linkedid")) or _value(m.get("DestLinkedid"))
        if not linked:
            return None
        call = self._calls.get(linked)
        if call is None:
            if not _value(m.get("Channel")):
                return None  # an Originate's dial has no calling side to tell the direction
            call = await self._start(m, linked)
        for uid in (_value(m.get("Uniqueid")), _value(m.get("DestUniqueid"))):
            if uid:
                self._join(call, uid)
        return call

    def _join(self, call: _Call, uid: str) -> None:
        call.seen = time.monotonic()
        if uid not in call.channels:
            call.channels.add(uid)
            call.live.add(uid)
            self._linked[uid] = call.linked_id

    async def _answered(self, call: _Call, extension: str | None, at: dt.datetime | None) -> None:
        call.answered = True
        call.answered_by = call.answered_by or extension
        await self._emit(call, "answered", at, extension=extension)

    async def _end(self, linked: str) -> None:
        call = self._calls.pop(linked, None)
        if call is None:
            return
        if call.waiting is not None:
            call.waiting.cancel()
        for uid in call.channels:
            self._linked.pop(uid, None)
            self._ended[uid] = linked
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)
        await self._emit_end(call)

    async def _emit_end(self, call: _Call) -> None:
        status, duration = _outcome(call)
        recording = next((c.recording for c in reversed(call.cdrs) if c.recording), None)
        await self._emit(call, "ended", call.ended_at, extension=call.answered_by or call.extension, status=status,
                         duration=duration, recording_url=recording)

    async def _emit(self, call: _Call, kind: str, at: dt.datetime | None, *, extension: str | None = None,
                    **details: Any) -> None:
        if call.direction == "outbound" and call.to_number is None:
            return  # the user's phone rang for an Originate but dialled nobody yet: nothing to log
        event = CallEvent(provider="asterisk", kind=kind, call_id=call.call_id[:200], linked_id=call.linked_id[:200],
                          direction=call.direction, from_number=_clip(call.from_number),
                          to_number=_clip(call.to_number), extension=_clip(extension or call.extension), at=at,
                          **details)
        await calls_of(self.deployment).ingest(event)
        self.recorded.add(call.linked_id)

    def _recording(self, m: Any) -> str | None:
        for name in ("RecordingFile", "UserField"):
            value = _value(m.get(name))
            if not value:
                continue
            if re.match(r"https?://", value):
                return value
            if self.recording_url and (name == "RecordingFile" or value.lower().endswith(_AUDIO)):
                return self.recording_url.replace("{file}", quote(value, safe="/"))
        return None

    def _forget_stale(self) -> None:
        limit = time.monotonic() - _STALE_SECONDS
        for call in [c for c in self._calls.values() if c.seen < limit]:
            log.info("forgetting call %s: no event for %d hours", call.linked_id, _STALE_SECONDS // 3600)
            if call.waiting is not None:
                call.waiting.cancel()
            del self._calls[call.linked_id]
            for uid in call.channels:
                self._linked.pop(uid, None)


def _outcome(call: _Call) -> tuple[str, int | None]:
    """How a call ended and how long was talked (None: from answered to ended), the CDRs first."""
    if call.cdrs:
        talked = [c for c in call.cdrs if c.disposition == "ANSWERED" and not c.voicemail]
        if talked:
            return "answered", sum(c.billable for c in talked)
        messages = [c for c in call.cdrs if c.disposition == "ANSWERED"]
        if messages:
            return "voicemail", sum(c.billable for c in messages)
        statuses = {_DISPOSITION.get(c.disposition, "missed") for c in call.cdrs}
        status = "busy" if "busy" in statuses else "missed" if "missed" in statuses else "failed"
    elif call.answered:
        return "answered", None
    else:
        status = _DIAL_STATUS.get(call.dial_status or "", "missed")
    if status == "failed" and call.direction == "inbound":
        status = "missed"  # the caller reached no phone: a call to return
    return status, 0


_HANDLERS = {
    "newchannel": AmiConsumer._newchannel,
    "dialbegin": AmiConsumer._dial_begin,
    "dialend": AmiConsumer._dial_end,
    "bridgeenter": AmiConsumer._bridge_enter,
    "hangup": AmiConsumer._hangup,
    "cdr": AmiConsumer._cdr,
}


# -- the listener -------------------------------------------------------------------------------

async def listen(deployment: Deployment, stop: asyncio.Event, *, once: bool = False) -> Listened:
    """Record Asterisk's calls until ``stop`` is set (with ``once``: until the connection closes).

    Logs in with the ``ami_*`` settings, reconnects after a drop (every ``ami_reconnect``
    seconds), and raises :class:`AmiError` when Asterisk refuses the login (or, with ``once``,
    cannot be reached)."""
    conf = AmiSettings.of(deployment.plugin_settings("telephony"))
    failures: list[str] = []
    reachable = True  # "cannot reach" is said once, not at every attempt

    def connected(manager: Any) -> None:
        nonlocal reachable
        reachable = True
        log.info("connected to Asterisk at %s", conf.where)

    def logged_in(manager: Any) -> None:
        log.info("logged in to Asterisk at %s as %s; recording call events", conf.where, conf.username)

    def refused(manager: Any, message: str) -> None:
        failures.append(f"Asterisk at {conf.where} refused the login of {conf.username!r}: {message} "
                        "(check ami_username and ami_secret, and the user in manager.conf)")
        stop.set()

    def unreachable(manager: Any, error: BaseException) -> None:
        nonlocal reachable
        if once:
            failures.append(f"cannot reach Asterisk at {conf.where}: {error}")
            stop.set()
        elif reachable:
            reachable = False
            log.warning("cannot reach Asterisk at %s (%s); trying again every %d s", conf.where, error, conf.reconnect)

    def dropped(manager: Any, error: Any) -> None:
        if stop.is_set():
            return
        if once:
            log.info("Asterisk at %s closed the connection", conf.where)
            stop.set()
        else:
            log.warning("lost the connection to Asterisk at %s; reconnecting in %d s", conf.where, conf.reconnect)

    async with AmiConsumer(deployment) as consumer:
        manager = _Manager(host=conf.host, port=conf.port, username=conf.username, secret=conf.secret,
                           events="call,cdr", loop=asyncio.get_running_loop(), reconnect_timeout=conf.reconnect,
                           on_connect=connected, on_login=logged_in, on_disconnect=dropped, on_refused=refused,
                           on_unreachable=unreachable)
        manager.register_event("*", consumer.receive)
        manager.connect()
        try:
            await stop.wait()
        finally:
            manager.close()
    if failures:
        raise AmiError(failures[0])
    return Listened(events=consumer.events, calls=len(consumer.recorded))


# -- the provider -------------------------------------------------------------------------------

class AsteriskProvider(Provider):
    """Click-to-call through AMI ``Originate``; calls are logged by ``crm telephony listen``."""

    name = "asterisk"
    label = "Asterisk (AMI)"

    def can_call(self, settings: dict[str, Any]) -> bool:
        return AmiSettings.configured(settings)

    async def originate(self, deployment: Deployment, *, extension: str | None, user_phone: str | None,
                        number: str, settings: dict[str, Any]) -> dict[str, Any]:
        conf = AmiSettings.of(settings)
        if not extension:
            raise ValidationError([FieldError("extension", "missing", "you have no extension to ring: an admin "
                                                                      "adds one under Phone lines")])
        channel = conf.channel.replace("{extension}", extension)
        exten = conf.dialled(number)
        action = {"Action": "Originate", "Channel": channel, "Context": conf.context, "Exten": exten,
                  "Priority": "1", "CallerID": f'"{exten}" <{extension}>', "Async": "true",
                  "Timeout": "30000"}
        try:
            answer = await _one_action(conf, action)
        except AmiError as exc:
            raise ValidationError([FieldError("provider", "unavailable", str(exc))]) from None
        if not answer.success:
            raise ValidationError([FieldError("provider", "refused", f"Asterisk did not place the call: "
                                                                    f"{answer.message or answer.response}")])
        return {"channel": channel, "exten": exten}


async def _one_action(conf: AmiSettings, action: dict[str, str]) -> Any:
    """Log in, send ``action``, log off: Asterisk's response (a panoramisk Message)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[str | None] = loop.create_future()

    def settle(outcome: str | None) -> None:
        if not ready.done():
            ready.set_result(outcome)

    manager = _Manager(host=conf.host, port=conf.port, username=conf.username, secret=conf.secret, events="off",
                       loop=loop, ping_delay=3600, reconnect_timeout=conf.reconnect,
                       on_login=lambda m: settle(None),
                       on_refused=lambda m, why: settle(f"Asterisk refused the login of {conf.username!r}: {why}"),
                       on_disconnect=lambda m, error: settle(f"Asterisk at {conf.where} closed the connection"))
    try:
        try:
            await asyncio.wait_for(manager.connect(), conf.timeout)
            problem = await asyncio.wait_for(ready, conf.timeout)
        except OSError as exc:
            raise AmiError(f"cannot reach Asterisk at {conf.where}: {exc.strerror or exc}") from None
        except asyncio.TimeoutError:
            raise AmiError(f"Asterisk at {conf.where} did not answer within {conf.timeout:g} s") from None
        if problem is not None:
            raise AmiError(problem)
        try:
            # as_list=False: the answer to an async Originate is its first response, not its end
            answer = await asyncio.wait_for(manager.send_action(action, as_list=False), conf.timeout)
        except asyncio.TimeoutError:
            raise AmiError(f"Asterisk at {conf.where} did not answer {action['Action']} within "
                           f"{conf.timeout:g} s") from None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(manager.send_action({"Action": "Logoff"}), 2)
        return answer
    finally:
        manager.close()
