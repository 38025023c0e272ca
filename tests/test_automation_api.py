"""The automation API: rules CRUD, the firing log, running a rule by hand, the action list,
permissions, 422s naming the key, and the OpenAPI document, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from openapi_spec_validator import validate as validate_openapi

from crmcore.testing import crm_user
from tests.conftest import problem

UTC = dt.timezone.utc
WELCOME = {"name": "welcome", "entity": "contact", "trigger": {"type": "created"},
           "condition": {"field": "source", "op": "eq", "value": "fair"},
           "actions": [{"type": "set_field", "field": "job_title", "value": "Lead"},
                       {"type": "notify", "to": "owner", "title": "New lead {{ record.last_name }}"}]}


def test_rules_crud_and_the_firing_log(crm_client):
    client = crm_client(in_process_worker=False)
    agent = crm_user(client, role="agent")
    made = client.post("/api/automation/rules", json=WELCOME)
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["name"] == "welcome" and rule["active"] is True and rule["created_by"] == client.crm_user.id
    assert client.get(f"/api/automation/rules/{rule['id']}").json() == rule
    assert [r["name"] for r in client.get("/api/automation/rules").json()] == ["welcome"]
    assert client.get("/api/automation/rules", params={"entity": "deal"}).json() == []

    fair = client.post("/api/contact", json={"last_name": "Fair", "source": "fair", "owner_id": agent.id}).json()
    assert client.get(f"/api/contact/{fair['id']}").json()["job_title"] == "Lead"  # done before the answer
    mine = client.get("/api/notifications", headers=agent.headers).json()
    assert [n["title"] for n in mine["items"]] == ["New lead Fair"]
    client.post("/api/contact", json={"last_name": "Walk-in", "source": "shop"})
    [firing] = client.get("/api/automation/firings", params={"rule_id": rule["id"]}).json()
    assert firing["outcome"] == "done" and firing["record_id"] == fair["id"] and firing["trigger"] == "created"
    assert firing["results"][0] == {"field": "job_title", "value": "Lead"}

    # Patch: keys left out keep their value; a GET's answer may be sent back as it is.
    changed = client.patch(f"/api/automation/rules/{rule['id']}", json={"active": False}).json()
    assert changed["active"] is False and changed["actions"] == rule["actions"]
    client.post("/api/contact", json={"last_name": "Quiet", "source": "fair"})
    assert len(client.get("/api/automation/firings").json()) == 1
    back = client.patch(f"/api/automation/rules/{rule['id']}", json={**changed, "active": True})
    assert back.status_code == 200, back.text

    # Running by hand checks the condition.
    walk_in = client.get("/api/contact", params={"q": "Walk-in"}).json()["items"][0]
    ran = client.post(f"/api/automation/rules/{rule['id']}/run", json={"record_id": walk_in["id"]}).json()
    assert ran["outcome"] == "skipped" and ran["trigger"] == "run by hand"
    client.patch(f"/api/contact/{walk_in['id']}", json={"source": "fair", "owner_id": agent.id})
    ran = client.post(f"/api/automation/rules/{rule['id']}/run", json={"record_id": walk_in["id"]}).json()
    assert ran["outcome"] == "done"
    assert [f["outcome"] for f in client.get("/api/automation/firings", params={"record_id": walk_in["id"]}).json()] \
        == ["done", "skipped"]
    assert len(client.get("/api/automation/firings", params={"outcome": "skipped"}).json()) == 1
    page = client.get("/api/automation/firings", params={"limit": 1}).json()
    older = client.get("/api/automation/firings", params={"before": page[0]["id"]}).json()
    assert len(page) == 1 and len(older) == 2

    assert client.delete(f"/api/automation/rules/{rule['id']}").status_code == 204
    problem(client.get(f"/api/automation/rules/{rule['id']}"), 404)
    assert len(client.get("/api/automation/firings").json()) == 3  # the log stays


def test_rule_errors_name_the_key(crm_client):
    client = crm_client(in_process_worker=False)
    problem(client.post("/api/automation/rules", json={**WELCOME, "trigger": {"type": "created", "delay": "soon"}}),
            422, "trigger.delay")
    problem(client.post("/api/automation/rules", json={**WELCOME, "actions": [{"type": "notify", "to": {"role": "ghost"},
                                                                                  "title": "x"}]}), 422, "actions[0].to.role")
    problem(client.post("/api/automation/rules", json={**WELCOME, "condition": {"field": "shoe", "op": "eq", "value": 1}}),
            422, "condition.shoe")
    problem(client.post("/api/automation/rules", json={**WELCOME, "colour": "red"}), 422, "colour")
    problem(client.post("/api/automation/rules", content=b"[1, 2"), 422, "body")
    assert client.post("/api/automation/rules", json=WELCOME).status_code == 201
    problem(client.post("/api/automation/rules", json=WELCOME), 422, "name")
    problem(client.get("/api/automation/firings", params={"outcome": "maybe"}), 422, "outcome")
    problem(client.get("/api/automation/firings", params={"limit": "0"}), 422, "limit")
    problem(client.patch("/api/automation/rules/999", json={"active": False}), 404)
    problem(client.post("/api/automation/rules/999/run", json={"record_id": 1}), 404)
    rule = client.get("/api/automation/rules").json()[0]
    problem(client.post(f"/api/automation/rules/{rule['id']}/run", json={}), 422, "record_id")
    problem(client.post(f"/api/automation/rules/{rule['id']}/run", json={"record_id": 12345}), 404)
    assert client.get("/api/automation/firings").json() == []


def test_automation_needs_the_permission(crm_client):
    client = crm_client(in_process_worker=False)
    rule = client.post("/api/automation/rules", json=WELCOME).json()
    agent = crm_user(client, role="agent")
    for method, path in [("get", "/api/automation/rules"), ("post", "/api/automation/rules"),
                         ("get", f"/api/automation/rules/{rule['id']}"), ("patch", f"/api/automation/rules/{rule['id']}"),
                         ("delete", f"/api/automation/rules/{rule['id']}"), ("get", "/api/automation/firings"),
                         ("get", "/api/automation/actions"), ("post", f"/api/automation/rules/{rule['id']}/run")]:
        kwargs = {"json": {"active": False}} if method in ("post", "patch") else {}
        problem(getattr(client, method)(path, headers=agent.headers, **kwargs), 403)
    problem(client.get("/api/automation/rules", headers={"Authorization": ""}), 401)
    assert client.get(f"/api/automation/rules/{rule['id']}").json()["active"] is True


def test_actions_listed_and_openapi_valid(crm_client):
    client = crm_client(in_process_worker=False)
    actions = {a["name"]: a for a in client.get("/api/automation/actions").json()}
    assert set(actions) >= {"create_task", "notify", "set_field", "move_stage", "create_record", "webhook"}
    assert actions["create_task"]["plugin"] == "core" and actions["notify"]["label"] == "Notify"
    doc = client.get("/schema/openapi.json").json()
    validate_openapi(doc)
    assert {"/api/automation/rules", "/api/automation/rules/{rule_id}", "/api/automation/rules/{rule_id}/run",
            "/api/automation/firings", "/api/automation/actions"} <= set(doc["paths"])
    assert "Firing" in doc["components"]["schemas"]
