"""The reference scenario of MISSION.md section 5, end to end, configured through the API only.

A window shop: a web request makes a lead and a "contact within 15 minutes" task; a missed one
notifies the head of sales; the manager logs the call and fills the data, which makes a
"measurement" task for a measurer at the agreed time; the measurement result makes a pricing
task; the price accepted (the deal won) makes the contract from a document template, attached
to the deal; the deal moves to "installation" and the installer is notified; done sends the head
of sales a report. The server is restarted twice in the middle: no timer is lost or doubled.

Everything is configured as a consultant would, over HTTP: roles, users, custom fields, the
pipeline, the web form, the contract template and the rules. The test only moves the clock and runs due jobs (as the
worker would).
"""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc
# In the future of any real clock: nothing is due by real time when a server starts.
START = dt.datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
WEB = {"field": "source", "op": "startswith", "value": "web form"}
CONTRACT = """<!doctype html>
<html><head><meta charset="utf-8"><title>Contract</title></head><body>
<h1>Contract: {{ record.name }}</h1>
<p>Client: {{ related.contact.first_name }} {{ related.contact.last_name }}, {{ related.contact.phone }}</p>
<p>Price: {{ record.amount }}; measured {{ record.measurement_at | date("long") }}: {{ record.measurement_result }}</p>
<p>{{ settings.name }}</p>
</body></html>
"""


def _ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def _run_due(client) -> int:
    dep = client.app.state.deployment
    return client.blocking_portal.call(dep.jobs.run_due)


def _at(client, when: dt.datetime) -> None:
    client.app.state.deployment.clock.set(when)


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _titles(client, user) -> list[str]:
    return [n["title"] for n in _ok(client.get("/api/notifications", headers=user.headers))["items"]][::-1]


