"""The "invoicing" edition: the core CRM with invoicing, and demo data that shows it at work.

On top of the standard demo (users, companies, contacts, deals), a window maker's catalogue, a
trade price list, and for won deals accepted quotes turned into invoices issued over the last
months: most paid, some in part, some overdue, one corrected by a credit note. Everything goes
through the invoicing service (numbers, totals, settlement as in real use); deterministic.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import crmcore
from crmcore import SYSTEM, Edition, ListQuery

from .entities import INVOICE, PRICE, PRICE_LIST, PRODUCT
from .service import invoicing_of

SELLER = {"legal_name": "Fenster & Türen Demo GmbH", "vat_id": "DE136695976", "legal_id": "HRB 12345 B",
          "street": "Hauptstraße 1", "city": "Berlin", "postcode": "10115", "country": "DE",
          "email": "billing@fenster-demo.example", "iban": "DE89370400440532013000", "bic": "COBADEFFXXX",
          "payment_terms_days": 14, "default_tax_category": "S", "default_tax_rate": "19"}
CATALOGUE = [  # sku, name, kind, category, unit, price, tax rate
    ("WIN-120", "Window 120 × 140 cm, triple glazing", "product", "windows", "C62", "420.00", "19"),
    ("WIN-080", "Window 80 × 100 cm, double glazing", "product", "windows", "C62", "240.00", "19"),
    ("DOR-200", "Entrance door, oak", "product", "doors", "C62", "1850.00", "19"),
    ("SHT-120", "Roller shutter 120 cm", "product", "shutters", "C62", "310.00", "19"),
    ("INS-HR", "Installation", "service", "services", "HUR", "65.00", "19"),
    ("MSR-01", "Measurement visit", "service", "services", "C62", "90.00", "19"),
    ("CAR-KIT", "Care kit for frames", "product", "accessories", "C62", "24.90", "7"),
    ("MNT-YR", "Maintenance contract (one year)", "service", "services", "ANN", "180.00", "19"),
]


async def invoicing_demo(deployment: Any) -> None:
    await crmcore.load_standard_demo(deployment)
    service = invoicing_of(deployment)
    await service.settings.save(SELLER, actor=SYSTEM)
    records = deployment.records
    currency = deployment.settings.currency
    products = []
    for sku, name, kind, category, unit, price, rate in CATALOGUE:
        products.append(await records.create(PRODUCT, {
            "sku": sku, "name": name, "kind": kind, "category": category, "unit": unit,
            "price": {"amount": price, "currency": currency}, "tax_category": "S", "tax_rate": rate}))
    trade = await records.create(PRICE_LIST, {"name": "Trade", "currency": currency, "discount_percent": "10"})
    await records.create(PRICE, {"price_list": trade["id"], "product": products[0]["id"], "price": "360.00",
                                 "min_quantity": "10"})
    for rate in ("0.9200", "0.9150"):  # US dollars for the odd export deal
        await records.create("invoicing_exchange_rate", {"currency": "USD", "rate": rate, "rate_date": (
            service.today() - dt.timedelta(days=30 if rate == "0.9200" else 1)).isoformat()})
    await records.create("invoicing_commission_rule", {"category": "windows", "rate": "5"})
    await records.create("invoicing_commission_rule", {"category": "services", "rate": "3"})

    rng = random.Random(7)
    today = service.today()
    won = await records.list("deal", ListQuery(filter={"field": "stage", "op": "eq", "value": "won"}, sort=["id"], limit=40))
    invoices = []
    for n, deal in enumerate(won.items):
        if not deal.get("company") and not deal.get("contact"):
            continue
        picks = rng.sample(products, k=rng.randint(2, 4))
        lines = [{"product": p["id"], "quantity": rng.choice([1, 2, 4, 6, 12]) if p["kind"] == "product" else rng.randint(2, 16)}
                 for p in picks]
        adjustments = [{"reason": "Loyalty discount", "percent": "5"}] if n % 4 == 0 else []
        quote = await service.create_quote({"deal": deal["id"], "lines": lines, "adjustments": adjustments}, actor=SYSTEM)
        await service.set_quote_status(quote["id"], "accepted", actor=SYSTEM)
        draft = await service.invoice_from_quote(quote["id"], actor=SYSTEM)
        issued_on = today - dt.timedelta(days=rng.randint(3, 120))
        try:
            invoice = await service.issue(draft["id"], actor=SYSTEM, issue_date=issued_on.isoformat())
        except crmcore.ValidationError:  # a client without a country: stays a draft, as in life
            continue
        invoices.append(invoice)
    invoices.sort(key=lambda i: i["issue_date"])
    for n, invoice in enumerate(invoices):
        total = invoice["total"].amount
        due = invoice["due_date"]
        paid_on = min(today, invoice["issue_date"] + dt.timedelta(days=rng.randint(5, 20)))
        if due < today and n % 5 == 1:
            continue  # overdue, unpaid
        if n % 5 == 2:  # paid in part
            part = (total * Decimal("0.4")).quantize(Decimal("0.01"))
            await service.record_payment({"invoice": invoice["id"], "amount": str(part), "paid_on": paid_on.isoformat(),
                                          "reference": f"Transfer {invoice['number']}"}, actor=SYSTEM)
        elif n % 5 != 4 or due < today:
            await service.record_payment({"invoice": invoice["id"], "amount": str(total), "paid_on": paid_on.isoformat(),
                                          "reference": f"Transfer {invoice['number']}"}, actor=SYSTEM)
    if invoices:  # one window came back broken
        first = await service.document(INVOICE, invoices[0]["id"], SYSTEM)
        line = first["lines"][0]
        note = await service.credit_note(first["id"], {"lines": [{"product": line["product"], "quantity": 1,
                                                                  "unit_price": str(line["unit_price"])}],
                                                       "note": "Returned: damaged in transport"}, actor=SYSTEM)
        await service.issue(note["id"], actor=SYSTEM)
    for invoice in invoices:  # settle as of today: the unpaid ones past their due date are overdue
        await service.mark_overdue(invoice["id"])


EDITION = Edition(name="invoicing", label="crmcore Sales & Invoicing",
                  description="The core CRM with quotes, invoices, payments and EN 16931 e-invoices",
                  plugins=["invoicing"], settings={"currency": "EUR", "region": "DE", "timezone": "Europe/Berlin"},
                  demo=invoicing_demo)
