"""The invoicing plugin in the web UI: panels on client cards, invoices on timelines.

- contact and company cards: the client's account per currency (what they owe, overdue, their
  credit) and their latest invoices, credit notes and quotes;
- deal cards: the deal's quotes and invoices and what is invoiced, paid and still open;
- invoice and quote pages: the document as printed (lines, discounts and charges, tax breakdown,
  totals), its payments and credit notes, and the buttons that move it on (issue, send, record a
  payment, credit note, cancel; send, accept, decline, invoice a quote), each shown only to those
  who may use it; the buttons call the JSON API (``static/invoicing.js``).

Everything is read as the viewer, so a role that hides invoices hides the panels' content too.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from crmcore import Forbidden, ListQuery, TimelineItem, UIItem

from .entities import INVOICE, LINE, PAYMENT, PAYMENT_METHODS, QUOTE
from .money import minor_units
from .service import OPEN, invoicing_of

CLIENTS = ("contact", "company")
PANEL_SIZE = 10


def ui_items(register: Any, deployment: Any) -> None:
    for entity in CLIENTS:
        register(UIItem(slot="record.panel", entity=entity, name=f"account_{entity}", label="Invoices",
                        template="invoicing/account_panel.html", order=30,
                        replaces=(f"{INVOICE}.{entity}", f"{PAYMENT}.{entity}"), context=client_context))
        register(UIItem(slot="record.panel", entity=entity, name=f"quotes_{entity}", label="Quotes",
                        template="invoicing/quotes_panel.html", order=31, replaces=f"{QUOTE}.{entity}",
                        context=quotes_context))
    register(UIItem(slot="record.panel", entity="deal", name="deal_billing", label="Quotes and invoices",
                    template="invoicing/deal_panel.html", order=30, replaces=f"{INVOICE}.deal", context=deal_context))
    register(UIItem(slot="record.panel", entity="deal", name="deal_quotes", label="Quotes",
                    template="invoicing/quotes_panel.html", order=31, replaces=f"{QUOTE}.deal", context=quotes_context))
    register(UIItem(slot="record.panel", entity=INVOICE, name="invoice_document", label="Invoice",
                    template="invoicing/document_panel.html", order=1, context=document_context,
                    replaces=(f"{INVOICE}.corrects", f"{LINE}.invoice", f"{PAYMENT}.invoice", f"{QUOTE}.invoice")))
    register(UIItem(slot="record.panel", entity=QUOTE, name="quote_document", label="Quote",
                    template="invoicing/document_panel.html", order=1, context=document_context,
                    replaces=(f"{INVOICE}.quote", f"{LINE}.quote")))


async def _list(deployment: Any, actor: Any, entity: str, where: Any, *, sort: list[str], limit: int = PANEL_SIZE):
    return await deployment.records.as_actor(actor).list(entity, ListQuery(filter=where, sort=sort, limit=limit, count=True))


def _amount(money: Any) -> Decimal:
    return Decimal(0) if money is None else Decimal(str(money.amount))


async def client_context(deployment: Any, actor: Any, record: dict[str, Any], entity: str) -> dict[str, Any]:
    """A contact's or company's account per currency and their latest invoices."""
    try:
        accounts = await invoicing_of(deployment).balance(entity, record["id"], actor=actor)
        invoices = await _list(deployment, actor, INVOICE, {"field": entity, "op": "eq", "value": record["id"]},
                               sort=["-created_at"])
    except Forbidden:
        return {"allowed": False}
    return {"allowed": True, "accounts": accounts, "invoices": invoices.items, "total": invoices.total,
            "client": {entity: record["id"]}, "all_url": f"/{INVOICE}?{entity}={record['id']}",
            **_creating(actor)}


async def quotes_context(deployment: Any, actor: Any, record: dict[str, Any], entity: str) -> dict[str, Any]:
    try:
        quotes = await _list(deployment, actor, QUOTE, {"field": entity, "op": "eq", "value": record["id"]},
                             sort=["-created_at"])
    except Forbidden:
        return {"allowed": False}
    return {"allowed": True, "quotes": quotes.items, "total": quotes.total, "client": {entity: record["id"]},
            "all_url": f"/{QUOTE}?{entity}={record['id']}", **_creating(actor)}


async def deal_context(deployment: Any, actor: Any, record: dict[str, Any], entity: str) -> dict[str, Any]:
    """A deal's invoices and credit notes, with what they come to per currency."""
    try:
        invoices = await _list(deployment, actor, INVOICE, {"field": "deal", "op": "eq", "value": record["id"]},
                               sort=["-created_at"], limit=100)
    except Forbidden:
        return {"allowed": False}
    sums: dict[str, dict[str, Decimal]] = {}
    for invoice in invoices.items:
        if not invoice.get("number"):
            continue  # a draft counts once issued
        row = sums.setdefault(invoice["currency"], {"invoiced": Decimal(0), "credited": Decimal(0), "paid": Decimal(0),
                                                    "open": Decimal(0)})
        if invoice["kind"] == "credit_note":
            row["credited"] += _amount(invoice["total"])
            continue
        row["invoiced"] += _amount(invoice["total"])
        row["paid"] += _amount(invoice.get("paid"))
        if invoice["status"] in OPEN:
            row["open"] += _amount(invoice.get("balance"))
    return {"allowed": True, "invoices": invoices.items[:PANEL_SIZE], "total": invoices.total,
            "sums": sorted(sums.items()), "client": {"deal": record["id"]},
            "all_url": f"/{INVOICE}?deal={record['id']}", **_creating(actor)}


