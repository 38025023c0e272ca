"""Authentication over HTTP: every denial path, sessions and CSRF, the login and reset pages, the
auth API and its OpenAPI description. Real app, real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import re
from urllib.parse import quote

import jsonschema
import pytest
from litestar import Request, get
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

import crmcore
from crmcore import hookimpl
from crmcore.api import CurrentActor, CurrentDeployment, OptionalActor
from crmcore.testing import crm_user

from .conftest import problem


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run(client, fn, *args):
    """Run ``fn(*args)`` (async) on the app's event loop, e.g. a database statement."""
    return client.blocking_portal.call(fn, *args)


def sql(client, statement: str, *params):
    return run(client, client.app.state.deployment.db.execute, statement, params)


def stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def set_cookie_headers(response) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_header(response, name: str) -> str:
    found = [h for h in set_cookie_headers(response) if h.startswith(f"{name}=")]
    assert found, set_cookie_headers(response)
    return found[-1]


def csrf_of(html: str) -> str:
    return re.search(r'name="_csrf" value="([^"]+)"', html).group(1)


class ResetMailbox:
    """A test plugin delivering password-reset links into a list (crm_deliver_password_reset)."""

    PLUGIN = crmcore.PluginInfo(name="mailbox", version="1.0", description="reset links in a list")

    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    @hookimpl
    def crm_deliver_password_reset(self, user, link):
        self.sent.append((user["email"], link))


@get("/api/whoami/me")
async def whoami(actor: CurrentActor, deployment: CurrentDeployment, request: Request) -> dict:
    return {"user_id": actor.user_id, "state": request.state.actor.user_id, "user": request.user.user_id,
            "can_manage_users": actor.has("manage_users"), "entities": len(list(deployment.registry))}


@get("/api/whoami/public", opt={"public": True})
async def whoami_public(actor: OptionalActor) -> dict:
    return {"user_id": actor.user_id if actor is not None else None}


class WhoAmI:
    """A test plugin with routes reading the request's actor."""

    PLUGIN = crmcore.PluginInfo(name="whoami", version="1.0", description="the actor in plugin routes")

    @staticmethod
    @hookimpl
    def crm_register_routes(register):
        register(whoami)
        register(whoami_public)


@pytest.fixture
def mailbox():
    return ResetMailbox()


@pytest.fixture
def site(crm_client, mailbox):
    """An anonymous client (a browser) of a deployment with the mailbox and whoami plugins."""
    client = crm_client(role=None, extra_plugins=[mailbox, WhoAmI], base_url="https://testserver.local")
    client.follow_redirects = False  # the tests look at each redirect
    return client


@pytest.fixture
def admin(site):
    return crm_user(site, role="admin")


def login(client, user, password: str | None = None):
    response = client.post("/api/auth/login", json={"email": user.email, "password": password or user.password})
    assert response.status_code == 200, response.text
    return response.json()


# -- denials ------------------------------------------------------------------------------------


def test_no_credentials_is_401_except_public_routes(site):
    for method, path in [("GET", "/api/contact"), ("GET", "/api/contact/1"), ("POST", "/api/contact"),
                         ("GET", "/api/meta"), ("GET", "/api/meta/entities/contact"), ("GET", "/schema"),
                         ("GET", "/schema/openapi.json"), ("GET", "/api/auth/me"), ("GET", "/api/auth/users"),
                         ("GET", "/api/meta/plugins"), ("GET", "/api/exports/contact"), ("GET", "/api/whoami/me"),
                         ("DELETE", "/api/auth/tokens/1"), ("PUT", "/api/auth/roles/x")]:
        response = site.request(method, path)
        problem(response, 401, detail="authentication required")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert site.get("/api/health").json() == {"status": "ok"}
    assert site.get("/").status_code == 200
    assert site.get("/login").status_code == 200
    assert site.get("/password/reset").status_code == 200
    assert site.get("/api/whoami/public").json() == {"user_id": None}


def test_wrong_tokens_are_401_saying_why(site, admin):
    problem(site.get("/api/contact", headers=bearer("crm_nope")), 401, detail="unknown token")
    problem(site.get("/api/contact", headers=bearer("nope")), 401, detail="unknown token")
    problem(site.get("/api/contact", headers={"Authorization": f"Basic {admin.token}"}), 401, detail="Bearer")
    problem(site.get("/api/contact", headers={"Authorization": "Bearer "}), 401, detail="Bearer")
    assert site.get("/api/contact", headers=admin.headers).status_code == 200
    # public routes ignore credentials they cannot use
    assert site.get("/api/health", headers=bearer("crm_nope")).status_code == 200


