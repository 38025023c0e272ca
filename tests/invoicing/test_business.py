"""Price lists, multi-currency invoices, quote validity, and automation: the invoice made when a
deal is won, overdue invoices and their reminders."""

from __future__ import annotations

import datetime as dt

from plugins.invoicing.validation import validate

from .conftest import amount, ok, problem


def _draft(client, company, lines, **header):
    return client.post("/api/invoicing/invoices", json={"company": company["id"], "lines": lines, **header})


def test_price_lists_give_volume_prices_and_discounts(billing):
    client = billing()
    company = client.company()
    window = client.product()
    handle = client.product(sku="HDL-1", name="Handle", price={"amount": "50.00", "currency": "EUR"})
    wholesale = ok(client.post("/api/invoicing_price_list", json={"name": "Wholesale", "currency": "EUR",
                                                                  "discount_percent": "5"}), 201)
    for min_quantity, price in (("0", "90"), ("10", "80")):
        ok(client.post("/api/invoicing_price", json={"price_list": wholesale["id"], "product": window["id"],
                                                     "price": price, "min_quantity": min_quantity}), 201)
    draft = ok(_draft(client, company, [{"product": window["id"], "quantity": 2}, {"product": window["id"], "quantity": 12},
                                        {"product": handle["id"], "quantity": 1}], price_list=wholesale["id"]), 201)
    assert [line["unit_price"] for line in draft["lines"]] == ["90.00", "80.00", "47.50"]  # the handle: 5 % off the list
    assert [amount(line["net_amount"]) for line in draft["lines"]] == ["180.00", "960.00", "47.50"]
    # Gross entry: the net product price carries its tax.
    gross = ok(_draft(client, company, [{"product": handle["id"], "quantity": 1}], prices_include_tax=True), 201)
    assert gross["lines"][0]["unit_price"] == "59.50" and amount(gross["total"]) == "59.50"
    # A draft follows a price list changed later on: PUT re-prices its lines.
    changed = ok(client.put(f"/api/invoicing/invoices/{draft['id']}", json={"price_list": None}))
    assert [line["unit_price"] for line in changed["lines"]] == ["100.00", "100.00", "50.00"]
    dollars = ok(client.post("/api/invoicing_price_list", json={"name": "US", "currency": "USD"}), 201)
    assert "price_list" in problem(_draft(client, company, [{"product": window["id"], "quantity": 1}], price_list=dollars["id"]))


def test_a_foreign_currency_invoice_records_its_rate_at_issue(billing):
    client = billing()
    company = client.company(country="US", vat_id=None)
    lines = [{"description": "Consulting", "quantity": 10, "unit_price": "150", "unit": "HUR", "tax_category": "S",
              "tax_rate": "19"}]
    draft = ok(_draft(client, company, lines, currency="USD"), 201)
    assert "exchange_rate" in problem(client.post(f"/api/invoicing/invoices/{draft['id']}/issue"))  # no rate known
    ok(client.post("/api/invoicing_exchange_rate", json={"currency": "USD", "rate_date": "2020-01-01", "rate": "0.9"}), 201)
    ok(client.post("/api/invoicing_exchange_rate", json={"currency": "USD", "rate_date": dt.date.today().isoformat(),
                                                         "rate": "0.92"}), 201)
    issued = ok(client.post(f"/api/invoicing/invoices/{draft['id']}/issue"))
    assert issued["exchange_rate"] == "0.92" and issued["accounting_currency"] == "EUR"
    assert issued["net_total_base"] == {"amount": "1380.00", "currency": "EUR"}  # 1500 USD at 0.92
    assert issued["total"] == {"amount": "1785.00", "currency": "USD"}
    xml = client.get(f"/api/invoicing/invoices/{issued['id']}/xml").content
    assert b"<ram:TaxCurrencyCode>EUR</ram:TaxCurrencyCode>" in xml and b'currencyID="EUR">262.20<' in xml  # 285 x 0.92
    assert validate(xml, "cii").ok
    # A rate given when issuing wins; a nonsense one is refused.
    other = ok(_draft(client, company, lines, currency="USD"), 201)
    assert "exchange_rate" in problem(client.post(f"/api/invoicing/invoices/{other['id']}/issue", json={"exchange_rate": "-1"}))
    assert ok(client.post(f"/api/invoicing/invoices/{other['id']}/issue", json={"exchange_rate": "0.95"}))["exchange_rate"] == "0.95"
    # A payment in the invoice's currency only; the rate recorded stays.
    assert "USD" in problem(client.post("/api/invoicing/payments", json={"invoice": issued["id"], "amount": "10",
                                                                        "currency": "EUR"}))["currency"]
    paid = ok(client.post("/api/invoicing/payments", json={"invoice": issued["id"], "amount": "10"}), 201)
    assert paid["amount"] == {"amount": "10.00", "currency": "USD"}
    assert ok(client.get(f"/api/invoicing/invoices/{issued['id']}"))["exchange_rate"] == "0.92"


