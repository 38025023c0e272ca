"""The invoicing plugin's quote and invoice editor in a real browser: a new invoice from a contact
card priced as the user types (exact amounts worked out by hand below), a field error next to
the line it names, saved, found again, issued with its number; a quote from a deal, sent and
accepted; a price list pricing the products' lines while a typed price stays; no client, no save;
a draft changed by someone else meanwhile (409, nothing overwritten unless asked); an issued
invoice refused."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal as D

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
            await invoicing_of(dep).settings.save(SELLER, actor=SYSTEM)
            client = await dep.records.create("company", {"name": "Client SARL", "country": "FR", "city": "Lyon",
                                                          "street": "1 rue de la Paix", "postal_code": "69001",
                                                          "vat_id": "FR40303265045"})
            anne = await dep.records.create("contact", {"first_name": "Anne", "last_name": "Durand",
                                                        "company": client["id"], "email": "anne@client.example"})
            deal = await dep.records.create("deal", {"name": "Windows for Lyon", "contact": anne["id"], "company": client["id"],
                                                     "amount": {"amount": "500", "currency": "EUR"}})
            products = [await dep.records.create("invoicing_product", {
                "sku": sku, "name": name, "unit": unit, "tax_category": "S", "tax_rate": "19",
                "price": {"amount": price, "currency": "EUR"}})
                for sku, name, price, unit in [("PANE-1", "Window pane", "19.99", "C62"), ("FIT-1", "Fitting", "45.00", "HUR")]]
            trade = await dep.records.create("invoicing_price_list", {"name": "Trade", "currency": "EUR"})
            await dep.records.create("invoicing_price", {"price_list": trade["id"], "product": products[0]["id"], "price": "18.50"})
            return {"client": client["id"], "anne": anne["id"], "deal": deal["id"], "trade": trade["id"],
                    "pane": products[0]["id"]}

        result.ids.update(result.run(billing))
        yield result


def _invoice(site, invoice_id: int) -> dict:
    return site.run(lambda dep: invoicing_of(dep).document("invoicing_invoice", invoice_id, SYSTEM))


def _draft(site) -> dict:
    """A draft invoice of one window pane (19.99 + 19 %), made through the API's service."""
    return site.run(lambda dep: invoicing_of(dep).create_invoice(
        {"company": site.ids["client"], "lines": [{"product": site.ids["pane"], "quantity": 1}]}, actor=SYSTEM))


def _line(page, index: int):
    return page.locator("#editor-lines tr.line").nth(index)


def _pick_product(row, name: str) -> None:
    row.locator(".relation-search").fill(name)
    expect(row.locator('[data-name="description"]')).to_have_value(name)


def _total(page, key: str):
    return page.locator(f'#totals-list [data-total="{key}"] dd')