def _configure(client) -> dict:
    """The consultant's work: every piece over the API, as the admin."""
    post = lambda path, data: _ok(client.post(path, json=data), 201)  # noqa: E731
    for role, label in [("measurer", "Measurer"), ("installer", "Installer")]:
        _ok(client.put(f"/api/auth/roles/{role}", json={
            "label": label, "entities": {"*": {"read": "all"}, "deal": {"read": "all", "edit": "all"},
                                         "activity": {"read": "own", "create": "own", "edit": "own"}}}))
    users = {}
    for key, role in [("head", "sales_manager"), ("manager", "agent"), ("measurer", "measurer"),
                      ("installer", "installer")]:
        users[key] = post("/api/auth/users", {"name": key.title(), "email": f"{key}@windows.example",
                                              "password": f"{key} password 123", "role": role})
    _ok(client.patch(f"/api/user/{users['manager']['id']}", json={"manager": users["head"]["id"]}))
    for field in [{"name": "measurement_at", "type": "datetime", "label": "Measurement appointment"},
                  {"name": "measurement_result", "type": "long_text"},
                  {"name": "installed", "type": "boolean", "default": False}]:
        post("/api/meta/entities/deal/fields", field)
    post("/api/pipelines", {"name": "windows", "entity": "deal", "label": "Window orders", "stages": [
        {"name": "new", "probability": 10}, {"name": "measurement", "probability": 30},
        {"name": "pricing", "probability": 50}, {"name": "won", "kind": "won"},
        {"name": "installation", "kind": "won"}, {"name": "done", "kind": "won"},
        {"name": "lost", "kind": "lost"}]})
    post("/api/forms", {"name": "window-request", "fields": {"name": "first_name", "surname": "last_name",
                                                             "tel": "phone", "mail": "email", "message": "notes"},
                        "required": ["surname", "tel"], "owner_id": users["manager"]["id"]})
    post("/api/document-templates", {"name": "contract", "entity": "deal", "label": "Window contract",
                                     "format": "pdf", "body": CONTRACT})
    rules = [
        {"name": "lead-task", "entity": "contact", "trigger": {"type": "created"}, "condition": WEB, "actions": [
            {"type": "create_task", "kind": "call", "subject": "Contact {{ record.first_name }} {{ record.last_name }} "
             "within 15 minutes", "assignee": "owner", "due": "15m"},
            {"type": "create_record", "entity": "deal", "values": {
                "name": "Windows for {{ record.last_name }}", "pipeline": "windows"}}]},
        {"name": "lead-sla", "entity": "contact", "trigger": {"type": "created", "delay": "15m"}, "condition": WEB,
         # Unless a call, e-mail or meeting with the lead was logged (done) by then.
         "unless": {"has": {"entity": "activity", "via": "contact", "filter": {"and": [
             {"field": "kind", "op": "in", "value": ["call", "email", "meeting"]},
             {"field": "done", "op": "eq", "value": True}]}}},
         "actions": [{"type": "notify", "to": "owner_manager",
                      "title": "Lead {{ record.last_name }} not contacted within 15 minutes",
                      "body": "Phone {{ record.phone }}"}]},
        {"name": "measurement", "entity": "deal", "trigger": {"type": "field_changed", "field": "measurement_at"},
         "condition": {"field": "measurement_at", "op": "is_null", "value": False}, "actions": [
            {"type": "create_task", "kind": "meeting", "subject": "Measure: {{ record.name }}",
             "assignee": {"role": "measurer"}, "due": {"field": "measurement_at"}, "remind": "1h"},
            {"type": "move_stage", "stage": "measurement"}]},
        {"name": "pricing", "entity": "deal", "trigger": {"type": "field_changed", "field": "measurement_result"},
         "actions": [{"type": "create_task", "subject": "Price the order: {{ record.name }}", "assignee": "owner",
                      "due": "1d"},
                     {"type": "move_stage", "stage": "pricing"}]},
        # The price accepted: the contract, from the template, attached to the deal.
        {"name": "contract", "entity": "deal", "trigger": {"type": "stage_entered", "stage": "won", "pipeline": "windows"},
         "actions": [{"type": "generate_document", "template": "contract"}]},
        {"name": "won-to-installation", "entity": "deal",
         "trigger": {"type": "stage_entered", "stage": "won", "pipeline": "windows"},
         "actions": [{"type": "move_stage", "stage": "installation"}]},
        {"name": "installation", "entity": "deal", "trigger": {"type": "stage_entered", "stage": "installation"},
         "actions": [{"type": "notify", "to": {"role": "installer"}, "title": "Install: {{ record.name }}"},
                     {"type": "create_task", "subject": "Install {{ record.name }}", "assignee": {"role": "installer"},
                      "due": "3d"}]},
        {"name": "installed", "entity": "deal", "trigger": {"type": "field_changed", "field": "installed", "to": True},
         "actions": [{"type": "move_stage", "stage": "done"}]},
        {"name": "done-report", "entity": "deal", "trigger": {"type": "stage_entered", "stage": "done"},
         "actions": [{"type": "notify", "to": {"role": "sales_manager"}, "title": "Done: {{ record.name }}",
                      "body": "{{ record.name }}: {{ record.amount }}, measured {{ record.measurement_at }}, "
                              "{{ record.measurement_result }}"}]},
    ]
    for rule in rules:
        post("/api/automation/rules", rule)
    return users


