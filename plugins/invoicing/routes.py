"""HTTP routes of the invoicing plugin (all JSON unless said; errors as problem+json naming the
field). Numbers in bodies may be JSON numbers or strings; they are read as exact decimals.

``POST /api/invoicing/preview``: what a draft would come to (lines priced, taxes, totals), saving
nothing; ``"kind": "quote"`` prices a quote.

Quotes: ``POST /api/invoicing/quotes`` (client or deal, currency, prices_include_tax,
price_list, lines, adjustments, valid_until), ``GET|PUT /api/invoicing/quotes/{id}``,
``POST /api/invoicing/quotes/{id}/send|accept|decline``, ``POST /api/invoicing/quotes/{id}/invoice``
(``{"issue": true}`` issues it at once).

Invoices: ``POST /api/invoicing/invoices``, ``GET|PUT /api/invoicing/invoices/{id}`` (drafts
only change), ``POST .../issue`` (``issue_date``, ``exchange_rate``), ``.../send``,
``.../cancel`` (``reason``), ``.../credit-note`` (``lines``, ``note``: a draft credit note),
``.../apply-credit``; ``GET .../pdf`` (PDF/A-3 with the Factur-X XML embedded), ``GET .../xml``
(``syntax=cii`` or ``ubl``), ``GET .../validation`` (both checked against the EN 16931 XSDs and
schematrons).

Payments and accounts: ``POST /api/invoicing/payments``, ``GET /api/invoicing/balance?contact=``
(or ``company=``), ``GET /api/invoicing/commissions?from=&to=``. Revenue, outstanding and aging are reports
(``/api/reports/invoicing.aging/run``..., see :mod:`.reports`).
Seller settings: ``GET|PUT /api/invoicing/settings``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec
from litestar import Request, Response, get, post, put

from crmcore import FieldError, Forbidden, ValidationError
from crmcore.api import CurrentActor, CurrentDeployment

from .entities import INVOICE, QUOTE
from .service import invoicing_of

__all__ = ["ROUTES"]

MAX_BODY = 2 * 1024 * 1024
_decoder = msgspec.json.Decoder(float_hook=Decimal)


async def _body(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ValidationError([FieldError("body", "too_large", f"a body is at most {MAX_BODY // 1024} KB")])
    if not raw.strip():
        if required:
            raise ValidationError([FieldError("body", "required", "a JSON body is required")])
        return {}
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValidationError([FieldError("body", "invalid_json", f"the body is not valid JSON: {exc}")]) from None


def _date_param(request: Request, name: str, default: dt.date) -> dt.date:
    value = request.query_params.get(name)
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError([FieldError(name, "invalid", "a date as YYYY-MM-DD")]) from None


# -- quotes ----------------------------------------------------------------------------------------


@post("/api/invoicing/quotes", status_code=201)
async def create_quote(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).create_quote(await _body(request), actor=actor)


@get("/api/invoicing/quotes/{quote_id:int}")
async def read_quote(quote_id: int, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).document(QUOTE, quote_id, actor)


@put("/api/invoicing/quotes/{quote_id:int}")
async def change_quote(quote_id: int, request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).save_draft(QUOTE, await _body(request), actor=actor, document_id=quote_id)


@post("/api/invoicing/quotes/{quote_id:int}/{action:str}", status_code=200)
async def quote_action(quote_id: int, action: str, request: Request, actor: CurrentActor,
                       deployment: CurrentDeployment) -> dict[str, Any]:
    service = invoicing_of(deployment)
    statuses = {"send": "sent", "accept": "accepted", "decline": "declined"}
    if action in statuses:
        return await service.set_quote_status(quote_id, statuses[action], actor=actor)
    if action == "invoice":
        body = await _body(request, required=False)
        issue = body.get("issue", False) if isinstance(body, dict) else None
        if not isinstance(issue, bool):
            raise ValidationError([FieldError("issue", "invalid", "true to issue the invoice at once")])
        return await service.invoice_from_quote(quote_id, actor=actor, issue=issue)
    raise ValidationError([FieldError("action", "invalid", "one of send, accept, decline, invoice")])


@post("/api/invoicing/preview", status_code=200)
async def preview(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    body = await _body(request)
    entity = QUOTE if isinstance(body, dict) and body.pop("kind", None) == "quote" else INVOICE
    return await invoicing_of(deployment).preview(entity, body, actor=actor)


# -- invoices --------------------------------------------------------------------------------------


@post("/api/invoicing/invoices", status_code=201)
async def create_invoice(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).create_invoice(await _body(request), actor=actor)


@get("/api/invoicing/invoices/{invoice_id:int}")
async def read_invoice(invoice_id: int, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).document(INVOICE, invoice_id, actor)


@put("/api/invoicing/invoices/{invoice_id:int}")
async def change_invoice(invoice_id: int, request: Request, actor: CurrentActor,
                         deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).save_draft(INVOICE, await _body(request), actor=actor, document_id=invoice_id)


def _only(body: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError([FieldError("body", "invalid", "expected an object")])
    for key in body:
        if key not in keys:
            raise ValidationError([FieldError(key, "unknown_field", "this takes: " + (", ".join(keys) or "nothing"))])
    return body


@post("/api/invoicing/invoices/{invoice_id:int}/{action:str}", status_code=200)
async def invoice_action(invoice_id: int, action: str, request: Request, actor: CurrentActor,
                         deployment: CurrentDeployment) -> dict[str, Any]:
    service = invoicing_of(deployment)
    body = await _body(request, required=False)
    if action == "issue":
        body = _only(body, ("issue_date", "exchange_rate"))
        return await service.issue(invoice_id, actor=actor, issue_date=body.get("issue_date"),
                                   exchange_rate=body.get("exchange_rate"))
    if action == "send":
        _only(body, ())
        return await service.mark_sent(invoice_id, actor=actor)
    if action == "cancel":
        body = _only(body, ("reason",))
        return await service.cancel(invoice_id, actor=actor, reason=body.get("reason"))
    if action == "credit-note":
        return await service.credit_note(invoice_id, body, actor=actor)
    if action == "apply-credit":
        _only(body, ())
        return await service.apply_credit(invoice_id, actor=actor)
    raise ValidationError([FieldError("action", "invalid", "one of issue, send, cancel, credit-note, apply-credit")])


@get("/api/invoicing/invoices/{invoice_id:int}/pdf")
async def invoice_pdf(invoice_id: int, request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    from .output import invoice_pdf as make_pdf

    content, filename = await make_pdf(deployment, invoice_id, actor=actor,
                                       template=request.query_params.get("template"))
    return Response(content=content, media_type="application/pdf", headers={
        "content-disposition": f'attachment; filename="{filename}"', "cache-control": "no-store",
        "x-content-type-options": "nosniff"})


@get("/api/invoicing/invoices/{invoice_id:int}/xml")
async def invoice_xml(invoice_id: int, request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    from .output import invoice_xml as make_xml

    syntax = request.query_params.get("syntax") or "cii"
    content, filename = await make_xml(deployment, invoice_id, syntax, actor=actor)
    return Response(content=content, media_type="application/xml", headers={
        "content-disposition": f'attachment; filename="{filename}"', "cache-control": "no-store"})


@get("/api/invoicing/invoices/{invoice_id:int}/validation")
async def invoice_validation(invoice_id: int, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    from .output import invoice_xml as make_xml
    from .validation import validate

    out = {}
    for syntax in ("cii", "ubl"):
        content, _ = await make_xml(deployment, invoice_id, syntax, actor=actor)
        report = await asyncio.to_thread(validate, content, syntax)
        out[syntax] = {"ok": report.ok, **msgspec.to_builtins(report)}
    return out


# -- payments and accounts -------------------------------------------------------------------------


@post("/api/invoicing/payments", status_code=201)
async def record_payment(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await invoicing_of(deployment).record_payment(await _body(request), actor=actor)


@get("/api/invoicing/balance")
async def balance(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> list[dict[str, Any]]:
    for entity in ("company", "contact"):
        value = request.query_params.get(entity)
        if value is not None:
            if not value.isdigit():
                raise ValidationError([FieldError(entity, "invalid", f"the id of a {entity}")])
            return await invoicing_of(deployment).balance(entity, int(value), actor=actor)
    raise ValidationError([FieldError("contact", "required", "the client: ?contact=<id> or ?company=<id>")])


@get("/api/invoicing/commissions")
async def commissions(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> list[dict[str, Any]]:
    if not actor.has("invoicing.commissions"):
        raise Forbidden("commissions need the invoicing.commissions permission")
    service = invoicing_of(deployment)
    today = service.today()
    start = _date_param(request, "from", today.replace(day=1))
    end = _date_param(request, "to", today)
    if end < start:
        raise ValidationError([FieldError("to", "invalid", "the period ends on or after its start")])
    return await service.commissions(actor=actor, start=start, end=end)


# -- settings --------------------------------------------------------------------------------------


@get("/api/invoicing/settings")
async def read_settings(actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return msgspec.to_builtins(await invoicing_of(deployment).settings.load())


@put("/api/invoicing/settings")
async def change_settings(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    body = await _body(request)
    return msgspec.to_builtins(await invoicing_of(deployment).settings.save(body, actor=actor))


ROUTES = [preview, create_quote, read_quote, change_quote, quote_action, create_invoice, read_invoice, change_invoice,
          invoice_action, invoice_pdf, invoice_xml, invoice_validation, record_payment, balance, commissions,
          read_settings, change_settings]
