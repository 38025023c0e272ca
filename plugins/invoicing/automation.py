"""The automation action ``invoicing.create_invoice``: "create the invoice when a deal is won".

On a deal, it invoices the deal's accepted quote (the newest one) or, without one, bills the
deal's amount as one line at the seller's default tax (gross when the deployment enters prices
with tax). ``issue: true`` issues it at once (numbered). A deal invoiced before is left alone:
a rule firing twice never bills twice.
"""

from __future__ import annotations

from typing import Any

from crmcore import ListQuery
from crmcore.automation import ActionError

from .entities import INVOICE, QUOTE
from .service import invoicing_of

_PARAMS = {"type", "issue", "prices_include_tax"}


def check_create_invoice(params: dict[str, Any], entity: Any) -> dict[str, Any]:
    if entity is None or entity.name != "deal":
        raise ValueError("create_invoice runs on deals (a rule of entity deal)")
    unknown = set(params) - _PARAMS
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}; create_invoice takes issue and prices_include_tax")
    for key in ("issue", "prices_include_tax"):
        if not isinstance(params.get(key, False), bool):
            raise ValueError(f"{key} is true or false")
    return params


async def create_invoice(context: Any) -> dict[str, Any]:
    deal = context.record or {}
    actor = context.records.actor
    service = invoicing_of(context.deployment)
    records = context.records
    done = await records.list(INVOICE, ListQuery(filter={"and": [
        {"field": "deal", "op": "eq", "value": deal["id"]}, {"field": "kind", "op": "eq", "value": "invoice"},
        {"field": "status", "op": "ne", "value": "cancelled"}]}, limit=1))
    if done.items:
        return {"invoice": done.items[0]["id"], "created": False}
    issue = bool(context.params.get("issue"))
    quotes = await records.list(QUOTE, ListQuery(filter={"and": [
        {"field": "deal", "op": "eq", "value": deal["id"]}, {"field": "status", "op": "eq", "value": "accepted"}]},
        sort=["-id"], limit=1))
    if quotes.items:
        invoice = await service.invoice_from_quote(quotes.items[0]["id"], actor=actor, issue=issue)
        return {"invoice": invoice["id"], "number": invoice.get("number"), "from_quote": quotes.items[0]["id"]}
    amount = deal.get("amount")
    if amount is None:
        raise ActionError(f"deal {deal.get('name')!r} has neither an accepted quote nor an amount to invoice")
    invoice = await service.create_invoice({
        "deal": deal["id"], "currency": amount.currency,
        "prices_include_tax": bool(context.params.get("prices_include_tax")),
        "lines": [{"description": deal.get("name") or f"Deal {deal['id']}", "quantity": 1,
                   "unit_price": str(amount.amount)}]}, actor=actor)
    if issue:
        invoice = await service.issue(invoice["id"], actor=actor)
    return {"invoice": invoice["id"], "number": invoice.get("number")}