def test_a_new_invoice_from_a_contact_card_is_priced_as_typed_saved_and_issued(page, site):
    login(page, site, "admin", f"/contact/{site.ids['anne']}")
    with page.expect_navigation():
        page.click('a.plugin-action[data-action="new_invoice_contact"]')
    assert "/invoicing/invoices/new?" in page.url
    expect(page.locator("#f-contact")).to_have_value("Anne Durand")
    expect(page.locator("#f-company")).to_have_value("Client SARL")  # the contact's company
    assert page.input_value("#f-currency") == "EUR"

    first = _line(page, 0)
    _pick_product(first, "Window pane")
    expect(first.locator('[data-name="unit_price"]')).to_have_value("19.99")
    assert first.locator('[data-name="tax_rate"]').input_value() == "19"
    first.locator('[data-name="quantity"]').fill("3")
    first.locator('[data-name="discount_percent"]').fill("10")
    # 3 × 19.99 = 59.97, less 10 % (5.997 -> 6.00) = 53.97; 19 % of 53.97 = 10.2543 -> 10.25
    expect(first.locator("[data-net]")).to_have_text("€53.97")
    expect(_total(page, "net")).to_have_text("€53.97")
    expect(_total(page, "tax-S-19")).to_have_text("€10.25")
    expect(_total(page, "total")).to_have_text("€64.22")

    first.locator('[data-name="quantity"]').fill("-3")
    error = first.locator(".field-error")
    expect(error).to_contain_text("greater than 0")
    expect(first.locator('[data-name="quantity"]')).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#editor-totals")).to_have_attribute("data-state", "stale")
    first.locator('[data-name="quantity"]').fill("3")
    expect(error).to_have_count(0)
    expect(_total(page, "total")).to_have_text("€64.22")

    page.click("#add-line")
    second = _line(page, 1)
    second.locator('[data-name="description"]').fill("Installation")
    second.locator('[data-name="quantity"]').fill("2")
    second.locator('[data-name="unit"]').fill("HUR")
    second.locator('[data-name="unit_price"]').fill("45")
    expect(second.locator('[data-name="tax_rate"]')).to_have_value("19")  # the seller's default
    expect(second.locator("[data-net]")).to_have_text("€90.00")
    second.locator('[data-move="-1"]').click()  # Installation first
    expect(_line(page, 0).locator('[data-name="description"]')).to_have_value("Installation")
    page.click("#add-adjustment")
    adjustment = page.locator("#editor-adjustments tr").first
    adjustment.locator('[data-name="reason"]').fill("Loyalty")
    adjustment.locator('[data-name="value"]').fill("5")
    # lines 90.00 + 53.97 = 143.97; 5 % of it = 7.1985 -> 7.20; net 136.77; 19 % = 25.9863 -> 25.99
    expect(_total(page, "lines")).to_have_text("€143.97")
    expect(_total(page, "discount")).to_have_text("−€7.20")
    expect(_total(page, "net")).to_have_text("€136.77")
    expect(_total(page, "tax-S-19")).to_have_text("€25.99")
    expect(_total(page, "total")).to_have_text("€162.76")
    shot(page, "invoicing-editor")

    page.click("#editor-save")
    page.wait_for_url(re.compile(r"/invoicing/invoices/\d+/edit$"))
    invoice_id = int(page.url.split("/")[-2])
    saved = _invoice(site, invoice_id)
    assert saved["status"] == "draft" and saved["contact"] == site.ids["anne"] and saved["company"] == site.ids["client"]
    assert [(line["description"], str(line["quantity"]), line["net_amount"].amount) for line in saved["lines"]] == [
        ("Installation", "2", D("90.00")), ("Window pane", "3", D("53.97"))]
    assert saved["adjustments"][0]["reason"] == "Loyalty" and saved["total"].amount == D("162.76")

    page.reload()
    expect(_line(page, 1).locator('[data-name="description"]')).to_have_value("Window pane")
    expect(_line(page, 1).locator(".relation-search")).to_have_value("Window pane")
    assert _line(page, 1).locator('[data-name="discount_percent"]').input_value() == "10"
    expect(_total(page, "total")).to_have_text("€162.76")

    page.click("#editor-issue")
    expect(page.locator("#issue-dialog")).to_be_visible()
    with page.expect_navigation():
        page.click("#issue-confirm")
    assert page.url.endswith(f"/invoicing_invoice/{invoice_id}")
    answer = page.request.get(site.url(f"/api/invoicing/invoices/{invoice_id}"))
    assert answer.ok, answer.text()
    issued = answer.json()
    assert issued["status"] == "issued" and issued["number"] == f"INV-{invoicing_of(site.deployment).today().year}-00001"
    assert [issued[k]["amount"] for k in ("net_total", "tax_total", "total")] == ["136.77", "25.99", "162.76"]


def test_a_quote_from_a_deal_is_sent_then_accepted(page, site):
    login(page, site, "admin", f"/deal/{site.ids['deal']}")
    with page.expect_navigation():
        page.click('a.plugin-action[data-action="new_quote_deal"]')
    expect(page.locator("#f-deal")).to_have_value("Windows for Lyon")
    expect(page.locator("#f-contact")).to_have_value("Anne Durand")  # the deal's
    expect(page.locator("#f-company")).to_have_value("Client SARL")
    today = invoicing_of(site.deployment).today()
    assert page.input_value("#f-valid_until") == (today + dt.timedelta(days=30)).isoformat()

    line = _line(page, 0)
    _pick_product(line, "Fitting")
    expect(line.locator('[data-name="unit"]')).to_have_value("HUR")
    line.locator('[data-name="quantity"]').fill("2")
    # 2 × 45.00 = 90.00; 19 % = 17.10
    expect(line.locator("[data-net]")).to_have_text("€90.00")
    expect(_total(page, "total")).to_have_text("€107.10")

    with page.expect_navigation():
        page.click("#editor-send")  # saves the new quote first
    quote_id = int(re.search(r"/invoicing/quotes/(\d+)/edit$", page.url).group(1))
    expect(page.locator("#editor-status")).to_have_text("sent")
    expect(page.locator("#editor-send")).to_be_hidden()
    expect(_total(page, "total")).to_have_text("€107.10")
    with page.expect_navigation():
        page.click("#editor-accept")
    assert page.url.endswith(f"/invoicing_quote/{quote_id}")
    quote = page.request.get(site.url(f"/api/invoicing/quotes/{quote_id}")).json()
    assert quote["status"] == "accepted" and quote["deal"] == site.ids["deal"] and quote["total"]["amount"] == "107.10"
    assert quote["number"] == f"Q-{today.year}-00001" and quote["lines"][0]["unit"] == "HUR"


