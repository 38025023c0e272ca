"""Settings in a real browser: an admin configures custom fields, pipeline stages, automation
rules, users, API tokens, webhooks and web forms through the pages; an agent is refused."""

from __future__ import annotations

import re

import httpx
import pytest

from .conftest import login, shot

ADMIN_SECTIONS = ["fields", "pipelines", "automation", "users", "roles", "plugins", "webhooks", "forms"]


def _notice(page) -> str:
    return page.locator(".flash.ok[role=status]").inner_text()


def test_settings_index_and_a_custom_field_on_contacts(page, site):
    login(page, site, "admin", "/settings")
    assert page.url == site.url("/settings")
    nav = page.get_by_role("navigation", name="Settings sections")
    for label in ["Custom fields", "Pipelines", "Automation", "Users", "Roles and teams", "API tokens", "Plugins",
                  "Webhooks", "Web forms"]:
        assert nav.get_by_role("link", name=label).is_visible()
    shot(page, "settings")

    page.locator(".settings-cards").get_by_role("link", name="Custom fields").click()
    page.wait_for_url("**/settings/fields")
    form = page.locator("#add-field form")
    # A required field without a default is refused with the service's reason, values kept.
    form.get_by_label("Label").fill("Shoe size")
    assert form.get_by_label("Name", exact=True).input_value() == "shoe_size"  # made from the label
    form.get_by_label("Type").select_option("integer")
    form.get_by_label("Required").check()
    form.get_by_role("button", name="Add field").click()
    assert "needs a default" in page.get_by_role("alert").inner_text()
    form = page.locator("#add-field form")
    assert form.get_by_label("Name", exact=True).input_value() == "shoe_size"
    form.get_by_label("Default value").fill("38")
    form.get_by_label("Shown in lists").check()
    form.get_by_role("button", name="Add field").click()
    assert "Field added." in _notice(page)
    row = page.locator("#custom-fields tr[data-field=shoe_size]")
    assert "integer" in row.inner_text() and "required" in row.inner_text()

    # The field is live at once: in the entity model and on every contact, with its default.
    meta = page.request.get(site.url("/api/meta/entities/contact")).json()
    field = next(f for f in meta["fields"] if f["name"] == "shoe_size")
    assert field["type"] == "integer" and field["in_list"] is True
    contacts = page.request.get(site.url("/api/contact?limit=5")).json()["items"]
    assert contacts and all("shoe_size" in c for c in contacts)
    created = page.request.post(site.url("/api/contact"), data={"last_name": "Fields"},
                                headers={"x-csrf-token": page.locator("meta[name=csrf-token]").get_attribute("content")})
    assert created.status == 201 and created.json()["shoe_size"] == 38

    # Relabel it, then remove and restore it.
    row.get_by_role("link", name="Edit").click()
    edit = page.locator("#edit-field form")
    edit.get_by_label("Label").fill("Shoe size (EU)")
    edit.get_by_role("button", name="Save field").click()
    assert "Field saved." in _notice(page)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#custom-fields tr[data-field=shoe_size]").get_by_role("button", name="Remove").click()
    assert "removed" in page.locator("#custom-fields tr[data-field=shoe_size]").inner_text()
    assert "shoe_size" not in page.request.get(site.url(f"/api/contact/{created.json()['id']}")).json()
    page.locator("#custom-fields tr[data-field=shoe_size]").get_by_role("button", name="Restore").click()
    assert "Field restored." in _notice(page)
    assert page.request.get(site.url(f"/api/contact/{created.json()['id']}")).json()["shoe_size"] == 38


