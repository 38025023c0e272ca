"""The settings pages over HTTP (their browser tests are in tests/web/test_settings.py): each
section needs the permission its JSON API needs, form posts need the session's CSRF token,
and refused input comes back as the page with the reasons (422), never a 500 or a JSON problem."""

from __future__ import annotations

import functools
import re

from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role
from crmcore.testing import crm_user

HTML = {"accept": "text/html"}
SECTIONS = {
    "fields": "manage_schema", "pipelines": "manage_schema", "plugins": "manage_schema", "forms": "manage_schema",
    "automation": "manage_automation", "users": "manage_users", "roles": "manage_roles",
    "webhooks": "manage_integrations",
}
#: One change in each section, posted by someone who may not make it.
POSTS = [
    ("/settings/fields/contact/add", {"name": "shoe_size", "type": "integer"}),
    ("/settings/pipelines", {"name": "rentals", "stages-0-name": "new"}),
    ("/settings/automation", {"name": "r", "trigger": "{}", "actions": "[]"}),
    ("/settings/users", {"name": "Mallory", "email": "mallory@example.com", "role": "admin"}),
    ("/settings/roles", {"name": "boss", "copy_from": "admin"}),
    ("/settings/teams/add", {"team": "Shadow"}),
    ("/settings/plugins/sample/enable", {}),
    ("/settings/webhooks", {"url": "https://evil.example.com", "events": "*"}),
    ("/settings/forms", {"name": "sneaky"}),
]


def call(client, fn, *args, **kwargs):
    return client.blocking_portal.call(functools.partial(fn, *args, **kwargs))


def refused_page(response, status: int, *texts: str) -> str:
    """An HTML page answering with ``status`` and showing each of ``texts`` (escaped as HTML)."""
    assert response.status_code == status, response.text[-2000:]
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for text in texts:
        assert text in page, (text, re.sub(r"\s+", " ", page)[-3000:])
    return page


def test_each_section_needs_the_permission_of_its_api(crm_client):
    client = crm_client()
    dep = client.app.state.deployment
    agent = crm_user(client, role="agent")
    reader = crm_user(client, role="read_only")
    call(client, dep.auth.save_role, Role(name="schema_admin", entities={"*": {"read": "all"}}, grants=["manage_schema"]),
         actor=SYSTEM)
    schema_admin = crm_user(client, role="schema_admin")

    for section in SECTIONS:
        assert client.get(f"/settings/{section}", headers=HTML).status_code == 200, section
        for user in (agent, reader):
            refused_page(client.get(f"/settings/{section}", headers={**HTML, **user.headers}), 403, "Not allowed")
        wanted = client.get(f"/settings/{section}", headers={**HTML, **schema_admin.headers}).status_code
        assert wanted == (200 if SECTIONS[section] == "manage_schema" else 403), section

    for path, data in POSTS:
        refused_page(client.post(path, data=data, headers={**HTML, **agent.headers}), 403)
    assert "shoe_size" not in [f.name for f, _ in call(client, dep.custom_fields, "contact")]
    assert "mallory@example.com" not in [u["email"] for u in call(client, dep.auth.users)]
    assert "Shadow" not in [t["name"] for t in call(client, dep.auth.teams)]
    assert call(client, dep.webhooks.list) == [] and call(client, dep.forms.list) == []

    # The overview lists what each may use; everyone keeps their own API tokens.
    index = client.get("/settings", headers={**HTML, **agent.headers}).text
    assert 'href="/settings/tokens"' in index and 'href="/settings/fields"' not in index
    assert client.get("/settings/tokens", headers={**HTML, **agent.headers}).status_code == 200
    index = client.get("/settings", headers={**HTML, **schema_admin.headers}).text
    assert 'href="/settings/fields"' in index and 'href="/settings/users"' not in index
    # An API client (no text/html) gets the API's problem document.
    refused = client.get("/settings/users", headers=agent.headers)
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")


