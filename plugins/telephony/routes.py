"""HTTP routes of the telephony plugin.

- ``POST /api/telephony/webhooks/{provider}`` (public; each provider checks its signature):
  call events from a PBX or a cloud service; the provider's answer (JSON route, TwiML...).
- ``GET /api/telephony/live``: the signed-in user's screen-pops, as server-sent events.
- ``GET /api/telephony/lookup?number=``: who has this number (as the user may see them).
- ``GET /api/telephony/route?number=``: the extension a PBX should ring first for a caller (the
  known caller's owner's), for PBXs that ask from their dialplan (Asterisk's ``CURL()`` with an
  API token): JSON ``{"extension", "user", "record"}``, or just the extension as text with
  ``format=text`` (empty: no preference).
- ``POST /api/telephony/calls`` (``telephony.call``): click-to-call ``{"number": ...}`` through
  the configured provider; without one, the ``tel:`` link to dial by hand.
- ``GET /api/telephony/providers``: the providers installed, and which are configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from crmcore import FieldError, Forbidden, NotFound, ValidationError
from crmcore.api import CurrentActor, CurrentDeployment

from .calls import calls_of
from .providers import MAX_WEBHOOK_BODY, providers_of

__all__ = ["ROUTES"]

#: A comment line this often keeps proxies from closing an idle live stream.
KEEPALIVE_SECONDS = 15.0


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BODY:
        raise HTTPException(status_code=413, detail=f"a webhook body is at most {MAX_WEBHOOK_BODY // 1024} KB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BODY:
            raise HTTPException(status_code=413, detail=f"a webhook body is at most {MAX_WEBHOOK_BODY // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


@post("/api/telephony/webhooks/{provider:str}", opt={"public": True}, status_code=200,
      request_max_body_size=MAX_WEBHOOK_BODY)
async def webhook(request: Request, deployment: CurrentDeployment) -> Any:
    provider = request.path_params["provider"]
    found = providers_of(deployment).get(provider)
    if found is None:
        raise NotFound("telephony provider", provider)
    body = await _body(request)
    settings = deployment.plugin_settings("telephony")
    events = await found.webhook(deployment, request, body, settings)
    service = calls_of(deployment)
    await service.check_known(events)  # all of them, before any is applied
    results = [await service.ingest(event) for event in events]
    return found.answer(request, results)


@get("/api/telephony/live")
async def live(actor: CurrentActor, deployment: CurrentDeployment) -> ServerSentEvent:
    if actor.user_id is None:
        raise Forbidden("screen-pops are for signed-in users")
    bus = calls_of(deployment).live

    async def events():
        stream = bus.listen(actor.user_id)
        yield ServerSentEventMessage(event="ready", data="{}")
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(stream), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ServerSentEventMessage(comment="keep-alive")
                    continue
                yield ServerSentEventMessage(event="call", data=msgspec.json.encode(event).decode())
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    return ServerSentEvent(events(), headers={"cache-control": "no-store", "x-accel-buffering": "no"})


@get("/api/telephony/lookup")
async def lookup(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> list[dict[str, Any]]:
    number = request.query_params.get("number") or ""
    service = calls_of(deployment)
    if service.normalize(number) is None:
        raise ValidationError([FieldError("number", "invalid", f"{number!r} is not a phone number here")])
    return await service.lookup(number, actor=actor)


@get("/api/telephony/route")
async def route(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Any:
    number = request.query_params.get("number") or ""
    service = calls_of(deployment)
    if service.normalize(number) is None:
        raise ValidationError([FieldError("number", "invalid", f"{number!r} is not a phone number here")])
    found = await service.lookup(number, actor=actor)
    client = found[0] if found else None
    extension = await service.extension_of(client.get("owner_id")) if client else None
    if request.query_params.get("format") == "text":
        return Response(content=extension or "", media_type="text/plain")
    return {"extension": extension, "user": client.get("owner_id") if client else None,
            "record": {k: client[k] for k in ("entity", "id", "title")} if client else None}


class PlaceCall(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The number to call, as typed (normalised in the deployment's region).
    number: str


@post("/api/telephony/calls", status_code=200)
async def place_call(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    if not actor.has("telephony.call"):
        raise Forbidden("placing calls needs the telephony.call permission")
    try:
        data = msgspec.json.decode(await request.body(), type=PlaceCall)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValidationError([FieldError("number", "invalid", f"expected {{\"number\": \"...\"}}: {exc}")]) from None
    service = calls_of(deployment)
    e164 = service.normalize(data.number)
    if e164 is None:
        raise ValidationError([FieldError("number", "invalid", f"{data.number!r} is not a phone number here")])
    settings = deployment.plugin_settings("telephony")
    provider = providers_of(deployment).get(settings.get("provider") or "")
    if provider is None or not provider.can_call(settings):
        return {"placed": False, "tel": f"tel:{e164}", "number": e164}
    user = await deployment.records.get("user", actor.user_id) if actor.user_id else {}
    phone = user.get("phone")
    answer = await provider.originate(
        deployment, extension=await service.extension_of(actor.user_id), user_phone=phone.e164 if phone else None,
        number=e164, settings=settings)
    return {"placed": True, "provider": provider.name, "number": e164, **answer}


@get("/api/telephony/providers")
async def list_providers(actor: CurrentActor, deployment: CurrentDeployment) -> list[dict[str, Any]]:
    settings = deployment.plugin_settings("telephony")
    return [{"name": p.name, "label": p.label, "places_calls": p.can_call(settings),
             "selected": settings.get("provider") == p.name} for p in providers_of(deployment).values()]


ROUTES = [webhook, live, lookup, route, place_call, list_providers]