def test_a_stage_added_and_moved_and_one_in_use_kept(page, site):
    login(page, site, "admin", "/settings/pipelines")
    name = site.run(lambda dep: _async(dep.pipeline_service.default_for("deal").name))
    page.locator("#pipelines").get_by_role("link", name="Sales").click()
    page.wait_for_url(f"**/settings/pipelines/{name}")
    form = page.locator("#pipeline-form")
    form.get_by_role("button", name="Add a stage").click()
    new_row = form.locator("tr[data-stage-row]").last
    new_row.locator("[data-stage-name]").fill("site_visit")
    new_row.get_by_label("Label").fill("Site visit")
    new_row.get_by_label("Probability").fill("35")
    # Move it up, above won and lost (right after negotiation), with its buttons.
    rows = form.locator("tr[data-stage-row]")
    names = [r.locator("td").nth(1).inner_text().strip() for r in rows.all()]
    at = len(names) - 1
    while at > names.index("negotiation") + 1:
        rows.nth(at).get_by_role("button", name="Move up").click()
        at -= 1
    assert rows.nth(at).locator("[data-stage-name]").input_value() == "site_visit"
    form.get_by_role("button", name="Save pipeline").click()
    assert "Pipeline saved." in _notice(page)
    saved = site.run(lambda dep: _async([(s.name, s.label, s.probability) for s in dep.pipelines[name].stages]))
    names = [s[0] for s in saved]
    assert ("site_visit", "Site visit", 35) in saved
    assert names.index("site_visit") == names.index("negotiation") + 1

    # Removing a stage deals are in is refused, saying which and how many.
    form = page.locator("#pipeline-form")
    form.get_by_label("Remove prospecting").check()
    form.get_by_role("button", name="Save pipeline").click()
    alert = page.get_by_role("alert").inner_text()
    assert "prospecting" in alert and "move them first" in alert
    assert "prospecting" in [s.name for s in site.run(lambda dep: _async(dep.pipelines[name].stages))]


def test_an_automation_rule_refused_then_added_and_turned_off(page, site):
    login(page, site, "admin", "/settings/automation")
    page.get_by_role("link", name="New rule").click()
    page.wait_for_url("**/settings/automation/new")
    form = page.locator("#rule-form")
    assert '"type": "created"' in form.get_by_label("Trigger (JSON)").input_value()  # an example to start from
    form.get_by_label("Name").fill("call-new-contacts")
    form.get_by_label("Records it watches").select_option("contact")
    form.get_by_label("Trigger (JSON)").fill('{"type": "created", "delay": "soon"}')
    form.get_by_label("Unless (JSON filter, for rules that wait)").fill("")
    form.get_by_label("Actions (JSON list)").fill(
        '[{"type": "create_task", "subject": "Call {{ record.first_name }}", "assignee": "owner", "due": "1h"}]')
    form.get_by_role("button", name="Add rule").click()
    alert = page.get_by_role("alert").inner_text()
    assert "trigger.delay" in alert and "15m" in alert
    form = page.locator("#rule-form")
    assert form.get_by_label("Name").input_value() == "call-new-contacts"  # what was typed is kept
    form.get_by_label("Trigger (JSON)").fill('{"type": "created", "delay": "15m"}')
    form.get_by_role("button", name="Tidy the JSON").click()
    assert '"delay": "15m"' in form.get_by_label("Trigger (JSON)").input_value()
    form.get_by_role("button", name="Add rule").click()
    page.wait_for_url("**/settings/automation?ok=rule_added*")
    row = page.locator("#rules tr[data-rule=call-new-contacts]")
    assert "created" in row.inner_text() and "create_task" in row.inner_text()
    toggle = row.get_by_role("switch")
    assert toggle.get_attribute("aria-checked") == "true"
    shot(page, "settings-automation")
    toggle.click()
    assert "Rule turned off." in _notice(page)
    assert page.locator("#rules tr[data-rule=call-new-contacts]").get_by_role("switch").get_attribute("aria-checked") == "false"
    rule = site.run(lambda dep: dep.automation.get("call-new-contacts"))
    assert rule.active is False and rule.trigger == {"type": "created", "delay": "15m"}

    # Run it by hand on a contact: the firing shows on its page and in the log.
    contact = site.ids["contacts"][2]
    page.locator("#rules").get_by_role("link", name="call-new-contacts").click()
    page.get_by_label("contact id").fill(str(contact))
    page.get_by_role("button", name="Run now").click()
    assert "done" in page.locator("#run-result").inner_text()
    page.goto(site.url(f"/settings/automation?rule={rule.id}&outcome=done"))
    assert f"contact #{contact}" in page.locator("#firings table").inner_text()