def test_form_posts_need_the_sessions_csrf_token(crm_client):
    client = crm_client(role=None)
    admin = crm_user(client, role="admin", token=False)
    login = client.post("/api/auth/login", json={"email": admin.email, "password": admin.password})
    assert login.status_code == 200
    csrf = login.json()["csrf_token"]
    page = client.get("/settings/roles", headers=HTML).text
    assert f'name="_csrf" value="{csrf}"' in page  # every form carries it

    for data in ({"team": "Ops"}, {"team": "Ops", "_csrf": "forged"}):
        assert client.post("/settings/teams/add", data=data, headers=HTML).status_code == 403
    assert "Ops" not in [t["name"] for t in call(client, client.app.state.deployment.auth.teams)]
    done = client.post("/settings/teams/add", data={"team": "Ops", "_csrf": csrf}, headers=HTML, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/settings/roles?ok=team_added")
    assert "Ops" in [t["name"] for t in call(client, client.app.state.deployment.auth.teams)]
    assert "Team added." in client.get(done.headers["location"], headers=HTML).text


#: (path, form, what the page must say): input every section refuses, and why.
REFUSED = [
    ("/settings/fields/contact/add", {"name": "x y", "type": "text"}, ["field name &#39;x y&#39; is invalid"]),
    ("/settings/fields/contact/add", {"name": "level", "type": "choice"}, ["needs choices"]),
    ("/settings/fields/contact/add", {"name": "level", "type": "colour"}, ["one of text"]),
    ("/settings/fields/contact/add", {"name": "size", "type": "integer", "default": "big"},
     ["the default is not valid"]),
    ("/settings/pipelines", {"name": "rentals", "stages-0-name": "viewing", "stages-0-probability": "150"},
     ["a whole number of percent from 0 to 100"]),
    ("/settings/pipelines", {"name": "rentals", "stages-0-name": "done", "stages-0-kind": "won"},
     ["at least one open stage"]),
    ("/settings/pipelines/sales/delete", {}, ["it can be customised, not deleted"]),
    ("/settings/automation", {"name": "r1", "entity": "contact", "trigger": "{not json", "actions": "[]"},
     ["trigger", "not valid JSON"]),
    ("/settings/automation", {"name": "r1", "entity": "contact", "trigger": '{"type": "created", "delay": "soon"}',
                              "actions": '[{"type": "create_task", "subject": "x"}]'}, ["trigger.delay"]),
    ("/settings/users", {"name": "Twin", "email": "ADMIN-TWIN@example.com", "role": "agent"},
     ["another user already has this e-mail address"]),
    ("/settings/users", {"name": "Nobody", "email": "nobody@example.com", "role": "emperor"}, ["unknown role"]),
    ("/settings/users", {"name": "Solo", "email": "solo@example.com", "teams": "Nowhere"}, ["unknown team"]),
    ("/settings/roles", {"name": "Bad Name"}, ["a role name is lower-case letters"]),
    ("/settings/roles", {"name": "agent"}, ["a role named &#39;agent&#39; exists"]),
    ("/settings/roles/agent", {"scope-*-read": "everything"}, ["scopes are none, own, team, all"]),
    ("/settings/teams/add", {"team": "  "}, ["a team needs a name"]),
    ("/settings/teams/delete", {"team": "Sales"}, ["has 1 member(s)"]),
    ("/settings/tokens", {"name": ""}, ["give the token a name"]),
    ("/settings/tokens", {"name": "old", "expires": "2001-01-01"}, ["the expiry must be in the future"]),
    ("/settings/plugins/no_such_plugin/enable", {}, ["no_such_plugin"]),
    ("/settings/webhooks", {"url": "not a url", "events": "*"}, ["url must be an http:// or https:// address"]),
    ("/settings/webhooks", {"url": "https://example.com/hook", "events": "contact"}, ["is not an event"]),
    ("/settings/forms", {"name": "Bad Name!"}, ["a form name is 1-63 lower-case letters"]),
    ("/settings/forms", {"name": "quote", "redirect_url": "javascript:alert(1)"},
     ["redirect_url must be an http(s) URL"]),
    ("/settings/forms", {"name": "quote", "fields": "tel phone"}, ["write each line as form_field = entity_field"]),
    ("/settings/forms", {"name": "quote", "fields": "tel = telephone"}, ["contact has no field &#39;telephone&#39;"]),
]


def test_refused_input_comes_back_on_the_page(crm_client):
    client = crm_client()
    dep = client.app.state.deployment
    crm_user(client, role="agent", email="admin-twin@example.com", teams=["Sales"])
    before = (call(client, dep.custom_fields, "contact"), list(dep.pipelines), call(client, dep.automation.list),
              call(client, dep.auth.users), call(client, dep.webhooks.list), call(client, dep.forms.list))
    for path, data, texts in REFUSED:
        refused_page(client.post(path, data=data, headers=HTML), 422, *texts)
    after = (call(client, dep.custom_fields, "contact"), list(dep.pipelines), call(client, dep.automation.list),
             call(client, dep.auth.users), call(client, dep.webhooks.list), call(client, dep.forms.list))
    assert after == before  # nothing was written


def test_changes_made_through_the_pages(crm_client):
    client = crm_client()
    dep = client.app.state.deployment
    me = client.crm_user

    def post(path, data, location):
        response = client.post(path, data=data, headers=HTML, follow_redirects=False)
        assert response.status_code == 303, response.text[-2000:]
        assert response.headers["location"].startswith(location), response.headers["location"]
        return response

    # A pipeline added, a stage relabelled and moved, then deleted while no record is in it.
    post("/settings/pipelines", {"name": "rentals", "label": "Rentals", "entity": "deal",
                                 "stages-0-name": "viewing", "stages-0-probability": "20",
                                 "stages-1-name": "signed", "stages-1-kind": "won", "stages-2-name": ""},
         "/settings/pipelines/rentals?ok=pipeline_added")
    post("/settings/pipelines/rentals", {"stages-0-name": "viewing", "stages-0-existing": "on", "stages-0-order": "2",
                                         "stages-0-label": "Viewing booked", "stages-1-name": "signed",
                                         "stages-1-existing": "on", "stages-1-order": "3", "stages-1-kind": "won",
                                         "stages-2-name": "enquiry", "stages-2-order": "1"},
         "/settings/pipelines/rentals?ok=pipeline_saved")
    stages = dep.pipelines["rentals"].stages
    assert [(s.name, s.label, s.probability) for s in stages] == [
        ("enquiry", "Enquiry", 0), ("viewing", "Viewing booked", 0), ("signed", "Signed", 0)]
    post("/settings/pipelines/rentals/delete", {}, "/settings/pipelines?ok=pipeline_deleted")
    assert "rentals" not in dep.pipelines

    # A user may not disable themself; another user is disabled and re-enabled.
    refused_page(client.post(f"/settings/users/{me.id}", data={"role": "admin"}, headers=HTML), 422,
                 "you cannot disable yourself")
    other = crm_user(client, role="agent")
    post(f"/settings/users/{other.id}", {"role": "agent"}, "/settings/users?ok=user_saved")
    assert call(client, dep.auth.user, other.id)["active"] is False
    post(f"/settings/users/{other.id}", {"role": "sales_manager", "active": "on"}, "/settings/users?ok=user_saved")
    assert call(client, dep.auth.user, other.id)["role"] == "sales_manager"

    # A token made for someone else needs manage_tokens; the admin has it.
    made = client.post("/settings/tokens", data={"name": "for the agent", "user_id": str(other.id)}, headers=HTML)
    assert made.status_code == 200 and "shown only this once" in made.text
    assert [t["name"] for t in call(client, dep.auth.tokens, user_id=other.id)] == ["tests", "for the agent"]
    refused_page(client.post("/settings/tokens", data={"name": "mine now", "user_id": str(me.id)},
                             headers={**HTML, **other.headers}), 403)
    page = client.get("/settings/tokens", headers={**HTML, **other.headers}).text
    assert "Everyone else" not in page and "for the agent" in page

    # A rule run by hand on a record it cannot see, and one it can.
    post("/settings/automation", {"name": "tag-it", "entity": "contact", "active": "on",
                                  "trigger": '{"type": "created"}',
                                  "actions": '[{"type": "set_field", "field": "source", "value": "tagged"}]'},
         "/settings/automation?ok=rule_added")
    rule = call(client, dep.automation.get, "tag-it")
    refused_page(client.post(f"/settings/automation/{rule.id}/run", data={"record_id": "999999"}, headers=HTML), 422,
                 "contact 999999 does not exist")
    contact = client.post("/api/contact", json={"last_name": "Hand"}).json()
    ran = client.post(f"/settings/automation/{rule.id}/run", data={"record_id": str(contact["id"])}, headers=HTML)
    refused_page(ran, 200, "done")
    assert client.get(f"/settings/automation?rule={rule.id}&outcome=done", headers=HTML).text.count(
        f"contact #{contact['id']}") >= 1
