"""The invoicing plugin end to end through its HTTP API: deal won -> quote -> invoice issued with
its number -> PDF with a valid embedded e-invoice -> partial then full payment -> paid; a credit
note; and every kind of bad input refused with a 4xx naming the field."""

from __future__ import annotations

import datetime as dt
import io

from lxml import etree
from pypdf import PdfReader

from plugins.invoicing.einvoice import xml_from_pdf
from plugins.invoicing.validation import validate

from .conftest import amount, ok, problem

QUOTE_LINES = [
    {"product": None, "quantity": 3},
    {"description": "Installation", "quantity": "4", "unit": "HUR", "unit_price": "45.50", "discount_percent": 10,
     "tax_category": "S", "tax_rate": "19"},
    {"description": "Care kit", "quantity": 2, "unit_price": "12.35", "tax_category": "S", "tax_rate": "7"},
]
SHIPPING = {"charge": True, "reason": "Shipping", "amount": "25.00", "tax_category": "S", "tax_rate": "19"}


def _won_deal(client, company) -> dict:
    contact = ok(client.post("/api/contact", json={"first_name": "Anne", "last_name": "Durand", "company": company["id"],
                                                   "email": "anne@client.example"}), 201)
    deal = ok(client.post("/api/deal", json={"name": "Windows for Lyon", "company": company["id"], "contact": contact["id"],
                                             "amount": {"amount": "600", "currency": "EUR"}, "stage": "won"}), 201)
    return deal


def _quote(client, deal, product) -> dict:
    lines = [dict(QUOTE_LINES[0], product=product["id"]), *QUOTE_LINES[1:]]
    return ok(client.post("/api/invoicing/quotes", json={"deal": deal["id"], "lines": lines, "adjustments": [SHIPPING]}), 201)