def test_revoked_and_expired_tokens(site, admin):
    made = site.post("/api/auth/tokens", json={"name": "script"}, headers=admin.headers)
    assert made.status_code == 201, made.text
    token = made.json()
    assert token["token"].startswith(token["prefix"]) and token["name"] == "script"
    assert site.get("/api/auth/me", headers=bearer(token["token"])).json()["token_id"] == token["id"]
    listed = site.get("/api/auth/tokens", headers=admin.headers).json()
    assert token["id"] in [t["id"] for t in listed] and all("token" not in t for t in listed)  # shown once
    assert site.delete(f"/api/auth/tokens/{token['id']}", headers=admin.headers).status_code == 204
    problem(site.get("/api/contact", headers=bearer(token["token"])), 401, detail="revoked")

    later = stamp(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    made = site.post("/api/auth/tokens", json={"name": "ci", "expires_at": later}, headers=admin.headers).json()
    assert site.get("/api/contact", headers=bearer(made["token"])).status_code == 200
    sql(site, 'UPDATE crm_api_token SET "expires_at" = ? WHERE "id" = ?',
        stamp(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)), made["id"])
    problem(site.get("/api/contact", headers=bearer(made["token"])), 401, detail="expired")

    body = problem(site.post("/api/auth/tokens", json={"name": "old", "expires_at": "2001-01-01T00:00:00Z"},
                             headers=admin.headers), 422)
    assert body["errors"][0]["field"] == "expires_at"
    body = problem(site.post("/api/auth/tokens", json={"name": "naive", "expires_at": "2099-01-01T00:00:00"},
                             headers=admin.headers), 422)
    assert body["errors"][0]["field"] == "expires_at"


def test_read_only_token_cannot_write_anything(site, admin):
    rid = site.post("/api/contact", json={"last_name": "Kept"}, headers=admin.headers).json()["id"]
    reader = site.post("/api/auth/tokens", json={"name": "reports", "read_only": True}, headers=admin.headers).json()
    headers = bearer(reader["token"])
    assert site.get(f"/api/contact/{rid}", headers=headers).status_code == 200
    assert site.get("/api/exports/contact", headers=headers).status_code == 200
    for method, path, body in [
        ("POST", "/api/contact", {"last_name": "X"}), ("PATCH", f"/api/contact/{rid}", {"city": "Y"}),
        ("DELETE", f"/api/contact/{rid}", None), ("POST", "/api/contact/bulk", [{"last_name": "Z"}]),
        ("POST", "/api/auth/tokens", {"name": "more"}), ("DELETE", f"/api/auth/tokens/{reader['id']}", None),
        ("POST", "/api/auth/users", {"name": "N", "email": "n@example.com"}),
        ("PUT", "/api/auth/roles/helper", {"entities": {}}), ("POST", "/api/auth/teams", {"name": "T"}),
        ("POST", "/api/meta/entities/contact/fields", {"name": "x", "type": "text"}),
        ("POST", "/api/meta/plugins/sample/enable", None), ("POST", "/api/auth/password", {"current": "a", "new": "b"}),
    ]:
        response = site.request(method, path, json=body, headers=headers)
        problem(response, 403, detail="read-only")
    assert site.get(f"/api/contact/{rid}", headers=headers).json()["last_name"] == "Kept"


def test_disabled_user_token_and_session_stop_working(site, admin):
    agent = crm_user(site, role="agent")
    login(site, agent)
    assert site.get("/api/auth/me").status_code == 200  # by the session cookie
    assert site.get("/api/contact", headers=agent.headers).status_code == 200
    changed = site.patch(f"/api/auth/users/{agent.id}", json={"active": False}, headers=admin.headers)
    assert changed.status_code == 200 and changed.json()["active"] is False
    problem(site.get("/api/contact", headers=agent.headers), 401, detail="disabled")
    problem(site.get("/api/auth/me"), 401)
    problem(site.post("/api/auth/login", json={"email": agent.email, "password": agent.password}), 401,
            detail="wrong e-mail or password")
    body = problem(site.patch(f"/api/auth/users/{admin.id}", json={"active": False}, headers=admin.headers), 422)
    assert body["errors"][0]["field"] == "active"


def test_admin_routes_refused_to_an_agent(site, admin):
    agent = crm_user(site, role="agent")
    h = agent.headers
    for method, path, body, permission in [
        ("GET", "/api/auth/users", None, "manage_users"),
        ("POST", "/api/auth/users", {"name": "N", "email": "n@example.com"}, "manage_users"),
        ("GET", f"/api/auth/users/{admin.id}", None, "manage_users"),
        ("PATCH", f"/api/auth/users/{agent.id}", {"role": "admin"}, "manage_users"),
        ("GET", "/api/auth/roles", None, "manage_roles"),
        ("GET", "/api/auth/roles/admin", None, "manage_roles"),
        ("PUT", "/api/auth/roles/helper", {"entities": {}}, "manage_roles"),
        ("DELETE", "/api/auth/roles/agent", None, "manage_roles"),
        ("GET", "/api/auth/teams", None, "manage_roles"),
        ("POST", "/api/auth/teams", {"name": "Sales"}, "manage_roles"),
        ("DELETE", "/api/auth/teams/Sales", None, "manage_roles"),
        ("GET", "/api/auth/log", None, "view_audit_log"),
        ("GET", f"/api/auth/tokens?user_id={admin.id}", None, "manage_tokens"),
        ("GET", "/api/auth/tokens?all=true", None, "manage_tokens"),
        ("POST", "/api/auth/tokens", {"name": "x", "user_id": admin.id}, "manage_tokens"),
        ("GET", "/api/meta/entities/contact/fields", None, "manage_schema"),
        ("POST", "/api/meta/entities/contact/fields", {"name": "x", "type": "text"}, "manage_schema"),
        ("PATCH", "/api/meta/entities/contact/fields/x", {"label": "X"}, "manage_schema"),
        ("DELETE", "/api/meta/entities/contact/fields/x", None, "manage_schema"),
        ("GET", "/api/meta/plugins", None, "manage_schema"),
        ("POST", "/api/meta/plugins/sample/enable", None, "manage_schema"),
    ]:
        problem(site.request(method, path, json=body, headers=h), 403, detail=permission)
    # another's token: not found, whether it exists or not
    problem(site.delete(f"/api/auth/tokens/{site.get('/api/auth/tokens', headers=admin.headers).json()[0]['id']}",
                        headers=h), 404)
    assert site.get("/api/auth/users", headers=admin.headers).status_code == 200
    # an agent reads their own things
    me = site.get("/api/auth/me", headers=h).json()
    assert me["role"] == "agent" and me["via"] == "token" and me["csrf_token"] is None
    assert "manage_users" not in me["grants"] and me["user"]["email"] == agent.email
    assert [t["user_id"] for t in site.get("/api/auth/tokens", headers=h).json()] == [agent.id]


