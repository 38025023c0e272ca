"""The list pages without a browser: saved views and column choices (crmcore.web.views), the
list's URL state, the filter builder's translation into the filter language, cursor paging, and
permissions, through the app (``crm_client``) on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import io
import json
import re
from urllib.parse import parse_qs, urlsplit

import openpyxl
import pytest

import crmcore
from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role, Scope
from crmcore.records.errors import Forbidden, NotFound, ValidationError
from crmcore.testing import crm_user
from crmcore.web.pages.lists import ListState, builder_filter, filter_rows
from crmcore.web.render import UserFormat
from crmcore.web.views import ListViews, ViewDefinition

from .conftest import problem

HTML = {"accept": "text/html"}


def call(client, fn, *args, **kwargs):
    """``await fn(*args, **kwargs)`` on the client's event loop."""
    return client.blocking_portal.call(functools.partial(fn, *args, **kwargs))


def header(html: str) -> list[str]:
    return re.findall(r'<th scope="col" data-field="([^"]+)"', html)


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


@pytest.fixture
def shop(crm_client):
    """A deployment with the custom field ``loyalty`` on contacts and five contacts."""
    client = crm_client()
    dep = client.app.state.deployment
    call(client, dep.add_custom_field, "contact", crmcore.Field(
        name="loyalty", type="choice", label="Loyalty", choices=["gold", "silver"], in_list=True))
    people = [("Ayşe", "Yılmaz", "gold"), ("Mehmet", "Demir", "silver"), ("Emily", "Clarke", None),
              ("Jan", "Novak", "gold"), ("Li", "Wei", "silver")]
    ids = client.post("/api/contact/bulk", json=[
        {"first_name": f, "last_name": last, "loyalty": loyalty, "email": f"{f.lower()}@example.com"}
        for f, last, loyalty in people]).json()["ids"]
    client.ids = dict(zip([p[1] for p in people], ids))
    return client


def test_list_shows_default_columns_and_links_titles(shop):
    answer = shop.get("/contact", headers=HTML)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert header(html) == ["first_name", "last_name", "email", "phone", "company", "loyalty"]
    assert sorted(row_ids(html)) == sorted(shop.ids.values())
    assert f'<a href="/contact/{shop.ids["Demir"]}">Demir</a>' in html  # the title field links to the record
    assert 'href="/contact/new"' in html
    export = re.search(r'href="(/api/exports/contact[^"]*)"', html).group(1).replace("&amp;", "&")
    assert query_of(export)["fields"] == "first_name,last_name,email,phone,company,loyalty"  # what the list shows
    sheet = openpyxl.load_workbook(io.BytesIO(shop.get(export + "&format=xlsx").content)).worksheets[0]
    assert [c.value for c in next(sheet.iter_rows())] == ["id", "first_name", "last_name", "email", "phone", "company",
                                                          "loyalty"]
    assert sheet.max_row == 1 + len(shop.ids)
    assert "5 records" in html  # the whole list on one page: counted for free


def test_unknown_or_unreadable_entity_is_an_error_page(shop):
    assert shop.get("/nothing_here", headers=HTML).status_code == 404
    dep = shop.app.state.deployment
    call(shop, dep.auth.save_role, Role(name="no_deals", entities={"*": {"read": Scope.ALL}, "deal": {}}), actor=SYSTEM)
    user = crm_user(shop, role="no_deals")
    answer = shop.get("/deal", headers={**HTML, **user.headers})
    assert answer.status_code == 403 and "text/html" in answer.headers["content-type"]
    assert shop.get("/contact", headers={**HTML, **user.headers}).status_code == 200


def test_filter_builder_redirects_to_the_filter_language(shop):
    answer = shop.get("/contact", params={"q": "", "c0.field": "loyalty", "c0.op": "eq", "c0.value": "gold",
                                          "c1.field": "", "c1.op": "contains", "c1.value": ""},
                      headers=HTML, follow_redirects=False)
    assert answer.status_code == 303
    target = answer.headers["location"]
    assert json.loads(query_of(target)["filter"]) == {"and": [{"field": "loyalty", "op": "eq", "value": "gold"}]}
    html = shop.get(target, headers=HTML).text
    assert sorted(row_ids(html)) == sorted([shop.ids["Yılmaz"], shop.ids["Novak"]])
    assert 'data-testid="filter-count">1<' in html
    # the export link carries the filter
    export = re.search(r'href="(/api/exports/contact[^"]*)"', html).group(1).replace("&amp;", "&")
    assert json.loads(query_of(export)["filter"]) == {"and": [{"field": "loyalty", "op": "eq", "value": "gold"}]}
    csv = shop.get(export).text
    assert "Yılmaz" in csv and "Novak" in csv and "Demir" not in csv