def test_yen_and_dinar_invoices_round_to_their_currency(billing):
    client = billing()
    company = client.company()
    yen = ok(_draft(client, company, [{"description": "Tea", "quantity": 3, "unit_price": "333", "tax_category": "S",
                                       "tax_rate": "10"}], currency="JPY"), 201)
    assert yen["total"] == {"amount": "1099", "currency": "JPY"}  # 999 + 99.9 -> 100
    dinar = ok(_draft(client, company, [{"description": "Oil", "quantity": 1, "unit_price": "1.2345", "tax_category": "S",
                                         "tax_rate": "5"}], currency="KWD"), 201)
    assert dinar["total"] == {"amount": "1.297", "currency": "KWD"}  # 1.235 (1.2345 to 3 decimals) + 0.062 (0.06175)


def test_quotes_expire(billing):
    client = billing()
    company = client.company()
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    quote = ok(client.post("/api/invoicing/quotes", json={"company": company["id"], "valid_until": yesterday, "lines": [
        {"description": "Offer", "quantity": 1, "unit_price": "10"}]}), 201)
    assert "expired" in problem(client.post(f"/api/invoicing/quotes/{quote['id']}/accept"))["valid_until"]
    assert ok(client.get(f"/api/invoicing/quotes/{quote['id']}"))["status"] == "expired"
    assert "accepted" in problem(client.post(f"/api/invoicing/quotes/{quote['id']}/invoice"))["status"]
    # Quotes are numbered in their own series.
    second = ok(client.post("/api/invoicing/quotes", json={"company": company["id"], "lines": [
        {"description": "Offer", "quantity": 1, "unit_price": "10"}]}), 201)
    assert second["number"].endswith("-00002") and second["number"].startswith("Q-")


def test_a_won_deal_is_invoiced_by_automation(billing):
    client = billing()
    company = client.company()
    rule = {"name": "invoice-won-deals", "entity": "deal", "trigger": {"type": "stage_entered", "stage": "won"},
            "actions": [{"type": "invoicing.create_invoice", "issue": True}]}
    ok(client.post("/api/automation/rules", json=rule), 201)
    assert "issue" in client.post("/api/automation/rules", json={**rule, "name": "bad", "actions": [
        {"type": "invoicing.create_invoice", "issue": "yes"}]}).text
    deal = ok(client.post("/api/deal", json={"name": "Shop windows", "company": company["id"], "stage": "prospecting",
                                             "amount": {"amount": "1000", "currency": "EUR"}}), 201)
    assert ok(client.get("/api/invoicing_invoice", params={"deal": deal["id"]}))["items"] == []
    ok(client.patch(f"/api/deal/{deal['id']}", json={"stage": "won"}))
    [invoice] = ok(client.get("/api/invoicing_invoice", params={"deal": deal["id"]}))["items"]
    assert invoice["status"] == "issued" and invoice["number"].startswith("INV-")
    assert invoice["total"] == {"amount": "1190.00", "currency": "EUR"}  # the amount at the seller's 19 %
    # Won again (moved back and forth): still one invoice.
    ok(client.patch(f"/api/deal/{deal['id']}", json={"stage": "negotiation"}))
    ok(client.patch(f"/api/deal/{deal['id']}", json={"stage": "won"}))
    assert len(ok(client.get("/api/invoicing_invoice", params={"deal": deal["id"]}))["items"]) == 1

    # A deal with an accepted quote is invoiced from the quote.
    other = ok(client.post("/api/deal", json={"name": "Doors", "company": company["id"], "stage": "negotiation"}), 201)
    quote = ok(client.post("/api/invoicing/quotes", json={"deal": other["id"], "lines": [
        {"description": "Door", "quantity": 2, "unit_price": "300", "tax_category": "S", "tax_rate": "19"}]}), 201)
    ok(client.post(f"/api/invoicing/quotes/{quote['id']}/accept"))
    ok(client.patch(f"/api/deal/{other['id']}", json={"stage": "won"}))
    [invoice] = ok(client.get("/api/invoicing_invoice", params={"deal": other["id"]}))["items"]
    assert invoice["quote"] == quote["id"] and invoice["total"]["amount"] == "714.00"