def test_window_shop_end_to_end_with_restarts(crm_client):
    admin = crm_client(in_process_worker=False, region="TR", currency="EUR", timezone="Europe/Istanbul")
    path = admin.app.state.deployment.path
    admin_headers = dict(admin.headers)
    _at(admin, START)
    users = _configure(admin)
    # Each person works with an API token of their own (the admin makes them, over the API).
    headers = {key: {"Authorization": "Bearer " + _ok(admin.post("/api/auth/tokens", json={
        "name": "scenario", "user_id": user["id"]}), 201)["token"]} for key, user in users.items()}

    class Person:
        def __init__(self, key):
            self.headers, self.id = headers[key], users[key]["id"]

    head, manager, measurer, installer = (Person(k) for k in ("head", "manager", "measurer", "installer"))

    # 1. Two web requests: each makes a lead owned by the manager, a 15-minute task and a deal.
    anonymous = {"Authorization": ""}
    for name, tel in [("Yilmaz", "0532 111 22 33"), ("Demir", "0532 444 55 66")]:
        sent = admin.post("/forms/window-request", headers=anonymous,
                          data={"name": "Ayse", "surname": name, "tel": tel, "message": "3 windows, 2nd floor"})
        assert sent.status_code == 200, sent.text
    leads = {c["last_name"]: c for c in _ok(admin.get("/api/contact", params={"sort": "id"}))["items"]}
    assert set(leads) == {"Yilmaz", "Demir"} and {c["owner_id"] for c in leads.values()} == {manager.id}
    my_tasks = _ok(admin.get("/api/activity", headers=manager.headers, params={"sort": "id"}))["items"]
    assert [t["subject"] for t in my_tasks] == ["Contact Ayse Yilmaz within 15 minutes",
                                                "Contact Ayse Demir within 15 minutes"]
    assert {_time(t["due_at"]) for t in my_tasks} == {START + dt.timedelta(minutes=15)}
    deals = {d["name"]: d for d in _ok(admin.get("/api/deal", headers=manager.headers))["items"]}
    assert set(deals) == {"Windows for Yilmaz", "Windows for Demir"}
    deal = deals["Windows for Demir"]
    assert deal["pipeline"] == "windows" and deal["stage"] == "new" and deal["contact"] == leads["Demir"]["id"]

    # 2. The manager calls Demir within ten minutes; Yilmaz is missed.
    _at(admin, START + dt.timedelta(minutes=10))
    _ok(admin.post("/api/activity", headers=manager.headers, json={
        "kind": "call", "subject": "Call with Ayse Demir", "contact": leads["Demir"]["id"], "done": True}), 201)

    # A restart while the two 15-minute timers are pending.
    admin.__exit__(None, None, None)
    admin = crm_client(path, role=None, in_process_worker=False)
    admin.headers.update(admin_headers)
    _at(admin, START + dt.timedelta(minutes=16))
    assert _run_due(admin) == 2
    assert _run_due(admin) == 0
    assert _titles(admin, head) == ["Lead Yilmaz not contacted within 15 minutes"]
    sla = {f["record_id"]: f["outcome"] for f in _ok(admin.get("/api/automation/firings", params={"rule_id": 2}))}
    assert sla == {leads["Yilmaz"]["id"]: "done", leads["Demir"]["id"]: "skipped"}

    # 3. The manager fills in the data: the measurement is on Wednesday at 14:00.
    visit = START + dt.timedelta(days=2, hours=5)
    _ok(admin.patch(f"/api/deal/{deal['id']}", headers=manager.headers,
                    json={"measurement_at": visit.isoformat(), "amount": {"amount": "2400", "currency": "EUR"}}))
    assert _ok(admin.get(f"/api/deal/{deal['id']}", headers=manager.headers))["stage"] == "measurement"
    [measure] = _ok(admin.get("/api/activity", headers=measurer.headers))["items"]
    assert measure["subject"] == "Measure: Windows for Demir" and measure["assignee"] == measurer.id
    assert _time(measure["due_at"]) == visit
    assert measure["deal"] == deal["id"] and measure["contact"] == leads["Demir"]["id"]

    # A second restart while the measurer's reminder (an hour before) is pending.
    admin.__exit__(None, None, None)
    admin = crm_client(path, role=None, in_process_worker=False)
    admin.headers.update(admin_headers)
    _at(admin, visit - dt.timedelta(minutes=59))
    assert _run_due(admin) == 1
    _at(admin, visit + dt.timedelta(hours=2))
    assert _run_due(admin) == 0
    assert _titles(admin, measurer) == ["Reminder: Measure: Windows for Demir"]

    # 4. The measurer records the result and closes the task: a pricing task for the manager.
    _ok(admin.patch(f"/api/deal/{deal['id']}", headers=measurer.headers,
                    json={"measurement_result": "3 windows, 120x140 cm"}))
    _ok(admin.patch(f"/api/activity/{measure['id']}", headers=measurer.headers, json={"done": True}))
    pricing = [t for t in _ok(admin.get("/api/activity", headers=manager.headers, params={"sort": "id"}))["items"]
               if t["subject"].startswith("Price")]
    assert [t["subject"] for t in pricing] == ["Price the order: Windows for Demir"]
    assert _ok(admin.get(f"/api/deal/{deal['id']}", headers=manager.headers))["stage"] == "pricing"

    # 5. The price is accepted: the deal is won, moves on to installation, the installer is told.
    _ok(admin.patch(f"/api/deal/{deal['id']}", headers=manager.headers, json={"stage": "won"}))
    assert _ok(admin.get(f"/api/deal/{deal['id']}", headers=manager.headers))["stage"] == "installation"
    assert _titles(admin, installer) == ["Install: Windows for Demir"]
    [install] = [t for t in _ok(admin.get("/api/activity", headers=installer.headers))["items"]
                 if t["subject"].startswith("Install")]
    assert install["assignee"] == installer.id
    # The contract was made from the template and attached to the deal: the manager finds it there
    # and on the deal's timeline, and downloads the PDF.
    [contract] = _ok(admin.get("/api/documents", headers=manager.headers,
                               params={"entity": "deal", "record_id": deal["id"]}))
    assert contract["template"] == "contract" and contract["format"] == "pdf"
    pdf = admin.get(f"/api/documents/{contract['id']}", headers=manager.headers)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and len(pdf.content) == contract["size"]
    assert contract["filename"] in pdf.headers["content-disposition"]
    timeline = _ok(admin.get(f"/api/deal/{deal['id']}/timeline", headers=manager.headers))["items"]
    assert [i["link"] for i in timeline if i["kind"] == "document"] == [f"/api/documents/{contract['id']}"]
    # What it says: the same template as HTML, for the manager (stored beside it).
    preview = _ok(admin.post("/api/document-templates/contract/render", headers=manager.headers,
                             json={"entity": "deal", "record_id": deal["id"], "format": "html"}), 201)
    text = admin.get(f"/api/documents/{preview['id']}", headers=manager.headers).text
    assert "<h1>Contract: Windows for Demir</h1>" in text
    assert "Client: Ayse Demir, 0532 444 55 66" in text
    assert "Price: €2,400.00; measured March 5, 2031: 3 windows, 120x140 cm" in text

    # 6. Installed: the deal is done and the head of sales gets the report.
    _ok(admin.patch(f"/api/deal/{deal['id']}", headers=installer.headers, json={"installed": True}))
    final = _ok(admin.get(f"/api/deal/{deal['id']}", headers=manager.headers))
    assert final["stage"] == "done"
    assert _titles(admin, head) == ["Lead Yilmaz not contacted within 15 minutes", "Done: Windows for Demir"]
    report = _ok(admin.get("/api/notifications", headers=head.headers))["items"][0]
    # CLDR puts a narrow no-break space before PM.
    assert report["body"].replace("\u202f", " ") == "Windows for Demir: €2,400.00, measured Mar 5, 2031 5:00 PM, 3 windows, 120x140 cm"

    # The stage history shows the path; every firing succeeded; nothing is left to run.
    stages = _ok(admin.get(f"/api/deal/{deal['id']}/stages", headers=manager.headers))
    assert sorted(stages["history"], key=lambda e: e["at"])  # newest first or not, the same path:
    assert [e["to_stage"] for e in sorted(stages["history"], key=lambda e: (e["at"], e["id"]))] == [
        "new", "measurement", "pricing", "won", "installation", "done"]
    firings = _ok(admin.get("/api/automation/firings", params={"limit": 100}))
    assert {f["outcome"] for f in firings} == {"done", "skipped"}
    assert [f["rule"] for f in firings if f["outcome"] == "skipped"] == ["lead-sla"]
    _at(admin, visit + dt.timedelta(days=30))
    assert _run_due(admin) == 0  # nothing left behind, nothing run twice
    assert _titles(admin, head) == ["Lead Yilmaz not contacted within 15 minutes", "Done: Windows for Demir"]
    assert _titles(admin, installer) == ["Install: Windows for Demir"]
    assert _titles(admin, measurer) == ["Reminder: Measure: Windows for Demir"]