def _creating(actor: Any) -> dict[str, bool]:
    return {"may_quote": actor.can(QUOTE, "create"), "may_invoice": actor.can(INVOICE, "create")}


async def document_context(deployment: Any, actor: Any, record: dict[str, Any], entity: str) -> dict[str, Any]:
    """An invoice or quote as printed, with its payments, credit notes and what the viewer may do."""
    service = invoicing_of(deployment)
    document = await service.document(entity, record["id"], actor)
    out: dict[str, Any] = {"document": document, "kind": "quote" if entity == QUOTE else document["kind"],
                           "may_issue": actor.has("invoicing.issue"), "may_pay": actor.has("invoicing.payments"),
                           "today": service.today().isoformat(),
                           "methods": [m for m in PAYMENT_METHODS if m != "credit"],
                           "step": str(Decimal(1).scaleb(-minor_units(document["currency"])))}
    if entity == QUOTE:
        return out
    try:
        payments = await _list(deployment, actor, PAYMENT, {"field": "invoice", "op": "eq", "value": record["id"]},
                               sort=["paid_on", "id"], limit=100)
        notes = await _list(deployment, actor, INVOICE, {"field": "corrects", "op": "eq", "value": record["id"]},
                            sort=["id"], limit=100)
    except Forbidden:
        payments = notes = None
    out["payments"] = payments.items if payments else []
    out["credit_notes"] = notes.items if notes else []
    if document.get("corrects"):
        try:
            out["corrected"] = await deployment.records.as_actor(actor).get(INVOICE, document["corrects"])
        except Exception:  # gone or out of the viewer's scope: the number is on the note anyway
            out["corrected"] = None
    return out


# -- the timeline ----------------------------------------------------------------------------------


def timeline_items(entity: str, record_id: int, before: Any, limit: int, actor: Any, deployment: Any) -> Any:
    """Issued invoices and credit notes, quotes and payments of a client or deal, newest first."""
    if entity not in (*CLIENTS, "deal"):
        return []

    async def items() -> list[TimelineItem]:
        records = deployment.records.as_actor(actor)
        where = {"field": entity, "op": "eq", "value": record_id}
        out: list[TimelineItem] = []

        async def newest(kind: str, at: str, extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
            conditions = [where, *extra]
            if before is not None:
                conditions.append({"field": at, "op": "lte", "value": before.isoformat()})
            try:
                page = await records.list(kind, ListQuery(filter={"and": conditions}, sort=[f"-{at}", "-id"], limit=limit))
            except Forbidden:
                return []
            return page.items

        for invoice in await newest(INVOICE, "issued_at", [{"field": "issued_at", "op": "is_null", "value": False}]):
            out.append(_invoice_item(invoice))
        for quote in await newest(QUOTE, "created_at", []):
            out.append(TimelineItem(at=quote["created_at"], kind="quote", id=f"quote-{quote['id']}",
                                    title=f"Quote {quote.get('number') or 'draft'}", link=f"/{QUOTE}/{quote['id']}",
                                    body=_money_text(quote.get("total")),
                                    data={"status": quote["status"], "total": _money_data(quote.get("total"))}))
        if entity in CLIENTS:
            for payment in await newest(PAYMENT, "created_at", []):
                out.append(TimelineItem(at=payment["created_at"], kind="payment", id=f"payment-{payment['id']}",
                                        title=f"Payment received: {_money_text(payment['amount'])}",
                                        body=payment.get("reference"),
                                        link=f"/{INVOICE}/{payment['invoice']}" if payment.get("invoice") else None,
                                        data={"amount": _money_data(payment["amount"]), "method": payment["method"],
                                              "paid_on": payment["paid_on"].isoformat()}))
        out.sort(key=lambda item: item.at, reverse=True)
        return out[:limit]

    return items()


def _invoice_item(invoice: dict[str, Any]) -> TimelineItem:
    noun = "Credit note" if invoice["kind"] == "credit_note" else "Invoice"
    return TimelineItem(at=invoice["issued_at"], kind="invoice", id=f"invoice-{invoice['id']}",
                        title=f"{noun} {invoice['number']} issued", body=_money_text(invoice.get("total")),
                        link=f"/{INVOICE}/{invoice['id']}",
                        data={"kind": invoice["kind"], "status": invoice["status"], "number": invoice["number"],
                              "total": _money_data(invoice.get("total")), "due_date": _iso(invoice.get("due_date"))})


def _money_text(money: Any) -> str | None:
    return None if money is None else f"{money.amount} {money.currency}"


def _money_data(money: Any) -> dict[str, str] | None:
    return None if money is None else {"amount": str(money.amount), "currency": money.currency}


def _iso(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()
