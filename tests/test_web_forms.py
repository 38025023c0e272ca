"""The record page and the record forms of the web UI without a browser, on SQLite and
PostgreSQL: what the server renders and what a posted form writes (through the records service,
as the signed-in user). The browser tests (``tests/web/test_records.py``) cover the scripts."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import crmcore
from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role, Scope
from crmcore.hookspecs import hookimpl
from crmcore.testing import crm_user

HTML = {"accept": "text/html"}
UTC = dt.timezone.utc


# -- a small HTML reader ------------------------------------------------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []
        self.texts: list[str] = []

    @property
    def text(self) -> str:
        return " ".join(" ".join([*self.texts, *(c.text for c in self.children)]).split())

    def get(self, name: str) -> str | None:
        return self.attrs.get(name)

    def walk(self):
        for child in self.children:
            yield child
            yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str | bool) -> list[Node]:
        def match(node: Node) -> bool:
            if tag and node.tag != tag:
                return False
            for name, want in attrs.items():
                name = name.rstrip("_").replace("_", "-")
                if want is True:
                    if name not in node.attrs:
                        return False
                elif node.attrs.get(name) != want:
                    return False
            return True
        return [n for n in self.walk() if match(n)]

    def find(self, tag: str | None = None, **attrs: str | bool) -> Node | None:
        found = self.find_all(tag, **attrs)
        return found[0] if found else None


VOID = {"input", "br", "meta", "link", "img", "hr", "source", "wbr", "area", "base", "col", "embed", "param", "track"}


class Page(HTMLParser):
    """The parsed page: ``page.id("f-email")``, ``page.find_all("input", name="x")``."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {name: value if value is not None else "" for name, value in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.texts.append(data)

    def id(self, name: str) -> Node | None:
        return self.root.find(id=name)

    def find_all(self, tag=None, **attrs):
        return self.root.find_all(tag, **attrs)

    def find(self, tag=None, **attrs):
        return self.root.find(tag, **attrs)


def page_of(response, status: int = 200) -> Page:
    assert response.status_code == status, response.text[:3000]
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


def form_data(page: Page, form: Node) -> dict[str, str | list[str]]:
    """What a browser would post for ``form`` as it is on the page."""
    data: dict[str, list[str]] = {}
    for node in form.walk():
        name = node.get("name")
        if not name or node.get("disabled") is not None:
            continue
        if node.tag == "input":
            kind = node.get("type") or "text"
            if kind in ("checkbox", "radio") and node.get("checked") is None:
                continue
            data.setdefault(name, []).append(node.get("value") or ("on" if kind == "checkbox" else ""))
        elif node.tag == "textarea":
            data.setdefault(name, []).append(" ".join(node.texts))
        elif node.tag == "select":
            options = node.find_all("option")
            chosen = [o for o in options if o.get("selected") is not None] or options[:1]
            data.setdefault(name, []).extend(o.get("value") or "" for o in chosen)
    return {k: v[0] if len(v) == 1 else v for k, v in data.items()}


def call(client, fn, *args, **kwargs):
    """``await fn(*args, **kwargs)`` on the client's event loop (where the deployment lives)."""
    async def go():
        return await fn(*args, **kwargs)
    return client.blocking_portal.call(go)


def add_field(client, entity: str, **field) -> None:
    response = client.post(f"/api/meta/entities/{entity}/fields", json=field)
    assert response.status_code == 201, response.text


# -- the forms ----------------------------------------------------------------------------------


def test_create_form_shows_each_widget_and_the_servers_field_errors_then_saves(crm_client):
    client = crm_client(timezone="Europe/Istanbul")
    add_field(client, "contact", name="loyalty", type="choice", label="Loyalty", choices=["gold", "silver"])
    form = page_of(client.get("/contact/new"))
    assert form.id("f-loyalty").tag == "select"
    assert [o.get("value") for o in form.id("f-loyalty").find_all("option")] == ["", "gold", "silver"]
    assert form.id("f-email").get("type") == "email" and form.id("f-phone").get("type") == "tel"
    assert form.id("f-notes").tag == "textarea"
    relation = form.find("span", class_="relation", data_target="company")
    assert relation.find("input").get("name") == "company"
    assert form.id("f-last_name").get("aria-required") == "true"
    assert form.find("label", for_="f-last_name").find("span", class_="required")
    custom = form.find("fieldset", data_group="custom")
    assert custom.find("legend").text == "Custom fields" and custom.find("select", name="loyalty")

    entered = {"_csrf": "", "first_name": "Ada", "email": "not-an-email", "loyalty": "gold", "city": "İzmir"}
    refused = page_of(client.post("/contact/new", data=entered), 422)
    assert "not a valid e-mail address" in refused.id("f-email-error").text
    assert refused.id("f-email").get("aria-invalid") == "true"
    assert "f-email-error" in refused.id("f-email").get("aria-describedby")
    assert "required" in refused.id("f-last_name-error").text
    assert refused.id("f-email").get("value") == "not-an-email" and refused.id("f-city").get("value") == "İzmir"
    assert refused.id("f-loyalty").find("option", value="gold").get("selected") is not None
    summary = refused.id("error-summary")
    assert {a.get("href") for a in summary.find_all("a")} == {"#f-email", "#f-last_name"}
    assert client.get("/api/contact").json()["items"] == []

    saved = client.post("/contact/new", data={**entered, "email": "ada@example.com", "last_name": "Lovelace"},
                        follow_redirects=False)
    assert saved.status_code == 303
    record_id = int(saved.headers["location"].rsplit("/", 1)[1])
    assert saved.headers["location"] == f"/contact/{record_id}"
    record = client.get(f"/api/contact/{record_id}").json()
    assert (record["last_name"], record["email"], record["loyalty"], record["city"]) == (
        "Lovelace", "ada@example.com", "gold", "İzmir")
    assert record["owner_id"] == client.crm_user.id


