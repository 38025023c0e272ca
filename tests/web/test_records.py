"""The client card and the record forms in a real browser: a contact created with a custom field
through validation errors, a call logged on the card, the sample plugin's panel and action,
inline edits (saved, refused, and a 409 that shows what changed and overwrites nothing), the
related records, a reader's card without edit controls or hidden fields, and the money,
date-time and relation widgets round-tripping."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
import re
from urllib.parse import parse_qs, unquote, urlsplit

from playwright.sync_api import expect

from crmcore import ListQuery
from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role, Scope
from crmcore.fieldvalues import Money

from .conftest import login, shot

UTC = dt.timezone.utc


def make_contact(site, **values):
    async def create(dep):
        return (await dep.records.create("contact", {"owner_id": site.ids["agent"], **values}))["id"]
    return site.run(create)


def record(site, entity, record_id):
    async def read(dep):
        return await dep.records.get(entity, record_id)
    return site.run(read)


def row(page, field):
    return page.locator(f'.field-row[data-field="{field}"]')


def test_create_a_contact_with_a_custom_field_through_validation_errors(page, site):
    login(page, site, "agent", "/contact/new")
    assert page.locator("h1").inner_text() == "New contact"
    custom = page.locator('fieldset[data-group="custom"]')
    assert custom.locator("legend").inner_text() == "Custom fields"
    page.fill("#f-first_name", "Zeynep")
    page.fill("#f-email", "zeynep(at)example")
    page.select_option("#f-loyalty", "gold")
    page.fill("#f-phone", "(0532) 123 45 67")
    with page.expect_navigation():
        page.click("form.record-form button[type=submit]")
    expect(page.locator("#f-email-error")).to_contain_text("not a valid e-mail address")
    expect(page.locator("#f-last_name-error")).to_contain_text("required")
    expect(page.locator("#error-summary")).to_be_focused()
    assert page.input_value("#f-email") == "zeynep(at)example" and page.input_value("#f-first_name") == "Zeynep"
    assert page.input_value("#f-loyalty") == "gold"
    shot(page, "contact-form-errors")

    page.fill("#f-email", "zeynep@example.com")
    page.fill("#f-last_name", "Kaya")
    with page.expect_navigation():
        page.click("form.record-form button[type=submit]")
    assert re.fullmatch(r".*/contact/\d+", page.url)
    assert page.locator("#record-title").inner_text() == "Zeynep Kaya"
    assert page.locator('section[data-group="custom"] .field-row[data-field="loyalty"] .value').inner_text() == "gold"
    saved = record(site, "contact", int(page.url.rsplit("/", 1)[1]))
    assert (saved["last_name"], saved["email"], saved["loyalty"], saved["phone"].e164) == (
        "Kaya", "zeynep@example.com", "gold", "+905321234567")
    assert saved["owner_id"] == site.ids["agent"]


def test_log_a_call_and_add_a_task_on_the_client_card(page, site):
    contact = make_contact(site, first_name="Can", last_name="Öztürk")
    login(page, site, "agent", f"/contact/{contact}")
    page.click('details.quick[data-kind="call"] summary')
    page.fill("#q-call-subject", "Asked for a quote")
    page.fill("#q-call-body", "Wants three windows measured.\nCall back Friday.")
    page.click('form.quick-activity[data-kind="call"] button[type=submit]')
    logged = page.locator("#timeline-items li.tl-call").filter(has_text="Asked for a quote")
    expect(logged).to_be_visible()
    assert "Call back Friday." in logged.locator(".tl-body").inner_text()
    expect(page.locator("#quick-status")).to_have_text("Added to the timeline")
    assert page.locator('details.quick[data-kind="call"]').get_attribute("open") is None

    page.click('details.quick[data-kind="task"] summary')
    page.fill("#q-task-subject", "Measure the windows")
    page.fill("#q-task-due_at", "2026-07-01T15:00")
    page.click('form.quick-activity[data-kind="task"] button[type=submit]')
    task = page.locator("#timeline-items li.tl-task").filter(has_text="Measure the windows")
    expect(task).to_contain_text("3:00")

    async def activities(dep):
        page_ = await dep.records.list("activity", ListQuery(
            filter={"field": "contact", "op": "eq", "value": contact}, sort=["created_at"]))
        return page_.items
    call, todo = site.run(activities)
    assert (call["kind"], call["subject"], call["done"], call["owner_id"]) == ("call", "Asked for a quote", True,
                                                                           site.ids["agent"])
    assert (todo["kind"], todo["done"], todo["assignee"]) == ("task", False, site.ids["agent"])
    assert todo["due_at"] == dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 15:00 in Istanbul

    page.click('details.quick[data-kind="call"] summary')
    page.click('form.quick-activity[data-kind="call"] button[type=submit]')  # no subject
    expect(page.locator('form.quick-activity[data-kind="call"] [data-error-for="subject"]')).to_contain_text("required")
    page.reload()
    expect(page.locator("#timeline-items li.tl-call").filter(has_text="Asked for a quote")).to_be_visible()


def test_the_client_card_shows_the_plugins_panel_and_action_and_related_deals(page, site):
    contact = site.ids["contacts"][0]
    login(page, site, "admin", f"/contact/{contact}")
    panel = page.locator('section.plugin-panel[data-slot="record.panel"][data-panel="loyalty"]')
    assert panel.locator("h2").inner_text() == "Loyalty card"
    expect(page.get_by_test_id("sample-panel")).to_contain_text(f"Loyalty points of Yılmaz: {contact * 10}")
    assert page.get_by_test_id("sample-context").inner_text() == "contact: 4 deals"  # the item's context, as admin
    action = page.get_by_role("link", name="Send greeting")
    assert action.get_attribute("href") == f"/sample/greet?entity=contact&id={contact}"
    deals = page.locator('section.related[data-related="deal"]')
    assert sorted(deals.locator("tbody a").all_inner_texts()) == ["Deal 1", "Deal 2", "Deal 3", "Deal 4"]
    assert deals.locator(".count").inner_text() == "4"
    assert page.locator('.field-row[data-field="company"] .value a').inner_text() == "Acme Windows"
    assert page.locator('.field-row[data-field="owner_id"] .value').inner_text() == "Agent"
    shot(page, "contact-card")
    action.click()  # the plugin's own page, told which record
    expect(page.get_by_test_id("greeting")).to_have_text(f"Greetings sent for contact {contact}")


def test_inline_edit_saves_in_place_and_shows_the_servers_error(page, site):
    contact = make_contact(site, first_name="İnci", last_name="Ak")
    login(page, site, "agent", f"/contact/{contact}")
    row(page, "job_title").locator(".value").click()
    editor = row(page, "job_title").locator("form.inline-edit")
    expect(editor.locator("input")).to_be_focused()
    expect(row(page, "job_title").locator(".edit-field")).to_be_hidden()
    editor.locator("input").fill("Buyer")
    editor.locator("input").press("Enter")
    expect(row(page, "job_title").locator(".value")).to_have_text("Buyer")
    expect(row(page, "job_title").locator("form.inline-edit")).to_have_count(0)
    expect(page.locator("#timeline-items")).to_contain_text("Job title")

    row(page, "city").locator(".edit-field").focus()  # by keyboard: the pencil, then Enter
    page.keyboard.press("Enter")
    expect(row(page, "city").locator("form.inline-edit input")).to_be_focused()
    page.keyboard.type("Bursa")
    page.keyboard.press("Enter")
    expect(row(page, "city").locator(".value")).to_have_text("Bursa")

    row(page, "email").locator(".edit-field").click()
    row(page, "email").locator("form.inline-edit input").fill("inci at example")
    row(page, "email").locator("form.inline-edit button[type=submit]").click()
    expect(row(page, "email").locator(".field-error")).to_contain_text("not a valid e-mail address")
    row(page, "email").locator("form.inline-edit input").press("Escape")
    expect(row(page, "email").locator("form.inline-edit")).to_have_count(0)

    page.reload()
    assert row(page, "job_title").locator(".value").inner_text() == "Buyer"
    assert row(page, "city").locator(".value").inner_text() == "Bursa"
    saved = record(site, "contact", contact)
    assert (saved["job_title"], saved["city"], saved["email"], saved["version"]) == ("Buyer", "Bursa", None, 3)


def test_an_edit_made_meanwhile_is_shown_and_never_overwritten(page, site):
    contact = make_contact(site, first_name="Deniz", last_name="Ay", city="İzmir")
    login(page, site, "agent", f"/contact/{contact}")

    async def someone_else(dep):
        await dep.records.update("contact", contact, {"city": "Antalya", "job_title": "Owner"})
    site.run(someone_else)

    row(page, "job_title").locator(".value").click()
    row(page, "job_title").locator("form.inline-edit input").fill("Manager")
    row(page, "job_title").locator("form.inline-edit button[type=submit]").click()
    box = row(page, "job_title").locator(".conflict")
    expect(box).to_contain_text("Someone else changed this record meanwhile")
    expect(box.locator('li[data-field="city"]')).to_have_text("City: Antalya")
    expect(box.locator('li[data-field="job_title"]')).to_have_text("Job title: Owner")
    saved = record(site, "contact", contact)
    assert (saved["city"], saved["job_title"], saved["version"]) == ("Antalya", "Owner", 2)
    assert row(page, "city").locator(".value").inner_text() == "İzmir"  # the page was not silently refreshed

    box.get_by_role("button", name="Apply my change anyway").click()
    expect(row(page, "job_title").locator(".value")).to_have_text("Manager")
    expect(row(page, "city").locator(".value")).to_have_text("Antalya")
    saved = record(site, "contact", contact)
    assert (saved["city"], saved["job_title"], saved["version"]) == ("Antalya", "Manager", 3)


def test_the_company_page_lists_its_contacts(page, site):
    login(page, site, "agent", f"/company/{site.ids['company']}")
    assert page.locator("#record-title").inner_text() == "Acme Windows"
    contacts = page.locator('section.related[data-related="contact"]')
    names = contacts.locator("tbody a").all_inner_texts()
    assert {"Ayşe Yılmaz", "Mehmet Demir", "Emily Clarke"} <= set(names)
    everything = contacts.locator("a.related-all")
    link = urlsplit(everything.get_attribute("href"))
    assert link.path == "/contact"
    assert json.loads(unquote(parse_qs(link.query)["filter"][0])) == {
        "field": "company", "op": "eq", "value": site.ids["company"]}
    contacts.get_by_role("link", name="Mehmet Demir").click()
    page.wait_for_url(site.url(f"/contact/{site.ids['contacts'][1]}"))
    company = page.locator('.field-row[data-field="company"] .value a')
    assert company.get_attribute("href") == f"/company/{site.ids['company']}"


def test_a_reader_sees_no_edit_controls_and_no_hidden_field(page, site):
    async def prepare(dep):
        await dep.auth.save_role(Role(name="viewer_no_email", entities={"*": {"read": Scope.ALL}},
                                      fields={"contact": {"email": "hidden"}}), actor=SYSTEM)
        await dep.auth.create_user(name="Viewer", email="viewer@example.com", password="viewer password 123",
                                   role="viewer_no_email", actor=SYSTEM)
    site.run(prepare)
    site.users["viewer"] = ("viewer@example.com", "viewer password 123")
    contact = site.ids["contacts"][0]
    login(page, site, "viewer", f"/contact/{contact}")
    assert page.locator("#record-title").inner_text() == "Ayşe Yılmaz"
    assert page.locator('.field-row[data-field="last_name"] .value').inner_text() == "Yılmaz"
    assert page.locator('.field-row[data-field="email"]').count() == 0
    assert "ayşe@example.com" not in page.content()
    for control in ("#edit-record", ".edit-field", "[data-editable]", "details.confirm-delete", "form.quick-activity"):
        assert page.locator(control).count() == 0, control
    page.locator('.field-row[data-field="last_name"] .value').click()
    assert page.locator("form.inline-edit").count() == 0
    expect(page.get_by_test_id("sample-panel")).to_be_visible()


def test_money_date_time_and_relation_widgets_round_trip(page, site):
    login(page, site, "admin", "/deal/new")
    page.fill("#f-name", "Shop front")
    page.fill("#f-amount", "1234.50")
    page.select_option("#f-amount__currency", "USD")
    page.fill("#f-expected_close", "2026-09-30")
    page.fill("#f-company", "Acme Windows")
    expect(page.locator('input[type=hidden][name="company"]')).to_have_value(str(site.ids["company"]))
    page.fill("#f-contact", "Ayşe Yılmaz")
    expect(page.locator('input[type=hidden][name="contact"]')).to_have_value(str(site.ids["contacts"][0]))
    assert page.locator("#f-contact-options option").count() >= 1
    with page.expect_navigation():
        page.click("form.record-form button[type=submit]")
    deal_id = int(page.url.rsplit("/", 1)[1])
    assert row(page, "amount").locator(".value").inner_text() == "$1,234.50"
    assert row(page, "company").locator(".value").inner_text() == "Acme Windows"
    assert row(page, "contact").locator(".value").inner_text() == "Ayşe Yılmaz"
    deal = record(site, "deal", deal_id)
    assert deal["amount"] == Money(Decimal("1234.50"), "USD")
    assert (deal["company"], deal["contact"], deal["expected_close"]) == (
        site.ids["company"], site.ids["contacts"][0], dt.date(2026, 9, 30))

    page.goto(site.url(f"/deal/{deal_id}/edit"))
    assert page.input_value("#f-amount") == "1234.50" and page.input_value("#f-amount__currency") == "USD"
    assert page.input_value("#f-company") == "Acme Windows" and page.input_value("#f-expected_close") == "2026-09-30"

    page.goto(site.url("/activity/new"))
    page.select_option("#f-kind", "meeting")
    page.fill("#f-subject", "Measure on site")
    page.fill("#f-due_at", "2026-07-01T15:30")
    page.fill("#f-deal", "Shop front")
    expect(page.locator('input[type=hidden][name="deal"]')).to_have_value(str(deal_id))
    with page.expect_navigation():
        page.click("form.record-form button[type=submit]")
    activity_id = int(page.url.rsplit("/", 1)[1])
    assert "3:30" in row(page, "due_at").locator(".value").inner_text()
    assert record(site, "activity", activity_id)["due_at"] == dt.datetime(2026, 7, 1, 12, 30, tzinfo=UTC)

    row(page, "due_at").locator(".value").click()  # inline: the browser converts the local time
    row(page, "due_at").locator("form.inline-edit input").fill("2026-12-24T09:15")
    row(page, "due_at").locator("form.inline-edit button[type=submit]").click()
    expect(row(page, "due_at").locator(".value")).to_contain_text("9:15")
    assert record(site, "activity", activity_id)["due_at"] == dt.datetime(2026, 12, 24, 6, 15, tzinfo=UTC)
    page.goto(site.url(f"/deal/{deal_id}"))
    row(page, "amount").locator(".value").click()
    row(page, "amount").locator("form.inline-edit input").fill("99")
    row(page, "amount").locator("form.inline-edit select").select_option("EUR")
    row(page, "amount").locator("form.inline-edit button[type=submit]").click()
    expect(row(page, "amount").locator(".value")).to_have_text("€99.00")


def test_delete_asks_first(page, site):
    contact = make_contact(site, last_name="Temporary")
    login(page, site, "agent", f"/contact/{contact}")
    confirm = page.locator("details.confirm-delete form")
    expect(confirm).to_be_hidden()
    page.click("details.confirm-delete summary")
    expect(confirm).to_contain_text("Move “Temporary” to the trash?")
    with page.expect_navigation():
        confirm.get_by_role("button", name="Yes, delete").click()
    assert urlsplit(page.url).path == "/contact"

    async def trashed(dep):
        return (await dep.records.get("contact", contact, trashed=True))["deleted_at"]
    assert site.run(trashed) is not None
