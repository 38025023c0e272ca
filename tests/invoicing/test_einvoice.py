"""EN 16931 e-invoices: CII and UBL written from the money engine's totals pass the XSD and the
official schematron, the validator catches a wrong amount, the CII travels inside a PDF/A-3,
and what EN 16931 would reject is refused beforehand naming our field."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from decimal import Decimal as D

import msgspec
import pypdf
import pytest
from lxml import etree

from crmcore import ValidationError
from crmcore.documents import html_to_pdf
from plugins.invoicing.einvoice import cii_xml, embed_in_pdf, ubl_xml, xml_from_pdf
from plugins.invoicing.model import (
    AdjustmentInput,
    DocumentInput,
    InvoiceDocument,
    LineInput,
    Party,
    PaymentInstructions,
)
from plugins.invoicing.money import compute, convert
from plugins.invoicing.validation import Report, validate

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
}
SELLER = Party(name="Müller Software GmbH", vat_id="DE123456789", legal_id="HRB 12345 B",
               street="Hauptstraße 1", city="Berlin", postcode="10115", country="DE",
               email="billing@mueller.example", phone="+49 30 1234567", contact_name="Anna Müller")
BUYER = Party(name="Dupont SARL", vat_id="FR40303265045", street="1 rue de la Paix", city="Paris",
              postcode="75002", country="FR", email="compta@dupont.example")
PAYMENT = PaymentInstructions(iban="DE89 3704 0044 0532 0130 00", bic="COBADEFFXXX",
                              account_name="Müller Software GmbH", terms="Net 30 days")
#: Two standard rates, an exempt line, a line discount, a 10 % document discount and shipping.
MIXED = DocumentInput(
    currency="EUR",
    lines=[
        LineInput(description="Consulting", quantity=D("12.5"), unit="HUR", unit_price=D("120.00"),
                  tax_rate=D(19), discount_percent=D(10), sku="CONS-1"),
        LineInput(description="Handbook", quantity=D(3), unit_price=D("24.90"), tax_rate=D(7),
                  note="Second edition"),
        LineInput(description="Certified training", quantity=D(1), unit_price=D("480.00"),
                  tax_category="E", unit="DAY"),
    ],
    adjustments=[
        AdjustmentInput(reason="Loyalty discount", percent=D(10)),
        AdjustmentInput(charge=True, reason="Shipping", amount=D("15.00"), tax_category="S",
                        tax_rate=D(19)),
    ],
)


def issue(document: DocumentInput, *, number: str = "INV-2024-0042", **fields) -> InvoiceDocument:
    """An issued invoice of ``document``, its totals computed by the money engine."""
    values = dict(number=number, type_code="380", issue_date=dt.date(2024, 5, 2),
                  due_date=dt.date(2024, 6, 1), delivery_date=dt.date(2024, 4, 30),
                  currency=document.currency, buyer_reference="PO-4711", order_reference="PO-4711",
                  note="Thank you for your order.", seller=SELLER, buyer=BUYER,
                  payment=msgspec.structs.replace(PAYMENT, remittance=number))
    values.update(fields)
    return InvoiceDocument(**values, lines=document.lines, totals=compute(document))


def credit_note_of(invoice: InvoiceDocument) -> InvoiceDocument:
    return msgspec.structs.replace(invoice, number="CN-2024-0007", type_code="381",
                                   preceding_invoice=invoice.number,
                                   preceding_invoice_date=invoice.issue_date)


def with_wrong_tax(doc: InvoiceDocument) -> InvoiceDocument:
    """``doc`` with its first tax breakdown row's tax one cent too high, the totals untouched."""
    first, *rest = doc.totals.breakdown
    wrong = msgspec.structs.replace(first, tax=first.tax + D("0.01"))
    return msgspec.structs.replace(doc, totals=msgspec.structs.replace(doc.totals, breakdown=[wrong, *rest]))


def text(xml: bytes, path: str) -> list[str]:
    """The text of the elements, or the values of the attributes, at ``path``."""
    return [node if isinstance(node, str) else node.text
            for node in etree.fromstring(xml).xpath(path, namespaces=NS)]


def assert_valid(report: Report) -> None:
    assert report.xsd_errors == []
    assert report.fatal == []
    assert report.ok


@pytest.fixture(scope="module")
def invoice() -> InvoiceDocument:
    return issue(MIXED)


@pytest.fixture(scope="module")
def cii(invoice) -> bytes:
    return cii_xml(invoice)


@pytest.fixture(scope="module")
def ubl(invoice) -> bytes:
    return ubl_xml(invoice)


