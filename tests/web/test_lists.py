"""The list view in a real browser: the filter builder (the custom field ``loyalty``), sort,
search, the column editor (kept per user), saved views, bulk actions with the server's errors
per row, what a reader and a role hiding a field see, the export link, and cursor paging."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, quote, urlsplit

from playwright.sync_api import expect

from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role, Scope
from crmcore.records.errors import NotFound
from crmcore.records.query import ListQuery

from .conftest import login, shot


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def _ids(page) -> list[int]:
    return [int(i) for i in page.locator("#records tbody tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")]


def _column(page, field: str) -> list[str]:
    return page.locator(f"#records tbody td[data-field={field}]").all_inner_texts()


def _headers(page) -> list[str]:
    return page.locator("#records thead th[data-field]").evaluate_all("ths => ths.map(t => t.dataset.field)")


def _matching(site, entity: str, filter_: dict, **query) -> list[dict]:
    """The records matching ``filter_``, read on the server as the system (the test's truth)."""
    async def read(dep):
        items, cursor = [], None
        while True:
            listed = await dep.records.list(entity, ListQuery(filter=filter_, limit=500, cursor=cursor, **query))
            items += listed.items
            if not listed.next_cursor:
                return items
            cursor = listed.next_cursor
    return site.run(read)


def _make_contacts(site, tag: str, rows: list[dict]) -> list[int]:
    async def make(dep):
        return await dep.records.bulk_create("contact", [{**row, "tags": [tag], "owner_id": site.ids["agent"]}
                                                         for row in rows])
    return site.run(make)


def _list_url(filter_: dict, **params: str) -> str:
    extra = "".join(f"&{k}={quote(v)}" for k, v in params.items())
    return f"/contact?filter={quote(json.dumps(filter_))}{extra}"


def test_filter_the_list_by_the_custom_field_sort_and_search(page, site):
    login(page, site, "admin", "/contact")
    page.get_by_text("Filter", exact=True).click()
    condition = page.locator("#conditions .condition").first
    condition.get_by_label("Field", exact=True).select_option("loyalty")
    assert condition.get_by_label("Condition", exact=True).input_value() == "eq"  # operators fit the choice field
    condition.get_by_label("Value", exact=True).select_option("gold")
    with page.expect_navigation():
        page.get_by_role("button", name="Apply filter").click()
    assert json.loads(_query(page.url)["filter"]) == {"and": [{"field": "loyalty", "op": "eq", "value": "gold"}]}
    gold = _matching(site, "contact", {"field": "loyalty", "op": "eq", "value": "gold"})
    assert gold and sorted(_ids(page)) == sorted(r["id"] for r in gold)
    assert set(_column(page, "loyalty")) == {"gold"}
    # the builder shows the filter it made
    assert page.locator("#conditions .condition").first.get_by_label("Field", exact=True).input_value() == "loyalty"
    shot(page, "contacts-list")

    page.goto(site.url("/contact"))
    page.locator("#records thead th[data-field=last_name] a").click()
    page.wait_for_url("**sort=last_name*")
    assert page.locator("#records thead th[data-field=last_name]").get_attribute("aria-sort") == "ascending"
    everyone = _matching(site, "contact", None, sort=["last_name"])
    assert _ids(page) == [r["id"] for r in everyone][:len(_ids(page))]
    page.locator("#records thead th[data-field=last_name] a").click()
    page.wait_for_url("**sort=-last_name*")
    assert page.locator("#records thead th[data-field=last_name]").get_attribute("aria-sort") == "descending"
    assert _ids(page) == [r["id"] for r in _matching(site, "contact", None, sort=["-last_name"])][:len(_ids(page))]

    page.fill("#list-q", "yılmaz")
    with page.expect_navigation():
        page.press("#list-q", "Enter")
    found = _matching(site, "contact", None, search="yılmaz")
    assert found and sorted(_ids(page)) == sorted(r["id"] for r in found)
    assert _query(page.url)["sort"] == "-last_name"  # the search keeps the sort


def test_columns_chosen_and_ordered_are_kept_per_user(page, site):
    login(page, site, "agent", "/contact")
    before = _headers(page)
    assert "email" in before and "loyalty" in before
    page.get_by_text("Columns", exact=True).click()
    page.get_by_label("Email", exact=True).uncheck()
    page.get_by_label("Created", exact=True).check()
    up = page.get_by_role("button", name="Move Loyalty up")
    for _ in range(before.index("loyalty")):  # to the front, by keyboard
        up.focus()
        page.keyboard.press("Enter")
    assert page.locator("#column-status").inner_text().startswith("Loyalty is now column 1")
    shot(page, "list-columns")
    with page.expect_navigation():
        page.get_by_role("button", name="Save columns").click()
    expected = ["loyalty", *[c for c in before if c not in ("loyalty", "email")], "created_at"]
    assert _headers(page) == expected
    page.reload()
    assert _headers(page) == expected
    # another user keeps the defaults
    other = page.context.browser.new_context()
    try:
        tab = other.new_page()
        login(tab, site, "admin", "/contact")
        assert _headers(tab) == before
    finally:
        other.close()
    page.get_by_text("Columns", exact=True).click()
    with page.expect_navigation():
        page.get_by_role("button", name="Reset to default").click()
    assert _headers(page) == before


def test_save_a_segment_and_reopen_it(page, site):
    login(page, site, "agent", _list_url({"field": "loyalty", "op": "eq", "value": "silver"}, sort="-last_name"))
    bulk = page.get_by_role("region", name="Bulk actions")
    assert bulk.get_by_role("button", name="Delete").count() == 1  # an agent edits and deletes their own...
    assert bulk.get_by_label("Assign to").count() == 0  # ...but may not hand them over
    page.get_by_text("Saved views", exact=True).click()
    page.fill("#view-name", "Silver club")
    assert page.locator("#view-shared").count() == 0  # sharing needs manage_schema
    with page.expect_navigation():
        page.get_by_role("button", name="Save view").click()
    silver = _matching(site, "contact", {"field": "loyalty", "op": "eq", "value": "silver"}, sort=["-last_name"])
    assert _ids(page) == [r["id"] for r in silver]
    page.get_by_role("navigation", name="Saved views").get_by_role("link", name="All").click()
    page.wait_for_url(site.url("/contact"))
    assert len(_ids(page)) > len(silver)
    page.get_by_role("navigation", name="Saved views").get_by_role("link", name="Silver club").click()
    page.wait_for_url("**view=*")
    assert _ids(page) == [r["id"] for r in silver]
    assert page.get_by_role("navigation", name="Saved views").get_by_role("link", name="Silver club") \
        .get_attribute("aria-current") == "page"
    assert page.locator("#conditions .condition").first.get_by_label("Field", exact=True).input_value() == "loyalty"
    # delete it
    page.get_by_text("Saved views", exact=True).click()
    with page.expect_navigation():
        page.get_by_role("button", name="Delete the view Silver club").click()
    assert page.get_by_role("link", name="Silver club").count() == 0


def test_bulk_set_a_field_show_row_errors_and_delete(page, site):
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    ids = _make_contacts(site, tag, [{"first_name": "Bulk", "last_name": f"Person {n}"} for n in range(3)])
    mine = {"field": "tags", "op": "contains", "value": tag}
    login(page, site, "admin", _list_url(mine, sort="last_name"))
    assert sorted(_ids(page)) == sorted(ids)
    bulk = page.get_by_role("region", name="Bulk actions")
    assert bulk.get_by_role("button", name="Delete").is_disabled()
    page.get_by_label("Select all on this page").check()
    assert bulk.locator("#bulk-count").inner_text() == "3 selected"

    bulk.get_by_label("Set").select_option("loyalty")
    bulk.locator("#bulk-value").select_option("bronze")
    with page.expect_navigation():
        bulk.get_by_role("button", name="Set", exact=True).click()
    assert page.locator("#list-flash").inner_text() == "3 records updated."
    assert {r["loyalty"] for r in _matching(site, "contact", mine)} == {"bronze"}
    assert set(_column(page, "loyalty")) == {"bronze"}

    # the server's errors are shown on the rows they concern; nothing is written
    page.get_by_label("Select all on this page").check()
    bulk.get_by_label("Set").select_option("email")
    bulk.locator("#bulk-value").fill("not an e-mail")
    bulk.get_by_role("button", name="Set", exact=True).click()
    errors = page.locator("#records tr.row-error td")
    errors.first.wait_for()
    assert errors.count() == 3 and "Email" in errors.first.inner_text()
    shot(page, "list-bulk-errors")
    assert "could not be changed" in bulk.locator("#bulk-status").inner_text()
    assert all(r["email"] is None for r in _matching(site, "contact", mine))

    # delete two of them
    page.get_by_label("Select all on this page").uncheck()
    doomed = ids[:2]
    for record_id in doomed:
        page.locator(f"#records tr[data-id='{record_id}'] .row-select").check()
    bulk.get_by_role("button", name="Delete").click()
    dialog = page.locator("#bulk-confirm")
    assert "Delete 2 selected records?" in dialog.inner_text()
    with page.expect_navigation():
        dialog.get_by_role("button", name="Delete").click()
    assert page.locator("#list-flash").inner_text() == "2 records deleted."
    assert _ids(page) == [ids[2]]

    async def gone(dep):
        for record_id in doomed:
            try:
                await dep.records.get("contact", record_id)
            except NotFound:
                continue
            return False
        return True
    assert site.run(gone)

    # hand the last one to another owner
    page.get_by_label("Select all on this page").check()
    bulk.get_by_label("Assign to").select_option(label="Admin")
    with page.expect_navigation():
        bulk.get_by_role("button", name="Assign").click()
    assert page.locator("#list-flash").inner_text() == "1 record updated."
    assert [r["owner_id"] for r in _matching(site, "contact", mine)] == [site.ids["admin"]]


def test_a_reader_gets_no_bulk_actions_and_hidden_fields_are_not_rendered(page, site):
    async def auditor(dep):
        await dep.auth.save_role(Role(name="list_auditor", entities={"*": {"read": Scope.ALL}},
                                      fields={"contact": {"loyalty": "hidden"}}), actor=SYSTEM)
        await dep.auth.create_user(name="Auditor", email="auditor@example.com", password="auditor password 123",
                                   role="list_auditor", actor=SYSTEM)
    site.run(auditor)
    site.users["auditor"] = ("auditor@example.com", "auditor password 123")
    login(page, site, "auditor", "/contact")
    assert _ids(page)
    assert "loyalty" not in _headers(page)
    assert page.get_by_role("columnheader", name="Loyalty").count() == 0
    gold = _matching(site, "contact", {"field": "loyalty", "op": "eq", "value": "gold"})
    assert gold and "gold" not in page.locator("main").inner_text()
    assert page.locator("select.cond-field option[value=loyalty]").count() == 0
    assert page.locator("#column-editor input[value=loyalty]").count() == 0
    assert page.locator("#bulk, .row-select, #select-all").count() == 0
    assert page.get_by_test_id("new-record").count() == 0
    assert page.get_by_test_id("export").count() == 0  # the role may not export
    # asking for the hidden field by URL shows an error, never its values
    page.goto(site.url(_list_url({"field": "loyalty", "op": "eq", "value": "gold"}, columns="loyalty,last_name")))
    assert "unknown field" in page.get_by_test_id("list-error").inner_text()
    assert _ids(page) == [] and "gold" not in page.locator("table, .empty").all_inner_texts()

    page.context.clear_cookies()
    login(page, site, "reader", "/deal")
    page.wait_for_url(site.url("/deal"))
    expect(page.locator("#records tbody tr[data-id]").first).to_be_attached()
    assert _ids(page) and page.locator("#bulk, .row-select").count() == 0
    assert page.get_by_test_id("new-record").count() == 0


def test_the_export_link_carries_the_filter(page, site):
    login(page, site, "admin", "/contact")
    page.get_by_text("Filter", exact=True).click()
    condition = page.locator("#conditions .condition").first
    condition.get_by_label("Field", exact=True).select_option("last_name")
    condition.get_by_label("Condition", exact=True).select_option("startswith")
    condition.get_by_label("Value", exact=True).fill("Y")
    page.fill("#list-q", "")
    with page.expect_navigation():
        page.get_by_role("button", name="Apply filter").click()
    href = page.get_by_test_id("export").get_attribute("href")
    assert urlsplit(href).path == "/api/exports/contact"
    assert _query(href)["filter"] == _query(page.url)["filter"]
    answer = page.request.get(site.url(href))
    assert answer.ok and answer.headers["content-type"].startswith("text/csv")
    lines = answer.text().strip().splitlines()
    expected = _matching(site, "contact", json.loads(_query(page.url)["filter"]))
    assert expected and len(lines) == 1 + len(expected)
    assert all(r["last_name"] in answer.text() for r in expected)


def test_cursor_paging_through_more_than_a_page(page, site):
    tag = f"page-{uuid.uuid4().hex[:8]}"
    ids = _make_contacts(site, tag, [{"first_name": "Paged", "last_name": f"Row {n:03d}"} for n in range(60)])
    login(page, site, "admin", _list_url({"field": "tags", "op": "contains", "value": tag}, sort="last_name"))
    page.select_option("#list-limit", "25")
    page.wait_for_url("**limit=25*")
    pages = [_ids(page)]
    assert page.get_by_test_id("previous").count() == 0
    assert page.get_by_test_id("count").is_visible()  # not counted unless asked
    while page.get_by_test_id("next").count():
        with page.expect_navigation():
            page.get_by_test_id("next").click()
        pages.append(_ids(page))
    assert [len(p) for p in pages] == [25, 25, 10]
    assert [i for p in pages for i in p] == ids  # made in last-name order
    assert "Page 3" in page.get_by_test_id("page-info").inner_text()
    with page.expect_navigation():
        page.get_by_test_id("previous").click()
    assert _ids(page) == pages[1]
    with page.expect_navigation():
        page.get_by_test_id("previous").click()
    assert _ids(page) == pages[0] and page.get_by_test_id("previous").count() == 0
    with page.expect_navigation():
        page.get_by_test_id("count").click()
    assert page.get_by_test_id("page-info").inner_text().strip() == "60 records"