def test_agents_see_only_their_records_and_hidden_fields_stay_hidden(site, admin):
    one, two = crm_user(site, role="agent"), crm_user(site, role="agent")
    mine = site.post("/api/contact", json={"last_name": "Mine", "email": "m@example.com"}, headers=one.headers)
    assert mine.status_code == 201, mine.text
    problem(site.get(f"/api/contact/{mine.json()['id']}", headers=two.headers), 404)  # 404, not 403
    assert site.get("/api/contact?count=1", headers=two.headers).json()["total"] == 0
    assert site.get("/api/contact?count=1", headers=one.headers).json()["total"] == 1

    role = site.get("/api/auth/roles/agent", headers=admin.headers).json()
    role["fields"] = {**role.get("fields", {}), "contact": {"email": "hidden"}}
    saved = site.put("/api/auth/roles/agent", json=role, headers=admin.headers)
    assert saved.status_code == 200, saved.text
    assert saved.json()["fields"]["contact"] == {"email": "hidden"}
    fields = {f["name"] for f in site.get("/api/meta/entities/contact", headers=one.headers).json()["fields"]}
    assert "email" not in fields and "last_name" in fields
    meta = site.get("/api/meta", headers=one.headers).json()
    contact = next(e for e in meta["entities"] if e["name"] == "contact")
    assert "email" not in {f["name"] for f in contact["fields"]}
    assert "email" in {f["name"] for f in site.get("/api/meta/entities/contact", headers=admin.headers).json()["fields"]}
    export = site.get("/api/exports/contact", headers=one.headers)
    assert export.status_code == 200
    header = export.text.splitlines()[0].split(",")
    assert "email" not in header and "last_name" in header and "m@example.com" not in export.text
    assert "email" not in site.get(f"/api/contact/{mine.json()['id']}", headers=one.headers).json()
    assert "m@example.com" in site.get("/api/exports/contact", headers=admin.headers).text


# -- sessions, cookies, CSRF --------------------------------------------------------------------


