"""The invoicing plugin's own pages in the web UI, linked from the menu's "Invoicing":

- ``/invoicing``: the overview. Per currency, what clients still owe on open invoices, the part
  past its due date, and what came in this month; the latest invoices and the longest overdue;
  links to the plugin's lists, reports, commissions and settings.
- ``/invoicing/commissions?from=&to=`` (``invoicing.commissions``): commissions per employee on
  what was paid in a period (default: this month); ``&format=csv`` (or ``xlsx``) downloads the
  table as the core's report exports do.
- ``/invoicing/settings`` (``invoicing.settings``): the seller's settings, saved through the
  service with the API's checks; refused input comes back with each message next to its field.

Everything is read as the signed-in user: the sums by the core's report runner (one SQL
``GROUP BY`` within the user's scope), the lists by the records service.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Redirect

import crmcore
from crmcore import Actor, Deployment, FieldError, Forbidden, ListQuery, UIItem, ValidationError, relation_titles
from crmcore.api import CurrentActor, CurrentDeployment
from crmcore.reports import to_csv, to_xlsx

from .entities import COMMISSION, INVOICE, PAYMENT, PRICE_LIST, PRODUCT, QUOTE, RATE
from .model import TAX_CATEGORIES
from .routes import _date_param
from .service import OPEN, invoicing_of
from .settings import SellerSettings, check

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


def _need(actor: Actor, permission: str) -> None:
    if not actor.has(permission):
        raise Forbidden(f"this page needs the {permission} permission")


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
        lists=[deployment.registry.get(name) for name in _LISTS if actor.can(name, "read")], reports=reports,
        may_commissions=actor.has("invoicing.commissions"), may_settings=actor.has("invoicing.settings"))


# -- commissions -----------------------------------------------------------------------------------


#: The commissions table, as the core's CSV and XLSX writers take a report's columns.
_COMMISSION_COLUMNS = [
    {"key": "employee", "label": "Employee", "kind": "group", "bucket": None},
    {"key": "currency", "label": "Currency", "kind": "currency", "bucket": None},
    {"key": "paid_net", "label": "Paid net", "kind": "measure", "bucket": None},
    {"key": "commission", "label": "Commission", "kind": "measure", "bucket": None},
]
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _presets(today: dt.date) -> list[tuple[str, dt.date, dt.date]]:
    month = today.replace(day=1)
    last_month = (month - dt.timedelta(days=1)).replace(day=1)
    quarter = month.replace(month=(month.month - 1) // 3 * 3 + 1)
    return [("This month", month, today), ("Last month", last_month, month - dt.timedelta(days=1)),
            ("This quarter", quarter, today), ("This year", month.replace(month=1), today)]


def _download(rows: list[dict[str, Any]], start: dt.date, end: dt.date, form: str) -> Response:
    result = {"name": f"commissions_{start}_{end}", "label": "Commissions", "columns": _COMMISSION_COLUMNS,
              "rows": rows, "labels": {}}
    content = to_csv(result).encode() if form == "csv" else to_xlsx(result)
    return Response(content=content, media_type="text/csv; charset=utf-8" if form == "csv" else _XLSX,
                    headers={"content-disposition": f'attachment; filename="{result["name"]}.{form}"'})


@get("/invoicing/commissions", include_in_schema=False)
async def commissions(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    _need(actor, "invoicing.commissions")
    service = invoicing_of(deployment)
    today = service.today()
    period: dict[str, dt.date] = {}
    errors: list[FieldError] = []
    for name, default in (("from", today.replace(day=1)), ("to", today)):
        try:
            period[name] = _date_param(request, name, default)
        except ValidationError as exc:
            errors += exc.errors
    if not errors and period["to"] < period["from"]:
        errors.append(FieldError("to", "invalid", "the period ends on or after its start"))
    values = {name: request.query_params.get(name) or str(period.get(name, "")) for name in ("from", "to")}
    context = {"values": values, "errors": errors, "presets": _presets(today), "rows": [], "totals": []}
    if errors:
        return await crmcore.render_page(request, "invoicing/page_commissions.html", 422, **context)
    found = await service.commissions(actor=actor, start=period["from"], end=period["to"])
    # The rows name users as commission rules do: their titles come the same way.
    names = await relation_titles(deployment, actor, deployment.registry.get(COMMISSION), found)
    rows = [{"employee": names.get(("user", row["user"])) or (f"#{row['user']}" if row["user"] else "no owner"),
             "currency": row["currency"], "paid_net": row["paid_net"], "commission": row["commission"]} for row in found]
    form = request.query_params.get("format")
    if form in ("csv", "xlsx"):
        return _download(rows, period["from"], period["to"], form)
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = totals.setdefault(row["currency"], {"currency": row["currency"], "paid_net": 0, "commission": 0})
        total["paid_net"] += row["paid_net"]
        total["commission"] += row["commission"]
    context.update(rows=rows, totals=[totals[c] for c in sorted(totals)])
    return await crmcore.render_page(request, "invoicing/page_commissions.html", **context)


# -- seller settings -------------------------------------------------------------------------------


_SETTINGS = msgspec.structs.fields(SellerSettings)
_WHOLE_NUMBERS = tuple(f.name for f in _SETTINGS if f.type is int)
#: Text settings that are never empty (the service refuses them blank; the others may be cleared).
_NEVER_EMPTY = tuple(f.name for f in _SETTINGS if f.type is str)


def _settings_input(form: Any, current: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """The settings a form posts, typed, and what is wrong with them before the service looks."""
    changes: dict[str, Any] = {}
    errors: list[FieldError] = []
    for field in _SETTINGS:
        text = (form.get(field.name) or "").strip()
        if field.name in _WHOLE_NUMBERS:
            try:
                changes[field.name] = int(text)
            except ValueError:
                errors.append(FieldError(field.name, "invalid", "a whole number"))
        elif text or field.name not in _NEVER_EMPTY:
            changes[field.name] = text
        elif current[field.name]:
            errors.append(FieldError(field.name, "required", "this cannot be empty"))
    return changes, errors


async def _settings_form(request: Request, status: int = 200, **context: Any) -> Response:
    return await crmcore.render_page(request, "invoicing/page_settings.html", status, tax_categories=TAX_CATEGORIES,
                                     **{"errors": [], "saved": False, **context})


@get("/invoicing/settings", include_in_schema=False)
async def settings_page(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    _need(actor, "invoicing.settings")
    values = msgspec.to_builtins(await invoicing_of(deployment).settings.load())
    return await _settings_form(request, values=values, saved=request.query_params.get("saved") == "1")


@post("/invoicing/settings", include_in_schema=False, status_code=303)
async def settings_save(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    _need(actor, "invoicing.settings")
    store = invoicing_of(deployment).settings
    current = msgspec.to_builtins(await store.load())
    form = await request.form()
    changes, errors = _settings_input(form, current)
    try:
        if errors:
            check({**current, **changes})  # name every other mistake at once; nothing is saved
        else:
            await store.save(changes, actor=actor)
    except ValidationError as exc:
        errors += exc.errors
    if errors:
        return await _settings_form(request, 422, values={**current, **dict(form)}, errors=errors)
    return Redirect("/invoicing/settings?saved=1", status_code=303)


PAGES = [overview, commissions, settings_page, settings_save]
