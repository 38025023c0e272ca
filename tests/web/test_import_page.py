"""The import page in a real browser: upload, the guessed mapping, a dry run, the import, its
progress and the error report link."""

from __future__ import annotations

from playwright.sync_api import expect

from crmcore import ListQuery

from .conftest import login, shot


def _run_jobs(site) -> None:
    site.run(lambda dep: dep.jobs.run_due())


def test_import_page_dry_run_then_import(page, site):
    login(page, site, "agent", "/import")
    assert page.url.endswith("/import")
    csv_bytes = ("Prénom,Surname,E-mail,Tel,Favourite colour\n"
                 "Zeynep,Arslan,zeynep@example.com,0532 555 11 22,blue\n"
                 "Mehmet,Demir,Mehmet@example.com,,red\n"  # already a contact: skipped
                 "Bad,,not-an-email,,green\n").encode("utf-8")
    page.select_option("#import-entity", "contact")
    page.set_input_files("#import-file", files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": csv_bytes}])
    page.click("#import-upload button[type=submit]")
    expect(page.locator("#import-options")).to_be_visible()
    expect(page.locator("select[data-column='Surname']")).to_have_value("last_name")
    expect(page.locator("select[data-column='E-mail']")).to_have_value("email")
    expect(page.locator("select[data-column='Favourite colour']")).to_have_value("")
    page.select_option("select[data-column='Favourite colour']", "notes")

    page.click("#import-dry-run")
    expect(page.locator("#import-state")).to_have_text("Waiting for a worker…")  # queued
    _run_jobs(site)
    expect(page.locator("#import-state")).to_contain_text("nothing was written")
    expect(page.locator("#import-created")).to_have_text("1")
    expect(page.locator("#import-skipped")).to_have_text("1")
    expect(page.locator("#import-rejected")).to_have_text("1")
    expect(page.locator("#import-errors")).to_be_visible()

    page.click("#import-start")
    expect(page.locator("#import-state")).to_have_text("Waiting for a worker…")
    _run_jobs(site)
    expect(page.locator("#import-state")).to_have_text("Done.")
    expect(page.locator("#import-created")).to_have_text("1")
    shot(page, "import-done")

    agent_id = site.ids["agent"]
    found = site.run(lambda dep: dep.records.list("contact", ListQuery(
        filter={"field": "email", "value": "zeynep@example.com"})))
    [record] = found.items
    assert record["owner_id"] == agent_id and record["notes"] == "blue" and record["phone"].e164 == "+905325551122"
    report = page.request.get(site.url(page.locator("#import-errors").get_attribute("href")))
    assert report.status == 200 and "4,E-mail,not-an-email" in report.text()
