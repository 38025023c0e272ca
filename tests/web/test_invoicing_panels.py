"""The invoicing plugin's panels in a real browser: an invoice's page moves it on (issue, record
a payment, check the e-invoice, make and issue a credit note), a refusal is shown naming the
field, and the client's card follows."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from crmcore.auth import SYSTEM
from plugins.invoicing.service import invoicing_of
from tests.invoicing.conftest import SELLER

from .conftest import login, plugin_site, shot

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for result in plugin_site(tmp_path_factory, ["invoicing"]):

        async def billing(dep):
            service = invoicing_of(dep)
            await service.settings.save(SELLER, actor=SYSTEM)
            company = result.ids["company"]
            await dep.records.update("company", company, {"country": "FR", "city": "Lyon", "vat_id": "FR40303265045"})
            draft = await service.create_invoice({"company": company, "lines": [
                {"description": "Window 120 × 140", "quantity": 2, "unit_price": "420.00", "tax_category": "S", "tax_rate": "19"},
                {"description": "Care kit", "quantity": 1, "unit_price": "24.90", "tax_category": "S", "tax_rate": "7"}]},
                actor=SYSTEM)
            return draft["id"]

        result.ids["draft"] = result.run(billing)
        yield result


def _totals(page) -> list[str]:
    return [t.strip() for t in page.locator("[data-testid=document-totals] dd").all_inner_texts()]


def test_an_invoice_is_issued_paid_checked_and_credited_from_its_page(page, site):
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, site, "admin", f"/invoicing_invoice/{site.ids['draft']}")
    panel = page.get_by_test_id("invoicing-document")
    expect(panel).to_have_attribute("data-status", "draft")
    # 2 × 420.00 = 840.00 at 19 % -> 159.60; 24.90 at 7 % -> 1.743 -> 1.74
    assert _totals(page) == ["€864.90", "€161.34", "€1,026.24"]
    with page.expect_navigation():
        panel.get_by_role("button", name="Issue").click()
    expect(panel).to_have_attribute("data-status", "issued")
    number = page.get_by_test_id("document-number").inner_text()
    assert re.fullmatch(r"Invoice INV-\d{4}-00001", number), number
    assert _totals(page)[3:] == ["€0.00", "€1,026.24"]

    page.get_by_text("Record a payment").click()
    form = page.get_by_test_id("payment-form")
    form.locator("input[name=amount]").fill("0")
    form.get_by_role("button", name="Record").click()
    expect(page.locator("[data-invoicing-message]")).to_contain_text("amount: a payment is above 0")
    form.locator("input[name=amount]").fill("26.24")
    form.locator("input[name=reference]").fill("First instalment")
    with page.expect_navigation():
        form.get_by_role("button", name="Record").click()
    expect(panel).to_have_attribute("data-status", "partially_paid")
    assert _totals(page)[3:] == ["€26.24", "€1,000.00"]
    expect(page.get_by_test_id("document-payments")).to_contain_text("First instalment")

    panel.get_by_role("button", name="Check the e-invoice").click()
    checks = page.locator("[data-invoicing-validation] li")
    expect(checks).to_have_count(2)
    assert checks.all_inner_texts() == ["CII: ✓ EN 16931", "UBL: ✓ EN 16931"]
    shot(page, "invoicing-invoice-page")

    with page.expect_navigation():
        panel.get_by_role("button", name="Credit note").click()
    expect(panel).to_have_attribute("data-kind", "credit_note")
    with page.expect_navigation():
        panel.get_by_role("button", name="Issue").click()
    assert page.get_by_test_id("document-number").inner_text().startswith("Credit note CN-")
    with page.expect_navigation():
        page.locator("dl.invoicing-dates a").click()  # the invoice it corrects
    expect(panel).to_have_attribute("data-status", "cancelled")  # credited in full
    expect(page.get_by_test_id("document-credit-notes")).to_contain_text("CN-")

    page.goto(site.url(f"/company/{site.ids['company']}"))
    account = page.get_by_test_id("invoicing-account")
    # invoiced 1,026.24, credited 1,026.24, received 26.24: the client has 26.24 in their favour
    assert account.get_by_test_id("balance-EUR").inner_text() == "-€26.24"
    shot(page, "invoicing-client-card")


def test_a_reader_sees_the_invoice_but_none_of_the_buttons_that_change_it(page, site):
    login(page, site, "reader", f"/invoicing_invoice/{site.ids['draft']}")
    panel = page.get_by_test_id("invoicing-document")
    expect(panel).to_be_visible()
    assert panel.locator("form").count() == 0
    assert panel.locator("button").all_inner_texts() == ["Check the e-invoice"]  # a read
    expect(panel.get_by_test_id("download-pdf")).to_be_visible()
