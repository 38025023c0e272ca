"""The invoicing plugin on record pages and timelines, read through HTTP: a client's account and
invoices on their card, a deal's billing, an invoice's page as printed with its payments and
credit notes, quotes; and what a role may not read stays off the page."""

from __future__ import annotations

import re

from lxml import html

from crmcore.testing import crm_user

from .conftest import ok
from .test_flow import _quote, _won_deal


def _page(client, path: str, headers: dict | None = None):
    answer = client.get(path, headers={"accept": "text/html", **(headers or {})})
    assert answer.status_code == 200, answer.text[:500]
    return html.fromstring(answer.text)


def _texts(tree, xpath: str) -> list[str]:
    return [re.sub(r"\s+", " ", node.text_content()).strip() for node in tree.xpath(xpath)]


def _text(tree, xpath: str) -> str:
    found = _texts(tree, xpath)
    assert found, f"nothing matches {xpath}"
    return found[0]


def _by_id(test_id: str) -> str:
    return f"//*[@data-testid='{test_id}']"


def _billed(client):
    """A won deal quoted, invoiced (608.10 EUR), paid 100.00; a second invoice of 119.00 credited
    in full (cancelled)."""
    company = client.company()
    product = client.product()
    deal = _won_deal(client, company)
    quote = _quote(client, deal, product)
    ok(client.post(f"/api/invoicing/quotes/{quote['id']}/accept"))
    invoice = ok(client.post(f"/api/invoicing/quotes/{quote['id']}/invoice", json={"issue": True}))
    ok(client.post("/api/invoicing/payments", json={"invoice": invoice["id"], "amount": "100.00",
                                                    "reference": "Transfer 1"}), 201)
    second = ok(client.post("/api/invoicing/invoices", json={"company": company["id"], "lines": [
        {"product": product["id"], "quantity": 1}]}), 201)
    second = ok(client.post(f"/api/invoicing/invoices/{second['id']}/issue"))
    ok(client.post(f"/api/invoicing/invoices/{second['id']}/cancel", json={"reason": "Ordered twice"}))
    return company, deal, quote, invoice, second


def test_the_client_card_shows_the_account_the_invoices_and_quotes(billing):
    client = billing()
    company, deal, quote, invoice, second = _billed(client)
    card = _page(client, f"/company/{company['id']}")
    # invoiced 608.10 + 119.00, credited 119.00, received 100.00: owes 508.10
    assert _text(card, _by_id("balance-EUR")) == "€508.10"
    assert _text(card, "//tr[@data-currency='EUR']/td[1]") == "€727.10"
    assert _text(card, "//tr[@data-currency='EUR']/td[2]") == "€119.00"
    assert _text(card, "//tr[@data-currency='EUR']/td[3]") == "€100.00"
    rows = card.xpath(_by_id("invoicing-account") + "//tr[@data-invoice]")
    statuses = {row.get("data-number"): row.xpath(".//@data-status")[0] for row in rows}
    assert statuses[invoice["number"]] == "partially_paid" and statuses[second["number"]] == "cancelled"
    assert len(rows) == 3  # the two invoices and the credit note
    assert card.xpath(_by_id("invoicing-quotes") + f"//tr[@data-quote='{quote['id']}']//span/@data-status") == ["invoiced"]
    # the panels stand in for the core's lists of invoices, quotes and payments
    assert not card.xpath("//section[@data-related='invoicing_invoice' or @data-related='invoicing_quote' "
                          "or @data-related='invoicing_payment']")
    assert card.xpath("//a[@href='/invoicing/invoices/new?company=%d']" % company["id"])

    deal_page = _page(client, f"/deal/{deal['id']}")
    assert _text(deal_page, _by_id("deal-invoiced-EUR")) == "€608.10"  # the second invoice is not the deal's
    assert _text(deal_page, _by_id("deal-paid-EUR")) == "€100.00"
    assert _text(deal_page, _by_id("deal-open-EUR")) == "€508.10"


