"""What invoices and quotes print: the ``invoice`` / ``quote`` names document templates see
(through ``crm_document_context``), the PDF (the documents module's template as PDF/A-3b, with
the EN 16931 CII XML embedded as Factur-X once issued) and the XML alone (CII or UBL).

The default templates are ``invoicing.invoice`` and ``invoicing.quote`` (``documents/`` beside
this module); a consultant's own stored template for the same entity is used with
``?template=<name>``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from crmcore import FieldError, Money, ValidationError

from .einvoice import cii_xml, embed_in_pdf, ubl_xml
from .entities import INVOICE, QUOTE
from .model import TAX_CATEGORIES, Party
from .money import compute, convert, minor_units
from .service import invoicing_of

if TYPE_CHECKING:
    from crmcore import Actor, Deployment

DEFAULT_TEMPLATES = {INVOICE: "invoicing.invoice", QUOTE: "invoicing.quote"}
SYNTAXES = ("cii", "ubl")


def _party(party: Party | None) -> dict[str, Any]:
    return msgspec.to_builtins(party) if party is not None else {}


async def document_context(deployment: Deployment, entity: str, record: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """``invoice`` (or ``quote``) for templates: lines, adjustments, tax breakdown and totals as
    computed, amounts as money (they print in the deployment's locale), the parties."""
    service = invoicing_of(deployment)
    kind = "quote" if entity == QUOTE else "invoice"
    lines = await service.lines(kind, record["id"])
    document = service._input_of(record, lines)
    currency = record["currency"]
    totals = compute(document) if lines else None

    def money(amount: Any) -> Money | None:
        return Money(amount, currency) if amount is not None else None

    settings = await service.settings.load()
    seller = msgspec.json.decode(record["seller"]) if record.get("seller") else _party(settings.party())
    buyer = msgspec.json.decode(record["buyer"]) if record.get("buyer") else _party(await service.buyer(record))
    out: dict[str, Any] = {
        "number": record.get("number"), "kind": record.get("kind", "quote"), "status": record.get("status"),
        "draft": record.get("status") == "draft", "title": {"invoice": "Invoice", "credit_note": "Credit note"}.get(
            record.get("kind", ""), "Quote"),
        "issue_date": record.get("issue_date"), "due_date": record.get("due_date"),
        "valid_until": record.get("valid_until"), "delivery_date": record.get("delivery_date"),
        "currency": currency, "prices_include_tax": bool(record.get("prices_include_tax")),
        "seller": seller, "buyer": buyer, "notes": record.get("notes"),
        "buyer_reference": record.get("buyer_reference"), "order_reference": record.get("order_reference"),
        "payment_terms": record.get("payment_terms") or settings.terms_text(),
        "iban": settings.iban, "bic": settings.bic, "lines": [], "adjustments": [], "breakdown": [],
    }
    if totals is not None:
        for line, computed, row in zip(document.lines, totals.lines, lines):
            out["lines"].append({
                "position": row["position"], "description": line.description, "sku": line.sku, "note": line.note,
                "quantity": line.quantity, "unit": line.unit, "unit_price": line.unit_price,
                "discount_percent": line.discount_percent, "allowance": money(computed.allowance) if computed.allowance else None,
                "charge": money(computed.charge) if computed.charge else None, "net_amount": money(computed.net_amount),
                "tax_category": line.tax_category, "tax_rate": line.tax_rate})
        out["adjustments"] = [{"charge": a.charge, "reason": a.reason, "percent": a.percent, "amount": money(a.amount),
                               "tax_category": a.tax_category, "tax_rate": a.tax_rate} for a in totals.adjustments]
        out["breakdown"] = [{"category": t.category, "category_label": TAX_CATEGORIES[t.category], "rate": t.rate,
                             "basis": money(t.basis), "tax": money(t.tax), "exemption_reason": t.exemption_reason}
                            for t in totals.breakdown]
        out["totals"] = {"lines": money(totals.line_total), "allowances": money(totals.allowance_total),
                         "charges": money(totals.charge_total), "net": money(totals.tax_basis_total),
                         "tax": money(totals.tax_total), "total": money(totals.grand_total)}
    if kind == "invoice":
        out["totals"] = {**out.get("totals", {}), "paid": record.get("paid"), "credited": record.get("credited"),
                         "balance": record.get("balance")}
        rate, accounting = record.get("exchange_rate"), record.get("accounting_currency")
        if rate is not None and totals is not None and accounting and accounting != currency:
            out["exchange"] = {"rate": rate, "currency": accounting,
                               "tax": Money(convert(totals.tax_total, rate, accounting), accounting)}
        if record.get("kind") == "credit_note" and record.get("corrects"):
            corrected = await deployment.records.get(INVOICE, record["corrects"])
            out["corrects"] = {"number": corrected.get("number"), "issue_date": corrected.get("issue_date")}
    return {kind: out}


async def invoice_pdf(deployment: Deployment, invoice_id: int, *, actor: Actor, template: str | None = None) -> tuple[bytes, str]:
    """The invoice as PDF/A-3b; once issued, with its EN 16931 CII XML embedded (Factur-X) when
    its currency has at most 2 decimals (EN 16931's limit)."""
    service = invoicing_of(deployment)
    record = await service.records(actor).get(INVOICE, invoice_id)
    name = template or DEFAULT_TEMPLATES[INVOICE]
    content, _, _ = await deployment.documents.render(name, INVOICE, invoice_id, actor=actor, format="pdf", pdf_a=True)
    if record["status"] != "draft" and minor_units(record["currency"]) <= 2:
        xml = cii_xml(await service.invoice_document(invoice_id, actor=actor))
        content = await asyncio.to_thread(embed_in_pdf, content, xml, lang=deployment.settings.locale)
    return content, f"{record.get('number') or f'draft-{invoice_id}'}.pdf"


async def invoice_xml(deployment: Deployment, invoice_id: int, syntax: str, *, actor: Actor) -> tuple[bytes, str]:
    if syntax not in SYNTAXES:
        raise ValidationError([FieldError("syntax", "invalid", "cii (Factur-X / ZUGFeRD) or ubl (UBL 2.1)")])
    document = await invoicing_of(deployment).invoice_document(invoice_id, actor=actor)
    write = cii_xml if syntax == "cii" else ubl_xml
    content = await asyncio.to_thread(write, document)
    return content, f"{document.number}-{syntax}.xml"
