"""The web UI's frame over HTTP: pages need a login, carry a strict CSP, static files cannot be
read outside their folders, errors on pages are pages, any user may set their own language."""

from __future__ import annotations

from crmcore.testing import crm_user

HTML = {"accept": "text/html"}


def test_pages_need_a_login_and_carry_a_strict_csp(crm_client):
    client = crm_client()
    anonymous = client.get("/search", headers={**HTML, "Authorization": ""}, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=%2Fsearch"
    home = client.get("/", headers=HTML)
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    csp = home.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in home.text and " style=" not in home.text and " onclick=" not in home.text
    assert client.get("/").headers["content-type"].startswith("application/json")  # API clients: the index


def test_static_files_stay_in_their_folders(crm_client):
    client = crm_client()
    css = client.get("/static/core/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for path in ["/static/core/../render.py", "/static/core/%2e%2e/render.py", "/static/plugins/nope/x.css",
                 "/static/elsewhere/x", "/static/core/missing.js"]:
        assert client.get(path).status_code == 404, path


def test_search_finds_only_what_the_user_may_read(crm_client):
    client = crm_client()
    agent = crm_user(client, role="agent")
    client.post("/api/contact", json={"last_name": "Zanzibar", "owner_id": client.crm_user.id})
    client.post("/api/contact", json={"last_name": "Zanzibar-Agent", "owner_id": agent.id})
    mine = client.get("/search", params={"q": "zanzibar"}, headers={**HTML, **agent.headers}).text
    assert "Zanzibar-Agent" in mine and ">Zanzibar<" not in mine
    everything = client.get("/search", params={"q": "zanzibar"}, headers=HTML).text
    assert "Zanzibar-Agent" in everything and "Zanzibar</a>" in everything


def test_any_user_sets_their_own_language(crm_client):
    client = crm_client()
    reader = crm_user(client, role="read_only")
    done = client.post("/me/locale", data={"locale": "tr", "next": "/search"}, headers={**HTML, **reader.headers},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/search"
    assert "Her yerde ara" in client.get("/search", headers={**HTML, **reader.headers}).text
    client.post("/me/locale", data={"locale": "xx", "next": "https://evil.test/"}, headers={**HTML, **reader.headers})
    assert client.get(f"/api/user/{reader.id}").json()["locale"] == "tr"  # an unknown locale is ignored


def test_a_bad_cursor_on_a_page_is_ignored(crm_client):
    client = crm_client()
    agent = crm_user(client, role="agent")
    listed = client.get("/notifications?before=abc", headers={**HTML, **agent.headers})
    assert listed.status_code == 200 and "No notifications." in listed.text