def test_a_bad_filter_is_shown_not_a_crash(shop):
    html = shop.get("/contact", params={"filter": '{"field": "nope", "op": "eq", "value": 1}'}, headers=HTML).text
    assert 'data-testid="list-error"' in html and "unknown field" in html and row_ids(html) == []
    html = shop.get("/contact", params={"filter": "{not json"}, headers=HTML).text
    assert 'data-testid="list-error"' in html


def test_sort_search_and_cursor_paging(shop):
    html = shop.get("/contact", params={"sort": "-last_name", "limit": "2"}, headers=HTML).text
    names = ["Yılmaz", "Wei", "Novak", "Demir", "Clarke"]
    assert row_ids(html) == [shop.ids[n] for n in names[:2]]
    assert 'aria-sort="descending"' in html
    assert 'data-testid="count"' in html  # not counted unless asked
    seen = list(row_ids(html))
    pages = [html]
    while (after := link(pages[-1], "next")) is not None:
        pages.append(shop.get(after, headers=HTML).text)
        seen += row_ids(pages[-1])
    assert seen == [shop.ids[n] for n in names] and len(pages) == 3
    assert "OFFSET" not in after if after else True
    back = link(pages[-1], "prev")
    assert row_ids(shop.get(back, headers=HTML).text) == [shop.ids[n] for n in names[2:4]]
    first = link(shop.get(back, headers=HTML).text, "prev")
    assert row_ids(shop.get(first, headers=HTML).text) == [shop.ids[n] for n in names[:2]]
    counted = shop.get(link(pages[0], "next").replace("/contact?", "/contact?count=1&"), headers=HTML).text
    assert "5 records" in counted
    found = shop.get("/contact", params={"q": "novak"}, headers=HTML).text
    assert row_ids(found) == [shop.ids["Novak"]]