def test_money_datetime_relation_and_choice_widgets_round_trip(crm_client):
    client = crm_client(timezone="Europe/Istanbul", currency="EUR")
    add_field(client, "deal", name="kick_off", type="datetime")
    add_field(client, "deal", name="segments", type="multi_choice", choices=["retail", "b2b", "export"])
    add_field(client, "deal", name="vip", type="boolean")
    add_field(client, "deal", name="budget", type="decimal")
    company = client.post("/api/company", json={"name": "Acme Windows"}).json()
    blank = page_of(client.get("/deal/new"))
    assert blank.id("f-amount__currency").find("option", selected=True).get("value") == "EUR"
    assert blank.id("f-kick_off").get("type") == "datetime-local" and blank.id("f-expected_close").get("type") == "date"
    assert [o.get("value") for o in blank.id("f-stage").find_all("option")][1:3] == ["prospecting", "qualification"]

    posted = {"name": "Shop front", "amount": "1234.50", "amount__currency": "USD", "expected_close": "2026-09-30",
              "kick_off": "2026-07-01T15:30", "segments": ["retail", "export"], "vip": "true", "budget": "0.25",
              "company": str(company["id"]), "stage": "qualification"}
    created = client.post("/deal/new", data=posted, follow_redirects=False)
    assert created.status_code == 303, created.text
    deal_id = int(created.headers["location"].rsplit("/", 1)[1])
    deal = client.get(f"/api/deal/{deal_id}").json()
    assert deal["amount"] == {"amount": "1234.50", "currency": "USD"}
    # 15:30 in Istanbul
    assert dt.datetime.fromisoformat(deal["kick_off"]) == dt.datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    assert (deal["expected_close"], deal["segments"], deal["vip"], deal["company"], deal["stage"]) == (
        "2026-09-30", ["retail", "export"], True, company["id"], "qualification")

    edit = page_of(client.get(f"/deal/{deal_id}/edit"))
    assert edit.id("f-amount").get("value") == "1234.50"
    assert edit.id("f-amount__currency").find("option", selected=True).get("value") == "USD"
    assert edit.id("f-kick_off").get("value") == "2026-07-01T15:30"
    assert {b.get("value") for b in edit.find_all("input", name="segments", checked=True)} == {"retail", "export"}
    assert edit.id("f-vip").get("checked") is not None
    assert edit.find("span", class_="relation", data_target="company").get("data-title") == "Acme Windows"
    assert edit.id("f-stage").find("option", selected=True).get("value") == "qualification"

    form = edit.find("form", class_="record-form")
    unchanged = client.post(f"/deal/{deal_id}/edit", data=form_data(edit, form), follow_redirects=False)
    assert unchanged.status_code == 303
    assert client.get(f"/api/deal/{deal_id}").json()["version"] == deal["version"]  # nothing was changed
    data = form_data(edit, form)
    del data["vip"]  # unchecked
    data["segments"] = "b2b"
    data["kick_off"] = "2026-12-24T09:00"
    assert client.post(f"/deal/{deal_id}/edit", data=data, follow_redirects=False).status_code == 303
    deal = client.get(f"/api/deal/{deal_id}").json()
    assert (deal["vip"], deal["segments"], deal["version"]) == (False, ["b2b"], 2)
    assert dt.datetime.fromisoformat(deal["kick_off"]) == dt.datetime(2026, 12, 24, 6, 0, tzinfo=UTC)


