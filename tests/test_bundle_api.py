"""Configuration bundles over HTTP (``/api/bundle``), on SQLite and PostgreSQL: a deployment
configured through the API is exported, planned on a fresh one (adds), applied (the same
configuration), planned again (all same) and applied again (nothing); the routes need all three
permissions a bundle touches; a malformed bundle is a 422 naming its section and item."""

from __future__ import annotations

import pytest

from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role
from crmcore.testing import crm_user

from .conftest import problem

MANAGER = {"name": "Manager", "email": "manager@shop.example", "password": "manager password 1", "role": "agent"}
#: The sections a deployment's configuration is compared by (not format, version, export time).
CONFIGURATION = ("plugins", "custom_fields", "pipelines", "teams", "roles", "document_templates", "reports", "rules",
                 "web_forms")


def _created(response, status: int = 201) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def _configure(client) -> None:
    """A consultant's work, through the API: every section of a bundle but plugins."""
    _created(client.post("/api/auth/teams", json={"name": "Windows"}))
    manager = _created(client.post("/api/auth/users", json={**MANAGER, "teams": ["Windows"]}))
    _created(client.post("/api/meta/entities/contact/fields", json={
        "name": "loyalty", "type": "choice", "choices": ["gold", "silver"], "label": "Loyalty"}))
    stages = [{"name": "new"}, {"name": "measured", "probability": 40}, {"name": "won", "kind": "won"},
              {"name": "lost", "kind": "lost"}]
    _created(client.post("/api/pipelines", json={"name": "windows", "entity": "deal", "label": "Window orders",
                                                 "stages": stages}))
    _created(client.put("/api/auth/roles/measurer", json={"label": "Measurer", "entities": {
        "deal": {"read": "all", "edit": "all"}}}), 200)
    _created(client.post("/api/automation/rules", json={
        "name": "lead-task", "entity": "contact", "trigger": {"type": "created"},
        "actions": [{"type": "create_task", "subject": "Call {{ record.last_name }}",
                     "assignee": {"user": manager["id"]}, "due": "15m"}]}))
    _created(client.post("/api/document-templates", json={
        "name": "contract", "entity": "deal", "format": "html", "label": "Contract",
        "body": "<h1>Contract for {{ record.name }}</h1>"}))
    _created(client.post("/api/reports", json={"name": "deals_by_stage", "entity": "deal", "group_by": ["stage"],
                                               "measures": [{"op": "count"}]}))
    _created(client.post("/api/forms", json={"name": "windows", "fields": {"tel": "phone", "surname": "last_name"},
                                             "owner_id": manager["id"]}))


def _configuration(client) -> dict:
    bundle = _created(client.get("/api/bundle"), 200)
    return {section: bundle[section] for section in CONFIGURATION}


def test_a_bundle_travels_to_a_fresh_deployment_and_applying_it_twice_changes_nothing(crm_client):
    source = crm_client(name="Window Shop")
    _configure(source)
    download = source.get("/api/bundle")
    assert download.status_code == 200 and download.headers["content-type"].startswith("application/json")
    assert download.headers["content-disposition"] == 'attachment; filename="Window-Shop-bundle.json"'
    bundle = download.json()
    assert bundle["format"] == 1 and bundle["web_forms"][0]["owner"] == "manager@shop.example"

    target = crm_client()
    _created(target.post("/api/auth/users", json=MANAGER))  # people are not in a bundle: they are named by e-mail
    planned = _created(target.post("/api/bundle/plan", json=bundle), 200)
    items = {(i["section"], i["item"]): i for i in planned["items"]}
    for key in [("custom_fields", "contact.loyalty"), ("pipelines", "windows"), ("teams", "Windows"),
                ("roles", "measurer"), ("document_templates", "contract"), ("reports", "deals_by_stage"),
                ("rules", "lead-task"), ("web_forms", "windows")]:
        assert items[key]["change"] == "add", key
    assert planned["changes"] == 8 and planned["kept"] == []
    assert "windows" not in [p["name"] for p in target.get("/api/pipelines").json()]  # a plan changes nothing

    applied = _created(target.post("/api/bundle/apply", json=bundle), 200)
    assert applied["changes"] == 8
    assert {(s["section"], s["item"]) for s in applied["applied"]} == {
        k for k, i in items.items() if i["change"] == "add"}
    assert _configuration(target) == _configuration(source)
    again = _created(target.post("/api/bundle/plan", json=bundle), 200)
    assert again["changes"] == 0 and {i["change"] for i in again["items"]} == {"same"}
    assert _created(target.post("/api/bundle/apply", json=bundle), 200) == {"changes": 0, "applied": []}

    # A change in the bundle is named with its keys; what only the target has is kept.
    _created(target.post("/api/auth/teams", json={"name": "Local"}))
    bundle["pipelines"][0]["label"] = "Window orders 2027"
    planned = _created(target.post("/api/bundle/plan", json=bundle), 200)
    assert planned["changes"] == 1
    assert [i for i in planned["items"] if i["change"] == "change"] == [
        {"section": "pipelines", "item": "windows", "change": "change", "keys": ["label"]}]
    assert planned["kept"] == [{"section": "teams", "item": "Local", "change": "only_here", "keys": []}]
    _created(target.post("/api/bundle/apply", json=bundle), 200)
    assert target.get("/api/pipelines/windows").json()["label"] == "Window orders 2027"
    assert "Local" in [t["name"] for t in target.get("/api/auth/teams").json()]