def test_a_user_added_changed_and_given_a_reset_link(page, site):
    login(page, site, "admin", "/settings/users")
    form = page.locator("#add-user")
    form.get_by_label("Name").fill("Nora Newhire")
    form.get_by_label("E-mail (the login)").fill("nora@example.com")
    form.get_by_label("Role").select_option("sales_manager")
    form.get_by_label("Sales").check()
    form.get_by_label("Password (optional: or send a reset link)").fill("short")
    form.get_by_role("button", name="Add user").click()
    assert "password" in page.get_by_role("alert").inner_text()
    form = page.locator("#add-user")
    assert form.get_by_label("E-mail (the login)").input_value() == "nora@example.com"
    form.get_by_label("Password (optional: or send a reset link)").fill("a long enough password 7")
    form.get_by_role("button", name="Add user").click()
    assert "User added." in _notice(page)
    user = site.run(lambda dep: dep.auth.user_by_email("nora@example.com"))
    assert user["role"] == "sales_manager" and user["teams"] == ["Sales"] and user["has_password"]

    row = page.locator("#users tr[data-user='nora@example.com']")
    row.locator("summary").click()
    row.get_by_label("Role").select_option("agent")
    row.get_by_label("Active (may sign in)").uncheck()
    row.get_by_role("button", name="Save").click()
    assert "User saved." in _notice(page)
    assert "disabled" in page.locator("#users tr[data-user='nora@example.com']").inner_text()
    user = site.run(lambda dep: dep.auth.user(user["id"]))
    assert user["role"] == "agent" and user["active"] is False

    row = page.locator("#users tr[data-user='nora@example.com']")
    row.locator("summary").click()
    row.get_by_role("button", name="Make a password reset link").click()
    link = page.locator("#reset-link code").inner_text()
    assert re.match(re.escape(site.url("/password/reset/")) + r"\S+$", link)


