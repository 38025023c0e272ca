"""Quotes -> invoices -> payments, credit notes and client balances: the invoicing plugin's one
way of writing its documents (``invoicing_of(deployment)``).

Every write goes through the core's records service as the acting user (permissions, audit,
events hold), inside one transaction per operation, and is marked as this service's own
(:func:`managed`) so that the plugin's ``crm_before_save`` guard lets it through while refusing
anyone else's edits of lines, computed totals and issued invoices.

**Numbers** are given when a document is issued, from ``invoicing_sequence`` (one row per series
and year) incremented by one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` inside the issuing
transaction: PostgreSQL locks the row until that transaction ends, SQLite has one writer, so two
issues never share a number, and a failed issue rolls its increment back: no gaps.

**Settling**: an invoice's ``paid`` is what payments applied to it, ``credited`` what issued
credit notes correcting it took off, ``balance`` = total − paid − credited; its status follows
(paid, partially paid, overdue once the due date has passed, cancelled when credited in full).
A payment larger than the balance keeps the rest as the client's credit (``unapplied``), which
:meth:`InvoicingService.apply_credit` later uses for another invoice.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import weakref
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec

from crmcore import SYSTEM, FieldError, Forbidden, ListQuery, Money, NotFound, ValidationError

from .entities import COMMISSION, INVOICE, LINE, PAYMENT, PAYMENT_METHODS, PRICE, PRICE_LIST, PRODUCT, QUOTE, RATE
from .model import (
    CREDIT_NOTE_TYPE_CODE, INVOICE_TYPE_CODE, AdjustmentInput, DocumentInput, InvoiceDocument, LineInput, Party, Totals,
)
from .money import compute, convert, minor_units, round_money
from .settings import SETTINGS_TABLE, SellerSettings, SettingsStore

if TYPE_CHECKING:
    from crmcore import Actor, Deployment

__all__ = ["InvoicingService", "invoicing_of", "managed", "STARTUP_TABLES"]

#: A document has at most this many lines (one page of the records service).
MAX_LINES = 500
#: Settled states of an issued invoice (what payments and credit notes may still change).
OPEN = ("issued", "sent", "partially_paid", "overdue")
STARTUP_TABLES = [
    SETTINGS_TABLE,
    'CREATE TABLE IF NOT EXISTS invoicing_sequence ("series" TEXT NOT NULL, "year" INTEGER NOT NULL, '
    '"last" INTEGER NOT NULL, PRIMARY KEY ("series", "year"))',
]
#: The job that marks an unpaid invoice overdue the day after its due date.
OVERDUE_JOB = "invoicing.overdue"
_LINE_FIELDS = ("description", "quantity", "unit", "unit_price", "discount_percent", "discount_amount",
                "charge_amount", "tax_category", "tax_rate", "note")
_KIND_INVOICE = {"field": "kind", "op": "eq", "value": "invoice"}
_KIND_CREDIT_NOTE = {"field": "kind", "op": "eq", "value": "credit_note"}
_ADJUSTMENT_FIELDS = ("charge", "reason", "amount", "percent", "tax_category", "tax_rate")

_managed: contextvars.ContextVar[bool] = contextvars.ContextVar("invoicing_managed", default=False)


@contextlib.contextmanager
def managed() -> Iterator[None]:
    """Mark the writes made inside as the invoicing service's own (the guard lets them through)."""
    token = _managed.set(True)
    try:
        yield
    finally:
        _managed.reset(token)


def is_managed() -> bool:
    return _managed.get()


_services: weakref.WeakKeyDictionary[Any, InvoicingService] = weakref.WeakKeyDictionary()


def invoicing_of(deployment: Deployment) -> InvoicingService:
    """The deployment's invoicing service (one per open deployment)."""
    service = _services.get(deployment)
    if service is None:
        service = _services[deployment] = InvoicingService(deployment)
    return service


# -- input ------------------------------------------------------------------------------------------


def _decimal(value: Any, field: str, errors: list[FieldError], *, required: bool = False) -> Decimal | None:
    if value is None or value == "":
        if required:
            errors.append(FieldError(field, "required", "a number is required, e.g. 2 or 19.99"))
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        errors.append(FieldError(field, "invalid", "expected a number such as 19.99 (a string keeps it exact)"))
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        errors.append(FieldError(field, "invalid", f"{value!r} is not a number; expected e.g. 19.99"))
        return None
    if not number.is_finite() or abs(number.adjusted()) > 15:
        errors.append(FieldError(field, "invalid", "expected a finite number of at most 15 digits"))
        return None
    return number


def _date(value: Any, field: str, errors: list[FieldError]) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        errors.append(FieldError(field, "invalid", "a date as YYYY-MM-DD"))
        return None