def test_a_price_list_prices_the_products_lines_and_a_typed_price_is_kept(page, site):
    login(page, site, "admin", f"/invoicing/invoices/new?company={site.ids['client']}")
    expect(page.locator("#f-company")).to_have_value("Client SARL")
    line = _line(page, 0)
    _pick_product(line, "Window pane")
    line.locator('[data-name="quantity"]').fill("2")
    expect(line.locator("[data-net]")).to_have_text("€39.98")
    page.select_option("#f-price_list", str(site.ids["trade"]))
    price = line.locator('[data-name="unit_price"]')
    expect(price).to_have_value("18.50")  # the list's price, filled in by the preview
    expect(line.locator("[data-net]")).to_have_text("€37.00")
    price.fill("17")
    expect(line.locator("[data-net]")).to_have_text("€34.00")
    expect(price).not_to_have_class(re.compile("auto-price"))
    line.locator('[data-name="quantity"]').fill("3")
    expect(line.locator("[data-net]")).to_have_text("€51.00")  # still the typed price
    page.check("#f-prices_include_tax")  # a new way of entering prices prices the products again
    # the list's net 18.50 entered gross: 18.50 × 1.19 = 22.015; back to net 18.50, 3 × 18.50 = 55.50,
    # 19 % of it 10.545 -> 10.55, total 66.05
    expect(price).to_have_value("22.015")
    expect(_total(page, "net")).to_have_text("€55.50")
    expect(_total(page, "tax-S-19")).to_have_text("€10.55")
    expect(_total(page, "total")).to_have_text("€66.05")


def test_a_document_without_a_client_is_not_saved_and_says_so(page, site):
    login(page, site, "admin", "/invoicing/invoices/new")
    line = _line(page, 0)
    line.locator('[data-name="description"]').fill("Measuring visit")
    line.locator('[data-name="quantity"]').fill("1")
    line.locator('[data-name="unit_price"]').fill("80")
    expect(_total(page, "total")).to_have_text("€95.20")  # priced without a client: 80 + 15.20
    page.click("#editor-save")
    error = page.locator('[data-field="contact"] .field-error')
    expect(error).to_contain_text("a client")
    expect(page.locator("#f-contact")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#editor-state")).to_have_text("Not saved: see the errors")
    assert page.url.endswith("/invoicing/invoices/new")


def test_a_draft_changed_meanwhile_is_not_overwritten_unless_asked(page, site):
    draft = _draft(site)
    login(page, site, "admin", f"/invoicing/invoices/{draft['id']}/edit")
    expect(_total(page, "total")).to_have_text("€23.79")  # 19.99 + 3.80

    async def elsewhere(dep):  # someone else saves the draft meanwhile
        return await invoicing_of(dep).save_draft("invoicing_invoice", {"notes": "Call before delivery",
                                                                         "version": draft["version"]},
                                                  actor=SYSTEM, document_id=draft["id"])

    site.run(elsewhere)
    _line(page, 0).locator('[data-name="quantity"]').fill("2")
    expect(_total(page, "total")).to_have_text("€47.58")  # 39.98 + 7.60
    page.click("#editor-save")
    conflict = page.locator("#editor-conflict")
    expect(conflict).to_contain_text("Someone else changed this invoice meanwhile. Nothing was saved.")
    expect(conflict).to_contain_text("Notes: Call before delivery")
    stored = _invoice(site, draft["id"])
    assert stored["lines"][0]["quantity"] == D(1) and stored["notes"] == "Call before delivery"

    conflict.get_by_role("button", name="Save mine over theirs").click()
    expect(page.locator("#editor-state")).to_have_text("Saved")
    expect(conflict).to_be_hidden()
    assert _invoice(site, draft["id"])["lines"][0]["quantity"] == D(2)


def test_an_issued_invoice_is_never_edited(page, site):
    draft = _draft(site)
    site.run(lambda dep: invoicing_of(dep).issue(draft["id"], actor=SYSTEM))
    login(page, site, "admin", f"/invoicing_invoice/{draft['id']}")
    with page.expect_navigation():
        page.click('a.plugin-action[data-action="edit_lines_invoicing_invoice"]')
    refused = page.locator("#editor-refused")
    expect(refused).to_contain_text("is issued")
    expect(refused).to_contain_text("correct it with a credit note")
    assert page.locator("#editor-form").count() == 0
    shot(page, "invoicing-editor-refused")
    answer = page.goto(site.url(f"/invoicing/invoices/{draft['id']}/edit"))
    assert answer.status == 409
    with page.expect_navigation():
        page.click("#editor-refused-back")
    assert page.url.endswith(f"/invoicing_invoice/{draft['id']}")