def test_columns_are_saved_per_user_and_hidden_fields_never_shown(shop):
    answer = shop.post("/contact/columns", data={"order": ["loyalty", "last_name", "email"],
                                                 "column": ["last_name", "loyalty"], "next": "/contact?sort=last_name"},
                       follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/contact?sort=last_name"
    assert header(shop.get("/contact", headers=HTML).text) == ["loyalty", "last_name"]
    # moving without scripts: the move button's value
    shop.post("/contact/columns", data={"order": ["loyalty", "last_name"], "column": ["last_name", "loyalty"],
                                        "move": "down:loyalty"})
    assert header(shop.get("/contact", headers=HTML).text) == ["last_name", "loyalty"]
    other = crm_user(shop, role="admin")
    assert header(shop.get("/contact", headers={**HTML, **other.headers}).text)[0] == "first_name"
    # a role hiding loyalty: never a column, nor in the builder, nor by URL
    dep = shop.app.state.deployment
    call(shop, dep.auth.save_role, Role(name="no_loyalty", entities={"*": {"read": Scope.ALL}, "user": {"read": Scope.ALL}},
                                        fields={"contact": {"loyalty": "hidden"}}), actor=SYSTEM)
    hidden = crm_user(shop, role="no_loyalty")
    html = shop.get("/contact", params={"columns": "loyalty,last_name"}, headers={**HTML, **hidden.headers}).text
    assert header(html) == ["last_name"] and "gold" not in html and 'value="loyalty"' not in html
    assert 'id="bulk"' not in html and "row-select" not in html  # a reader gets no bulk actions
    assert 'href="/contact/new"' not in html
    shop.post("/contact/columns", data={"reset": "1"})
    assert header(shop.get("/contact", headers=HTML).text)[0] == "first_name"


def test_saved_views_through_the_forms(shop):
    answer = shop.post("/contact/views", data={
        "name": "  Gold   members ", "filter": json.dumps({"field": "loyalty", "op": "eq", "value": "gold"}),
        "q": "", "sort": "-last_name", "columns": "last_name,loyalty"}, follow_redirects=False)
    assert answer.status_code == 303
    target = answer.headers["location"]
    html = shop.get(target, headers=HTML).text
    assert row_ids(html) == [shop.ids["Yılmaz"], shop.ids["Novak"]]
    assert header(html) == ["last_name", "loyalty"]
    assert re.search(r'data-view="\d+" aria-current="page">Gold members', html)
    # the URL's own sort wins over the view's
    assert row_ids(shop.get(target + "&sort=last_name", headers=HTML).text) == [shop.ids["Novak"], shop.ids["Yılmaz"]]
    bad = shop.post("/contact/views", data={"name": "Broken", "filter": '{"field": "nope", "op": "eq", "value": 1}'})
    assert bad.status_code == 422 and "unknown field" in bad.text
    view_id = int(query_of(target)["view"])
    assert shop.post(f"/contact/views/{view_id}/delete", follow_redirects=False).status_code == 303
    assert "Gold members" not in shop.get("/contact", headers=HTML).text


async def test_list_views_service(make_deployment):
    dep = await make_deployment()
    from crmcore.testing import make_user

    admin = await dep.auth.actor_for_user((await make_user(dep, role="admin")).id)
    agent = await dep.auth.actor_for_user((await make_user(dep, role="agent", teams=["Sales"])).id)
    views = ListViews(dep)
    gold = ViewDefinition(filter={"field": "city", "op": "eq", "value": "Izmir"}, sort=["-last_name"],
                          columns=["last_name", "city", "owner_id"])
    mine = await views.save(agent, "contact", "Izmir", gold)
    assert mine.definition.columns == ["last_name", "city", "owner_id"] and not mine.shared
    again = await views.save(agent, "contact", "Izmir", ViewDefinition(q="ayşe"))
    assert again.id == mine.id and again.definition.q == "ayşe"  # the same name replaces it
    with pytest.raises(Forbidden):
        await views.save(agent, "contact", "Everyone", gold, shared=True)
    shared = await views.save(admin, "contact", "Everyone", gold, shared=True)
    assert [v.name for v in await views.views(agent, "contact")] == ["Everyone", "Izmir"]
    assert [v.name for v in await views.views(admin, "contact")] == ["Everyone"]  # not the agent's own
    with pytest.raises(NotFound):
        await views.view(admin, "contact", mine.id)
    with pytest.raises(Forbidden):
        await views.delete(agent, "contact", shared.id)
    with pytest.raises(ValidationError):
        await views.save(agent, "contact", "Bad", ViewDefinition(sort=["nope"]))
    with pytest.raises(ValidationError):
        await views.save(agent, "contact", "", gold)
    with pytest.raises(NotFound):
        await views.save(agent, "no_such_thing", "X", gold)
    await views.delete(agent, "contact", mine.id)
    assert [v.name for v in await views.views(agent, "contact")] == ["Everyone"]

    assert await views.columns(agent, "contact") is None
    assert await views.set_columns(agent, "contact", ["email", "last_name", "email"]) == ["email", "last_name"]
    assert await views.columns(agent, "contact") == ["email", "last_name"]
    with pytest.raises(ValidationError):
        await views.set_columns(agent, "contact", ["nope"])
    with pytest.raises(ValidationError):
        await views.set_columns(agent, "contact", [])
    # a field hidden later is dropped from the saved choice
    await dep.auth.save_role(Role(name="agent_no_email", entities={"*": {a: Scope.OWN for a in ("read", "edit")}},
                                  fields={"contact": {"email": "hidden"}}), actor=SYSTEM)
    user = (await dep.auth.user(agent.user_id))["id"]
    await dep.auth.set_role(user, "agent_no_email", actor=SYSTEM)
    limited = await dep.auth.actor_for_user(user)
    assert await views.columns(limited, "contact") == ["last_name"]
    await views.reset_columns(limited, "contact")
    assert await views.columns(limited, "contact") is None


def test_builder_translation_and_back():
    from crmcore.entities import Field, FieldType as T
    from litestar.datastructures import MultiDict

    fields = {f.name: f for f in [
        Field(name="due_at", type=T.DATETIME), Field(name="amount", type=T.MONEY), Field(name="kind", type=T.CHOICE,
        choices=["call", "note"]), Field(name="done", type=T.BOOLEAN), Field(name="owner_id", type=T.RELATION, target="user"),
        Field(name="tags", type=T.TAGS)]}
    fmt = UserFormat("en", "Europe/Istanbul", "EUR")
    params = MultiDict([
        ("c0.field", "due_at"), ("c0.op", "between"), ("c0.value", "2026-05-01T09:00"), ("c0.value2", "2026-05-01T18:30"),
        ("c1.field", "kind"), ("c1.op", "in"), ("c1.value", "call"), ("c1.value", "note"),
        ("c2.field", "done"), ("c2.op", "eq"), ("c2.value", "false"),
        ("c3.field", "owner_id"), ("c3.op", "not_null"),
        ("c4.field", "amount"), ("c4.op", "gte"), ("c4.value", ""),  # incomplete: left out
        ("c5.field", "tags"), ("c5.op", "in"), ("c5.value", "vip, b2b"),
        ("c6.field", "nope"), ("c6.op", "eq"), ("c6.value", "x"),
    ])
    built = builder_filter(params, fields, fmt)
    assert built == {"and": [
        {"field": "due_at", "op": "between", "value": ["2026-05-01T09:00:00+03:00", "2026-05-01T18:30:00+03:00"]},
        {"field": "kind", "op": "in", "value": ["call", "note"]},
        {"field": "done", "op": "eq", "value": False},
        {"field": "owner_id", "op": "is_null", "value": False},
        {"field": "tags", "op": "in", "value": ["vip", "b2b"]},
    ]}
    rows = filter_rows(built, fields, fmt)
    assert rows[0] == {"field": "due_at", "kind": "datetime", "op": "between", "values": ["2026-05-01T09:00"],
                       "value2": "2026-05-01T18:30"}
    assert rows[3]["op"] == "not_null" and rows[2]["values"] == ["false"]
    assert filter_rows({"or": [{"field": "kind", "op": "eq", "value": "call"}]}, fields, fmt) is None
    assert builder_filter(MultiDict([("c0.field", "")]), fields, fmt) is None


def test_list_state_urls():
    from litestar.datastructures import MultiDict

    state = ListState.parse("deal", MultiDict([("sort", "-amount,name"), ("limit", "25"), ("q", "acme"),
                                                ("cursor", "CUR2"), ("back", "0.CUR1")]))
    assert state.sort == ["-amount", "name"] and state.limit == 25
    assert query_of(state.previous_url()) == {"sort": "-amount,name", "q": "acme", "limit": "25", "cursor": "CUR1",
                                              "back": "0"}
    assert query_of(state.next_url("CUR3"))["back"] == "0.CUR1.CUR2"
    assert query_of(state.sort_url("amount"))["sort"] == "amount"
    assert query_of(ListState.parse("deal", MultiDict([("sort", "amount")])).sort_url("amount"))["sort"] == "-amount"
    first = ListState.parse("deal", MultiDict([("cursor", "CUR1"), ("back", "0")]))
    assert first.previous_url() == "/deal"
    assert ListState.parse("deal", MultiDict()).previous_url() is None


def test_the_list_api_answers_problem_json_for_scripts(shop):
    """The bulk actions call the JSON API: its errors name the rows."""
    ids = list(shop.ids.values())[:2]
    answer = shop.patch("/api/contact/bulk", json=[{"id": ids[0], "loyalty": "gold"}, {"id": ids[1], "loyalty": "platinum"}])
    problem(answer, 422, "rows[1].loyalty")


def test_a_plugin_entity_with_every_field_type(crm_client, lab_plugin):
    """Every field type as a column, a filter condition and a sort, on a plugin's entity."""
    from .conftest import VALUES

    client = crm_client(extra_plugins=[lab_plugin], timezone="Europe/Istanbul", currency="EUR")
    company = client.post("/api/company", json={"name": "Acme"}).json()["id"]
    record = client.post("/api/lab_item", json={**{k: v[0] for k, v in VALUES.items()}, "company": company}).json()
    client.post("/api/lab_item", json={"name": "Other"})
    everything = ",".join([*VALUES, "company", "owner_id", "created_at", "updated_at"])
    html = client.get("/lab_item", params={"columns": everything, "sort": "qty"}, headers=HTML).text
    assert header(html) == everything.split(",")
    assert row_ids(html)[0] == record["id"]
    for shown in ("Widget", "42", "3.25", "€9.99", "Yes", "May 1, 2026", "red", '<span class="tag">s</span>',
                  "ayse@example.com", "+44 20 7946 0958", "https://example.com", '<span class="tag">vip</span>',
                  f'<a href="/company/{company}">Acme</a>', "Test admin"):
        assert shown in html, shown
    conditions = {"and": [
        {"field": "name", "op": "contains", "value": "Wid"}, {"field": "qty", "op": "between", "value": [40, 50]},
        {"field": "price", "op": "gte", "value": "9"}, {"field": "active", "op": "eq", "value": True},
        {"field": "day", "op": "lte", "value": "2026-05-01"}, {"field": "at", "op": "gt", "value": "2026-01-01T00:00:00Z"},
        {"field": "color", "op": "in", "value": ["red", "blue"]}, {"field": "sizes", "op": "contains", "value": "s"},
        {"field": "company", "op": "eq", "value": company}, {"field": "tags", "op": "contains", "value": "vip"},
        {"field": "owner_id", "op": "eq", "value": client.crm_user.id}, {"field": "notes", "op": "is_null", "value": False},
        {"field": "email", "op": "startswith", "value": "ayse"}, {"field": "ratio", "op": "ne", "value": "1"},
    ]}
    html = client.get("/lab_item", params={"filter": json.dumps(conditions)}, headers=HTML).text
    assert row_ids(html) == [record["id"]], html[html.find("list-error"):][:300]
    # shown as conditions, plus an empty one and the template of new ones
    assert html.count('class="condition"') == len(conditions["and"]) + 2
    assert 'type="datetime-local" name="c5.value" value="2026-01-01T03:00"' in html  # in Istanbul's time