def test_a_plugin_a_bundle_enables_answers_at_once(sample_plugin, crm_client):
    client = crm_client()
    problem(client.get("/api/sample/open-tickets"), 404)
    applied = _created(client.post("/api/bundle/apply", json={"format": 1, "plugins": ["sample"]}), 200)
    assert applied["applied"] == [{"section": "plugins", "item": "sample", "change": "add", "keys": []}]
    assert client.get("/api/sample/open-tickets").json() == {"open": 0}  # its routes, without a restart
    assert _created(client.post("/api/bundle/plan", json={"format": 1, "plugins": ["sample"]}), 200)["changes"] == 0


@pytest.mark.parametrize("missing", ["manage_schema", "manage_roles", "manage_automation"])
def test_each_route_needs_all_three_permissions(crm_client, missing):
    client = crm_client()
    grants = [p for p in ("manage_schema", "manage_roles", "manage_automation") if p != missing]
    client.blocking_portal.call(lambda: client.app.state.deployment.auth.save_role(
        Role(name="almost", entities={"*": {"read": "all"}}, grants=grants), actor=SYSTEM))
    almost = crm_user(client, role="almost")
    bundle = {"format": 1, "teams": ["Intruders"]}
    for response in (client.get("/api/bundle", headers=almost.headers),
                     client.post("/api/bundle/plan", json=bundle, headers=almost.headers),
                     client.post("/api/bundle/apply", json=bundle, headers=almost.headers)):
        body = problem(response, 403)
        assert f"missing: {missing}" in body["detail"], body
    assert "Intruders" not in [t["name"] for t in client.get("/api/auth/teams").json()]
    agent = crm_user(client, role="agent")
    problem(client.get("/api/bundle", headers=agent.headers), 403,
            detail="missing: manage_schema, manage_roles, manage_automation")


#: (bundle, the field the 422 names, words of its message): refused by plan and apply alike.
MALFORMED = [
    ([], "bundle", "a JSON object"),
    ({"teams": []}, "format", "not a crmcore bundle"),
    ({"format": 7}, "format", "format 7"),
    ({"format": 1, "gadgets": []}, "gadgets", "unknown field"),
    ({"format": 1, "pipelines": {"windows": {}}}, "pipelines", "Expected `array`"),
    ({"format": 1, "roles": [{"name": "ok"}, {"label": "no name"}]}, "roles[1]", "an object with a name"),
    ({"format": 1, "custom_fields": {"contact": [{"type": "text"}]}}, "custom_fields.contact[0]", "with a name"),
    ({"format": 1, "web_forms": [{"name": "w", "owner": ["someone"]}]}, "web_forms[0].owner", "e-mail"),
]
#: Well formed, but what they say this deployment cannot take: planned, then refused when applied.
UNAPPLICABLE = [
    ({"format": 1, "custom_fields": {"contact": [{"name": "size", "type": "colour"}]}}, "custom_fields",
     "custom_fields 'contact.size'"),
    ({"format": 1, "rules": [{"name": "r", "entity": "contact", "trigger": {"type": "created"}, "actions": [
        {"type": "create_task", "subject": "x", "assignee": {"user": "nobody@shop.example"}}]}]}, "rules",
     "rules 'r'"),
    ({"format": 1, "plugins": ["no_such_plugin"]}, "plugins", "no_such_plugin"),
]


def test_a_malformed_bundle_is_refused_naming_where(crm_client):
    client = crm_client()
    for bundle, field, words in MALFORMED:
        for path in ("/api/bundle/plan", "/api/bundle/apply"):
            body = problem(client.post(path, json=bundle), 422, field)
            assert any(words in e["message"] for e in body["errors"]), (bundle, body)
    for bundle, field, words in UNAPPLICABLE:
        assert client.post("/api/bundle/plan", json=bundle).status_code == 200
        body = problem(client.post("/api/bundle/apply", json=bundle), 422, field)
        assert words in body["errors"][0]["message"], body
    problem(client.post("/api/bundle/plan", content=b"{not json", headers={"content-type": "application/json"}),
            422, "body")
    too_big = b'{"format": 1, "teams": ["' + b"x" * (11 * 1024 * 1024) + b'"]}'
    problem(client.post("/api/bundle/apply", content=too_big, headers={"content-type": "application/json"}), 413)