def test_deal_to_quote_to_invoice_to_pdf_to_payments(billing):
    client = billing()
    company = client.company()
    product = client.product()
    deal = _won_deal(client, company)
    year = dt.date.today().year

    quote = _quote(client, deal, product)
    assert quote["number"] == f"Q-{year}-00001" and quote["status"] == "draft"
    assert quote["company"] == company["id"] and quote["contact"] == deal["contact"]  # from the deal
    assert [amount(line["net_amount"]) for line in quote["lines"]] == ["300.00", "163.80", "24.70"]
    assert quote["lines"][0]["description"] == "Window" and quote["lines"][0]["sku"] == "WIN-1"
    # 19 %: 300 + 163.80 + 25 shipping = 488.80 -> 92.872 -> 92.87; 7 %: 24.70 -> 1.729 -> 1.73
    assert [(t["category"], t["rate"], t["basis"], t["tax"]) for t in quote["tax_breakdown"]] == [
        ("S", "19", "488.80", "92.87"), ("S", "7", "24.70", "1.73")]
    assert (amount(quote["net_total"]), amount(quote["tax_total"]), amount(quote["total"])) == ("513.50", "94.60", "608.10")
    assert quote["valid_until"] == (dt.date.fromisoformat(quote["issue_date"]) + dt.timedelta(days=30)).isoformat()

    ok(client.post(f"/api/invoicing/quotes/{quote['id']}/send"))
    assert ok(client.post(f"/api/invoicing/quotes/{quote['id']}/accept"))["status"] == "accepted"
    invoice = ok(client.post(f"/api/invoicing/quotes/{quote['id']}/invoice", json={"issue": True}))
    assert invoice["number"] == f"INV-{year}-00001" and invoice["status"] == "issued"
    assert invoice["quote"] == quote["id"] and invoice["deal"] == deal["id"] and invoice["order_reference"] == quote["number"]
    assert amount(invoice["total"]) == "608.10" and amount(invoice["balance"]) == "608.10"
    assert invoice["due_date"] == (dt.date.fromisoformat(invoice["issue_date"]) + dt.timedelta(days=14)).isoformat()
    assert invoice["seller"]["vat_id"] == "DE136695976" and invoice["buyer"]["vat_id"] == "FR40303265045"
    assert ok(client.get(f"/api/invoicing/quotes/{quote['id']}"))["status"] == "invoiced"

    pdf = client.get(f"/api/invoicing/invoices/{invoice['id']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert f'filename="INV-{year}-00001.pdf"' in pdf.headers["content-disposition"]
    embedded = xml_from_pdf(pdf.content)
    cii = client.get(f"/api/invoicing/invoices/{invoice['id']}/xml", params={"syntax": "cii"})
    assert embedded == cii.content  # what the PDF carries is the e-invoice
    report = validate(embedded, "cii")
    assert report.ok, (report.xsd_errors, report.fatal)
    assert b"608.10" in embedded and f"INV-{year}-00001".encode() in embedded
    ubl = client.get(f"/api/invoicing/invoices/{invoice['id']}/xml", params={"syntax": "ubl"}).content
    assert validate(ubl, "ubl").ok
    metadata = PdfReader(io.BytesIO(pdf.content)).trailer["/Root"]["/Metadata"].get_object().get_data()
    assert etree.fromstring(metadata).xpath("//pdfaid:part/text()", namespaces={"pdfaid": "http://www.aiim.org/pdfa/ns/id/"}) == ["3"]

    paid = ok(client.post("/api/invoicing/payments", json={"invoice": invoice["id"], "amount": "300.00",
                                                           "reference": "bank 1"}), 201)
    assert amount(paid["applied"]) == "300.00" and amount(paid["unapplied"]) == "0.00"
    after = ok(client.get(f"/api/invoicing/invoices/{invoice['id']}"))
    assert after["status"] == "partially_paid" and amount(after["balance"]) == "308.10" and amount(after["paid"]) == "300.00"
    ok(client.post("/api/invoicing/payments", json={"invoice": invoice["id"], "amount": 308.10, "currency": "EUR"}), 201)
    after = ok(client.get(f"/api/invoicing/invoices/{invoice['id']}"))
    assert after["status"] == "paid" and amount(after["balance"]) == "0.00" and after["paid_at"]
    # The client's account: all invoiced, all received.
    [account] = ok(client.get("/api/invoicing/balance", params={"company": company["id"]}))
    assert account == {**account, "currency": "EUR", "invoiced": "608.10", "received": "608.10", "balance": "0.00",
                       "open_invoices": 0}


def test_a_preview_prices_a_draft_without_saving_it(billing):
    client = billing()
    product = client.product()
    lines = [dict(QUOTE_LINES[0], product=product["id"]), *QUOTE_LINES[1:]]
    preview = ok(client.post("/api/invoicing/preview", json={"lines": lines, "adjustments": [SHIPPING]}))
    assert [amount(line["net_amount"]) for line in preview["lines"]] == ["300.00", "163.80", "24.70"]
    assert preview["lines"][0]["unit_price"] == "100.00" and amount(preview["total"]) == "608.10"
    assert [(t["rate"], t["tax"]) for t in preview["tax_breakdown"]] == [("19", "92.87"), ("7", "1.73")]
    assert "lines[1].quantity" in problem(client.post("/api/invoicing/preview", json={"lines": [
        lines[0], {**lines[1], "quantity": "-1"}]}))
    assert ok(client.get("/api/invoicing_invoice"))["items"] == []


def test_a_credit_note_corrects_an_issued_invoice(billing):
    client = billing()
    company = client.company()
    product = client.product()
    draft = ok(client.post("/api/invoicing/invoices", json={"company": company["id"],
                                                            "lines": [{"product": product["id"], "quantity": 2}]}), 201)
    invoice = ok(client.post(f"/api/invoicing/invoices/{draft['id']}/issue"))
    assert amount(invoice["total"]) == "238.00"
    note = ok(client.post(f"/api/invoicing/invoices/{invoice['id']}/credit-note",
                          json={"lines": [{"product": product["id"], "quantity": 1}], "note": "one window returned"}))
    assert note["kind"] == "credit_note" and note["status"] == "draft" and note["corrects"] == invoice["id"]
    note = ok(client.post(f"/api/invoicing/invoices/{note['id']}/issue"))
    year = dt.date.today().year
    assert note["number"] == f"CN-{year}-00001" and amount(note["total"]) == "119.00"
    corrected = ok(client.get(f"/api/invoicing/invoices/{invoice['id']}"))
    assert amount(corrected["credited"]) == "119.00" and amount(corrected["balance"]) == "119.00"
    # The credit note's e-invoice is a valid EN 16931 credit note naming the invoice it corrects.
    for syntax in ("cii", "ubl"):
        xml = client.get(f"/api/invoicing/invoices/{note['id']}/xml", params={"syntax": syntax}).content
        assert validate(xml, syntax).ok and invoice["number"].encode() in xml
    assert b"381" in client.get(f"/api/invoicing/invoices/{note['id']}/xml").content
    # Crediting more than is left is refused; cancelling credits the rest and cancels the invoice.
    too_much = ok(client.post(f"/api/invoicing/invoices/{invoice['id']}/credit-note",
                              json={"lines": [{"product": product["id"], "quantity": 2}]}))
    assert "lines" in problem(client.post(f"/api/invoicing/invoices/{too_much['id']}/issue"))
    cancelled = ok(client.post(f"/api/invoicing/invoices/{invoice['id']}/cancel", json={"reason": "order withdrawn"}))
    assert cancelled["status"] == "cancelled" and amount(cancelled["balance"]) == "0.00"
    [account] = ok(client.get("/api/invoicing/balance", params={"company": company["id"]}))
    assert (account["invoiced"], account["credited"], account["balance"]) == ("238.00", "238.00", "0.00")


def test_over_payment_becomes_credit_for_the_next_invoice(billing):
    client = billing()
    company = client.company()

    def issued(price: str) -> dict:
        draft = ok(client.post("/api/invoicing/invoices", json={"company": company["id"], "lines": [
            {"description": "Service", "quantity": 1, "unit_price": price, "tax_category": "S", "tax_rate": "19"}]}), 201)
        return ok(client.post(f"/api/invoicing/invoices/{draft['id']}/issue"))

    first, second = issued("100"), issued("50")  # 119.00 and 59.50
    payment = ok(client.post("/api/invoicing/payments", json={"invoice": first["id"], "amount": "150.00"}), 201)
    assert amount(payment["applied"]) == "119.00" and amount(payment["unapplied"]) == "31.00"
    [account] = ok(client.get("/api/invoicing/balance", params={"company": company["id"]}))
    assert (account["balance"], account["credit_available"]) == ("28.50", "31.00")  # 178.50 invoiced - 150 received
    settled = ok(client.post(f"/api/invoicing/invoices/{second['id']}/apply-credit"))
    assert settled["status"] == "partially_paid" and amount(settled["balance"]) == "28.50"
    [account] = ok(client.get("/api/invoicing/balance", params={"company": company["id"]}))
    assert (account["balance"], account["credit_available"], account["received"]) == ("28.50", "0.00", "150.00")
    assert "invoice" in problem(client.post(f"/api/invoicing/invoices/{second['id']}/apply-credit"))


def test_bad_input_is_refused_naming_the_field(billing):
    client = billing()
    company = client.company()
    product = client.product()

    def draft(**line):
        return client.post("/api/invoicing/invoices", json={"company": company["id"], "lines": [
            {"description": "Thing", "quantity": 1, "unit_price": "10", "tax_category": "S", "tax_rate": "19", **line}]})

    assert "quantity" in problem(draft(quantity=-2))["lines[0].quantity"]
    errors = problem(draft(tax_category="X"))
    assert "S" in errors["lines[0].tax_category"] and "AE" in errors["lines[0].tax_category"]
    assert "lines[0].unit_price" in problem(draft(unit_price="ten"))
    assert "currency" in problem(client.post("/api/invoicing/invoices", json={
        "company": company["id"], "currency": "EURO", "lines": [{"product": product["id"], "quantity": 1}]}))
    assert "contact" in problem(client.post("/api/invoicing/invoices", json={"lines": [{"product": product["id"], "quantity": 1}]}))
    assert "lines[0].product" in problem(client.post("/api/invoicing/invoices", json={
        "company": company["id"], "lines": [{"product": 999, "quantity": 1}]}))
    # A product priced in EUR on a USD invoice needs a price.
    assert "lines[0].unit_price" in problem(client.post("/api/invoicing/invoices", json={
        "company": company["id"], "currency": "USD", "lines": [{"product": product["id"], "quantity": 1}]}))

    invoice = ok(draft(), 201)
    issued = ok(client.post(f"/api/invoicing/invoices/{invoice['id']}/issue"))
    # An issued invoice is immutable, through the plugin's routes and the generic API alike.
    assert "credit note" in problem(client.put(f"/api/invoicing/invoices/{issued['id']}", json={"notes": "changed"}))["status"]
    assert "credit note" in problem(client.patch(f"/api/invoicing_invoice/{issued['id']}", json={"notes": "x"}))["notes"]
    assert "status" in problem(client.delete(f"/api/invoicing_invoice/{issued['id']}"))
    assert "invoice" in problem(client.patch(f"/api/invoicing_line/{issued['lines'][0]['id']}", json={"quantity": 5}))
    assert "status" in problem(client.post(f"/api/invoicing/invoices/{issued['id']}/issue"))
    # Payments: the invoice's currency, a positive amount, a real method, not in the future.
    pay = {"invoice": issued["id"], "amount": "5.00"}
    assert "EUR" in problem(client.post("/api/invoicing/payments", json={**pay, "currency": "USD"}))["currency"]
    assert "amount" in problem(client.post("/api/invoicing/payments", json={**pay, "amount": "-5"}))
    assert "amount" in problem(client.post("/api/invoicing/payments", json={**pay, "amount": "5.001"}))
    assert "method" in problem(client.post("/api/invoicing/payments", json={**pay, "method": "gold"}))
    future = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    assert "paid_on" in problem(client.post("/api/invoicing/payments", json={**pay, "paid_on": future}))
    assert client.post("/api/invoicing/payments", json={**pay, "invoice": invoice["id"] + 100}).status_code == 404
    # Nothing half-written: the invoice is still unpaid.
    assert amount(ok(client.get(f"/api/invoicing/invoices/{issued['id']}"))["paid"]) == "0.00"
    # Payments of a draft are refused.
    other = ok(draft(), 201)
    assert "invoice" in problem(client.post("/api/invoicing/payments", json={"invoice": other["id"], "amount": "1"}))


def test_seller_settings_are_checked(billing):
    client = billing()
    assert "vat_id" in problem(client.put("/api/invoicing/settings", json={"vat_id": "DE123456789"}))
    assert "iban" in problem(client.put("/api/invoicing/settings", json={"iban": "DE00 1234"}))
    assert "country" in problem(client.put("/api/invoicing/settings", json={"country": "XX"}))
    assert "colour" in problem(client.put("/api/invoicing/settings", json={"colour": "blue"}))
    saved = ok(client.put("/api/invoicing/settings", json={"vat_id": "de 136 695 976", "iban": "DE89 3704 0044 0532 0130 00"}))
    assert saved["vat_id"] == "DE136695976" and saved["iban"] == "DE89370400440532013000"
    from crmcore.testing import crm_user

    agent = crm_user(client, role="agent")
    assert client.put("/api/invoicing/settings", json={"city": "Bonn"}, headers=agent.headers).status_code == 403


def test_an_incomplete_seller_cannot_issue(billing):
    client = billing(seller={"vat_id": None, "legal_id": None})
    company = client.company(country=None)
    draft = ok(client.post("/api/invoicing/invoices", json={"company": company["id"], "lines": [
        {"description": "Thing", "quantity": 1, "unit_price": "10"}]}), 201)
    errors = problem(client.post(f"/api/invoicing/invoices/{draft['id']}/issue"))
    assert {"seller.vat_id", "buyer.country"} <= set(errors)
    assert ok(client.get(f"/api/invoicing/invoices/{draft['id']}"))["number"] is None  # no number used up
