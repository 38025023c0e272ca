"""EN 16931 e-invoices of an issued document: Factur-X / ZUGFeRD CII XML (also embedded in a
PDF/A-3) and UBL 2.1, written by the ``facturx`` library from our computed :class:`~.model.Totals`.

Every amount in the XML is one the money engine computed; nothing is recomputed here. What
EN 16931 would reject for missing data is refused before writing, naming our field, so the
user learns what to fill in instead of reading a schematron report.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import facturx
from lxml import etree
from stdnum import iban

from crmcore import FieldError, ValidationError

from .model import DEFAULT_EXEMPTION_REASONS, AdjustmentTotals, InvoiceDocument, Party, TaxSubtotal
from .money import convert, minor_units

#: BT-24 of the EN 16931 profile, for CII and UBL alike.
SPECIFICATION_ID = "urn:cen.eu:en16931:2017"
#: UNCL 4461 credit transfers, which need the payee's account (BR-61).
CREDIT_TRANSFER_CODES = frozenset({"30", "58"})
#: UNCL 5189 "Discount": the reason code of a line discount.
DISCOUNT_REASON_CODE = "95"
#: "Not subject to VAT" (BR-O-*): no rate, no VAT identifiers, no other category beside it.
OUTSIDE_SCOPE = "O"


def cii_xml(doc: InvoiceDocument) -> bytes:
    """The document as Factur-X / ZUGFeRD CII XML, profile EN 16931."""
    return facturx.generate_xml(_data_dict(doc), flavor="factur-x", level="en16931",
                                check_xsd=True, check_schematron=False)


def ubl_xml(doc: InvoiceDocument) -> bytes:
    """The document as UBL 2.1: an Invoice, or a CreditNote for type 381."""
    xml = facturx.generate_xml(_data_dict(doc), flavor="ubl-2.1", level="en16931",
                               check_xsd=True, check_schematron=False)
    return _fix_ubl_rounding_currency(xml, doc.currency)


def embed_in_pdf(pdf: bytes, xml: bytes, *, lang: str | None = None) -> bytes:
    """A Factur-X PDF/A-3: ``pdf`` (a PDF/A-3b, e.g. ``html_to_pdf(html, pdf_a=True)``) with
    the CII ``xml`` attached as factur-x.xml."""
    return facturx.generate_from_binary(pdf, xml, flavor="factur-x", level="en16931",
                                        check_xsd=True, lang=lang)


def xml_from_pdf(pdf: bytes) -> bytes | None:
    """The Factur-X / ZUGFeRD XML attached to ``pdf``, as attached; None when there is none."""
    _filename, xml = facturx.get_facturx_xml_from_pdf(pdf, check_xsd=False)
    return xml or None


def _fix_ubl_rounding_currency(xml: bytes, currency: str) -> bytes:
    """facturx 7.8 writes the rounding amount (BT-114) in EUR whatever the currency."""
    root = etree.fromstring(xml)
    rounding = root.findall(".//{*}LegalMonetaryTotal/{*}PayableRoundingAmount")
    if all(node.get("currencyID") == currency for node in rounding):
        return xml
    for node in rounding:
        node.set("currencyID", currency)
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")


def _check(doc: InvoiceDocument) -> None:
    """Refuse, naming our fields, what EN 16931 would reject for missing or unusable data."""
    errors: list[FieldError] = []
    categories = {subtotal.category for subtotal in doc.totals.breakdown}
    if minor_units(doc.currency) > 2:
        errors.append(FieldError("currency", "invalid", (
            f"EN 16931 amounts carry at most 2 decimals (rules BR-DEC-*) and {doc.currency} has "
            f"{minor_units(doc.currency)}: an e-invoice needs a currency with at most 2 decimals")))
    if doc.accounting_currency and doc.accounting_currency != doc.currency:
        if minor_units(doc.accounting_currency) > 2:
            errors.append(FieldError("accounting_currency", "invalid", (
                f"EN 16931 amounts carry at most 2 decimals (BR-DEC-15) and "
                f"{doc.accounting_currency} has {minor_units(doc.accounting_currency)}")))
        if doc.exchange_rate is None or doc.exchange_rate <= 0:
            errors.append(FieldError("exchange_rate", "required", (
                "a positive exchange rate is needed to give the VAT total in the accounting "
                f"currency {doc.accounting_currency} (BT-111, BR-53)")))
    if not doc.number.strip():
        errors.append(FieldError("number", "required", "an invoice number is required (BR-02)"))
    if not doc.lines:
        errors.append(FieldError("lines", "required", "at least one line is required (BR-16)"))
    for index, line in enumerate(doc.lines):
        if not line.description.strip():
            errors.append(FieldError(f"lines[{index}].description", "required",
                                     "each line needs a description: the item name (BR-25)"))
    if OUTSIDE_SCOPE in categories and len(categories) > 1:
        index = next(i for i, line in enumerate(doc.lines) if line.tax_category == OUTSIDE_SCOPE)
        errors.append(FieldError(f"lines[{index}].tax_category", "invalid", (
            "a line not subject to VAT (O) cannot share an e-invoice with other tax categories "
            "(BR-O-11): issue it on its own invoice")))
    errors += _check_party(doc.seller, "seller", "seller's (BR-06)", "seller's (BR-09)")
    errors += _check_party(doc.buyer, "buyer", "buyer's (BR-07)", "buyer's (BR-11)")
    if categories - {OUTSIDE_SCOPE} and not (doc.seller.vat_id or "").strip():
        errors.append(FieldError("seller.vat_id", "required", (
            f"EN 16931 requires the seller's VAT identifier on an invoice with VAT category "
            f"{', '.join(sorted(categories - {OUTSIDE_SCOPE}))} (BR-S-02, BR-Z-02, BR-E-02...)")))
    if categories == {OUTSIDE_SCOPE} and not (doc.seller.legal_id or "").strip():
        errors.append(FieldError("seller.legal_id", "required", (
            "an invoice not subject to VAT carries no VAT identifier, so the seller's legal "
            "registration identifier is required (BR-CO-26)")))
    if "K" in categories and not (doc.buyer.vat_id or "").strip():
        errors.append(FieldError("buyer.vat_id", "required",
                                 "an intra-community supply (K) needs the buyer's VAT identifier (BR-IC-04)"))
    if "AE" in categories and not ((doc.buyer.vat_id or "").strip() or (doc.buyer.legal_id or "").strip()):
        errors.append(FieldError("buyer.vat_id", "required", (
            "a reverse charge invoice (AE) needs the buyer's VAT identifier or legal "
            "registration identifier (BR-AE-04)")))
    if "K" in categories and doc.delivery_date is None:
        errors.append(FieldError("delivery_date", "required",
                                 "an intra-community supply (K) needs the delivery date (BR-IC-11)"))
    if doc.payment.means_code in CREDIT_TRANSFER_CODES and not (doc.payment.iban or "").strip():
        errors.append(FieldError("payment.iban", "required", (
            f"payment by credit transfer (means code {doc.payment.means_code}) needs the "
            "payee's account, its IBAN (BR-61)")))
    if doc.totals.due > 0 and doc.due_date is None and not (doc.payment.terms or "").strip():
        errors.append(FieldError("due_date", "required", (
            "an amount is due: give a due date or payment terms (BR-CO-25)")))
    if errors:
        raise ValidationError(errors)
    if len(doc.lines) != len(doc.totals.lines) or doc.currency != doc.totals.currency:
        raise ValueError("the totals are not those of this document: "
                         f"{len(doc.totals.lines)} lines in {doc.totals.currency}, "
                         f"the document has {len(doc.lines)} in {doc.currency}")


def _check_party(party: Party, prefix: str, name_rule: str, country_rule: str) -> list[FieldError]:
    errors = []
    if not party.name.strip():
        errors.append(FieldError(f"{prefix}.name", "required", f"the {name_rule} name is required"))
    if not (len(party.country) == 2 and party.country.isalpha() and party.country.isupper()):
        errors.append(FieldError(f"{prefix}.country", "required" if not party.country else "invalid", (
            f"the {country_rule} country is required, as an ISO 3166-1 alpha-2 code such as DE or FR")))
    return errors


def _data_dict(doc: InvoiceDocument) -> dict[str, Any]:
    """``doc`` as facturx's data dict, keyed by EN 16931 business terms. Amounts are strings
    (facturx writes strings as given; it formats only ints and floats)."""
    _check(doc)
    totals = doc.totals
    with_vat_ids = {subtotal.category for subtotal in totals.breakdown} != {OUTSIDE_SCOPE}
    data: dict[str, Any] = {
        "BT-1": doc.number,
        "BT-2": doc.issue_date,
        "BT-3": doc.type_code,
        "BT-5": doc.currency,
        "BT-24": SPECIFICATION_ID,
        "BG-4": _party(doc.seller, with_vat_id=with_vat_ids),
        "BG-7": _party(doc.buyer, with_vat_id=with_vat_ids),
        "BG-25": [_line(index, doc) for index in range(len(doc.lines))],
        "BG-23": [_subtotal(subtotal) for subtotal in totals.breakdown],
        "BT-106": _num(totals.line_total),
        "BT-109": _num(totals.tax_basis_total),
        "BT-110": _num(totals.tax_total),
        "BT-112": _num(totals.grand_total),
        "BT-115": _num(totals.due),
    }
    allowances = [adjustment for adjustment in totals.adjustments if not adjustment.charge]
    charges = [adjustment for adjustment in totals.adjustments if adjustment.charge]
    if allowances:
        data["BG-20"] = [_adjustment(adjustment) for adjustment in allowances]
        data["BT-107"] = _num(totals.allowance_total)
    if charges:
        data["BG-21"] = [_adjustment(adjustment) for adjustment in charges]
        data["BT-108"] = _num(totals.charge_total)
    if totals.prepaid:
        data["BT-113"] = _num(totals.prepaid)
    if totals.rounding:
        data["BT-114"] = _num(totals.rounding)
    if doc.accounting_currency and doc.accounting_currency != doc.currency:
        assert doc.exchange_rate is not None  # _check
        data["BT-6"] = doc.accounting_currency
        data["BT-111"] = _num(convert(totals.tax_total, doc.exchange_rate, doc.accounting_currency))
    optional = {
        "BT-9": doc.due_date,
        "BT-10": doc.buyer_reference,
        "BT-13": doc.order_reference,
        "BT-20": doc.payment.terms,
        # facturx writes an empty (XSD-invalid) delivery block without one: the tax point
        # defaults to the invoice date, as it does in law when no other is stated.
        "BT-72": doc.delivery_date or doc.issue_date,
        "BT-83": doc.payment.remittance,
        "BT-81": doc.payment.means_code,
        "BT-84": doc.payment.iban and iban.compact(doc.payment.iban),
        "BT-85": doc.payment.account_name,
        "BT-86": doc.payment.bic,
    }
    data.update({term: value for term, value in optional.items() if value})
    if doc.note:
        data["BG-1"] = [{"BT-22": doc.note}]
    if doc.preceding_invoice:
        data["BG-3"] = [{"BT-25": doc.preceding_invoice,
                         **({"BT-26": doc.preceding_invoice_date} if doc.preceding_invoice_date else {})}]
    if "K" in {subtotal.category for subtotal in totals.breakdown}:
        # BR-IC-12: an intra-community supply names the deliver-to country; our documents have
        # no delivery address, so the goods go to the buyer's.
        data["BG-13"] = {key: value for key, value in _party(doc.buyer, with_vat_id=False).items()
                         if key in ("name", "country_code", "city", "postcode", "addr_l1", "addr_l2")}
    return data


def _party(party: Party, *, with_vat_id: bool) -> dict[str, Any]:
    fields = {
        "name": party.name,
        "vat_identifier": party.vat_id if with_vat_id else None,
        "legal_identifier": party.legal_id,
        "addr_l1": party.street,
        "addr_l2": party.street2,
        "city": party.city,
        "postcode": party.postcode,
        "country_code": party.country,
    }
    result: dict[str, Any] = {key: value for key, value in fields.items() if value}
    if party.email:  # BT-34 / BT-49, scheme EM: an e-mail address
        result.update(einvoicing_addr=party.email, einvoicing_addr_schemeid="EM")
    contact = {"name": party.contact_name, "phone": party.phone, "email": party.email}
    if party.contact_name or party.phone:
        result["contacts"] = [{key: value for key, value in contact.items() if value}]
    return result


def _subtotal(subtotal: TaxSubtotal) -> dict[str, Any]:
    result: dict[str, Any] = {
        "BT-116": _num(subtotal.basis),
        "BT-117": _num(subtotal.tax),
        "BT-118": subtotal.category,
        **_rate("BT-119", subtotal.category, subtotal.rate),
    }
    reason = subtotal.exemption_reason or DEFAULT_EXEMPTION_REASONS.get(subtotal.category)
    if reason:  # BR-E-10, BR-AE-10, BR-IC-10, BR-G-10, BR-O-10
        result["BT-120"] = reason
    return result


def _line(index: int, doc: InvoiceDocument) -> dict[str, Any]:
    line, computed = doc.lines[index], doc.totals.lines[index]
    result: dict[str, Any] = {
        "BT-126": str(index + 1),
        "BT-129": _num(line.quantity),
        "BT-130": line.unit,
        "BT-131": _num(computed.net_amount),
        "BT-146": _num(computed.net_price),
        "BT-151": line.tax_category,
        **_rate("BT-152", line.tax_category, line.tax_rate),
        "BT-153": line.description,
    }
    if line.sku:
        result["BT-155"] = line.sku
    if line.note:
        result["BT-127-00"] = [{"BT-127": line.note}]
    if computed.allowance:
        result["BG-27"] = [{"amount": _num(computed.allowance), "reason": "Discount",
                            "reason_code": DISCOUNT_REASON_CODE}]
    if computed.charge:
        result["BG-28"] = [{"amount": _num(computed.charge), "reason": "Surcharge"}]
    return result


def _adjustment(adjustment: AdjustmentTotals) -> dict[str, Any]:
    result: dict[str, Any] = {
        "amount": _num(adjustment.amount),
        "reason": adjustment.reason,
        "vat_category_code": adjustment.tax_category,
        **_rate("vat_rate", adjustment.tax_category, adjustment.tax_rate),
    }
    if adjustment.percent is not None and adjustment.base is not None:
        result.update(rate=_num(adjustment.percent), base_amount=_num(adjustment.base))
    return result


def _rate(term: str, category: str, rate: Decimal) -> dict[str, str]:
    """The rate under ``term``; none for category O, which has no rate (BR-O-05)."""
    return {} if category == OUTSIDE_SCOPE else {term: _num(rate)}


def _num(value: Decimal) -> str:
    """A Decimal as XML writes it: plain notation, never an exponent."""
    return format(value, "f")

