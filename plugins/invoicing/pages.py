"""The invoicing plugin's own pages in the web UI, linked from the menu's "Invoicing":

- ``/invoicing``: the overview. Per currency, what clients still owe on open invoices, the part
  past its due date, and what came in this month; the latest invoices and the longest overdue;
  links to the plugin's lists and reports.

Everything is read as the signed-in user: the sums by the core's report runner (one SQL
``GROUP BY`` within the user's scope), the lists by the records service.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from litestar import Request, Response, get

import crmcore
from crmcore import Actor, Deployment, Forbidden, ListQuery, UIItem
from crmcore.api import CurrentActor, CurrentDeployment
from crmcore.web.fields import can, relation_titles

from .entities import COMMISSION, INVOICE, PAYMENT, PRICE_LIST, PRODUCT, QUOTE, RATE
from .service import OPEN, invoicing_of

__all__ = ["PAGES", "page_ui_items"]

#: Invoices in each list of the overview.
LISTED = 10
#: The plugin's lists the overview links to, in this order (those the user may read).
_LISTS = (INVOICE, QUOTE, PAYMENT, PRODUCT, PRICE_LIST, COMMISSION, RATE)
_OPEN_INVOICES = [{"field": "kind", "op": "eq", "value": "invoice"}, {"field": "status", "op": "in", "value": list(OPEN)}]
_ZERO = {"open": 0, "outstanding": Decimal(0), "overdue": 0, "overdue_amount": Decimal(0), "payments": 0,
         "received": Decimal(0)}


def page_ui_items(register: Any) -> None:
    register(UIItem(slot="menu", name="invoicing", label="Invoicing", url="/invoicing"))


# -- the overview ----------------------------------------------------------------------------------


async def _accounts(deployment: Deployment, actor: Actor, today: dt.date) -> list[dict[str, Any]]:
    """Per currency: open invoices and what they still owe, the overdue part (due before today,
    whether or not the overdue job has marked them yet), and this month's payments."""
    overdue = {"field": "due_date", "op": "lt", "value": today.isoformat()}
    owed = await deployment.reports.run({
        "name": "invoicing_owed", "entity": INVOICE, "filter": {"and": _OPEN_INVOICES}, "chart": "none",
        "measures": [{"op": "count", "name": "open"}, {"op": "sum", "field": "balance", "name": "outstanding"},
                     {"op": "count", "name": "overdue", "filter": overdue},
                     {"op": "sum", "field": "balance", "name": "overdue_amount", "filter": overdue}]}, actor)
    rows = owed["rows"]
    try:
        received = await deployment.reports.run({
            "name": "invoicing_received", "entity": PAYMENT, "chart": "none",
            # Credit applied moves money already received from one invoice to another.
            "filter": {"and": [{"field": "paid_on", "op": "gte", "value": today.replace(day=1).isoformat()},
                               {"field": "method", "op": "ne", "value": "credit"}]},
            "measures": [{"op": "count", "name": "payments"}, {"op": "sum", "field": "amount", "name": "received"}]},
            actor)
        rows = rows + received["rows"]
    except Forbidden:  # a role may read invoices and not payments
        pass
    accounts: dict[str, dict[str, Any]] = {}
    for row in rows:
        accounts.setdefault(row["currency"], {**_ZERO}).update(row)
    return [accounts[currency] for currency in sorted(accounts)]


@get("/invoicing", include_in_schema=False)
async def overview(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    today = invoicing_of(deployment).today()
    records = deployment.records.as_actor(actor)
    latest = (await records.list(INVOICE, ListQuery(sort=["-id"], limit=LISTED))).items
    overdue = (await records.list(INVOICE, ListQuery(filter={"and": [
        *_OPEN_INVOICES, {"field": "due_date", "op": "lt", "value": today.isoformat()}]},
        sort=["due_date", "id"], limit=LISTED))).items
    reports = [r for r in await deployment.reports.list(actor) if r.get("source") == "invoicing"]
    return await crmcore.render_page(
        request, "invoicing/page_overview.html", today=today, open_statuses=OPEN,
        accounts=await _accounts(deployment, actor, today), latest=latest, overdue=overdue,
        titles=await relation_titles(deployment, actor, deployment.registry.get(INVOICE), latest + overdue),
        lists=[deployment.registry.get(name) for name in _LISTS if can(actor, name, "read")], reports=reports)


PAGES = [overview]
