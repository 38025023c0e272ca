"""The invoicing plugin's reports through the report API: revenue by month and owner (credit
notes taken back, foreign currency at the rate of issue), outstanding and aging by client as of
today, payments by month; each agrees with the invoices it sums, and a reader sees only theirs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from crmcore.testing import crm_user

from .conftest import ok


def _issue(client, company, price: str, issued: dt.date, *, currency: str = "EUR", **issue) -> dict:
    draft = ok(client.post("/api/invoicing/invoices", json={"company": company["id"], "currency": currency, "lines": [
        {"description": "Work", "quantity": 1, "unit_price": price, "tax_category": "S", "tax_rate": "19"}]}), 201)
    return ok(client.post(f"/api/invoicing/invoices/{draft['id']}/issue", json={"issue_date": issued.isoformat(), **issue}))


def _run(client, name: str, headers: dict | None = None) -> list[dict]:
    return ok(client.get(f"/api/reports/invoicing.{name}/run", headers=headers or {}))["rows"]


def test_revenue_outstanding_aging_and_payments(billing):
    client = billing()
    today = dt.datetime.now(ZoneInfo("Europe/Berlin")).date()
    north, south = client.company(name="North GmbH"), client.company(name="South SA")
    # due 14 days after issue: late 6, 36, 76 and 106 days; one not yet due
    _issue(client, north, "100.00", today - dt.timedelta(days=20))
    late_36 = _issue(client, north, "200.00", today - dt.timedelta(days=50))
    late_76 = _issue(client, south, "300.00", today - dt.timedelta(days=90))
    late_106 = _issue(client, south, "400.00", today - dt.timedelta(days=120))
    _issue(client, south, "50.00", today)  # not yet due
    _issue(client, north, "1000.00", today, currency="USD", exchange_rate="0.9")  # 900.00 EUR net
    ok(client.post("/api/invoicing/payments", json={"invoice": late_36["id"], "amount": "38.00", "method": "card",
                                                    "paid_on": today.isoformat()}), 201)
    note = ok(client.post(f"/api/invoicing/invoices/{late_76['id']}/credit-note", json={}))
    note = ok(client.post(f"/api/invoicing/invoices/{note['id']}/issue", json={"issue_date": today.isoformat()}))

    revenue = _run(client, "revenue_by_month_owner")
    net = {(row["issue_date_month"], row["currency"]): row for row in revenue}
    this_month = today.replace(day=1).isoformat()
    assert sum(Decimal(r["invoiced"] or 0) for r in revenue) == 100 + 200 + 300 + 400 + 50 + 900
    assert sum(Decimal(r["credited"] or 0) for r in revenue) == 300  # the credit note, in the month it was issued
    assert (net[(this_month, "EUR")]["invoiced"], net[(this_month, "EUR")]["credited"]) == ("950.00", "300.00")
    assert {row["currency"] for row in revenue} == {"EUR"}  # one accounting currency

    # open balances (tax included): 119, 238 - 38, (357 credited in full), 476, 59.50, 1190 USD
    aging = {(row["company"], row["currency"]): row for row in _run(client, "aging")}
    north_eur, south_eur = aging[(north["id"], "EUR")], aging[(south["id"], "EUR")]
    assert (north_eur["late_1_30"], north_eur["late_31_60"], north_eur["outstanding"]) == ("119.00", "200.00", "319.00")
    assert (south_eur["not_due"], south_eur["late_61_90"], south_eur["late_over_90"]) == ("59.50", "0.00", "476.00")
    assert south_eur["outstanding"] == "535.50"
    assert aging[(north["id"], "USD")]["not_due"] == "1190.00"

    client.dep.clock.advance(days=30)  # aged as of the day it runs
    north_eur = {row["company"]: row for row in _run(client, "aging") if row["currency"] == "EUR"}[north["id"]]
    assert (north_eur["late_1_30"], north_eur["late_31_60"], north_eur["late_61_90"]) == ("0.00", "119.00", "200.00")

    outstanding = {(row["company"], row["currency"]): row for row in _run(client, "outstanding")}
    assert outstanding[(south["id"], "EUR")]["outstanding"] == "535.50"
    assert outstanding[(south["id"], "EUR")]["invoices"] == 2
    assert outstanding[(south["id"], "EUR")]["oldest_due"] == late_106["due_date"]

    payments = _run(client, "payments_by_month")
    assert [(row["method"], row["received"]) for row in payments] == [("card", "38.00")]

    agent = crm_user(client, role="agent")  # owns none of them: their reports are empty
    assert _run(client, "aging", agent.headers) == [] and _run(client, "revenue_by_month_owner", agent.headers) == []


def test_the_reports_are_listed_beside_the_cores(billing):
    client = billing()
    listed = {report["name"] for report in ok(client.get("/api/reports"))}
    assert {"invoicing.revenue_by_month_owner", "invoicing.outstanding", "invoicing.aging",
            "invoicing.payments_by_month"} <= listed