def test_edit_conflict_is_shown_and_only_the_users_changes_are_applied(crm_client):
    client = crm_client()
    contact = client.post("/api/contact", json={"last_name": "Clarke", "email": "emily@example.com"}).json()
    edit = page_of(client.get(f"/contact/{contact['id']}/edit"))
    data = form_data(edit, edit.find("form", class_="record-form"))
    assert data["version"] == "1"
    # Someone else changes the e-mail meanwhile.
    other = client.patch(f"/api/contact/{contact['id']}", json={"email": "e.clarke@example.com", "version": 1})
    assert other.status_code == 200
    conflict = page_of(client.post(f"/contact/{contact['id']}/edit", data={**data, "city": "Leeds"}), 409)
    box = conflict.id("conflict")
    assert "Email" in box.text and "e.clarke@example.com" in box.text and "City" in box.text
    assert client.get(f"/api/contact/{contact['id']}").json()["city"] is None  # nothing was saved
    # The form now holds the record as it is with the user's change over it, at the new version.
    again = form_data(conflict, conflict.find("form", class_="record-form"))
    assert (again["email"], again["city"], again["version"]) == ("e.clarke@example.com", "Leeds", "2")
    assert client.post(f"/contact/{contact['id']}/edit", data=again, follow_redirects=False).status_code == 303
    saved = client.get(f"/api/contact/{contact['id']}").json()
    assert (saved["email"], saved["city"], saved["version"]) == ("e.clarke@example.com", "Leeds", 3)


def test_roles_hidden_and_read_only_fields_and_no_edit_controls_for_readers(crm_client):
    client = crm_client()
    contact = client.post("/api/contact", json={"last_name": "Secret", "email": "hidden@example.com",
                                                "city": "Ankara"}).json()
    dep = client.app.state.deployment
    call(client, dep.auth.save_role, Role(name="no_email_reader", entities={"*": {"read": Scope.ALL}},
                                          fields={"contact": {"email": "hidden"}}), actor=SYSTEM)
    call(client, dep.auth.save_role, Role(
        name="city_reader", entities={"*": {"read": Scope.ALL, "edit": Scope.ALL, "create": Scope.ALL}},
        fields={"contact": {"city": "read"}}), actor=SYSTEM)
    reader = crm_user(client, role="no_email_reader")
    editor = crm_user(client, role="city_reader")

    seen = client.get(f"/contact/{contact['id']}", headers=reader.headers)
    card = page_of(seen)
    assert "hidden@example.com" not in seen.text and card.find(data_field="email") is None
    assert card.find(data_editable=True) is None and card.find("template") is None
    assert card.id("edit-record") is None and card.find("form", class_="quick-activity") is None
    assert card.find("details", class_="confirm-delete") is None
    assert card.find(data_field="city").text == "City Ankara"
    for path in ("/contact/new", f"/contact/{contact['id']}/edit"):
        assert client.get(path, headers={**reader.headers, **HTML}).status_code == 403
    assert client.post(f"/contact/{contact['id']}/edit", data={"last_name": "X"},
                       headers={**reader.headers, **HTML}).status_code == 403

    edit = page_of(client.get(f"/contact/{contact['id']}/edit", headers=editor.headers))
    assert edit.id("f-city") is None
    assert "Ankara" in edit.find("div", class_="form-row readonly", data_field="city").text
    card = page_of(client.get(f"/contact/{contact['id']}", headers=editor.headers))
    assert card.find(data_field="city").get("data-editable") is None
    assert card.find(data_field="email").get("data-editable") is not None
    data = {**form_data(edit, edit.find("form", class_="record-form")), "city": "Bursa", "last_name": "Open"}
    assert client.post(f"/contact/{contact['id']}/edit", data=data, headers=editor.headers,
                       follow_redirects=False).status_code == 303
    saved = client.get(f"/api/contact/{contact['id']}").json()
    assert (saved["last_name"], saved["city"]) == ("Open", "Ankara")


# -- the record page ------------------------------------------------------------------------------