def test_the_invoice_page_shows_it_as_printed_with_its_payments_and_credit_notes(billing):
    client = billing()
    company, deal, quote, invoice, second = _billed(client)
    page = _page(client, f"/invoicing_invoice/{invoice['id']}")
    panel = _by_id("invoicing-document")
    assert page.xpath(panel + "/@data-status") == ["partially_paid"]
    assert _text(page, _by_id("document-number")) == f"Invoice {invoice['number']}"
    assert _texts(page, _by_id("document-lines") + "//tbody/tr/td[last()]") == ["€300.00", "€163.80", "€24.70"]
    assert _texts(page, _by_id("tax-breakdown") + "//tbody/tr/td[last()]") == ["€92.87", "€1.73"]
    assert _texts(page, _by_id("document-totals") + "/dd") == ["€513.50", "€94.60", "€608.10", "€100.00", "€508.10"]
    assert "Transfer 1" in _text(page, _by_id("document-payments"))
    assert page.xpath(_by_id("payment-form") + "//input[@name='amount']/@value") == ["508.10"]
    assert page.xpath(_by_id("download-pdf") + "/@href") == [f"/api/invoicing/invoices/{invoice['id']}/pdf"]
    assert not page.xpath("//section[@data-related='invoicing_line' or @data-related='invoicing_payment']")

    cancelled = _page(client, f"/invoicing_invoice/{second['id']}")
    assert cancelled.xpath(panel + "/@data-status") == ["cancelled"]
    [note] = cancelled.xpath(_by_id("document-credit-notes") + "//a")
    credit = _page(client, note.get("href"))
    assert _text(credit, _by_id("document-number")).startswith("Credit note CN-")
    assert second["number"] in _text(credit, "//dl[@class='invoicing-dates']")
    assert not cancelled.xpath(_by_id("payment-form"))  # nothing left to pay

    quote_page = _page(client, f"/invoicing_quote/{quote['id']}")
    assert quote_page.xpath(panel + "/@data-kind") == ["quote"]
    assert quote_page.xpath(f"//a[@href='/invoicing_invoice/{invoice['id']}']")  # its invoice


def test_the_timeline_tells_what_was_billed_and_paid(billing):
    client = billing()
    company, deal, quote, invoice, second = _billed(client)
    items = ok(client.get(f"/api/company/{company['id']}/timeline"))["items"]
    mine = [(i["kind"], i["title"]) for i in items if i["source"] == "invoicing"]
    assert ("payment", "Payment received: 100.00 EUR") in mine
    assert ("invoice", f"Invoice {invoice['number']} issued") in mine
    assert ("invoice", f"Invoice {second['number']} issued") in mine
    assert any(kind == "invoice" and title.startswith("Credit note CN-") for kind, title in mine)
    assert ("quote", f"Quote {quote['number']}") in mine
    on_deal = ok(client.get(f"/api/deal/{deal['id']}/timeline"))["items"]
    assert [i["title"] for i in on_deal if i["kind"] == "invoice"] == [f"Invoice {invoice['number']} issued"]


def test_what_a_role_may_not_read_stays_off_the_card(billing):
    client = billing()
    company, deal, quote, invoice, second = _billed(client)
    agent = crm_user(client, role="agent")  # sees only their own records: none of these invoices
    ok(client.patch(f"/api/company/{company['id']}", json={"owner_id": agent.id, "version": company["version"]}))
    card = _page(client, f"/company/{company['id']}", agent.headers)
    assert not card.xpath(_by_id("invoicing-account") + "//tr[@data-invoice]")
    assert not card.xpath(_by_id("balance-EUR"))
    items = ok(client.get(f"/api/company/{company['id']}/timeline", headers=agent.headers))["items"]
    assert not [i for i in items if i["source"] == "invoicing"]


def test_the_owner_of_an_invoice_sees_what_was_paid_on_it(billing):
    client = billing()
    agent = crm_user(client, role="agent")
    company = client.company(owner_id=agent.id)
    draft = ok(client.post("/api/invoicing/invoices", json={"company": company["id"], "owner_id": agent.id, "lines": [
        {"description": "Windows", "quantity": 1, "unit_price": "100.00", "tax_category": "S", "tax_rate": "19"}]}), 201)
    invoice = ok(client.post(f"/api/invoicing/invoices/{draft['id']}/issue"))
    ok(client.post("/api/invoicing/payments", json={"invoice": invoice["id"], "amount": "150.00"}), 201)  # the admin records it
    [account] = ok(client.get("/api/invoicing/balance", params={"company": company["id"]}, headers=agent.headers))
    assert (account["received"], account["balance"], account["credit_available"]) == ("150.00", "-31.00", "31.00")
    card = _page(client, f"/company/{company['id']}", agent.headers)
    assert _text(card, _by_id("balance-EUR")) == "-€31.00"
