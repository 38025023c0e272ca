"""The invoicing plugin's pages in a real browser: the overview's receivables per currency
within the reader's scope, the latest and overdue invoices; commissions per employee and their
CSV; the seller settings form refusing a bad VAT id next to its field and saving a good one."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

import crmcore
from crmcore import SYSTEM

from ..invoicing.conftest import SELLER
from .conftest import login, plugin_site, shot

#: A name a spreadsheet would run as a formula: the CSV must keep it as text.
MANAGER = '=HYPERLINK("https://evil.example")'


async def _billing(dep: crmcore.Deployment, ids: dict) -> dict:
    """Invoices of three owners (amounts net, 19 % tax on top), two of them past due; payments
    today, one paying too much, its credit then applied to another invoice; a 10 % commission
    rule for everyone."""
    from plugins.invoicing.entities import COMMISSION
    from plugins.invoicing.service import invoicing_of

    service = invoicing_of(dep)
    await service.settings.save(SELLER, actor=SYSTEM)
    manager = await dep.auth.create_user(name=MANAGER, email="manager@example.com", password="manager password 123",
                                         role="sales_manager", teams=["Sales"], actor=SYSTEM)
    client = await dep.records.create("company", {"name": "Client SARL", "country": "FR", "city": "Lyon",
                                                  "vat_id": "FR40303265045", "owner_id": ids["agent"]})
    today = service.today()

    async def invoice(owner: int, net: str, issued: dt.date, due: dt.date | None = None, currency: str = "EUR",
                      rate: str | None = None) -> int:
        draft = await service.create_invoice({"company": client["id"], "currency": currency, "owner_id": owner,
                                              "due_date": due and due.isoformat(), "lines": [
                                                  {"description": "Windows", "quantity": 1, "unit_price": net,
                                                   "tax_category": "S", "tax_rate": "19"}]}, actor=SYSTEM)
        return (await service.issue(draft["id"], actor=SYSTEM, issue_date=issued.isoformat(), exchange_rate=rate))["id"]

    days = dt.timedelta(days=1)
    made = {
        "late": await invoice(ids["admin"], "1000.00", today - 40 * days, today - 10 * days),  # 1190.00
        "part": await invoice(manager["id"], "500.00", today),  # 595.00
        "paid": await invoice(ids["agent"], "200.00", today),  # 238.00
        "agent_late": await invoice(ids["agent"], "100.00", today - 30 * days, today - 5 * days),  # 119.00
        "usd": await invoice(ids["admin"], "300.00", today, currency="USD", rate="0.9"),  # 357.00
    }
    await service.mark_overdue(made["late"])  # as the overdue job does; agent_late is left to the due date
    await service.record_payment({"invoice": made["part"], "amount": "95.00"}, actor=SYSTEM)
    await service.record_payment({"invoice": made["paid"], "amount": "250.00"}, actor=SYSTEM)  # 12.00 too much
    await service.apply_credit(made["agent_late"], actor=SYSTEM)  # 119.00 - 12.00: 107.00 left
    await dep.records.create(COMMISSION, {"rate": "10"})
    numbers = {name: (await dep.records.get("invoicing_invoice", record_id))["number"] for name, record_id in made.items()}
    return {"invoices": made, "numbers": numbers, "manager": manager["id"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for result in plugin_site(tmp_path_factory, ["invoicing"]):
        result.ids.update(result.run(lambda dep: _billing(dep, result.ids)))
        yield result


def _figures(page, currency: str) -> dict[str, tuple[str, str]]:
    card = page.locator(f"[data-currency={currency}]")
    return {name: (card.locator(f"[data-figure={name}] strong").inner_text(),
                   card.locator(f"[data-figure={name}] [data-count]").inner_text())
            for name in ("outstanding", "overdue", "received")}


def _rows(page, table: str) -> list[list[str]]:
    return [[cell.strip() for cell in row.locator("td").all_inner_texts()]
            for row in page.locator(f"#{table} tbody tr").all()]


def test_the_overview_sums_what_clients_owe_per_currency(page, site):
    numbers = site.ids["numbers"]
    login(page, site, "admin", "/")
    with page.expect_navigation():
        page.locator("nav.side").get_by_role("link", name="Invoicing").click()
    assert page.url == site.url("/invoicing")
    # Open: late 1190.00 + part 595.00 - 95.00 + agent_late 119.00 - 12.00; overdue: late and agent_late.
    # Received: 95.00 + 250.00; the credit applied is not money coming in again.
    assert _figures(page, "EUR") == {"outstanding": ("€1,797.00", "3 open invoices"),
                                     "overdue": ("€1,297.00", "2 invoices"),
                                     "received": ("€345.00", "2 payments")}
    assert _figures(page, "USD") == {"outstanding": ("$357.00", "1 open invoice"), "overdue": ("$0.00", "0 invoices"),
                                     "received": ("$0.00", "0 payments")}
    overdue = _rows(page, "overdue-invoices")
    assert [row[0] for row in overdue] == [numbers["late"], numbers["agent_late"]]  # the longest overdue first
    assert [row[-1] for row in overdue] == ["overdue · 10 days", "overdue · 5 days"]
    latest = {row[0]: row for row in _rows(page, "latest-invoices")}
    assert set(latest) == set(numbers.values())
    part = latest[numbers["part"]]
    assert part[1] == "Client SARL" and part[4:] == ["€595.00", "€500.00", "partially paid"]
    assert latest[numbers["paid"]][-3:] == ["€238.00", "€0.00", "paid"]
    assert latest[numbers["agent_late"]][-1] == "overdue · 5 days"  # past its due date, not yet marked
    links = page.locator(".quick-links a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert {"/invoicing_invoice", "/invoicing_quote", "/invoicing_payment", "/invoicing_product", "/invoicing_price_list",
            "/invoicing/commissions", "/invoicing/settings"} <= set(hrefs)
    shot(page, "invoicing-overview")
    with page.expect_navigation():
        page.locator("#latest-invoices").get_by_role("link", name=numbers["usd"]).click()
    assert page.url == site.url(f"/invoicing_invoice/{site.ids['invoices']['usd']}")


def test_an_agent_sees_only_their_own_invoices(page, site):
    numbers = site.ids["numbers"]
    login(page, site, "agent", "/invoicing")
    assert _figures(page, "EUR") == {"outstanding": ("€107.00", "1 open invoice"), "overdue": ("€107.00", "1 invoice"),
                                     "received": ("€250.00", "1 payment")}  # a payment is its invoice's owner's
    assert page.locator("[data-currency=USD]").count() == 0
    assert sorted(row[0] for row in _rows(page, "latest-invoices")) == sorted([numbers["paid"], numbers["agent_late"]])
    main = page.locator("main").inner_text()
    assert not any(numbers[name] in main for name in ("late", "part", "usd"))
    shot(page, "invoicing-overview-agent")
    # Neither commissions nor settings are theirs.
    assert page.locator('.quick-links a[href^="/invoicing/"]').count() == 0
    for path, permission in (("/invoicing/commissions", "invoicing.commissions"), ("/invoicing/settings", "invoicing.settings")):
        answer = page.goto(site.url(path))
        assert answer.status == 403 and permission in page.locator("main").inner_text()


def test_commissions_per_employee_and_their_csv(page, site):
    login(page, site, "admin", "/invoicing")
    with page.expect_navigation():
        page.locator(".quick-links").get_by_role("link", name="Commissions").click()
    today = dt.date.fromisoformat(page.locator("#period-to").input_value())
    assert page.locator("#period-from").input_value() == today.replace(day=1).isoformat()
    # 10 % of the net paid: the agent's 200.00 paid in full and 12.00 of 119.00 of 100.00 (10.084); the
    # manager's 95.00 of 595.00 of 500.00 (79.832).
    assert _rows(page, "commissions") == [["Agent", "EUR", "€210.08", "€21.01"], [MANAGER, "EUR", "€79.83", "€7.98"]]
    assert page.locator("#commissions tfoot td").all_inner_texts() == ["EUR", "€289.91", "€28.99"]
    shot(page, "invoicing-commissions")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == f"commissions_{today.replace(day=1)}_{today}.csv"
    rows = list(csv.reader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert rows == [["employee", "currency", "paid_net", "commission"], ["Agent", "EUR", "210.08", "21.01"],
                    ["'" + MANAGER, "EUR", "79.83", "7.98"]]
    # Last month had no payments.
    with page.expect_navigation():
        page.get_by_role("link", name="Last month").click()
    assert page.locator("#commissions").count() == 0 and "No commissions" in page.locator("main").inner_text()


def test_a_bad_period_comes_back_naming_the_field(page, site):
    login(page, site, "admin", "/invoicing/commissions")
    answer = page.goto(site.url("/invoicing/commissions?from=2026-02-30&to=2026-03-31"))
    assert answer.status == 422
    assert page.locator("#period-from").get_attribute("aria-invalid") == "true"
    assert page.locator("#period-from + .field-error").inner_text() == "a date as YYYY-MM-DD"
    assert page.locator("#period-from").input_value() == "" and page.locator("#period-to").input_value() == "2026-03-31"
    answer = page.goto(site.url("/invoicing/commissions?from=2026-03-31&to=2026-03-01"))
    assert answer.status == 422
    assert page.locator("#period-to + .field-error").inner_text() == "the period ends on or after its start"
    assert page.locator("#commissions").count() == 0
    shot(page, "invoicing-commissions-bad-period")


def test_the_settings_form_refuses_a_bad_vat_id_and_saves_a_good_one(page, site):
    login(page, site, "admin", "/invoicing/settings")
    assert page.locator("#s-vat_id").input_value() == SELLER["vat_id"]
    page.fill("#s-vat_id", "DE812345678")  # the check digit should be 3
    page.fill("#s-city", "Potsdam")
    page.fill("#s-invoice_series", "")
    page.fill("#s-number_digits", "")
    with page.expect_navigation():
        page.get_by_role("button", name="Save settings").click()
    field = page.locator("[data-setting=vat_id]")
    assert page.locator("#s-vat_id").get_attribute("aria-invalid") == "true"
    assert "'DE812345678' is not a valid VAT id for DE" in field.locator(".field-error").inner_text()
    # Every mistake at once: those of the form, then the service's.
    assert page.locator("[data-errors] li").all_inner_texts() == [
        "Invoice series: this cannot be empty", "Number digits: a whole number",
        "VAT id: 'DE812345678' is not a valid VAT id for DE (with its country prefix, e.g. DE136695976; "
        "check digits are checked)"]
    assert page.locator("[data-setting=number_digits] .field-error").inner_text() == "a whole number"
    assert page.locator("#s-vat_id").input_value() == "DE812345678" and page.locator("#s-city").input_value() == "Potsdam"
    shot(page, "invoicing-settings-refused")
    stored = page.request.get(site.url("/api/invoicing/settings")).json()
    assert (stored["vat_id"], stored["city"]) == (SELLER["vat_id"], SELLER["city"])  # nothing saved

    page.fill("#s-vat_id", "de 812 345 673")
    page.fill("#s-invoice_series", "RE")
    page.fill("#s-number_digits", "6")
    with page.expect_navigation():
        page.get_by_role("button", name="Save settings").click()
    assert page.locator(".flash.ok").inner_text() == "Invoicing settings saved."
    assert page.locator("#s-vat_id").input_value() == "DE812345673"
    stored = page.request.get(site.url("/api/invoicing/settings")).json()
    assert (stored["vat_id"], stored["city"], stored["invoice_series"], stored["number_digits"], stored["legal_name"]) == (
        "DE812345673", "Potsdam", "RE", 6, SELLER["legal_name"])
    shot(page, "invoicing-settings")