def test_record_page_related_records_timeline_and_quick_activity(crm_client):
    client = crm_client()
    company = client.post("/api/company", json={"name": "Acme Windows"}).json()
    for last in ("Yılmaz", "Demir"):
        client.post("/api/contact", json={"last_name": last, "company": company["id"]})
    deal = client.post("/api/deal", json={"name": "Shop front", "company": company["id"]}).json()
    card = page_of(client.get(f"/company/{company['id']}"))
    assert card.id("record-title").text == "Acme Windows"
    contacts = card.find("section", data_related="contact")
    assert {a.text for a in contacts.find("tbody").find_all("a")} == {"Yılmaz", "Demir"}
    everything = contacts.find("a", class_="related-all")
    assert everything.text == "All 2"
    link = urlsplit(everything.get("href"))
    assert link.path == "/contact"
    assert json.loads(parse_qs(link.query)["filter"][0]) == {"field": "company", "op": "eq", "value": company["id"]}
    assert contacts.find("a", href=f"/contact/new?company={company['id']}")
    assert card.find("section", data_related="deal").find("a", href=f"/deal/{deal['id']}").text == "Shop front"
    assert "Company created" in card.id("timeline-items").text

    logged = client.post(f"/company/{company['id']}/activity", data={"kind": "call", "subject": "Called reception",
                                                                    "body": "They call back at 15:00"},
                         follow_redirects=False)
    assert logged.status_code == 303 and logged.headers["location"] == f"/company/{company['id']}#timeline"
    activity = client.get("/api/activity").json()["items"][0]
    assert (activity["kind"], activity["company"], activity["done"]) == ("call", company["id"], True)
    timeline = page_of(client.get(f"/company/{company['id']}")).id("timeline-items")
    assert timeline.find("li", data_item=f"activity-{activity['id']}").find("a").text == "Called reception"

    refused = page_of(client.post(f"/company/{company['id']}/activity", data={"kind": "task", "subject": ""}), 422)
    assert refused.find("details", data_kind="task").get("open") is not None
    assert "subject" in refused.find("details", data_kind="task").find("p", class_="field-error").text

    new_form = page_of(client.get(f"/contact/new?company={company['id']}"))
    assert new_form.id("f-company").get("value") == str(company["id"])


def test_timeline_pages_with_a_more_link(crm_client):
    client = crm_client()
    contact = client.post("/api/contact", json={"last_name": "Busy"}).json()
    for n in range(30):
        client.post("/api/activity", json={"kind": "note", "subject": f"Note {n}", "contact": contact["id"]})
    first = page_of(client.get(f"/contact/{contact['id']}"))
    shown = first.id("timeline-items").children
    assert len(shown) == 20
    more = first.id("timeline-more").get("href")
    second = page_of(client.get(more))
    items = [li.get("data-item") for li in second.id("timeline-items").children]
    assert len(items) == 11 and not set(items) & {li.get("data-item") for li in shown}  # 30 notes + created
    assert second.id("timeline-more") is None


def test_delete_moves_the_record_to_the_trash_and_checks_the_version(crm_client):
    client = crm_client()
    contact = client.post("/api/contact", json={"last_name": "Gone"}).json()
    card = page_of(client.get(f"/contact/{contact['id']}"))
    form = card.find("details", class_="confirm-delete").find("form")
    data = form_data(card, form)
    client.patch(f"/api/contact/{contact['id']}", json={"city": "Rome"})
    stale = page_of(client.post(form.get("action"), data=data), 409)
    assert "not deleted" in stale.find("p", class_="flash error").text
    assert client.get(f"/api/contact/{contact['id']}").status_code == 200
    fresh = stale.find("details", class_="confirm-delete").find("form")
    gone = client.post(fresh.get("action"), data=form_data(stale, fresh), follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/contact"
    assert client.get(f"/contact/{contact['id']}", headers=HTML).status_code == 404
    assert client.get("/api/contact/trash").json()["items"][0]["id"] == contact["id"]


class BrokenPanel:
    """A plugin whose record panel names a template that does not exist."""

    PLUGIN = crmcore.PluginInfo(name="broken_panel", version="1", description="a broken record panel")

    @staticmethod
    @hookimpl
    def crm_ui_items(register):
        register(crmcore.UIItem(slot="record.panel", entity="contact", name="oops", label="Oops",
                                template="broken_panel/missing.html"))
        register(crmcore.UIItem(slot="record.action", entity="contact", name="ring", label="Ring",
                                url="/ring?via=pbx"))
        register(crmcore.UIItem(slot="record.panel", entity="deal", name="elsewhere", label="Elsewhere",
                                template="broken_panel/missing.html"))


def test_plugin_panels_and_actions_and_a_broken_panel_does_not_break_the_page(crm_client):
    client = crm_client(extra_plugins=[BrokenPanel])
    contact = client.post("/api/contact", json={"last_name": "Panel"}).json()
    card = page_of(client.get(f"/contact/{contact['id']}"))
    panel = card.find("section", data_panel="oops")
    assert panel.get("data-slot") == "record.panel" and "could not be shown" in panel.text
    assert card.find("section", data_panel="elsewhere") is None
    action = card.find("a", data_action="ring")
    assert action.get("href") == f"/ring?via=pbx&entity=contact&id={contact['id']}" and action.text == "Ring"


def test_unknown_entity_types_and_records_answer_404(crm_client):
    client = crm_client()
    assert client.get("/nothing/1", headers=HTML).status_code == 404
    assert client.get("/nothing/new", headers=HTML).status_code == 404
    assert client.get("/contact/999", headers=HTML).status_code == 404
    assert client.get("/contact/999/edit", headers=HTML).status_code == 404