def _id(value: Any, field: str, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.append(FieldError(field, "invalid", "the id (a positive integer) of a record"))
        return None
    return value


def _money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": str(amount), "currency": currency}


def _amount(value: Any) -> Decimal:
    """The amount of a stored money value (None: 0)."""
    if isinstance(value, Money):
        return value.amount
    return Decimal(0) if value is None else Decimal(str(value))


def _refuse(field: str, message: str, code: str = "invalid") -> ValidationError:
    return ValidationError([FieldError(field, code, message)])


class InvoicingService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.settings = SettingsStore(deployment)

    @property
    def db(self):
        return self.deployment.db

    def records(self, actor: Actor):
        return self.deployment.records.as_actor(actor)

    def today(self) -> dt.date:
        return self.deployment.clock.now().astimezone(ZoneInfo(self.deployment.settings.timezone)).date()

    @staticmethod
    def _require(actor: Actor, permission: str, doing: str) -> None:
        if not actor.has(permission):
            raise Forbidden(f"{doing} needs the {permission} permission")

    # -- reading ---------------------------------------------------------------------------------

    async def lines(self, kind: str, document_id: int, actor: Actor = SYSTEM) -> list[dict[str, Any]]:
        page = await self.records(actor).list(LINE, ListQuery(
            filter={"field": kind, "op": "eq", "value": document_id}, sort=["position", "id"], limit=MAX_LINES))
        return page.items

    async def document(self, entity: str, document_id: int, actor: Actor) -> dict[str, Any]:
        """A quote or invoice as the actor reads it, with its lines, adjustments and tax breakdown."""
        record = await self.records(actor).get(entity, document_id)
        out = dict(record)
        out["adjustments"] = msgspec.json.decode(record["adjustments"]) if record.get("adjustments") else []
        out["tax_breakdown"] = msgspec.json.decode(record["tax_breakdown"]) if record.get("tax_breakdown") else []
        for party in ("seller", "buyer"):
            if record.get(party):
                out[party] = msgspec.json.decode(record[party])
        out["lines"] = await self.lines("quote" if entity == QUOTE else "invoice", document_id, actor)
        return out

    # -- drafting --------------------------------------------------------------------------------

    async def _client(self, data: dict[str, Any], errors: list[FieldError], actor: Actor) -> tuple[dict[str, Any], dict | None]:
        """deal / contact / company of a new document (a deal brings its contact and company,
        a contact its company), and the deal."""
        client = {name: _id(data.get(name), name, errors) for name in ("deal", "contact", "company")}
        deal = None
        if client["deal"]:
            try:
                deal = await self.records(actor).get("deal", client["deal"])
            except NotFound:
                errors.append(FieldError("deal", "not_found", f"no deal {client['deal']} you may read"))
            else:
                client["contact"] = client["contact"] or deal.get("contact")
                client["company"] = client["company"] or deal.get("company")
        if client["contact"] and not client["company"]:
            with contextlib.suppress(NotFound):  # an unknown contact is named by the write
                client["company"] = (await self.records(actor).get("contact", client["contact"])).get("company")
        return client, deal

    async def _price(self, product: dict[str, Any], quantity: Decimal | None, currency: str, include_tax: bool,
                     price_list: dict[str, Any] | None, field: str, errors: list[FieldError]) -> Decimal | None:
        """The unit price of a product on a document: the price list's (volume prices by quantity)
        or the product's, in the document's currency, net or gross as the document enters them."""
        rate = Decimal(str(product.get("tax_rate") or 0))
        base: Money = product["price"]
        price, discount, gross = base.amount, Decimal(0), bool(product.get("price_includes_tax"))
        if price_list is not None:
            page = await self.deployment.records.list(PRICE, ListQuery(filter={"and": [
                {"field": "price_list", "op": "eq", "value": price_list["id"]},
                {"field": "product", "op": "eq", "value": product["id"]}]}, sort=["-min_quantity"], limit=100))
            item = next((i for i in page.items if (quantity or 0) >= (i.get("min_quantity") or 0)), None)
            if item is not None and item.get("price") is not None:
                price, base = item["price"], Money(item["price"], price_list["currency"])
            if item is not None and item.get("discount_percent") is not None:
                discount = item["discount_percent"]
            elif item is None and price_list.get("discount_percent") is not None:
                discount = price_list["discount_percent"]
        if base.currency != currency:
            errors.append(FieldError(field, "required", f"product {product['sku']} is priced in {base.currency} and the "
                                                        f"document is in {currency}: give unit_price, or use a price list in {currency}"))
            return None
        price = price * (100 - discount) / 100
        if gross and not include_tax:
            price = price / (1 + rate / 100)
        elif include_tax and not gross:
            price = price * (1 + rate / 100)
        price = price.quantize(Decimal("0.000001")).normalize()
        minor = minor_units(currency)
        return price.quantize(Decimal(1).scaleb(-minor)) if -price.as_tuple().exponent < minor else price

    async def _document_input(self, data: dict[str, Any], header: dict[str, Any], actor: Actor,
                              errors: list[FieldError]) -> tuple[DocumentInput | None, list[dict[str, Any]]]:
        """Lines and adjustments as given, products resolved: the engine's input and the line rows."""
        settings = await self.settings.load()
        currency = header["currency"]
        include_tax = bool(header.get("prices_include_tax"))
        price_list = None
        if header.get("price_list"):
            try:
                price_list = await self.records(actor).get(PRICE_LIST, header["price_list"])
            except NotFound:
                errors.append(FieldError("price_list", "not_found", f"no price list {header['price_list']}"))
            else:
                if price_list["currency"] != currency:
                    errors.append(FieldError("price_list", "invalid", f"the price list is in {price_list['currency']}, "
                                                                      f"the document in {currency}"))
                    price_list = None
        raw_lines = data.get("lines")
        if not isinstance(raw_lines, list):
            errors.append(FieldError("lines", "required", "a list of lines, e.g. [{\"product\": 3, \"quantity\": 2}]"))
            raw_lines = []
        if len(raw_lines) > MAX_LINES:
            errors.append(FieldError("lines", "invalid", f"a document has at most {MAX_LINES} lines"))
            raw_lines = []
        lines: list[LineInput] = []
        rows: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_lines):
            at = f"lines[{index}]"
            if not isinstance(raw, dict):
                errors.append(FieldError(at, "invalid", "a line is an object: product or description, quantity, unit_price..."))
                continue
            unknown = set(raw) - {"product", *_LINE_FIELDS}
            if unknown:
                errors.append(FieldError(f"{at}.{sorted(unknown)[0]}", "unknown_field",
                                         "a line has: product, " + ", ".join(_LINE_FIELDS)))
                continue
            count = len(errors)
            quantity = _decimal(raw.get("quantity"), f"{at}.quantity", errors, required=True)
            row: dict[str, Any] = {"product": None, "sku": None, "category": None}
            values: dict[str, Any] = {
                "description": raw.get("description"), "unit": raw.get("unit"), "tax_category": raw.get("tax_category"),
                "note": raw.get("note")}
            for name in ("unit_price", "discount_percent", "discount_amount", "charge_amount", "tax_rate"):
                values[name] = _decimal(raw.get(name), f"{at}.{name}", errors)
            product_id = _id(raw.get("product"), f"{at}.product", errors)
            if product_id is not None:
                try:
                    product = await self.records(actor).get(PRODUCT, product_id)
                except NotFound:
                    errors.append(FieldError(f"{at}.product", "not_found", f"no product {product_id}"))
                    continue
                if not product.get("active", True):
                    errors.append(FieldError(f"{at}.product", "invalid", f"product {product['sku']} is not sold any more"))
                row.update(product=product_id, sku=product["sku"], category=product.get("category"))
                values["description"] = values["description"] or product["name"]
                values["unit"] = values["unit"] or product.get("unit")
                if values["tax_category"] is None:
                    values["tax_category"] = product.get("tax_category")
                    if values["tax_rate"] is None:
                        values["tax_rate"] = product.get("tax_rate")
                if values["unit_price"] is None and len(errors) == count:
                    values["unit_price"] = await self._price(product, quantity, currency, include_tax, price_list,
                                                             f"{at}.unit_price", errors)
            elif values["unit_price"] is None:
                errors.append(FieldError(f"{at}.unit_price", "required", "a unit price (or a product to take it from)"))
            if values["tax_category"] is None:
                values["tax_category"] = settings.default_tax_category
                if values["tax_rate"] is None:
                    values["tax_rate"] = Decimal(settings.default_tax_rate)
            if values["tax_rate"] is None:
                values["tax_rate"] = Decimal(0)
            if not isinstance(values["description"], str) or not values["description"].strip():
                errors.append(FieldError(f"{at}.description", "required", "what the line is for (or a product)"))
            if not isinstance(values["tax_category"], str):
                errors.append(FieldError(f"{at}.tax_category", "invalid", "a tax category code such as S"))
            if len(errors) > count:
                continue
            line = LineInput(description=values["description"].strip(), quantity=quantity, unit_price=values["unit_price"],
                             tax_category=values["tax_category"], tax_rate=values["tax_rate"],
                             unit=(values["unit"] or "C62"), discount_percent=values["discount_percent"],
                             discount_amount=values["discount_amount"], charge_amount=values["charge_amount"],
                             sku=row["sku"], product_id=row["product"], category=row["category"], note=values["note"])
            lines.append(line)
            rows.append(row)
        adjustments: list[AdjustmentInput] = []
        raw_adjustments = data.get("adjustments") or []
        if not isinstance(raw_adjustments, list):
            errors.append(FieldError("adjustments", "invalid", "a list of discounts and charges"))
            raw_adjustments = []
        for index, raw in enumerate(raw_adjustments):
            at = f"adjustments[{index}]"
            if not isinstance(raw, dict) or set(raw) - set(_ADJUSTMENT_FIELDS):
                errors.append(FieldError(at, "invalid", "an adjustment has: " + ", ".join(_ADJUSTMENT_FIELDS)))
                continue
            count = len(errors)
            amount = _decimal(raw.get("amount"), f"{at}.amount", errors)
            percent = _decimal(raw.get("percent"), f"{at}.percent", errors)
            rate = _decimal(raw.get("tax_rate"), f"{at}.tax_rate", errors)
            if not isinstance(raw.get("charge", False), bool):
                errors.append(FieldError(f"{at}.charge", "invalid", "true for a charge, false for a discount"))
            reason = raw.get("reason") or ("Charge" if raw.get("charge") else "Discount")
            if len(errors) == count:
                adjustments.append(AdjustmentInput(charge=bool(raw.get("charge")), reason=str(reason), amount=amount,
                                                   percent=percent, tax_category=raw.get("tax_category"), tax_rate=rate))
        if errors:
            return None, rows
        return DocumentInput(currency=currency, lines=lines, adjustments=adjustments, prices_include_tax=include_tax), rows

    def _compute(self, document: DocumentInput, errors: list[FieldError]) -> Totals | None:
        try:
            return compute(document)
        except ValidationError as exc:
            errors.extend(exc.errors)
            return None

    @staticmethod
    def _totals_values(totals: Totals, currency: str) -> dict[str, Any]:
        return {
            "net_total": _money(totals.tax_basis_total, currency), "tax_total": _money(totals.tax_total, currency),
            "total": _money(totals.grand_total, currency),
            "tax_breakdown": msgspec.json.encode(totals.breakdown).decode(),
        }

    async def _header(self, entity: str, data: dict[str, Any], before: dict[str, Any] | None, actor: Actor,
                      errors: list[FieldError]) -> dict[str, Any]:
        """The header fields of a quote or invoice as given (a draft's current ones kept)."""
        allowed = {"deal", "contact", "company", "currency", "prices_include_tax", "price_list", "notes", "lines",
                   "adjustments", "owner_id", "version"}  # version: the draft as read (stale: 409)
        allowed |= {"valid_until", "issue_date"} if entity == QUOTE else {
            "due_date", "delivery_date", "buyer_reference", "order_reference", "payment_terms"}
        for key in data:
            if key not in allowed:
                errors.append(FieldError(key, "unknown_field", "not something a draft sets; it takes: " + ", ".join(sorted(allowed))))
        header: dict[str, Any] = {}
        if before is None:
            client, deal = await self._client(data, errors, actor)
            header.update(client)
            currency = data.get("currency") or (deal["amount"].currency if deal and deal.get("amount") else None) \
                or self.deployment.settings.currency
        else:
            for name in ("deal", "contact", "company"):
                if name in data:
                    header[name] = _id(data[name], name, errors)
            currency = data.get("currency") or before["currency"]
        if not isinstance(currency, str):
            errors.append(FieldError("currency", "invalid", "a three-letter ISO 4217 code such as EUR"))
            currency = "EUR"
        currency = currency.upper()
        try:
            minor_units(currency)
        except ValidationError as exc:
            errors.extend(exc.errors)
        header["currency"] = currency
        include = data.get("prices_include_tax", before.get("prices_include_tax") if before else False)
        if not isinstance(include, bool):
            errors.append(FieldError("prices_include_tax", "invalid", "true (gross prices) or false (net prices)"))
        header["prices_include_tax"] = bool(include)
        if "price_list" in data or before is None:
            header["price_list"] = _id(data.get("price_list"), "price_list", errors)
        else:
            header["price_list"] = before.get("price_list")
        for name in ("notes", "buyer_reference", "order_reference", "payment_terms", "owner_id"):
            if name in data:
                header[name] = data[name]
        for name in ("valid_until", "issue_date", "due_date", "delivery_date"):
            if name in data:
                header[name] = _date(data[name], name, errors)
        if before is None and not header.get("contact") and not header.get("company"):
            errors.append(FieldError("contact", "required", "a client: contact or company (or a deal that has one)"))
        return header

    async def _write_lines(self, kind: str, document_id: int, document: DocumentInput, totals: Totals,
                           rows: list[dict[str, Any]], actor: Actor) -> None:
        records = self.records(actor)
        for old in await self.lines(kind, document_id, actor):
            await records.delete(LINE, old["id"])
            await records.purge(LINE, old["id"])
        new = []
        for position, (line, computed, row) in enumerate(zip(document.lines, totals.lines, rows), start=1):
            new.append({
                kind: document_id, "position": position, **row, "description": line.description,
                "quantity": line.quantity, "unit": line.unit, "unit_price": line.unit_price,
                "discount_percent": line.discount_percent, "discount_amount": line.discount_amount,
                "charge_amount": line.charge_amount, "tax_category": line.tax_category, "tax_rate": line.tax_rate,
                "net_price": computed.net_price, "net_amount": _money(computed.net_amount, document.currency),
                "note": line.note})
        await records.bulk_create(LINE, new)

    async def save_draft(self, entity: str, data: Any, *, actor: Actor, document_id: int | None = None,
                         extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create (``document_id`` None) or replace a draft quote or invoice, lines and all."""
        if not isinstance(data, dict):
            raise _refuse("body", "expected an object: client, currency, lines, adjustments...")
        errors: list[FieldError] = []
        before = None
        if document_id is not None:
            before = await self.records(actor).get(entity, document_id)
            self._check_draft(entity, before)
        header = await self._header(entity, data, before, actor, errors)
        source = dict(data)
        if before is not None:  # what the change leaves out stays as it is
            if "lines" not in data:
                # A new price list, currency or price entry re-prices the lines of products.
                repriced = any(name in data for name in ("price_list", "currency", "prices_include_tax"))
                source["lines"] = [
                    {k: line.get(k) for k in ("product", *_LINE_FIELDS)
                     if not (repriced and line.get("product") and k == "unit_price")}
                    for line in await self.lines("quote" if entity == QUOTE else "invoice", document_id, actor)]
            if "adjustments" not in data and before.get("adjustments"):
                source["adjustments"] = msgspec.json.decode(before["adjustments"])
        document, rows = await self._document_input(source, header, actor, errors)
        totals = self._compute(document, errors) if document is not None and not errors else None
        if errors or totals is None:
            raise ValidationError(errors)
        adjustments = [msgspec.to_builtins(a) for a in document.adjustments]
        values = {**header, **(extra or {}), **self._totals_values(totals, document.currency),
                  "adjustments": msgspec.json.encode(adjustments).decode()}
        kind = "quote" if entity == QUOTE else "invoice"
        records = self.records(actor)
        async with self.db.transaction():
            with managed():
                if before is None:
                    saved = await records.create(entity, values)
                else:
                    saved = await records.update(entity, document_id, values, version=data.get("version"))
                await self._write_lines(kind, saved["id"], document, totals, rows, actor)
        return await self.document(entity, saved["id"], actor)

    async def preview(self, entity: str, data: Any, *, actor: Actor) -> dict[str, Any]:
        """What a draft with these header fields and lines would come to (nothing is saved):
        each line's prices and net amount, the adjustments, tax breakdown and totals. Editors
        show it as the user types; errors name the field as saving would."""
        if not isinstance(data, dict):
            raise _refuse("body", "expected an object: client, currency, lines, adjustments...")
        errors: list[FieldError] = []
        header = await self._header(entity, {k: v for k, v in data.items() if k != "version"}, None, actor, errors)
        errors = [e for e in errors if e.field != "contact"]  # a client is not needed to price
        document, _ = await self._document_input(data, header, actor, errors)
        totals = self._compute(document, errors) if document is not None and not errors else None
        if errors or totals is None:
            raise ValidationError(errors)
        currency = document.currency
        return {
            "currency": currency, "prices_include_tax": document.prices_include_tax,
            "lines": [{"description": line.description, "unit_price": line.unit_price, "net_price": t.net_price,
                       "tax_category": line.tax_category, "tax_rate": line.tax_rate, "allowance": _money(t.allowance, currency),
                       "net_amount": _money(t.net_amount, currency)} for line, t in zip(document.lines, totals.lines)],
            "adjustments": [msgspec.to_builtins(a) for a in totals.adjustments],
            "tax_breakdown": msgspec.to_builtins(totals.breakdown),
            **self._totals_values(totals, currency) | {"tax_breakdown": msgspec.to_builtins(totals.breakdown)},
        }

    def _check_draft(self, entity: str, record: dict[str, Any]) -> None:
        if entity == INVOICE and record["status"] != "draft":
            what = "credit note" if record.get("kind") == "credit_note" else "invoice"
            raise _refuse("status", f"{what} {record.get('number') or record['id']} is {record['status'].replace('_', ' ')}: "
                                    f"an issued {what} cannot be changed"
                                    + ("; correct it with a credit note" if what == "invoice" else ""), "immutable")
        if entity == QUOTE and record["status"] not in ("draft", "sent"):
            raise _refuse("status", f"quote {record['number']} is {record['status']}: only draft and sent quotes change",
                          "immutable")

    # -- quotes ----------------------------------------------------------------------------------

    async def create_quote(self, data: Any, *, actor: Actor) -> dict[str, Any]:
        settings = await self.settings.load()
        today = self.today()
        extra = {"status": "draft", "issue_date": today,
                 "valid_until": today + dt.timedelta(days=settings.quote_validity_days)}
        if isinstance(data, dict):
            extra.update({k: data[k] for k in ("issue_date", "valid_until") if k in data})
        async with self.db.transaction():
            quote = await self.save_draft(QUOTE, data, actor=actor, extra=extra)
            number = await self._next_number(settings.quote_series, (quote.get("issue_date") or today).year, settings)
            with managed():
                await self.records(actor).update(QUOTE, quote["id"], {"number": number})
        return await self.document(QUOTE, quote["id"], actor)

    async def set_quote_status(self, quote_id: int, status: str, *, actor: Actor) -> dict[str, Any]:
        """send / accept / decline a quote; an accepted quote can be invoiced."""
        moves = {"sent": ("draft",), "accepted": ("draft", "sent"), "declined": ("draft", "sent")}
        async with self.db.transaction():
            quote = await self.records(actor).get(QUOTE, quote_id)
            status = "expired" if status in ("sent", "accepted") and self._expired(quote) else status
            if status == "expired":
                with managed():
                    await self.records(actor).update(QUOTE, quote_id, {"status": "expired"})
            elif quote["status"] not in moves[status]:
                raise _refuse("status", f"quote {quote['number']} is {quote['status']}; it can be {status} only when "
                                        + " or ".join(moves[status]), "invalid_transition")
            else:
                with managed():
                    await self.records(actor).update(QUOTE, quote_id, {"status": status})
                if status == "accepted":
                    await self.deployment.automation.emit("invoicing.quote.accepted", [quote_id])
        await self.deployment.automation.after_commit()
        if status == "expired":
            raise _refuse("valid_until", f"quote {quote['number']} expired on {quote['valid_until']}", "expired")
        return await self.document(QUOTE, quote_id, actor)

    def _expired(self, quote: dict[str, Any]) -> bool:
        return quote.get("valid_until") is not None and quote["valid_until"] < self.today()

    async def invoice_from_quote(self, quote_id: int, *, actor: Actor, issue: bool = False) -> dict[str, Any]:
        """The accepted quote's invoice (a draft, or issued at once); the quote becomes invoiced."""
        async with self.db.transaction():
            quote = await self.document(QUOTE, quote_id, actor)
            if quote["status"] != "accepted":
                raise _refuse("status", f"quote {quote['number']} is {quote['status']}: only an accepted quote is "
                                        "invoiced (accept it first)", "invalid_transition")
            data = {name: quote.get(name) for name in ("deal", "contact", "company", "currency", "prices_include_tax",
                                                       "price_list", "notes")}
            data["lines"] = [{k: line.get(k) for k in ("product", *_LINE_FIELDS)} for line in quote["lines"]]
            data["adjustments"] = quote["adjustments"]
            data["order_reference"] = quote["number"]
            invoice = await self.save_draft(INVOICE, data, actor=actor, extra={"quote": quote_id, "status": "draft"})
            with managed():
                await self.records(actor).update(QUOTE, quote_id, {"status": "invoiced", "invoice": invoice["id"]})
            if issue:
                invoice = await self.issue(invoice["id"], actor=actor)
        await self.deployment.automation.after_commit()
        return invoice

    # -- invoices --------------------------------------------------------------------------------

    async def create_invoice(self, data: Any, *, actor: Actor) -> dict[str, Any]:
        return await self.save_draft(INVOICE, data, actor=actor, extra={"status": "draft", "kind": "invoice"})

    async def _next_number(self, series: str, year: int, settings: SellerSettings) -> str:
        row = await self.db.fetchrow(
            'INSERT INTO invoicing_sequence ("series", "year", "last") VALUES (?, ?, 1) '
            'ON CONFLICT ("series", "year") DO UPDATE SET "last" = invoicing_sequence."last" + 1 RETURNING "last"',
            (series, year))
        return f"{series}-{year}-{int(row[0]):0{settings.number_digits}d}"

    async def buyer(self, record: dict[str, Any]) -> Party:
        """The buyer of a document: its company, else its contact (read as the system: the
        invoice names them whoever issues it)."""
        records = self.deployment.records
        company = await records.get("company", record["company"]) if record.get("company") else None
        contact = await records.get("contact", record["contact"]) if record.get("contact") else None
        source = company or contact or {}
        person = " ".join(p for p in ((contact or {}).get("first_name"), (contact or {}).get("last_name")) if p)
        return Party(name=(company or {}).get("name") or person, vat_id=source.get("vat_id") or None,
                     street=source.get("street"), city=source.get("city"), postcode=source.get("postal_code"),
                     country=(source.get("country") or "").upper(), email=source.get("email"),
                     contact_name=person if company and person else None)

    async def _rate(self, currency: str, accounting: str, on: dt.date, given: Any, errors: list[FieldError]) -> Decimal | None:
        if currency == accounting:
            return None
        if given is not None:
            rate = _decimal(given, "exchange_rate", errors)
            if rate is not None and rate <= 0:
                errors.append(FieldError("exchange_rate", "invalid", "a rate above 0"))
            return rate
        page = await self.deployment.records.list(RATE, ListQuery(filter={"and": [
            {"field": "currency", "op": "eq", "value": currency}, {"field": "rate_date", "op": "lte", "value": on.isoformat()}]},
            sort=["-rate_date"], limit=1))
        if not page.items:
            errors.append(FieldError("exchange_rate", "required", f"no {currency} rate recorded on or before {on}: give "
                                                                  f"exchange_rate ({accounting} per {currency}) or record one"))
            return None
        return page.items[0]["rate"]

    async def issue(self, invoice_id: int, *, actor: Actor, issue_date: Any = None, exchange_rate: Any = None) -> dict[str, Any]:
        """Give a draft invoice (or credit note) its number and make it final."""
        self._require(actor, "invoicing.issue", "issuing an invoice")
        settings = await self.settings.load()
        async with self.db.transaction():
            invoice = await self.records(actor).get(INVOICE, invoice_id)
            self._check_draft(INVOICE, invoice)
            errors = list(settings.missing_for_issue())
            on = _date(issue_date, "issue_date", errors) or self.today()
            credit_note = invoice["kind"] == "credit_note"
            lines = await self.lines("invoice", invoice_id)
            document = self._input_of(invoice, lines)
            totals = self._compute(document, errors)
            buyer = await self.buyer(invoice)
            if not buyer.name:
                errors.append(FieldError("buyer.name", "required", "the client has no name"))
            if not buyer.country:
                errors.append(FieldError("buyer.country", "required", "set the client's country (company or contact) "
                                                                     "before issuing: an e-invoice needs it"))
            if totals and not buyer.vat_id and any(t.category in ("AE", "K") for t in totals.breakdown):
                errors.append(FieldError("buyer.vat_id", "required",
                                         "reverse charge and intra-community supplies need the client's VAT id"))
            accounting = settings.accounting_currency or self.deployment.settings.currency
            corrected = None
            if credit_note:
                corrected = await self.records(actor).get(INVOICE, invoice["corrects"])
                rate = corrected.get("exchange_rate")
                if totals is not None and totals.grand_total > _amount(corrected["total"]) - _amount(corrected.get("credited")):
                    errors.append(FieldError("lines", "invalid", f"the credit notes of {corrected['number']} would credit "
                                                                 "more than its total"))
            else:
                rate = await self._rate(invoice["currency"], accounting, on, exchange_rate, errors)
            due = invoice.get("due_date")
            if due is not None and due < on:
                errors.append(FieldError("due_date", "invalid", f"the due date {due} is before the issue date {on}"))
            if errors or totals is None:
                raise ValidationError(errors)
            series = settings.credit_note_series if credit_note else settings.invoice_series
            number = await self._next_number(series, on.year, settings)
            net_base = convert(totals.tax_basis_total, rate, accounting) if rate is not None else totals.tax_basis_total
            values = {
                "number": number, "status": "issued", "issue_date": on, "issued_at": self.deployment.clock.now(),
                "due_date": None if credit_note else due or on + dt.timedelta(days=settings.payment_terms_days),
                "payment_terms": invoice.get("payment_terms") or settings.terms_text(),
                "exchange_rate": rate, "accounting_currency": accounting,
                "net_total_base": _money(net_base, accounting), **self._totals_values(totals, invoice["currency"]),
                "paid": _money(Decimal(0).quantize(totals.grand_total), invoice["currency"]),
                "credited": _money(Decimal(0).quantize(totals.grand_total), invoice["currency"]),
                "balance": _money(totals.grand_total, invoice["currency"]),
                "seller": msgspec.json.encode(settings.party()).decode(),
                "buyer": msgspec.json.encode(buyer).decode(),
            }
            with managed():
                await self.records(actor).update(INVOICE, invoice_id, values, version=invoice["version"])
                if credit_note:
                    await self.settle(corrected["id"])
                else:
                    await self._schedule_overdue(invoice_id, values["due_date"])
            await self.deployment.automation.emit("invoicing.invoice.issued", [invoice_id])
        await self.deployment.automation.after_commit()
        return await self.document(INVOICE, invoice_id, actor)

    @staticmethod
    def _input_of(document: dict[str, Any], lines: list[dict[str, Any]]) -> DocumentInput:
        adjustments = msgspec.json.decode(document["adjustments"]) if document.get("adjustments") else []
        return DocumentInput(
            currency=document["currency"], prices_include_tax=bool(document.get("prices_include_tax")),
            lines=[LineInput(description=line["description"], quantity=line["quantity"], unit_price=line["unit_price"],
                             tax_category=line["tax_category"], tax_rate=line["tax_rate"], unit=line.get("unit") or "C62",
                             discount_percent=line.get("discount_percent"), discount_amount=line.get("discount_amount"),
                             charge_amount=line.get("charge_amount"), sku=line.get("sku"), product_id=line.get("product"),
                             category=line.get("category"), note=line.get("note")) for line in lines],
            adjustments=[msgspec.convert(a, AdjustmentInput, strict=False) for a in adjustments])

    async def _schedule_overdue(self, invoice_id: int, due: dt.date | None) -> None:
        if due is None:
            return
        zone = ZoneInfo(self.deployment.settings.timezone)
        at = dt.datetime.combine(due + dt.timedelta(days=1), dt.time(0, 0, 5), zone)
        await self.deployment.jobs.enqueue(OVERDUE_JOB, {"invoice": invoice_id}, run_at=at,
                                           key=f"invoicing:overdue:{invoice_id}")

    async def mark_sent(self, invoice_id: int, *, actor: Actor) -> dict[str, Any]:
        self._require(actor, "invoicing.issue", "sending an invoice")
        async with self.db.transaction():
            invoice = await self.records(actor).get(INVOICE, invoice_id)
            if invoice["status"] == "draft":
                raise _refuse("status", "issue the invoice before sending it", "invalid_transition")
            with managed():
                await self.records(actor).update(INVOICE, invoice_id, {"sent_at": self.deployment.clock.now()})
                await self.settle(invoice_id)
        return await self.document(INVOICE, invoice_id, actor)

    async def settle(self, invoice_id: int) -> dict[str, Any]:
        """Recompute what is paid, credited and due on an issued invoice, and its status."""
        records = self.deployment.records
        invoice = await records.get(INVOICE, invoice_id)
        if invoice["status"] == "draft" or invoice["kind"] == "credit_note":
            return invoice
        currency = invoice["currency"]
        exponent = Decimal(1).scaleb(-minor_units(currency))
        payments = await records.list(PAYMENT, ListQuery(filter={"field": "invoice", "op": "eq", "value": invoice_id},
                                                         limit=500))
        paid = sum((_amount(p.get("applied")) for p in payments.items), Decimal(0)).quantize(exponent)
        notes = await records.list(INVOICE, ListQuery(filter={"and": [
            {"field": "corrects", "op": "eq", "value": invoice_id}, {"field": "kind", "op": "eq", "value": "credit_note"},
            {"field": "status", "op": "ne", "value": "draft"}]}, limit=500))
        credited = sum((_amount(n["total"]) for n in notes.items), Decimal(0)).quantize(exponent)
        total = _amount(invoice["total"])
        balance = total - paid - credited
        if credited >= total:
            status = "cancelled"
        elif balance <= 0:
            status = "paid"
        elif invoice.get("due_date") and invoice["due_date"] < self.today():
            status = "overdue"
        elif paid + credited > 0:
            status = "partially_paid"
        else:
            status = "sent" if invoice.get("sent_at") else "issued"
        values: dict[str, Any] = {"paid": _money(paid, currency), "credited": _money(credited, currency),
                                  "balance": _money(balance, currency), "status": status}
        now = self.deployment.clock.now()
        if status == "paid" and invoice["status"] != "paid":
            values["paid_at"] = now
        if status == "cancelled" and invoice["status"] != "cancelled":
            values["cancelled_at"] = now
        with managed():
            updated = await records.update(INVOICE, invoice_id, values)
        if status != invoice["status"] and status in ("paid", "overdue"):
            await self.deployment.automation.emit(f"invoicing.invoice.{status}", [invoice_id])
        if status not in OPEN:
            await self.deployment.jobs.cancel(f"invoicing:overdue:{invoice_id}")
        return updated

    async def mark_overdue(self, invoice_id: int) -> None:
        """The overdue job: settle the invoice as of today (an unpaid one past its due date turns
        overdue and raises ``invoicing.invoice.overdue``)."""
        async with self.db.transaction():
            try:
                await self.settle(invoice_id)
            except NotFound:
                return
        await self.deployment.automation.after_commit()

    async def cancel(self, invoice_id: int, *, actor: Actor, reason: str | None = None) -> dict[str, Any]:
        """A draft is cancelled as it is; an issued invoice by a credit note of what it still
        has uncredited (issued at once)."""
        self._require(actor, "invoicing.issue", "cancelling an invoice")
        async with self.db.transaction():
            invoice = await self.records(actor).get(INVOICE, invoice_id)
            if invoice["status"] == "draft":
                with managed():
                    await self.records(actor).update(INVOICE, invoice_id, {"status": "cancelled",
                                                                           "cancelled_at": self.deployment.clock.now()})
            elif invoice["status"] == "cancelled" or invoice["kind"] == "credit_note":
                raise _refuse("status", f"{invoice['number']} is {invoice['status']}: it cannot be cancelled", "invalid_transition")
            else:
                data: dict[str, Any] = {"note": reason or f"Cancellation of {invoice['number']}"}
                if _amount(invoice.get("credited")):  # credited in part already: one line for what is left
                    data["lines"] = [{"description": f"Cancellation of {invoice['number']} (remaining amount)",
                                      "quantity": 1, "unit_price": str(await self._uncredited(invoice)),
                                      **self._single_category(invoice)}]
                note = await self.credit_note(invoice_id, data, actor=actor)
                await self.issue(note["id"], actor=actor)
        await self.deployment.automation.after_commit()
        return await self.document(INVOICE, invoice_id, actor)

    async def _uncredited(self, invoice: dict[str, Any]) -> Decimal:
        """What credit notes have not yet taken off an invoice, as its lines price (net, or gross)."""
        if invoice.get("prices_include_tax"):
            return _amount(invoice["total"]) - _amount(invoice.get("credited"))
        credited = Decimal(0)
        async for note in self._each(INVOICE, {"and": [
                {"field": "corrects", "op": "eq", "value": invoice["id"]}, {"field": "kind", "op": "eq", "value": "credit_note"},
                {"field": "number", "op": "is_null", "value": False}]}, SYSTEM):
            credited += _amount(note["net_total"])
        return _amount(invoice["net_total"]) - credited

    @staticmethod
    def _single_category(invoice: dict[str, Any]) -> dict[str, Any]:
        breakdown = msgspec.json.decode(invoice["tax_breakdown"]) if invoice.get("tax_breakdown") else []
        if len(breakdown) != 1:
            raise _refuse("lines", "the invoice is credited in part and has several tax categories: "
                                   "give the credit note's lines", "required")
        return {"tax_category": breakdown[0]["category"], "tax_rate": breakdown[0]["rate"]}

    async def credit_note(self, invoice_id: int, data: Any, *, actor: Actor) -> dict[str, Any]:
        """A draft credit note correcting an issued invoice: the lines given, or all of its lines."""
        self._require(actor, "invoicing.issue", "making a credit note")
        data = dict(data or {})
        unknown = set(data) - {"lines", "adjustments", "note"}
        if unknown:
            raise _refuse(sorted(unknown)[0], "a credit note takes lines, adjustments and note", "unknown_field")
        invoice = await self.document(INVOICE, invoice_id, actor)
        if invoice["kind"] != "invoice" or invoice["status"] in ("draft", "cancelled"):
            raise _refuse("corrects", f"only an issued invoice is corrected by a credit note; "
                                      f"{invoice.get('number') or invoice_id} is {invoice['status']}", "invalid")
        body: dict[str, Any] = {name: invoice.get(name) for name in ("deal", "contact", "company", "currency",
                                                                      "prices_include_tax")}
        body["lines"] = data.get("lines") or [{k: line.get(k) for k in ("product", *_LINE_FIELDS)} for line in invoice["lines"]]
        body["adjustments"] = data.get("adjustments", invoice["adjustments"] if "lines" not in data else [])
        body["notes"] = data.get("note")
        extra = {"kind": "credit_note", "status": "draft", "corrects": invoice_id, "buyer_reference": invoice.get("buyer_reference"),
                 "order_reference": invoice.get("order_reference")}
        return await self.save_draft(INVOICE, body, actor=actor, extra=extra)

    # -- payments --------------------------------------------------------------------------------

    async def record_payment(self, data: Any, *, actor: Actor) -> dict[str, Any]:
        """A payment of an issued invoice; more than its balance stays as the client's credit."""
        self._require(actor, "invoicing.payments", "recording a payment")
        if not isinstance(data, dict):
            raise _refuse("body", "expected an object: invoice, amount, currency, paid_on, method, reference")
        allowed = {"invoice", "amount", "currency", "paid_on", "method", "reference", "notes"}
        errors = [FieldError(k, "unknown_field", "a payment has: " + ", ".join(sorted(allowed))) for k in data if k not in allowed]
        invoice_id = _id(data.get("invoice"), "invoice", errors)
        if invoice_id is None and not errors:
            errors.append(FieldError("invoice", "required", "the invoice paid"))
        amount = _decimal(data.get("amount"), "amount", errors, required=True)
        paid_on = _date(data.get("paid_on"), "paid_on", errors) or self.today()
        if paid_on > self.today():
            errors.append(FieldError("paid_on", "invalid", "a payment is recorded once made: not a future date"))
        method = data.get("method") or "bank_transfer"
        if method not in PAYMENT_METHODS or method == "credit":
            errors.append(FieldError("method", "invalid", "one of " + ", ".join(m for m in PAYMENT_METHODS if m != "credit")
                                     + " (credit is applied with apply-credit)"))
        if errors:
            raise ValidationError(errors)
        async with self.db.transaction():
            invoice = await self.records(actor).get(INVOICE, invoice_id)
            currency = invoice["currency"]
            given = data.get("currency") or currency
            if not isinstance(given, str) or given.upper() != currency:
                errors.append(FieldError("currency", "invalid", f"invoice {invoice.get('number') or invoice_id} is in "
                                                                f"{currency}; a payment of it is in {currency} too"))
            if invoice["kind"] != "invoice" or invoice["status"] in ("draft", "cancelled"):
                errors.append(FieldError("invoice", "invalid", f"invoice {invoice.get('number') or invoice_id} is "
                                                               f"{invoice['status']}: only an issued invoice is paid"))
            if amount is not None:
                places = minor_units(currency)
                if amount <= 0:
                    errors.append(FieldError("amount", "invalid", "a payment is above 0 (a refund is a credit note)"))
                elif -amount.as_tuple().exponent > places:
                    errors.append(FieldError("amount", "invalid", f"{currency} amounts have at most {places} decimals"))
            if errors:
                raise ValidationError(errors)
            amount = round_money(amount, minor_units(currency))
            due = max(_amount(invoice["balance"]), Decimal(0))
            applied = min(amount, due)
            with managed():
                payment = await self.records(actor).create(PAYMENT, {
                    **self._of_invoice(invoice),
                    "amount": _money(amount, currency), "paid_on": paid_on, "method": method,
                    "reference": data.get("reference"), "notes": data.get("notes"),
                    "applied": _money(applied, currency), "unapplied": _money(amount - applied, currency)})
                await self.settle(invoice_id)
        await self.deployment.automation.after_commit()
        return payment

    @staticmethod
    def _of_invoice(invoice: dict[str, Any]) -> dict[str, Any]:
        """A payment's client and owner are its invoice's: whoever looks after the invoice sees
        what was paid on it (its balance, the client's account), whoever recorded it."""
        return {"invoice": invoice["id"], "contact": invoice.get("contact"), "company": invoice.get("company"),
                "owner_id": invoice.get("owner_id"), "team_id": invoice.get("team_id")}

    async def apply_credit(self, invoice_id: int, *, actor: Actor) -> dict[str, Any]:
        """Settle an invoice from its client's credit (earlier over-payments), oldest first."""
        self._require(actor, "invoicing.payments", "applying a client's credit")
        async with self.db.transaction():
            invoice = await self.records(actor).get(INVOICE, invoice_id)
            if invoice["kind"] != "invoice" or invoice["status"] not in OPEN:
                raise _refuse("invoice", f"invoice {invoice.get('number') or invoice_id} is {invoice['status']}: "
                                         "credit settles open invoices only")
            due = _amount(invoice["balance"])
            client = [{"field": "company", "op": "eq", "value": invoice["company"]}] if invoice.get("company") else \
                [{"field": "contact", "op": "eq", "value": invoice["contact"]}]
            used = Decimal(0)
            with managed():
                async for source in self._each(PAYMENT, {"and": client}, SYSTEM):
                    if due <= 0:
                        break
                    if source["amount"].currency != invoice["currency"] or _amount(source.get("unapplied")) <= 0:
                        continue
                    take = min(_amount(source["unapplied"]), due)
                    await self.deployment.records.update(PAYMENT, source["id"], {
                        "unapplied": _money(_amount(source["unapplied"]) - take, invoice["currency"])})
                    await self.records(actor).create(PAYMENT, {
                        **self._of_invoice(invoice),
                        "amount": _money(take, invoice["currency"]), "paid_on": self.today(), "method": "credit",
                        "reference": f"credit of payment {source['id']}", "source_payment": source["id"],
                        "applied": _money(take, invoice["currency"]), "unapplied": _money(take - take, invoice["currency"])})
                    due -= take
                    used += take
                if not used:
                    raise _refuse("invoice", f"the client has no {invoice['currency']} credit to apply")
                await self.settle(invoice_id)
        await self.deployment.automation.after_commit()
        return await self.document(INVOICE, invoice_id, actor)

    # -- client balances -------------------------------------------------------------------------

    async def balance(self, entity: str, record_id: int, *, actor: Actor) -> list[dict[str, Any]]:
        """A client's account per currency: invoiced, credited, received, balance (positive:
        they owe; negative: credit in their favour), overdue and open invoices. Two GROUP BYs
        in SQL (the core's report runner), over what the actor may read."""
        if entity not in ("contact", "company"):
            raise _refuse("entity", "a balance is of a contact or a company")
        await self.records(actor).get(entity, record_id)  # NotFound unless readable
        client = {"field": entity, "op": "eq", "value": record_id}
        invoices = await self.deployment.reports.run({
            "name": "invoicing_balance", "entity": INVOICE, "chart": "none",
            "filter": {"and": [client, {"field": "number", "op": "is_null", "value": False}]},
            "measures": [
                # a cancelled invoice counts too: its credit note is counted
                {"op": "sum", "field": "total", "name": "invoiced", "filter": _KIND_INVOICE},
                {"op": "sum", "field": "total", "name": "credited", "filter": _KIND_CREDIT_NOTE},
                {"op": "count", "name": "open_invoices", "filter": {"and": [
                    _KIND_INVOICE, {"field": "status", "op": "in", "value": list(OPEN)}]}},
                {"op": "sum", "field": "balance", "name": "overdue", "filter": {"field": "status", "op": "eq", "value": "overdue"}},
            ]}, actor)
        payments = await self.deployment.reports.run({
            "name": "invoicing_received", "entity": PAYMENT, "chart": "none", "filter": client,
            "measures": [{"op": "sum", "field": "amount", "name": "received",
                          "filter": {"field": "method", "op": "ne", "value": "credit"}},
                         {"op": "sum", "field": "unapplied", "name": "credit_available"}]}, actor)
        accounts: dict[str, dict[str, Any]] = {}
        for row in invoices["rows"] + payments["rows"]:
            # the sums of two money fields of a group come with a currency each: the same one
            currency = row.get("total_currency") or row.get("amount_currency")
            zero = Decimal(0).quantize(Decimal(1).scaleb(-minor_units(currency)))
            account = accounts.setdefault(currency, {
                "currency": currency, "invoiced": zero, "credited": zero, "received": zero, "overdue": zero,
                "open_invoices": 0, "credit_available": zero})
            account.update({k: v for k, v in row.items() if not k.endswith("_currency")})
        for account in accounts.values():
            account["balance"] = account["invoiced"] - account["credited"] - account["received"]
        return [accounts[currency] for currency in sorted(accounts)]

    async def _each(self, entity: str, where: dict[str, Any], actor: Actor):
        cursor = None
        while True:
            page = await self.records(actor).list(entity, ListQuery(filter=where, sort=["id"], limit=500, cursor=cursor))
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- e-invoices ------------------------------------------------------------------------------

    async def invoice_document(self, invoice_id: int, *, actor: Actor) -> InvoiceDocument:
        """An issued invoice or credit note as the e-invoice writers and the PDF print it: the
        seller and buyer as they were at issue, its lines and totals recomputed (they are
        immutable, so the same as issued)."""
        invoice = await self.records(actor).get(INVOICE, invoice_id)
        if invoice["status"] == "draft" or not invoice.get("number"):
            raise _refuse("status", "a draft has no e-invoice yet: issue it first", "invalid_transition")
        lines = await self.lines("invoice", invoice_id)
        document = self._input_of(invoice, lines)
        totals = compute(document)
        settings = await self.settings.load()
        preceding = preceding_date = None
        if invoice["kind"] == "credit_note" and invoice.get("corrects"):
            corrected = await self.deployment.records.get(INVOICE, invoice["corrects"])
            preceding, preceding_date = corrected.get("number"), corrected.get("issue_date")
        accounting = invoice.get("accounting_currency")
        rate = invoice.get("exchange_rate")
        return InvoiceDocument(
            number=invoice["number"], type_code=CREDIT_NOTE_TYPE_CODE if invoice["kind"] == "credit_note" else INVOICE_TYPE_CODE,
            issue_date=invoice["issue_date"], due_date=invoice.get("due_date"), delivery_date=invoice.get("delivery_date"),
            currency=invoice["currency"],
            accounting_currency=accounting if rate is not None and accounting != invoice["currency"] else None,
            exchange_rate=rate, buyer_reference=invoice.get("buyer_reference"),
            order_reference=invoice.get("order_reference"), preceding_invoice=preceding,
            preceding_invoice_date=preceding_date, note=invoice.get("notes"),
            seller=msgspec.json.decode(invoice["seller"], type=Party),
            buyer=msgspec.json.decode(invoice["buyer"], type=Party),
            payment=msgspec.structs.replace(settings.payment(invoice["number"]), terms=invoice.get("payment_terms")),
            lines=document.lines, totals=totals)

    # -- commissions -----------------------------------------------------------------------------

    async def commissions(self, *, actor: Actor, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
        """Commissions per employee on what was paid between ``start`` and ``end`` (payment
        dates): each payment's share of its invoice's net lines, times the rate of the first
        matching rule (the employee's own before everyone's, a category's before every
        category's). The employee is the invoice's owner."""
        rules = [r async for r in self._each(COMMISSION, {"field": "active", "op": "eq", "value": True}, SYSTEM)]
        out: dict[tuple[int | None, str], dict[str, Any]] = {}
        invoices: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        payments = self._each(PAYMENT, {"and": [{"field": "paid_on", "op": "gte", "value": start.isoformat()},
                                                 {"field": "paid_on", "op": "lte", "value": end.isoformat()}]}, actor)
        async for payment in payments:
            applied = _amount(payment.get("applied"))
            if not payment.get("invoice") or applied <= 0:
                continue
            if payment["invoice"] not in invoices:
                invoice = await self.deployment.records.get(INVOICE, payment["invoice"])
                invoices[payment["invoice"]] = (invoice, await self.lines("invoice", payment["invoice"]))
            invoice, lines = invoices[payment["invoice"]]
            total = _amount(invoice["total"])
            if total <= 0:
                continue
            share = applied / total  # this payment pays this part of every line
            owner = invoice.get("owner_id")
            currency = invoice["currency"]
            for line in lines:
                rule = _rule_for(rules, owner, line.get("category"))
                if rule is None:
                    continue
                paid_net = _amount(line["net_amount"]) * share
                row = out.setdefault((owner, currency), {"user": owner, "currency": currency, "paid_net": Decimal(0),
                                                         "commission": Decimal(0)})
                row["paid_net"] += paid_net
                row["commission"] += paid_net * rule["rate"] / 100
        result = []
        for row in out.values():
            places = minor_units(row["currency"])
            result.append({**row, "paid_net": round_money(row["paid_net"], places),
                           "commission": round_money(row["commission"], places)})
        return sorted(result, key=lambda r: (-r["commission"], r["user"] or 0))


def _rule_for(rules: list[dict[str, Any]], user: int | None, category: str | None) -> dict[str, Any] | None:
    def rank(rule: dict[str, Any]) -> tuple[int, int]:
        return (0 if rule.get("user") else 1, 0 if rule.get("category") else 1)

    matching = [r for r in rules if r.get("user") in (None, user) and r.get("category") in (None, "", category)]
    return min(matching, key=rank) if matching else None