def test_an_unpaid_invoice_falls_overdue_and_a_rule_sends_the_reminder(billing):
    client = billing()
    company = client.company()
    ok(client.post("/api/automation/rules", json={
        "name": "remind", "entity": "invoicing_invoice",
        "trigger": {"type": "event", "event": "invoicing.invoice.overdue"},
        "actions": [{"type": "create_task", "subject": "Call about {{ record.number }}", "assignee": "owner", "due": "1d"},
                    {"type": "generate_document", "template": "invoicing.reminder", "format": "pdf"}]}), 201)
    lines = [{"description": "Work", "quantity": 1, "unit_price": "100", "tax_category": "S", "tax_rate": "19"}]
    today = dt.date.today()
    late = ok(_draft(client, company, lines), 201)
    late = ok(client.post(f"/api/invoicing/invoices/{late['id']}/issue",
                          json={"issue_date": (today - dt.timedelta(days=20)).isoformat()}))
    assert late["due_date"] == (today - dt.timedelta(days=6)).isoformat() and late["status"] == "issued"
    paid = ok(_draft(client, company, lines), 201)
    paid = ok(client.post(f"/api/invoicing/invoices/{paid['id']}/issue",
                          json={"issue_date": (today - dt.timedelta(days=20)).isoformat()}))
    ok(client.post("/api/invoicing/payments", json={"invoice": paid["id"], "amount": "119.00"}), 201)
    current = ok(_draft(client, company, lines), 201)
    current = ok(client.post(f"/api/invoicing/invoices/{current['id']}/issue"))

    client.blocking_portal.call(client.dep.jobs.run_due)  # the overdue checks that fell due
    assert ok(client.get(f"/api/invoicing/invoices/{late['id']}"))["status"] == "overdue"
    assert ok(client.get(f"/api/invoicing/invoices/{paid['id']}"))["status"] == "paid"
    assert ok(client.get(f"/api/invoicing/invoices/{current['id']}"))["status"] == "issued"
    [task] = ok(client.get("/api/activity", params={"subject": f"Call about {late['number']}"}))["items"]
    assert task["done"] is False
    [letter] = ok(client.get("/api/documents", params={"entity": "invoicing_invoice", "record_id": late["id"]}))
    assert letter["template"] == "invoicing.reminder"
    # Paying an overdue invoice settles it: paid, and the overdue money leaves the balance.
    ok(client.post("/api/invoicing/payments", json={"invoice": late["id"], "amount": "119.00"}), 201)
    assert ok(client.get(f"/api/invoicing/invoices/{late['id']}"))["status"] == "paid"
    [account] = ok(client.get("/api/invoicing/balance", params={"company": company["id"]}))
    assert (account["overdue"], account["balance"], account["open_invoices"]) == ("0.00", "119.00", 1)
    # The current invoice falls overdue two weeks on.
    client.dep.clock.advance(days=15)
    client.blocking_portal.call(client.dep.jobs.run_due)
    assert ok(client.get(f"/api/invoicing/invoices/{current['id']}"))["status"] == "overdue"
