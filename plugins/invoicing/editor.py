"""The web editor of draft quotes and invoices: the client, terms, lines (a product picked fills
them, its price comes from the price list), document discounts and charges, and the totals the
server computes as the user types (``POST /api/invoicing/preview``). It saves through the
document routes (POST, or PUT at the version it read: a change made meanwhile is a 409 the page
shows), then issues an invoice, or sends and accepts a quote. ``static/editor.js`` does the work
in the browser; these routes only render the page.

- ``GET /invoicing/quotes/new``, ``/invoicing/invoices/new``: ``?deal=``, ``?contact=`` or
  ``?company=`` (or a record action's ``?entity=&id=``) choose the client; a deal brings its
  contact, company and currency.
- ``GET /invoicing/quotes/{id}/edit``, ``/invoicing/invoices/{id}/edit``: what the service lets
  change (a draft; a quote also once sent). Anything else is refused with a link to its page.
- ``GET /invoicing/edit?entity=&id=``: the "Edit lines" button of a quote's or an invoice's page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from babel.numbers import list_currencies
from litestar import Request, Response, get
from litestar.response import Redirect

import crmcore
from crmcore import FieldError, Forbidden, ListQuery, NotFound, UIItem, ValidationError, relation_titles
from crmcore.api import CurrentActor, CurrentDeployment

from .entities import INVOICE, LINE, PRICE_LIST, QUOTE
from .model import TAX_CATEGORIES, ZERO_RATE_CATEGORIES
from .service import invoicing_of

__all__ = ["EDITOR_ROUTES", "editor_ui_items"]

#: The path segment of each document type, and back.
_PATHS = {QUOTE: "quotes", INVOICE: "invoices"}
_ENTITIES = {path: entity for entity, path in _PATHS.items()}
#: Common UN/ECE rec. 20 units, offered as suggestions (any code is accepted).
UNITS = {"C62": "piece", "HUR": "hour", "DAY": "day", "MON": "month", "KGM": "kilogram", "MTR": "metre",
         "MTK": "square metre", "LTR": "litre", "SET": "set", "KMT": "kilometre"}


def _entity(request: Request) -> str:
    return _ENTITIES[request.url.path.split("/")[2]]


def _may(actor: Any, entity: str, action: str) -> None:
    if not actor.can(entity, action):
        raise Forbidden(f"your role may not {action} {entity.removeprefix('invoicing_')}s")


@get(["/invoicing/quotes/new", "/invoicing/invoices/new"], include_in_schema=False)
async def new_document(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    entity = _entity(request)
    _may(actor, entity, "create")
    service = invoicing_of(deployment)
    params = request.query_params
    given: dict[str, Any] = {name: params.get(name) for name in ("deal", "contact", "company")}
    if params.get("entity") in given:
        given[params["entity"]] = params.get("id")
    errors: list[FieldError] = []
    client, deal = await service._client({k: int(v) for k, v in given.items() if v and v.isdigit()}, errors, actor)
    money = deal.get("amount") if deal else None
    document: dict[str, Any] = {**client, "currency": money.currency if money else deployment.settings.currency,
                                "prices_include_tax": False, "lines": [], "adjustments": []}
    if entity == QUOTE:
        settings = await service.settings.load()
        document["valid_until"] = service.today() + dt.timedelta(days=settings.quote_validity_days)
    return await _editor(request, deployment, actor, entity, document, errors)


@get(["/invoicing/quotes/{document_id:int}/edit", "/invoicing/invoices/{document_id:int}/edit"],
     include_in_schema=False)
async def edit_document(request: Request, document_id: int, actor: CurrentActor,
                        deployment: CurrentDeployment) -> Response:
    entity = _entity(request)
    service = invoicing_of(deployment)
    document = await service.document(entity, document_id, actor)
    try:
        service._check_draft(entity, document)
    except ValidationError as refused:
        return await crmcore.render_page(request, "invoicing/editor_refused.html", status=409, entity=entity,
                                         document=document, message=refused.errors[0].message)
    _may(actor, entity, "edit")
    return await _editor(request, deployment, actor, entity, document, [])


@get("/invoicing/edit", include_in_schema=False)
async def edit_action(request: Request) -> Redirect:
    """A quote's or an invoice's page links here (``?entity=&id=``): its editor."""
    path, record_id = _PATHS.get(request.query_params.get("entity", "")), request.query_params.get("id", "")
    if path is None or not record_id.isdigit():
        raise NotFound("the editor opens a quote or an invoice: ?entity=invoicing_quote&id=7")
    return Redirect(f"/invoicing/{path}/{record_id}/edit", status_code=303)


async def _editor(request: Request, deployment: Any, actor: Any, entity: str, document: dict[str, Any],
                  errors: list[FieldError]) -> Response:
    """The editor page of ``document`` (as the document routes give it; new: its header only)."""
    registry = deployment.registry
    records = deployment.records.as_actor(actor)
    titles = await relation_titles(deployment, actor, registry.get(entity), [document])
    titles.update(await relation_titles(deployment, actor, registry.get(LINE), document["lines"]))
    try:
        price_lists = (await records.list(PRICE_LIST, ListQuery(filter={"or": [
            {"field": "active", "op": "eq", "value": True},
            {"field": "id", "op": "eq", "value": document.get("price_list") or 0}]}, sort=["name"], limit=200))).items
    except Forbidden:
        price_lists = []
    settings = await invoicing_of(deployment).settings.load()
    common = dict.fromkeys([deployment.settings.currency, document["currency"], *(p["currency"] for p in price_lists)])
    kind = "quote" if entity == QUOTE else "invoice"
    data = {
        "kind": kind, "id": document.get("id"), "version": document.get("version"),
        "api": f"/api/invoicing/{_PATHS[entity]}", "edit": f"/invoicing/{_PATHS[entity]}/{{id}}/edit",
        "record": f"/{entity}/{{id}}", "document": msgspec.to_builtins(document),
        "products": {str(i): title for (target, i), title in titles.items() if target == "invoicing_product"},
        "defaults": {"tax_category": settings.default_tax_category, "tax_rate": settings.default_tax_rate, "unit": "C62"},
        "zero_rate": sorted(ZERO_RATE_CATEGORIES), "errors": msgspec.to_builtins(errors),
    }
    back = (f"/{entity}/{document['id']}" if document.get("id") else
            next((f"/{name}/{document[name]}" for name in ("deal", "contact", "company") if document.get(name)), f"/{entity}"))
    return await crmcore.render_page(
        request, "invoicing/editor.html", entity=registry.get(entity), kind=kind, document=document, data=data,
        titles=titles, price_lists=price_lists, back=back, categories=TAX_CATEGORIES, units=UNITS,
        currencies=[*common, *sorted(set(list_currencies()) - set(common))],
        may_issue=actor.has("invoicing.issue"), payment_days=settings.payment_terms_days)


EDITOR_ROUTES = [new_document, edit_document, edit_action]


def editor_ui_items(register: Any) -> None:
    for entity in ("deal", "contact", "company"):
        register(UIItem(slot="record.action", entity=entity, name=f"new_quote_{entity}", label="New quote",
                        url="/invoicing/quotes/new", order=50))
        register(UIItem(slot="record.action", entity=entity, name=f"new_invoice_{entity}", label="New invoice",
                        url="/invoicing/invoices/new", order=51))
    for entity in (QUOTE, INVOICE):
        register(UIItem(slot="record.action", entity=entity, name=f"edit_lines_{entity}", label="Edit lines",
                        url="/invoicing/edit", order=10))
