"""Web-form lead capture over HTTP (SQLite and PostgreSQL): configuration by API and CLI, the
public endpoint (form posts and JSON), dedup by normalised phone and e-mail, honeypot, rate
limit, invalid input, the submission log and the event every create emits."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

import crmcore
from crmcore import ListQuery, hookimpl
from crmcore.testing import crm_user

from .conftest import problem

UTC = dt.timezone.utc


class Listener:
    """An in-test plugin recording crm_after_commit events."""

    PLUGIN = crmcore.PluginInfo(name="listener", version="1", description="records events")
    events: list = []

    @staticmethod
    @hookimpl
    def crm_after_commit(event):
        Listener.events.append((event.entity, event.action, event.record_id))


def call(client, fn, *args, **kwargs):
    return client.blocking_portal.call(lambda: fn(*args, **kwargs))


@pytest.fixture
def site(crm_client):
    """A deployment read in Turkey with a configured ``lead`` form; the client is anonymous
    (``client.admin`` holds the admin's headers)."""
    Listener.events = []
    client = crm_client(region="TR", extra_plugins=[Listener])
    client.admin = dict(client.headers)
    owner = crm_user(client, role="agent", email="owner@example.com")
    made = client.post("/api/forms", json={
        "name": "lead", "fields": {"name": "last_name", "tel": "phone", "mail": "email", "message": "notes"},
        "required": ["name"], "dedup": ["phone", "email"], "owner_id": owner.id, "rate_limit": 5,
    })
    assert made.status_code == 201, made.text
    client.headers.pop("Authorization")
    client.owner = owner
    client.dep = client.app.state.deployment
    client.dep.clock.set(dt.datetime.now(UTC))
    return client


def contacts(client) -> list[dict]:
    return call(client, client.dep.records.list, "contact", ListQuery(sort=["id"])).items


def log(client) -> list[str]:
    return [s["outcome"] for s in call(client, client.dep.forms.submissions, "lead")][::-1]


def test_form_post_creates_an_owned_contact_and_emits_the_event(site):
    done = site.post("/forms/lead", data={"name": "Yılmaz", "tel": "(0532) 123 45 67", "mail": "Ayse@Example.com",
                                          "message": "Three windows", "_gotcha": ""})
    assert done.status_code == 200, done.text
    assert done.json() == {"ok": True, "message": "Thank you, we will be in touch."}
    [contact] = contacts(site)
    assert contact["last_name"] == "Yılmaz" and contact["phone"].e164 == "+905321234567"
    assert contact["email"] == "Ayse@example.com" and contact["notes"] == "Three windows"
    assert contact["owner_id"] == site.owner.id and contact["source"] == "web form lead"
    assert ("contact", "create", contact["id"]) in Listener.events  # rules run as for any create
    [entry] = site.get("/api/forms/lead/submissions", headers=site.admin).json()
    assert entry["outcome"] == "created" and entry["record_id"] == contact["id"] and entry["ip"]


def test_duplicates_by_phone_format_and_email_case_log_a_note_instead(site):
    assert site.post("/forms/lead", data={"name": "Kaya", "tel": "(0532) 123 45 67"}).status_code == 200
    again = site.post("/forms/lead", json={"name": "Kaya again", "tel": "+90 532 1234567", "message": "Call me"})
    assert again.status_code == 200 and again.json()["ok"] is True  # the same answer: nothing leaks
    assert site.post("/forms/lead", data={"name": "K", "tel": "0532-123-4567"}).status_code == 200
    [contact] = contacts(site)
    assert contact["last_name"] == "Kaya"  # unchanged
    notes = call(site, site.dep.records.list, "activity", ListQuery(sort=["id"])).items
    assert [(n["kind"], n["contact"], n["assignee"]) for n in notes] == [("note", contact["id"], site.owner.id)] * 2
    assert "message: Call me" in notes[0]["body"] and "Web form 'lead'" in notes[0]["subject"]
    # E-mail addresses whatever their letter case; the mobile field counts as a phone too.
    call(site, site.dep.records.create, "contact", {"last_name": "Demir", "email": "Demir@Example.com",
                                                   "mobile": "+90 555 000 11 22"})
    assert site.post("/forms/lead", data={"name": "D", "mail": "demir@EXAMPLE.com"}).status_code == 200
    assert site.post("/forms/lead", data={"name": "D", "tel": "0555 000 1122"}).status_code == 200
    assert len(contacts(site)) == 2
    assert log(site) == ["created", "duplicate", "duplicate", "duplicate", "duplicate"]


def test_honeypot_pretends_success_and_creates_nothing(site):
    done = site.post("/forms/lead", data={"name": "Bot", "tel": "+90 532 000 0000", "_gotcha": "http://spam"})
    assert done.status_code == 200 and done.json()["ok"] is True
    assert contacts(site) == [] and log(site) == ["spam"]


def test_rate_limit_per_address_answers_429_with_retry_after(site):
    for n in range(5):
        assert site.post("/forms/lead", data={"name": f"Lead {n}"}).status_code == 200
    limited = problem(site.post("/forms/lead", data={"name": "One too many"}), 429)
    assert "too many submissions" in limited["detail"]
    response = site.post("/forms/lead", data={"name": "Still too many"})
    assert response.status_code == 429 and 1 <= int(response.headers["retry-after"]) <= 60
    assert len(contacts(site)) == 5 and log(site)[-2:] == ["rate_limited", "rate_limited"]
    site.dep.clock.advance(seconds=61)  # the window is counted in the database with the deployment's clock
    assert site.post("/forms/lead", data={"name": "Later"}).status_code == 200
    assert len(contacts(site)) == 6


def test_invalid_input_is_422_naming_the_form_field(site):
    problem(site.post("/forms/lead", data={"tel": "+90 532 1234567"}), 422, "name")
    problem(site.post("/forms/lead", data={"name": "Kaya", "mail": "not-an-email"}), 422, "mail")
    problem(site.post("/forms/lead", data={"name": "Kaya", "tel": "12"}), 422, "tel")
    problem(site.post("/forms/lead", json={"name": "Kaya", "tel": {"nested": 1}}), 422, "body")
    problem(site.post("/forms/lead", json=["not", "an", "object"]), 422, "body")
    problem(site.post("/forms/lead", content=b"{broken", headers={"content-type": "application/json"}), 422, "body")
    problem(site.post("/forms/lead", data={"name": "x" * 20_000}), 422, "name")
    problem(site.post("/forms/lead", content=b"name=Kaya", headers={"content-type": "text/plain"}), 415)
    problem(site.post("/forms/nope", data={"name": "Kaya"}), 404)
    problem(site.post("/forms/Bad%20Name", data={"name": "Kaya"}), 404)
    assert contacts(site) == [] and set(log(site)) == {"invalid"}


def test_form_configuration_api(site):
    admin = site.admin
    listed = site.get("/api/forms", headers=admin).json()
    assert [f["name"] for f in listed] == ["lead"] and listed[0]["entity"] == "contact"
    problem(site.get("/api/forms"), 401)
    agent = crm_user(site, role="agent")
    problem(site.get("/api/forms", headers=agent.headers), 403)
    problem(site.post("/api/forms", json={"name": "x"}, headers=agent.headers), 403)
    problem(site.post("/api/forms", json={"name": "lead"}, headers=admin), 422, "name")  # exists
    problem(site.post("/api/forms", json={"name": "Bad Name"}, headers=admin), 422, "name")
    problem(site.post("/api/forms", json={"name": "x", "entity": "nothing"}, headers=admin), 422, "entity")
    problem(site.post("/api/forms", json={"name": "x", "fields": {"a": "nope"}}, headers=admin), 422, "fields.a")
    problem(site.post("/api/forms", json={"name": "x", "dedup": ["last_name"]}, headers=admin), 422, "dedup")
    problem(site.post("/api/forms", json={"name": "x", "owner_id": 999999}, headers=admin), 422, "owner_id")
    problem(site.post("/api/forms", json={"name": "x", "rate_limit": 0}, headers=admin), 422, "rate_limit")
    problem(site.post("/api/forms", json={"name": "x", "surprise": 1}, headers=admin), 422)
    problem(site.post("/api/forms", json={"name": 5}, headers=admin), 422, "name")
    # A company form posting back to the website, without dedup.
    made = site.put("/api/forms/partners", json={"entity": "company", "dedup": [], "required": ["name"],
                                                 "redirect_url": "https://example.com/thanks"}, headers=admin)
    assert made.status_code == 200, made.text
    assert site.get("/api/forms/partners", headers=admin).json()["entity"] == "company"
    problem(site.put("/api/forms/partners", json={"name": "other"}, headers=admin), 422, "name")
    done = site.post("/forms/partners", data={"name": "Acme", "website": "https://acme.example"},
                     follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "https://example.com/thanks"
    assert site.post("/forms/partners", json={"name": "Beta"}).json()["ok"] is True  # JSON gets JSON
    companies = call(site, site.dep.records.list, "company", ListQuery(sort=["id"])).items
    assert [(c["name"], c["website"]) for c in companies] == [("Acme", "https://acme.example"), ("Beta", None)]
    assert site.delete("/api/forms/partners", headers=admin).status_code == 204
    problem(site.get("/api/forms/partners", headers=admin), 404)
    problem(site.post("/forms/partners", data={"name": "Gone"}), 404)
    problem(site.get("/api/forms/partners/submissions", headers=admin), 404)


def test_form_submitting_as_a_configured_user(site):
    agent = crm_user(site, role="agent", teams=["north"])
    team_id = call(site, site.dep.auth.teams)[0]["id"]
    assert site.put("/api/forms/agent-leads", json={"as_user_id": agent.id, "team_id": team_id},
                    headers=site.admin).status_code == 200
    company = call(site, site.dep.records.create, "company", {"name": "Someone's key account"})
    assert site.post("/forms/agent-leads", data={"last_name": "Mine", "city": "Izmir",
                                                 "company": str(company["id"])}).status_code == 200
    [contact] = contacts(site)
    assert contact["company"] is None  # relations are not the public's to set (unless mapped)
    assert contact["created_by"] == agent.id and contact["owner_id"] == agent.id and contact["team_id"] == team_id
    assert contact["city"] == "Izmir"  # without a mapping, form fields named like entity fields fill them
    # The form's user is disabled: the visitor is told the form is unavailable, the log says why.
    call(site, site.dep.auth.set_active, agent.id, False, actor=crmcore.SYSTEM)
    problem(site.post("/forms/agent-leads", data={"last_name": "Later"}), 503)
    [latest] = call(site, site.dep.forms.submissions, "agent-leads", limit=1)
    assert latest["outcome"] == "invalid" and latest["errors"][0]["code"] == "misconfigured"


def test_cli_forms(tmp_path):
    from cli import create_cli

    def crm(*args, ok=True):
        result = CliRunner().invoke(create_cli(path), ["-d", str(path), *args])
        assert "Traceback" not in result.output, result.output
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    path = tmp_path / "shop"
    crm("init", str(path), "--region", "TR")
    assert "No web forms" in crm("forms", "list")
    out = crm("forms", "add", "windows", "--field", "tel=phone", "--field", "name=last_name", "--require", "tel",
              "--rate-limit", "3")
    assert "POST /forms/windows" in out
    assert "windows" in crm("forms", "list") and "tel->phone" in crm("forms", "list")
    assert '"rate_limit": 3' in crm("forms", "show", "windows")
    assert "exists" in crm("forms", "add", "windows", ok=False)
    assert "tel=phone" in crm("forms", "add", "bad", "--field", "nonsense", ok=False)
    assert "no field" in crm("forms", "add", "bad", "--field", "a=nope", ok=False)
    assert "no team" in crm("forms", "add", "bad", "--team", "ghosts", ok=False)
    crm("forms", "add", "windows", "--replace", "--no-dedup")
    assert '"dedup": []' in crm("forms", "show", "windows")
    assert "outcome" in crm("forms", "submissions", "windows")
    crm("forms", "remove", "windows")
    assert "does not exist" in crm("forms", "remove", "windows", ok=False)
    assert "No web forms" in crm("forms", "list")


async def test_rate_limit_is_shared_by_processes(make_deployment):
    first = await make_deployment(region="TR")
    second = await make_deployment(path=first.path)  # another process's deployment, same database
    await first.forms.save(crmcore.webforms.WebForm(name="lead", rate_limit=3))
    for n, dep in enumerate([first, second, first]):
        assert (await dep.forms.submit("lead", {"last_name": f"L{n}"}, ip="203.0.113.7")).outcome == "created"
    with pytest.raises(crmcore.auth.RateLimited) as limited:
        await second.forms.submit("lead", {"last_name": "L3"}, ip="203.0.113.7")
    assert 1 <= limited.value.retry_after <= 60
    # another address has its own count
    assert (await second.forms.submit("lead", {"last_name": "Other"}, ip="198.51.100.1")).outcome == "created"
    assert (await first.records.list("contact", ListQuery(count=True))).total == 4