def test_the_mixed_invoice_has_what_the_tests_need(invoice):
    """Guards the fixture: every feature the e-invoices must carry is really in it."""
    totals = invoice.totals
    assert {(s.category, s.rate) for s in totals.breakdown} == {("S", D(19)), ("S", D(7)), ("E", D(0))}
    assert totals.lines[0].allowance > 0
    assert any(not a.charge and a.percent == 10 for a in totals.adjustments)
    assert any(a.charge for a in totals.adjustments)


def test_cii_passes_the_xsd_and_the_en16931_schematron(cii):
    assert_valid(validate(cii, "cii"))


def test_cii_carries_the_computed_amounts_exactly(invoice, cii):
    totals = invoice.totals
    summation = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:"
    assert text(cii, summation + "LineTotalAmount") == [str(totals.line_total)]
    assert text(cii, summation + "AllowanceTotalAmount") == [str(totals.allowance_total)]
    assert text(cii, summation + "ChargeTotalAmount") == [str(totals.charge_total)]
    assert text(cii, summation + "TaxBasisTotalAmount") == [str(totals.tax_basis_total)]
    assert text(cii, summation + "TaxTotalAmount") == [str(totals.tax_total)]
    assert text(cii, summation + "GrandTotalAmount") == [str(totals.grand_total)]
    assert text(cii, summation + "DuePayableAmount") == [str(totals.due)]
    breakdown = "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:"
    assert text(cii, breakdown + "CalculatedAmount") == [str(s.tax) for s in totals.breakdown]
    assert text(cii, breakdown + "BasisAmount") == [str(s.basis) for s in totals.breakdown]
    assert text(cii, "//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount") == [
        str(line.net_amount) for line in totals.lines]
    exempt = next(s for s in totals.breakdown if s.category == "E")
    assert text(cii, breakdown + "ExemptionReason") == [exempt.exemption_reason]
    assert text(cii, "//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == ["DE123456789"]
    assert text(cii, "//ram:PayeePartyCreditorFinancialAccount/ram:IBANID") == ["DE89370400440532013000"]
    assert text(cii, "//rsm:ExchangedDocumentContext//ram:ID") == ["urn:cen.eu:en16931:2017"]


def test_ubl_invoice_passes_the_xsd_and_the_en16931_schematron(invoice, ubl):
    assert etree.QName(etree.fromstring(ubl)).localname == "Invoice"
    assert text(ubl, "/*/cbc:InvoiceTypeCode") == ["380"]
    assert text(ubl, "/*/cac:LegalMonetaryTotal/cbc:PayableAmount") == [str(invoice.totals.due)]
    assert text(ubl, "/*/cac:TaxTotal/cac:TaxSubtotal/cbc:TaxAmount") == [
        str(s.tax) for s in invoice.totals.breakdown]
    assert_valid(validate(ubl, "ubl"))


def test_a_credit_note_is_a_ubl_creditnote_referring_to_its_invoice(invoice):
    credit_note = credit_note_of(invoice)
    ubl = ubl_xml(credit_note)
    assert etree.QName(etree.fromstring(ubl)).localname == "CreditNote"
    assert text(ubl, "/*/cbc:CreditNoteTypeCode") == ["381"]
    assert text(ubl, "/*/cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID") == [invoice.number]
    assert text(ubl, "/*/cac:BillingReference/cac:InvoiceDocumentReference/cbc:IssueDate") == ["2024-05-02"]
    assert len(text(ubl, "/*/cac:CreditNoteLine/cbc:CreditedQuantity")) == len(invoice.lines)
    assert_valid(validate(ubl, "ubl"))


def test_a_cii_credit_note_refers_to_its_invoice(invoice):
    cii = cii_xml(credit_note_of(invoice))
    assert text(cii, "//rsm:ExchangedDocument/ram:TypeCode") == ["381"]
    assert text(cii, "//ram:InvoiceReferencedDocument/ram:IssuerAssignedID") == [invoice.number]
    assert_valid(validate(cii, "cii"))


@pytest.mark.parametrize("flavor, write", [("cii", cii_xml), ("ubl", ubl_xml)])
def test_the_validator_catches_a_wrong_tax_amount(invoice, flavor, write):
    report = validate(write(with_wrong_tax(invoice)), flavor)
    assert report.xsd_errors == []
    assert not report.ok
    ids = {assertion.id for assertion in report.fatal}
    assert ids and all(i.startswith(("BR-CO-", "BR-S-")) for i in ids), report.fatal
    assert "BR-CO-14" in ids  # VAT total = Σ category tax amounts
    assert all(a.flag == "fatal" and a.location and a.text for a in report.fatal)


def test_the_validator_catches_a_broken_structure(cii):
    broken = cii.replace(b"<ram:TypeCode>380</ram:TypeCode>", b"<ram:Kind>380</ram:Kind>")
    report = validate(broken, "cii")
    assert report.xsd_errors and not report.ok
    assert not validate(b"<not xml", "ubl").ok


async def test_validate_runs_in_worker_threads(cii, ubl):
    reports = await asyncio.gather(*(asyncio.to_thread(validate, xml, flavor)
                                     for xml, flavor in [(cii, "cii"), (ubl, "ubl")] * 3))
    assert all(report.ok for report in reports)


def test_the_cii_travels_in_a_pdf_a3(cii):
    pdf = html_to_pdf("<html><body><h1>Invoice</h1></body></html>", pdf_a=True)
    assert xml_from_pdf(pdf) is None
    facturx_pdf = embed_in_pdf(pdf, cii, lang="en-GB")
    assert xml_from_pdf(facturx_pdf) == cii
    reader = pypdf.PdfReader(io.BytesIO(facturx_pdf))
    assert [attachment.name for attachment in reader.attachment_list] == ["factur-x.xml"]
    xmp = etree.fromstring(reader.trailer["/Root"]["/Metadata"].get_object().get_data())
    assert xmp.xpath("//pdfaid:part/text()", namespaces={"pdfaid": "http://www.aiim.org/pdfa/ns/id/"}) == ["3"]
    assert xmp.xpath("//fx:ConformanceLevel/text()",
                     namespaces={"fx": "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"}) == ["EN 16931"]


def test_a_yen_invoice_has_whole_amounts_and_is_valid():
    document = DocumentInput(currency="JPY", lines=[
        LineInput(description="Ramen bowls", quantity=D(7), unit_price=D(1180), tax_rate=D(19)),
        LineInput(description="Chopsticks", quantity=D(3), unit_price=D(333), tax_rate=D(7),
                  discount_percent=D(5)),
    ], adjustments=[AdjustmentInput(charge=True, reason="Shipping", amount=D(950), tax_category="S",
                                    tax_rate=D(19))])
    doc = issue(document)
    cii, ubl = cii_xml(doc), ubl_xml(doc)
    amounts = text(cii, "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/*")
    assert amounts and all("." not in amount for amount in amounts)
    assert text(ubl, "/*/cac:LegalMonetaryTotal/cbc:PayableAmount/@currencyID") == ["JPY"]
    assert_valid(validate(cii, "cii"))
    assert_valid(validate(ubl, "ubl"))


@pytest.mark.parametrize("write", [cii_xml, ubl_xml])
def test_a_currency_with_three_decimals_is_refused(write):
    doc = issue(DocumentInput(currency="KWD", lines=[
        LineInput(description="Licence", quantity=D(1), unit_price=D("12.345"), tax_rate=D(19))]))
    with pytest.raises(ValidationError) as refused:
        write(doc)
    [error] = refused.value.errors
    assert (error.field, error.code) == ("currency", "invalid")
    assert "at most 2 decimals" in error.message and "KWD" in error.message


@pytest.mark.parametrize("flavor, write", [("cii", cii_xml), ("ubl", ubl_xml)])
def test_a_dollar_invoice_gives_its_vat_in_the_euro_accounting_currency(flavor, write):
    rate = D("0.9214")
    doc = issue(msgspec.structs.replace(MIXED, currency="USD"), accounting_currency="EUR",
                exchange_rate=rate)
    xml = write(doc)
    vat_in_euros = convert(doc.totals.tax_total, rate, "EUR")
    if flavor == "cii":
        assert text(xml, "//ram:TaxCurrencyCode") == ["EUR"]
        assert text(xml, "//ram:TaxTotalAmount[@currencyID='EUR']") == [str(vat_in_euros)]
        assert text(xml, "//ram:TaxTotalAmount[@currencyID='USD']") == [str(doc.totals.tax_total)]
    else:
        assert text(xml, "/*/cbc:TaxCurrencyCode") == ["EUR"]
        assert text(xml, "/*/cac:TaxTotal/cbc:TaxAmount[@currencyID='EUR']") == [str(vat_in_euros)]
    assert_valid(validate(xml, flavor))


def test_a_payable_rounding_amount_is_in_the_invoice_currency():
    """facturx writes BT-114 in EUR whatever the currency; ours is the invoice's."""
    doc = issue(msgspec.structs.replace(MIXED, currency="CHF"))
    rounded = msgspec.structs.replace(doc.totals, rounding=D("0.03"), due=doc.totals.due + D("0.03"))
    ubl = ubl_xml(msgspec.structs.replace(doc, totals=rounded))
    assert text(ubl, "//cbc:PayableRoundingAmount/@currencyID") == ["CHF"]
    assert text(ubl, "//cbc:PayableRoundingAmount") == ["0.03"]
    assert_valid(validate(ubl, "ubl"))


@pytest.mark.parametrize("change, field", [
    (lambda doc: {"seller": msgspec.structs.replace(doc.seller, vat_id=None)}, "seller.vat_id"),
    (lambda doc: {"seller": msgspec.structs.replace(doc.seller, country="")}, "seller.country"),
    (lambda doc: {"buyer": msgspec.structs.replace(doc.buyer, country="France")}, "buyer.country"),
    (lambda doc: {"buyer": msgspec.structs.replace(doc.buyer, name=" ")}, "buyer.name"),
    (lambda doc: {"payment": msgspec.structs.replace(doc.payment, iban=None)}, "payment.iban"),
    (lambda doc: {"due_date": None, "payment": msgspec.structs.replace(doc.payment, terms=None)}, "due_date"),
    (lambda doc: {"accounting_currency": "USD"}, "exchange_rate"),
])
@pytest.mark.parametrize("write", [cii_xml, ubl_xml])
def test_missing_mandatory_data_is_refused_naming_the_field(invoice, change, field, write):
    with pytest.raises(ValidationError) as refused:
        write(msgspec.structs.replace(invoice, **change(invoice)))
    assert [error.field for error in refused.value.errors] == [field]
    assert refused.value.errors[0].message


def test_an_intra_community_supply_names_the_buyer_and_where_the_goods_went():
    document = DocumentInput(currency="EUR", lines=[
        LineInput(description="Server rack", quantity=D(2), unit_price=D("1450.00"), tax_category="K")])
    doc = issue(document)
    cii = cii_xml(doc)
    assert text(cii, "//ram:ShipToTradeParty//ram:CountryID") == ["FR"]
    assert_valid(validate(cii, "cii"))
    assert_valid(validate(ubl_xml(doc), "ubl"))
    with pytest.raises(ValidationError) as refused:
        cii_xml(msgspec.structs.replace(doc, buyer=msgspec.structs.replace(BUYER, vat_id=None),
                                        delivery_date=None))
    assert {e.field for e in refused.value.errors} == {"buyer.vat_id", "delivery_date"}


def test_an_invoice_outside_the_scope_of_vat_carries_no_vat_identifiers():
    document = DocumentInput(currency="EUR", lines=[
        LineInput(description="Conference ticket", quantity=D(1), unit_price=D("300.00"), tax_category="O")])
    doc = issue(document)
    cii, ubl = cii_xml(doc), ubl_xml(doc)
    assert text(cii, "//ram:SpecifiedTaxRegistration/ram:ID") == []
    assert text(ubl, "//cac:PartyTaxScheme/cbc:CompanyID") == []
    assert_valid(validate(cii, "cii"))
    assert_valid(validate(ubl, "ubl"))
    mixed = issue(msgspec.structs.replace(document, lines=[*document.lines, MIXED.lines[1]]))
    with pytest.raises(ValidationError) as refused:
        ubl_xml(mixed)
    assert [e.field for e in refused.value.errors] == ["lines[0].tax_category"]
    with pytest.raises(ValidationError) as refused:  # no VAT id: the legal id identifies the seller
        cii_xml(msgspec.structs.replace(doc, seller=msgspec.structs.replace(SELLER, legal_id=None)))
    assert [e.field for e in refused.value.errors] == ["seller.legal_id"]


def test_a_reverse_charge_invoice_needs_an_identifier_of_the_buyer():
    doc = issue(DocumentInput(currency="EUR", lines=[
        LineInput(description="Installation works", quantity=D(8), unit="HUR", unit_price=D("85.00"),
                  tax_category="AE")]))
    assert_valid(validate(cii_xml(doc), "cii"))
    assert_valid(validate(ubl_xml(doc), "ubl"))
    anonymous = msgspec.structs.replace(doc, buyer=msgspec.structs.replace(BUYER, vat_id=None))
    with pytest.raises(ValidationError) as refused:
        cii_xml(anonymous)
    assert [e.field for e in refused.value.errors] == ["buyer.vat_id"]
    registered = msgspec.structs.replace(anonymous.buyer, legal_id="RCS Paris 552 100 554")
    assert_valid(validate(ubl_xml(msgspec.structs.replace(anonymous, buyer=registered)), "ubl"))