def test_an_api_token_shown_once_and_revoked(page, site):
    login(page, site, "agent", "/settings/tokens")  # every user keeps their own tokens
    form = page.locator("#add-token")
    form.get_by_label("What it is for").fill("Website sync")
    form.get_by_role("button", name="Make token").click()
    secret = page.locator("#new-token code").inner_text().strip()
    assert secret.startswith("crm_")
    me = httpx.get(site.url("/api/auth/me"), headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["user"]["email"] == site.users["agent"][0]

    page.goto(site.url("/settings/tokens"))
    assert secret not in page.content()  # shown that once only
    row = page.locator("#my-tokens tr[data-token='Website sync']")
    assert secret[:10] in row.inner_text()  # its prefix names it
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    assert "Token revoked." in _notice(page)
    assert httpx.get(site.url("/api/auth/me"), headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_a_webhook_and_its_secret(page, site):
    login(page, site, "admin", "/settings/webhooks")
    form = page.locator("#add-webhook")
    form.get_by_label("Address (URL)").fill("https://erp.example.com/hooks/crm")
    form.get_by_label("Events").fill("contact.created, deals.*")
    form.get_by_role("button", name="Add webhook").click()
    assert "unknown entity 'deals'" in page.get_by_role("alert").inner_text()
    form = page.locator("#add-webhook")
    form.get_by_label("Events").fill("contact.created, deal.*")
    form.get_by_label("Contacts").check()
    form.get_by_role("button", name="Add webhook").click()
    page.wait_for_url(re.compile(r".*/settings/webhooks/\d+\?ok=webhook_added"))
    hook_id = int(page.url.split("/settings/webhooks/")[1].split("?")[0])
    shown = page.locator("#webhook-secret code").inner_text().strip()
    hook = site.run(lambda dep: dep.webhooks.get(hook_id, secret=True))
    assert shown == hook["secret"] and shown.startswith("whsec_")
    assert hook["events"] == ["contact.created", "deal.*"] and hook["entities"] == ["contact"]

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate secret").click()
    assert "New signing secret" in _notice(page)
    rotated = page.locator("#webhook-secret code").inner_text().strip()
    assert rotated != shown and rotated == site.run(lambda dep: dep.webhooks.get(hook_id, secret=True))["secret"]


def test_a_web_form_and_its_submissions(page, site):
    login(page, site, "admin", "/settings/forms")
    form = page.locator("#add-webform")
    form.get_by_label("Name (its address is /forms/NAME)").fill("quote-request")
    form.get_by_label("Field mapping (one per line: form_field = record_field)").fill(
        "given = first_name\nfamily = last_name\nmail = email\ntel = phone")
    form.get_by_label("Required form fields (comma-separated)").fill("family, mail")
    form.get_by_label("Owner of new records").select_option(label="Agent")
    form.get_by_label("After sending, go to (URL, optional)").fill("https://shop.example.com/thanks")
    form.get_by_role("button", name="Add web form").click()
    assert "Web form added." in _notice(page)
    definition = site.run(lambda dep: dep.forms.get("quote-request"))
    assert definition.fields["tel"] == "phone" and definition.required == ["family", "mail"]
    assert definition.owner_id == site.ids["agent"] and definition.redirect_url == "https://shop.example.com/thanks"
    assert 'name="tel"' in page.locator("#embed").inner_text()

    sent = httpx.post(site.url("/forms/quote-request"), data={"given": "Zeynep", "family": "Kaya",
                                                               "mail": "zeynep@example.com"}, follow_redirects=False)
    assert sent.status_code == 303
    page.reload()
    row = page.locator("#submissions tbody tr").first
    assert "created" in row.inner_text() and "contact #" in row.inner_text()

    # A bad change is refused on the page, naming the field.
    form = page.locator("#webform")
    form.get_by_label("Find duplicates by (e-mail and phone fields)").fill("first_name")
    form.get_by_role("button", name="Save web form").click()
    assert "not an e-mail or phone field" in page.get_by_role("alert").inner_text()


def test_roles_table_and_plugins_list(page, site):
    login(page, site, "admin", "/settings/roles")
    form = page.locator("form[action='/settings/roles']")
    form.get_by_label("Label").fill("Intern")
    form.get_by_label("Start from").select_option("read_only")
    form.get_by_role("button", name="Add role").click()
    assert "Role added." in _notice(page)
    page.get_by_label("edit: Contacts").select_option("own")
    page.locator("details[data-field-rules=contact] summary").click()
    page.get_by_label("Loyalty").select_option("hidden")
    page.get_by_role("button", name="Save role").click()
    assert "Role saved." in _notice(page)
    role = site.run(lambda dep: dep.auth.role("intern"))
    assert role.entities["contact"]["edit"].value == "own" and role.entities["contact"]["read"].value == "all"
    assert role.fields == {"contact": {"loyalty": "hidden"}}

    page.goto(site.url("/settings/plugins"))
    assert "sample" in page.get_by_role("main").inner_text()


@pytest.mark.parametrize("who", ["agent", "reader"])
def test_people_without_admin_permissions_are_refused(page, site, who):
    login(page, site, who)
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").count() == 0
    for section in ADMIN_SECTIONS:
        response = page.goto(site.url(f"/settings/{section}"))
        assert response.status == 403, section
        assert "Not allowed" in page.locator("h1").inner_text()
    response = page.goto(site.url("/settings"))
    assert response.status == 200  # the overview lists what they may use: their own tokens
    assert [a.inner_text() for a in page.locator(".settings-nav a").all()] == ["Overview", "API tokens"]


async def _async(value):
    return value