def test_json_login_sets_a_secure_session_cookie_and_csrf_guards_it(site, admin):
    response = site.post("/api/auth/login", json={"email": admin.email, "password": admin.password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["id"] == admin.id and body["user"]["role"] == "admin" and body["csrf_token"]
    cookie = cookie_header(response, "crm_session").lower()
    for flag in ("httponly", "secure", "samesite=lax", "path=/", "max-age="):
        assert flag in cookie, cookie
    max_age = int(re.search(r"max-age=(\d+)", cookie).group(1))
    expires_in = (dt.datetime.fromisoformat(body["expires_at"]) - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert abs(max_age - expires_in) < 60
    assert body["csrf_token"] not in cookie

    me = site.get("/api/auth/me").json()
    assert me["via"] == "session" and me["csrf_token"] == body["csrf_token"] and me["role"] == "admin"
    rid = site.post("/api/contact", json={"last_name": "A"}, headers={"X-CSRF-Token": body["csrf_token"]}).json()["id"]
    problem(site.patch(f"/api/contact/{rid}", json={"city": "Izmir"}), 403, detail="CSRF token missing or wrong")
    problem(site.patch(f"/api/contact/{rid}", json={"city": "Izmir"}, headers={"X-CSRF-Token": "x" * 43}), 403, detail="CSRF")
    problem(site.delete(f"/api/contact/{rid}"), 403, detail="CSRF")
    ok = site.patch(f"/api/contact/{rid}", json={"city": "Izmir"}, headers={"X-CSRF-Token": body["csrf_token"]})
    assert ok.status_code == 200 and ok.json()["city"] == "Izmir"
    # a form post with the session cookie: the _csrf field counts like the header
    form = site.post(f"/api/contact/{rid}/restore", data={"_csrf": "wrong"})
    problem(form, 403, detail="CSRF")
    form = site.post("/api/contact", data={"_csrf": body["csrf_token"], "last_name": "F"})
    problem(form, 422)  # past the CSRF check: the route wants JSON
    assert site.get(f"/api/contact/{rid}").json()["city"] == "Izmir"  # GET needs no CSRF token


def test_logout_ends_the_session_server_side(site, admin):
    body = login(site, admin)
    session = site.cookies.get("crm_session")
    problem(site.post("/api/auth/logout"), 403, detail="CSRF")  # a cross-site logout is refused
    assert site.get("/api/auth/me").status_code == 200
    response = site.post("/api/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert response.status_code == 204
    assert "max-age=0" in cookie_header(response, "crm_session").lower()
    assert site.cookies.get("crm_session") is None
    site.cookies.set("crm_session", session, domain="testserver.local")  # the old cookie, replayed
    problem(site.get("/api/auth/me"), 401, detail="log in again")
    site.cookies.clear()

    # the HTML logout form
    page = site.get("/login")
    assert site.post("/login", data={"_csrf": csrf_of(page.text), "email": admin.email,
                                      "password": admin.password}).status_code == 303
    csrf = site.get("/api/auth/me").json()["csrf_token"]
    refused = site.post("/logout", data={"_csrf": "nope"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert site.get("/api/auth/me").status_code == 200
    done = site.post("/logout", data={"_csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == "/login"
    problem(site.get("/api/auth/me"), 401)


def test_a_new_login_ends_the_session_it_replaces(site, admin):
    agent = crm_user(site, role="agent")
    login(site, admin)
    first = site.cookies.get("crm_session")
    login(site, agent)  # another user signs in on the same browser
    assert site.get("/api/auth/me").json()["user"]["id"] == agent.id
    site.cookies.set("crm_session", first, domain="testserver.local")
    problem(site.get("/api/auth/me"), 401)
    assert site.options("/api/contact").status_code < 400  # OPTIONS needs no credentials


def test_password_change_ends_other_sessions(site, crm_client, admin):
    other = crm_client(site.app.state.deployment.path, role=None)  # a second browser
    other.follow_redirects = False
    login(other, admin)
    body = login(site, admin)
    bad = problem(site.post("/api/auth/password", json={"current": "not it at all", "new": "another good one 1"},
                            headers={"X-CSRF-Token": body["csrf_token"]}), 422)
    assert bad["errors"][0]["field"] == "current"
    short = problem(site.post("/api/auth/password", json={"current": admin.password, "new": "short"},
                              headers={"X-CSRF-Token": body["csrf_token"]}), 422)
    assert short["errors"][0]["field"] == "new"
    problem(site.post("/api/auth/password", json={"current": admin.password, "new": "another good one 1"}), 403, detail="CSRF")
    changed = site.post("/api/auth/password", json={"current": admin.password, "new": "another good one 1"},
                        headers={"X-CSRF-Token": body["csrf_token"]})
    assert changed.status_code == 204, changed.text
    assert site.get("/api/auth/me").status_code == 200  # this session goes on
    problem(other.get("/api/auth/me"), 401)  # the other one ended
    assert site.get("/api/contact", headers=admin.headers).status_code == 200  # API tokens keep working
    problem(other.post("/api/auth/login", json={"email": admin.email, "password": admin.password}), 401)
    login(other, admin, "another good one 1")


# -- the login page -----------------------------------------------------------------------------


def test_login_page_flow_and_no_open_redirect(site, admin):
    browser = {"Accept": "text/html,application/xhtml+xml"}
    away = site.get("/schema", headers=browser)
    assert away.status_code == 303 and away.headers["location"] == "/login?next=" + quote("/schema", safe="")

    page = site.get("/login?next=/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="next" value="/schema"' in page.text and "<form" in page.text
    assert page.headers["x-frame-options"] == "DENY" and "no-store" in page.headers["cache-control"]
    form_cookie = cookie_header(page, "crm_csrf").lower()
    assert "samesite=strict" in form_cookie and "httponly" in form_cookie and "secure" in form_cookie
    csrf = csrf_of(page.text)

    # no form token (a cross-site post): refused
    site.cookies.delete("crm_csrf")
    refused = site.post("/login", data={"_csrf": csrf, "email": admin.email, "password": admin.password})
    assert refused.status_code == 403 and "expired" in refused.text and "crm_session" not in refused.headers.get("set-cookie", "")
    csrf = csrf_of(refused.text)  # the page comes back with a new token (and its cookie)

    wrong = site.post("/login", data={"_csrf": csrf, "email": '"><script>alert(1)</script>', "password": "nope",
                                      "next": "/schema"})
    assert wrong.status_code == 401 and "Wrong e-mail or password" in wrong.text
    assert "<script>alert(1)" not in wrong.text and "&lt;script&gt;" in wrong.text
    assert "Traceback" not in wrong.text
    empty = site.post("/login", data={"_csrf": csrf, "email": "", "password": ""})
    assert empty.status_code == 422 and "Enter your e-mail" in empty.text

    done = site.post("/login", data={"_csrf": csrf, "email": admin.email.upper(), "password": admin.password,
                                     "next": "/schema"})
    assert done.status_code == 303 and done.headers["location"] == "/schema"
    cookie = cookie_header(done, "crm_session").lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert site.get("/schema").json()["openapi"] == "3.1.0"
    assert site.get("/login?next=/api/meta").headers["location"] == "/api/meta"  # signed in already

    site.cookies.delete("crm_session")
    for given, expected in [
        ("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"), ("http:/evil.example", "/"), ("/\t/evil.example", "/"), ("/\n/evil.example", "/"),
        ("evil.example", "/"), ("", "/"), ("/api/meta?x=1#top", "/api/meta?x=1#top"),
        ("/%0d%0aSet-Cookie:x=1", "/%0d%0aSet-Cookie:x=1"),  # stays percent-encoded: no header injection
    ]:
        page = site.get("/login", params={"next": given})
        done = site.post("/login", data={"_csrf": csrf_of(page.text), "email": admin.email, "password": admin.password,
                                         "next": given})
        assert done.status_code == 303 and done.headers["location"] == expected, (given, done.headers.get("location"))
        site.cookies.delete("crm_session")


def test_rate_limit_over_http(site, admin):
    for _ in range(5):
        problem(site.post("/api/auth/login", json={"email": admin.email, "password": "wrong password!"}), 401)
    limited = site.post("/api/auth/login", json={"email": admin.email, "password": admin.password})
    body = problem(limited, 429, detail="too many")
    assert int(limited.headers["retry-after"]) > 0 and body["retry_after"] == int(limited.headers["retry-after"])
    assert "crm_session" not in limited.headers.get("set-cookie", "")
    page = site.get("/login")
    html = site.post("/login", data={"_csrf": csrf_of(page.text), "email": admin.email, "password": admin.password})
    assert html.status_code == 429 and int(html.headers["retry-after"]) > 0 and "Too many failed attempts" in html.text
    # the API token still works: the limit is on password checks
    assert site.get("/api/auth/me", headers=admin.headers).status_code == 200
    log = site.get("/api/auth/log?event=login_rate_limited", headers=admin.headers).json()
    assert len(log) >= 2 and log[0]["email"] == admin.email.lower()


# -- password reset through the hook ------------------------------------------------------------


def test_password_reset_flow_through_the_delivery_hook(site, admin, mailbox):
    agent = crm_user(site, role="agent")
    problem(site.post("/api/auth/password-reset", content=json.dumps({"email": agent.email}),
                      headers={"content-type": "text/plain"}), 415)
    answer = site.post("/api/auth/password-reset", json={"email": agent.email})
    assert answer.status_code == 202
    unknown = site.post("/api/auth/password-reset", json={"email": "nobody@example.com"})
    assert unknown.status_code == 202 and unknown.json() == answer.json()  # says nothing
    assert [email for email, _ in mailbox.sent] == [agent.email]
    link = mailbox.sent[0][1]
    assert link.startswith("https://testserver.local/password/reset/")
    path = link.removeprefix("https://testserver.local")

    page = site.get(path)
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    csrf = csrf_of(page.text)
    differ = site.post(path, data={"_csrf": csrf, "password": "a new password 1", "password2": "a new password 2"})
    assert differ.status_code == 422 and "differ" in differ.text
    weak = site.post(path, data={"_csrf": csrf, "password": "short", "password2": "short"})
    assert weak.status_code == 422 and "at least" in weak.text
    no_csrf = site.post(path, data={"password": "a new password 1", "password2": "a new password 1"})
    assert no_csrf.status_code == 403
    done = site.post(path, data={"_csrf": csrf, "password": "a new password 1", "password2": "a new password 1"})
    assert done.status_code == 303 and done.headers["location"] == "/login?reset=1"
    assert "password was changed" in site.get("/login?reset=1").text
    again = site.post(path, data={"_csrf": csrf, "password": "a third password", "password2": "a third password"})
    assert again.status_code == 400 and "already used" in again.text
    problem(site.post("/api/auth/login", json={"email": agent.email, "password": agent.password}), 401)
    login(site, agent, "a new password 1")

    # the JSON confirmation, and the HTML request form
    site.cookies.clear()
    page = site.get("/password/reset")
    sent = site.post("/password/reset", data={"_csrf": csrf_of(page.text), "email": agent.email})
    assert sent.status_code == 200 and "on its way" in sent.text
    token = mailbox.sent[-1][1].rsplit("/", 1)[1]
    assert site.post("/api/auth/password-reset/confirm", json={"token": token, "password": "json password 1"}).status_code == 204
    used = problem(site.post("/api/auth/password-reset/confirm", json={"token": token, "password": "json password 2"}), 422)
    assert used["errors"][0]["field"] == "token"
    body = problem(site.post("/api/auth/password-reset/confirm", json={"token": token}), 422)
    assert body["errors"][0]["field"] == "password"
    login(site, agent, "json password 1")
    events = [e["event"] for e in site.get(f"/api/auth/log?user_id={agent.id}", headers=admin.headers).json()]
    assert events.count("password_reset") == 2 and "password_reset_requested" in events


# -- administration, the security log ------------------------------------------------------------


def test_users_roles_teams_through_the_api(site, admin):
    h = admin.headers
    problem(site.post("/api/auth/teams", json={}, headers=h), 422)
    team = site.post("/api/auth/teams", json={"name": "North"}, headers=h)
    assert team.status_code == 201 and team.json()["name"] == "North"
    created = site.post("/api/auth/users", json={"name": "Ayşe", "email": "ayse@example.com", "password": "a good password",
                                                 "role": "sales_manager", "teams": ["North"]}, headers=h)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["role"] == "sales_manager" and user["teams"] == ["North"] and user["has_password"]
    body = problem(site.post("/api/auth/users", json={"name": "X"}, headers=h), 422)
    assert body["errors"][0]["field"] == "email"
    body = problem(site.post("/api/auth/users", json={"name": "X", "email": "x@example.com", "role": "boss"}, headers=h), 422)
    assert body["errors"][0]["field"] == "role"
    body = problem(site.patch(f"/api/auth/users/{user['id']}", json={"rol": "agent"}, headers=h), 422)
    assert body["errors"][0]["field"] == "rol"
    problem(site.patch("/api/auth/users/999999", json={"role": "agent"}, headers=h), 404)
    patched = site.patch(f"/api/auth/users/{user['id']}", json={"role": "agent", "teams": []}, headers=h)
    assert patched.status_code == 200 and patched.json()["role"] == "agent" and patched.json()["teams"] == []
    assert site.get(f"/api/auth/users/{user['id']}", headers=h).json()["role"] == "agent"
    assert user["id"] in [u["id"] for u in site.get("/api/auth/users", headers=h).json()]

    helper = {"label": "Helper", "entities": {"contact": {"read": "all", "edit": "own"}}, "grants": ["view_audit_log"]}
    saved = site.put("/api/auth/roles/helper", json=helper, headers=h)
    assert saved.status_code == 200, saved.text
    assert saved.json()["entities"]["contact"] == {"read": "all", "edit": "own"}
    body = problem(site.put("/api/auth/roles/helper", json={"entities": {"contact": {"read": "most"}}}, headers=h), 422)
    assert body["errors"][0]["field"].startswith("entities")
    problem(site.put("/api/auth/roles/helper", json={"name": "other"}, headers=h), 422)
    problem(site.put("/api/auth/roles/helper", json=[1], headers=h), 422)
    assert "helper" in [r["name"] for r in site.get("/api/auth/roles", headers=h).json()]
    site.patch(f"/api/auth/users/{user['id']}", json={"role": "helper"}, headers=h)
    problem(site.delete("/api/auth/roles/helper", headers=h), 422)  # in use
    problem(site.delete("/api/auth/roles/admin", headers=h), 422)  # built in
    site.patch(f"/api/auth/users/{user['id']}", json={"role": "agent"}, headers=h)
    assert site.delete("/api/auth/roles/helper", headers=h).status_code == 204
    problem(site.get("/api/auth/roles/helper", headers=h), 404)
    assert site.delete("/api/auth/teams/North", headers=h).status_code == 204
    problem(site.delete("/api/auth/teams/North", headers=h), 404)


def test_security_log_lists_logins_failures_token_use_and_role_changes(site, admin):
    agent = crm_user(site, role="agent")
    problem(site.post("/api/auth/login", json={"email": agent.email, "password": "wrong password!"}), 401)
    login(site, agent)
    site.get("/api/contact", headers=agent.headers)
    site.patch(f"/api/auth/users/{agent.id}", json={"role": "sales_manager"}, headers=admin.headers)
    log = site.get("/api/auth/log", headers=admin.headers).json()
    events = [e["event"] for e in log]
    for event in ("login_failed", "login", "token_used", "role_changed", "user_created", "token_created"):
        assert event in events, (event, events)
    assert log == sorted(log, key=lambda e: -e["id"])
    failed = site.get("/api/auth/log?event=login_failed", headers=admin.headers).json()
    assert failed and {e["event"] for e in failed} == {"login_failed"} and failed[0]["email"] == agent.email.lower()
    assert failed[0]["ip"] == "testclient"
    changed = next(e for e in log if e["event"] == "role_changed")
    assert changed["user_id"] == agent.id and changed["actor_id"] == admin.id
    assert changed["detail"]["to"] == "sales_manager"
    mine = site.get(f"/api/auth/log?user_id={agent.id}&limit=2", headers=admin.headers).json()
    assert len(mine) == 2 and {e["user_id"] for e in mine} == {agent.id}
    older = site.get(f"/api/auth/log?before={mine[-1]['id']}&user_id={agent.id}", headers=admin.headers).json()
    assert all(e["id"] < mine[-1]["id"] for e in older)
    problem(site.get("/api/auth/log?limit=0", headers=admin.headers), 422)
    problem(site.get("/api/auth/log?user_id=x", headers=admin.headers), 422)


# -- plugins, bad input, OpenAPI -----------------------------------------------------------------


def test_plugin_routes_need_credentials_and_see_the_actor(site, admin):
    problem(site.get("/api/whoami/me"), 401)
    mine = site.get("/api/whoami/me", headers=admin.headers).json()
    assert mine["user_id"] == mine["state"] == mine["user"] == admin.id and mine["can_manage_users"] is True
    assert site.get("/api/whoami/public", headers=admin.headers).json() == {"user_id": admin.id}


def test_no_auth_input_produces_a_500(site, admin):
    atoms = [None, True, 0, -1, 2**70, "", "x" * 5000, [], {}, {"a": 1}, "\x00", "2026-13-45"]
    routes = [("POST", "/api/auth/login", None), ("POST", "/api/auth/password-reset", None),
              ("POST", "/api/auth/password-reset/confirm", None), ("POST", "/api/auth/tokens", admin.headers),
              ("POST", "/api/auth/users", admin.headers), ("PATCH", f"/api/auth/users/{admin.id}", admin.headers),
              ("PUT", "/api/auth/roles/fuzz", admin.headers), ("POST", "/api/auth/teams", admin.headers),
              ("POST", "/api/auth/password", admin.headers)]
    keys = ["email", "password", "name", "token", "current", "new", "role", "teams", "active", "expires_at",
            "read_only", "user_id", "entities", "fields", "grants"]
    for method, path, headers in routes:
        for atom in atoms:
            for body in (atom, *({key: atom} for key in keys)):
                response = site.request(method, path, content=json.dumps(body), headers={
                    **(headers or {}), "content-type": "application/json"})
                assert response.status_code < 500, (path, body, response.text)
                if response.status_code == 422:
                    assert response.json()["errors"][0]["field"]
        for raw in [b"", b"{", b"\xff", b"[" * 5000]:
            response = site.request(method, path, content=raw, headers={**(headers or {}), "content-type": "application/json"})
            assert response.status_code < 500, (path, raw, response.text)
    for query in ["user_id=x", "limit=100000", "before=-", "event=" + "x" * 5000]:
        assert site.get(f"/api/auth/log?{query}", headers=admin.headers).status_code < 500
    for path in ["/login?next=%00", "/password/reset/%00%ff", "/password/reset/" + "x" * 3000]:
        assert site.get(path).status_code < 500
    for method, path in [("GET", "/api/auth/roles/%00"), ("PUT", "/api/auth/roles/%00"), ("DELETE", "/api/auth/roles/%00"),
                         ("DELETE", "/api/auth/teams/%00"), ("GET", "/api/auth/log?event=%00"),
                         ("GET", "/api/auth/users/99999999999999999999999")]:
        assert site.request(method, path, json={}, headers=admin.headers).status_code < 500, path
    for path in ["/login", "/password/reset", "/password/reset/x"]:
        csrf = csrf_of(site.get(path).text)
        for email in ["\x00", "a@b\x00.com", "x" * 5000]:
            response = site.post(path, data={"_csrf": csrf, "email": email, "password": "\x00", "password2": "\x00"})
            assert response.status_code < 500 and "Traceback" not in response.text, (path, email)
    assert site.post("/login", content=b"\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"}).status_code < 500


def test_openapi_describes_security_and_auth_routes(site, admin):
    h = admin.headers
    agent = crm_user(site, role="agent", teams=["East"])
    token = site.post("/api/auth/tokens", json={"name": "doc", "read_only": True,
                                                "expires_at": "2099-01-01T00:00:00+03:00"}, headers=h)
    login_answer = site.post("/api/auth/login", json={"email": agent.email, "password": agent.password})
    session_me = site.get("/api/auth/me")
    site.cookies.clear()
    doc = site.get("/schema", headers=h).json()
    validate_openapi(doc)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerToken"]["scheme"] == "bearer" and schemes["sessionCookie"]["name"] == "crm_session"
    assert doc["security"] == [{"bearerToken": []}, {"sessionCookie": []}]
    assert doc["paths"]["/api/health"]["get"]["security"] == []
    assert doc["paths"]["/api/auth/login"]["post"]["security"] == []
    assert "401" in doc["paths"]["/api/contact"]["get"]["responses"]
    assert "security" not in doc["paths"]["/api/auth/me"]["get"]

    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))

    def check(response, path, method, status):
        assert response.status_code == int(status), response.text
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = {"$ref": "urn:doc" + schema["$ref"]}
        elif schema.get("type") == "array" and "$ref" in schema.get("items", {}):
            schema = {"type": "array", "items": {"$ref": "urn:doc" + schema["items"]["$ref"]}}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(response.json())

    check(token, "/api/auth/tokens", "post", "201")
    check(login_answer, "/api/auth/login", "post", "200")
    check(session_me, "/api/auth/me", "get", "200")
    check(site.get("/api/auth/me", headers=h), "/api/auth/me", "get", "200")
    check(site.get("/api/auth/tokens", headers=h), "/api/auth/tokens", "get", "200")
    check(site.get("/api/auth/users", headers=h), "/api/auth/users", "get", "200")
    check(site.get(f"/api/auth/users/{agent.id}", headers=h), "/api/auth/users/{user_id}", "get", "200")
    check(site.get("/api/auth/roles", headers=h), "/api/auth/roles", "get", "200")
    check(site.get("/api/auth/roles/agent", headers=h), "/api/auth/roles/{name}", "get", "200")
    check(site.get("/api/auth/teams", headers=h), "/api/auth/teams", "get", "200")
    check(site.post("/api/auth/teams", json={"name": "West"}, headers=h), "/api/auth/teams", "post", "201")
    check(site.get("/api/auth/log", headers=h), "/api/auth/log", "get", "200")
    check(site.patch(f"/api/auth/users/{agent.id}", json={"teams": ["West"]}, headers=h), "/api/auth/users/{user_id}",
          "patch", "200")
    check(site.post("/api/auth/users", json={"name": "New", "email": "new@example.com"}, headers=h),
          "/api/auth/users", "post", "201")
    check(site.post("/api/auth/password-reset", json={"email": agent.email}), "/api/auth/password-reset", "post", "202")


def test_reset_links_need_the_public_address(crm_client, mailbox):
    """Without base_url, a link built from the request's Host header could point anywhere: only
    loopback requests get one."""
    client = crm_client(role="agent", extra_plugins=[mailbox])
    email = client.get("/api/auth/me").json()["user"]["email"]
    assert client.post("/api/auth/password-reset", json={"email": email}).status_code == 202
    assert mailbox.sent == []
    client.base_url = "http://127.0.0.1:8000"
    assert client.post("/api/auth/password-reset", json={"email": email}).status_code == 202
    [(_, link)] = mailbox.sent
    assert link.startswith("http://127.0.0.1:8000/password/reset/")


def test_a_wrong_base_url_is_refused_naming_it(tmp_path):
    with pytest.raises(crmcore.DeploymentError, match="base_url: 'ftp://crm' is not a base URL"):
        crmcore.init_deployment(tmp_path / "d", base_url="ftp://crm")


def test_scopes_and_field_rules_hold_on_every_route(site, admin):
    """Through HTTP: another agent's record is 404 on every route; team scope; a hidden field
    is absent from lists and history and unusable in filters, sorting and search."""
    ali = crm_user(site, role="agent", teams=["north"])
    ada = crm_user(site, role="agent", teams=["north"])
    sam = crm_user(site, role="agent", teams=["south"])
    mia = crm_user(site, role="sales_manager", teams=["north"])
    made = site.post("/api/contact", json={"last_name": "Kaya", "email": "kaya-secret@example.com"},
                     headers=ali.headers)
    assert made.status_code == 201, made.text
    rid = made.json()["id"]
    site.post("/api/contact", json={"last_name": "Kaya"}, headers=sam.headers)

    for method, path in (("GET", f"/api/contact/{rid}"), ("PATCH", f"/api/contact/{rid}"),
                         ("DELETE", f"/api/contact/{rid}"), ("GET", f"/api/contact/{rid}/history"),
                         ("POST", f"/api/contact/{rid}/restore")):
        problem(site.request(method, path, json={"city": "X"} if method == "PATCH" else None,
                             headers=sam.headers), 404)
    assert [r["id"] for r in site.get("/api/contact?q=kaya", headers=sam.headers).json()["items"]] != [rid]
    bulk = site.patch("/api/contact/bulk", json=[{"id": rid, "city": "X"}], headers=sam.headers)
    assert problem(bulk, 422)["errors"][0]["code"] == "not_found"

    # Team scope: the north manager sees north's records only, and hands them over within it.
    assert [r["id"] for r in site.get("/api/contact", headers=mia.headers).json()["items"]] == [rid]
    problem(site.patch(f"/api/contact/{rid}", json={"owner_id": ada.id}, headers=ali.headers), 403)  # agents may not
    handed = site.patch(f"/api/contact/{rid}", json={"owner_id": ada.id}, headers=mia.headers)
    assert handed.status_code == 200 and handed.json()["owner_id"] == ada.id
    problem(site.get(f"/api/contact/{rid}", headers=ali.headers), 404)
    assert site.get(f"/api/contact/{rid}", headers=ada.headers).status_code == 200
    history = site.get(f"/api/contact/{rid}/history", headers=ada.headers).json()
    assert [h["action"] for h in history] == ["update", "create"]
    problem(site.patch(f"/api/contact/{rid}", json={"owner_id": sam.id}, headers=mia.headers), 403)

    # The manager's role hides e-mail addresses.
    role = site.get("/api/auth/roles/sales_manager", headers=admin.headers).json()
    role["fields"] = {**role.get("fields", {}), "contact": {"email": "hidden"}}
    assert site.put("/api/auth/roles/sales_manager", json=role, headers=admin.headers).status_code == 200
    items = site.get("/api/contact", headers=mia.headers).json()["items"]
    assert items and all("email" not in item for item in items)
    assert site.get("/api/contact?q=kaya-secret", headers=mia.headers).json()["items"] == []
    assert site.get("/api/contact?q=kaya-secret", headers=ada.headers).json()["items"] != []
    for query in ("email=kaya-secret@example.com", "sort=email", "fields=email",
                  'filter={"field": "email", "op": "startswith", "value": "kaya"}'):
        problem(site.get(f"/api/contact?{query}", headers=mia.headers), 422)
    history = site.get(f"/api/contact/{rid}/history", headers=mia.headers).json()
    assert all("email" not in h["changes"] for h in history)
    refused = problem(site.patch(f"/api/contact/{rid}", json={"email": "x@example.com"}, headers=mia.headers), 422)
    assert refused["errors"][0]["code"] == "unknown_field"
