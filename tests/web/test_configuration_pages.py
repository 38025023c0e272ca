"""Document templates and the configuration bundle in a real browser: an admin writes a
template (an error shows its line, the text kept), previews it with a contact in the sandboxed
frame; downloads the bundle, uploads another, reads the diff and applies it."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from .conftest import login, shot

BODY = "<style>h1 { color: rgb(0, 0, 128) }</style>\n<h1>Dear {{ record.first_name }} {{ record.last_name }}</h1>"


def test_a_template_written_fixed_and_previewed(page, site):
    login(page, site, "admin", "/settings/documents")
    page.get_by_role("link", name="New template").click()
    page.wait_for_url("**/settings/documents/new")
    form = page.locator("#template-form")
    form.get_by_label("Title").fill("Welcome letter")
    assert form.get_by_label("Name", exact=True).input_value() == "welcome_letter"  # made from the title
    form.get_by_label("Records it is filled with").select_option("contact")
    form.get_by_label("Format").select_option("html")
    broken = BODY + "\n{% if %}"
    form.get_by_label("Template (Jinja2 HTML)").fill(broken)
    form.get_by_role("button", name="Add template").click()
    expect(page.locator("#template-form .field-error")).to_contain_text("line 3:")
    assert page.locator("#t-body").input_value() == broken  # the text kept

    page.locator("#t-body").fill(BODY)
    page.locator("#template-form").get_by_role("button", name="Add template").click()
    page.wait_for_url("**/settings/documents/welcome_letter?ok=template_added")
    expect(page.locator(".flash.ok")).to_have_text("Template added.")

    ayse = site.ids["contacts"][0]
    page.get_by_label("Contact id").fill(str(ayse))
    page.locator("#preview").get_by_role("button", name="Preview").click()
    heading = page.frame_locator("#preview-frame").locator("h1")
    expect(heading).to_have_text("Dear Ayşe Yılmaz")
    assert heading.evaluate("h => getComputedStyle(h).color") == "rgb(0, 0, 128)"  # the template's own style
    shot(page, "document-template-preview")
    documents = page.request.get(site.url(f"/api/documents?entity=contact&record_id={ayse}")).json()
    assert documents == []  # a preview stores nothing

    page.locator("#preview-record").fill("99999")
    page.locator("#preview").get_by_role("button", name="Preview").click()
    expect(page.locator("#preview-errors")).to_contain_text("99999")
    expect(page.locator("#preview-frame")).to_have_count(0)


def test_a_bundle_downloaded_then_another_uploaded_compared_and_applied(page, site):
    login(page, site, "admin", "/settings/bundle")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download bundle").click()
    assert download.value.suggested_filename.endswith("-bundle.json")
    exported = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert exported["teams"] == ["Sales"] and exported["custom_fields"]["contact"][0]["name"] == "loyalty"

    bundle = {"format": 1, "teams": ["Sales", "Installers"],
              "custom_fields": {"deal": [{"name": "measured_at", "type": "datetime", "label": "Measured at"}]}}
    page.set_input_files("#bundle-file", files=[{"name": "installers.json", "mimeType": "application/json",
                                                 "buffer": json.dumps(bundle).encode()}])
    page.get_by_role("button", name="Show the changes").click()
    diff = page.locator("#diff")
    expect(diff.get_by_role("heading", name="Changes in installers.json")).to_be_visible()
    expect(diff.locator("li[data-item=Installers]")).to_have_attribute("data-change", "add")
    expect(diff.locator("li[data-item=Sales]")).to_have_attribute("data-change", "same")
    expect(diff.locator("li[data-item='deal.measured_at']")).to_have_attribute("data-change", "add")
    expect(diff.locator("li[data-item='contact.loyalty']")).to_contain_text("kept: only here")
    expect(page.locator("#applied")).to_have_count(0)  # nothing applied yet
    shot(page, "bundle-diff")

    page.once("dialog", lambda dialog: dialog.accept())
    diff.get_by_role("button", name="Apply").click()
    applied = page.locator("#applied")
    expect(applied).to_contain_text("Changes made: 2.")
    expect(applied.locator("li")).to_have_count(2)
    teams = site.run(lambda dep: dep.auth.teams())
    assert {t["name"] for t in teams} == {"Sales", "Installers"}
    fields = site.run(lambda dep: dep.custom_fields("deal"))
    assert [f.name for f, _ in fields] == ["measured_at"]

    # A file that is not a bundle says so.
    page.set_input_files("#bundle-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.get_by_role("button", name="Show the changes").click()
    expect(page.locator("#bundle-errors")).to_contain_text("not JSON")
