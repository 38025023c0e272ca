"""The web login in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright) against ``crm run-demo`` served on plain http://127.0.0.1 with the default settings
(``secure_cookies`` on), as a person would use the demo.

What a browser does and an HTTP client does not is the point here: it stores the Secure,
HttpOnly, SameSite cookies of an http://127.0.0.1 page (or refuses them), follows the form posts
and redirects, withholds SameSite cookies from another site's form and applies the pages' CSP.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); never run
``playwright install``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright  # the test extra; its browser is Debian's

import crmcore
from crmcore.auth import SYSTEM
from crmcore.demo import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD
from crmcore.testing import free_port

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
VENV_BIN = Path(sys.executable).parent

#: A user only the wrong-password test uses (its failures count against this account only).
OTHER_EMAIL, OTHER_PASSWORD = "wrong.password@example.com", "the right one 4 sure"
#: A user whose password the reset test changes through a one-time link.
RESET_EMAIL, RESET_PASSWORD = "forgetful@example.com", "forgotten password 1"
NEW_PASSWORD = "brand new password 2"
#: An attacker's page: Playwright answers its requests, nothing leaves the machine.
EVIL = "http://evil.test"


# -- the server and the browser -----------------------------------------------------------------


class Server:
    def __init__(self, base: str, reset_link: str):
        self.base = base
        self.reset_link = reset_link

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``crm run-demo`` (demo data, its admin) plus two users and a reset link, serving on a
    free port of 127.0.0.1; stopped after the module."""
    root = tmp_path_factory.mktemp("web")
    demo = root / "demo"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "CRM_DEPLOYMENT")}
    crm = str(VENV_BIN / "crm")
    setup = subprocess.run([crm, "run-demo", str(demo), "--no-serve"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=120)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert DEMO_ADMIN_EMAIL in setup.stdout  # the demo says how to log in: that is what is tried here

    async def users() -> str:
        async with await crmcore.Deployment.open(demo) as dep:
            settings = dep.settings
            assert settings.secure_cookies is True  # the default: cookies are Secure, even over http
            await dep.auth.create_user(name="Wrong Password", email=OTHER_EMAIL, password=OTHER_PASSWORD,
                                       role="agent", actor=SYSTEM)
            user = await dep.auth.create_user(name="Forgetful", email=RESET_EMAIL, password=RESET_PASSWORD,
                                              role="agent", actor=SYSTEM)
            return await dep.auth.reset_link(user["id"], base_url=base, actor=SYSTEM)

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API may hold this thread's event loop
        reset_link = thread.submit(asyncio.run, users()).result()
    process = subprocess.Popen([crm, "run-demo", str(demo), "--host", "127.0.0.1", "--port", str(port)],
                               cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(base + "/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        yield Server(base, reset_link)
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile (no cookies) with one page; a request to anywhere but this machine
    or the attacker's page is refused."""
    context = browser.new_context()
    context.set_default_timeout(15_000)

    def only_local(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", EVIL + "/")) or url.startswith(("about:", "data:")):
            route.fallback()
        else:
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def cookies(page, server) -> dict[str, dict]:
    return {c["name"]: c for c in page.context.cookies(server.base)}


def fetch(page, path: str, *, method: str = "GET", headers: dict | None = None, form: dict | None = None) -> dict:
    """``fetch`` in the page (its origin, its cookies): {status, url, body}. The login and reset
    pages allow their scripts no connection (CSP ``default-src 'none'``): from one of them, the
    page goes to ``/api/health`` (JSON, no CSP) first."""
    if urlsplit(page.url).path.startswith(("/login", "/logout", "/password")):
        page.goto(urljoin(page.url, "/api/health"))
    return page.evaluate(
        """async ([path, method, headers, form]) => {
            const init = {method, headers, credentials: "same-origin"};
            if (form) init.body = new URLSearchParams(form);
            const r = await fetch(path, init);
            const text = await r.text();
            let body = text;
            try { body = JSON.parse(text); } catch (e) {}
            return {status: r.status, url: r.url, body};
        }""",
        [path, method, headers or {}, form],
    )


def log_in(page, server, email: str, password: str, next_path: str = "/schema"):
    """Through the login form, as a person; the response of the form's post."""
    page.goto(server.url(f"/login?next={quote(next_path, safe='')}"))
    page.fill("#email", email)
    page.fill("#password", password)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url == server.url("/login")) as posted:
        page.click("button[type=submit]")
    page.wait_for_load_state()
    return posted.value


# -- the tests ----------------------------------------------------------------------------------


def test_login_leads_back_to_the_page_asked_for(page, server):
    # an anonymous visit to a page (not /api/): the login, remembering where to go
    response = page.goto(server.url("/schema"))
    assert page.url == server.url("/login?next=%2Fschema")
    first = response.request.redirected_from
    assert first is not None and first.url == server.url("/schema") and first.response().status == 303
    assert response.status == 200 and page.title().startswith("Sign in")
    assert page.input_value("input[name=next]") == "/schema"
    form_cookie = cookies(page, server)["crm_csrf"]  # the form's double-submit cookie was stored
    assert form_cookie["httpOnly"] and form_cookie["secure"] and form_cookie["sameSite"] == "Strict"
    assert page.input_value("input[name=_csrf]") == form_cookie["value"]
    assert "crm_session" not in cookies(page, server)

    page.fill("#email", DEMO_ADMIN_EMAIL.upper())  # e-mail addresses are logins whatever their case
    page.fill("#password", DEMO_ADMIN_PASSWORD)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    landed = navigation.value
    assert page.url == server.url("/schema")
    posted = landed.request.redirected_from
    assert posted.method == "POST" and posted.url == server.url("/login") and posted.response().status == 303
    assert landed.status == 200 and landed.json()["openapi"].startswith("3.")

    # the browser stored the session cookie from plain http://127.0.0.1, and sends it
    session = cookies(page, server)["crm_session"]
    assert session["httpOnly"] is True and session["secure"] is True and session["sameSite"] == "Lax"
    assert session["domain"] == "127.0.0.1" and session["path"] == "/" and session["expires"] > time.time() + 3600
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads either cookie
    me = fetch(page, "/api/auth/me")
    assert me["status"] == 200, me
    assert me["body"]["user"]["email"] == DEMO_ADMIN_EMAIL and me["body"]["role"] == "admin"
    assert me["body"]["via"] == "session" and me["body"]["csrf_token"]
    # and the API's pages answer the session: the demo's 240 contacts
    contacts = fetch(page, "/api/contact?count=true&limit=1")
    assert contacts["status"] == 200 and contacts["body"]["total"] == 240

    # logged in, the login page goes straight on
    page.goto(server.url("/login?next=%2Fapi%2Fmeta"))
    assert page.url == server.url("/api/meta")


def test_a_wrong_password_shows_the_error_and_sets_no_session(page, server):
    posted = log_in(page, server, OTHER_EMAIL, "not the password")
    assert posted.status == 401
    assert page.url == server.url("/login")  # the form again, not the page asked for
    error = page.locator("p.error[role=alert]")
    assert error.is_visible() and "wrong" in error.inner_text().lower()
    assert page.input_value("#email") == OTHER_EMAIL and page.input_value("#password") == ""
    assert page.input_value("input[name=next]") == "/schema"
    assert "crm_session" not in cookies(page, server)
    assert fetch(page, "/api/auth/me")["status"] == 401

    # the right password works
    assert log_in(page, server, OTHER_EMAIL, OTHER_PASSWORD).status == 303
    assert page.url == server.url("/schema") and "crm_session" in cookies(page, server)
    assert fetch(page, "/api/auth/me")["body"]["user"]["email"] == OTHER_EMAIL


def test_logout_needs_the_sessions_csrf_token(page, server):
    assert log_in(page, server, DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD).status == 303
    me = fetch(page, "/api/auth/me")
    assert me["status"] == 200
    csrf = me["body"]["csrf_token"]

    # without the token (or with another) the session stays
    refused = fetch(page, "/logout", method="POST")
    assert refused["status"] == 403 and "Not signed out" in refused["body"]
    refused = fetch(page, "/logout", method="POST", form={"_csrf": "x" * 43})
    assert refused["status"] == 403
    assert fetch(page, "/api/auth/me")["status"] == 200

    # the same from the header is accepted; checked again with a form, as a page would post it
    page.set_content(f"""<form method="post" action="/logout">
        <input type="hidden" name="_csrf" value="{csrf}"><button type="submit">Sign out</button></form>""")
    with page.expect_navigation() as navigation:
        page.click("button")
    assert page.url == server.url("/login") and navigation.value.status == 200
    assert navigation.value.request.redirected_from.response().status == 303
    assert "crm_session" not in cookies(page, server)  # the browser dropped it
    assert fetch(page, "/api/auth/me")["status"] == 401


def test_logout_by_fetch_with_the_csrf_header(page, server):
    log_in(page, server, DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD)
    csrf = fetch(page, "/api/auth/me")["body"]["csrf_token"]
    done = fetch(page, "/logout", method="POST", headers={"X-CSRF-Token": csrf})
    assert done["status"] == 200 and done["url"] == server.url("/login")  # the redirect, followed
    assert "crm_session" not in cookies(page, server)
    assert fetch(page, "/api/auth/me")["status"] == 401


def _evil_page(page, html: str) -> None:
    """Show ``html`` as the attacker's page at http://evil.test/ (another site)."""
    page.context.route(EVIL + "/**", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    page.goto(EVIL + "/")
    assert page.url == EVIL + "/"


def test_another_sites_login_form_is_refused(page, server):
    # the victim has seen the login form: the browser holds its crm_csrf cookie
    page.goto(server.url("/login"))
    assert "crm_csrf" in cookies(page, server)
    # another site posts the login form with valid credentials, without (or with a guessed) _csrf
    for field in ("", '<input type="hidden" name="_csrf" value="guessed-guessed-guessed-guessed">'):
        _evil_page(page, f"""<form method="post" action="{server.url('/login')}">{field}
            <input name="email" value="{DEMO_ADMIN_EMAIL}"><input name="password" value="{DEMO_ADMIN_PASSWORD}">
            <input name="next" value="/api/meta"><button type="submit">Win a prize</button></form>""")
        with page.expect_response(lambda r: r.request.method == "POST" and r.url == server.url("/login")) as posted:
            page.click("button")
        page.wait_for_load_state()
        assert posted.value.status == 403
        assert page.url == server.url("/login")
        assert "came from another site" in page.locator("p.error").inner_text()
        assert "crm_session" not in cookies(page, server)

    # and from the page itself, a script's post without the field is refused too
    page.goto(server.url("/login"))
    posted = fetch(page, "/login", method="POST",
                   form={"email": DEMO_ADMIN_EMAIL, "password": DEMO_ADMIN_PASSWORD, "next": "/"})
    assert posted["status"] == 403 and "came from another site" in posted["body"]
    assert "crm_session" not in cookies(page, server)
    assert fetch(page, "/api/auth/me")["status"] == 401


def test_another_site_cannot_act_with_the_session(page, server):
    """Logged in, another site's form posts reach the server without the SameSite=Lax session
    cookie: they do nothing as the user, and do not sign the user out."""
    log_in(page, server, DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD)
    before = fetch(page, "/api/contact?count=true&limit=1")["body"]["total"]
    for action in ("/api/contact", "/logout"):
        _evil_page(page, f"""<form method="post" action="{server.url(action)}">
            <input name="first_name" value="Mallory"><button type="submit">Go</button></form>""")
        with page.expect_response(lambda r: r.request.method == "POST" and r.url == server.url(action)) as posted:
            page.click("button")
        page.wait_for_load_state()
        if action == "/api/contact":
            assert posted.value.status == 401  # no session came along
        page.goto(server.url("/login?next=%2Fschema"))
        assert page.url == server.url("/schema"), action  # still signed in: the login page goes on
    assert fetch(page, "/api/auth/me")["status"] == 200
    assert fetch(page, "/api/contact?count=true&limit=1")["body"]["total"] == before


def test_password_reset_page_refuses_mismatching_passwords_then_resets(page, server):
    link = server.reset_link
    assert link.startswith(server.url("/password/reset/"))
    response = page.goto(link)
    assert response.status == 200 and page.title().startswith("Choose a new password")
    assert page.locator("h1").inner_text() == "Choose a new password"

    page.fill("#password", NEW_PASSWORD)
    page.fill("#password2", NEW_PASSWORD + "!")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url == link) as posted:
        page.click("button[type=submit]")
    page.wait_for_load_state()
    assert posted.value.status == 422
    assert page.url == link
    assert page.locator("p.error[role=alert]").inner_text() == "The two passwords differ."
    assert page.locator("#password").is_visible()  # the form again: the link still works

    # the same twice: the password is set and the login says so
    page.fill("#password", NEW_PASSWORD)
    page.fill("#password2", NEW_PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == server.url("/login?reset=1")
    assert "Your password was changed" in page.locator("p.notice").inner_text()
    assert log_in(page, server, RESET_EMAIL, RESET_PASSWORD).status == 401  # the old one no longer
    assert log_in(page, server, RESET_EMAIL, NEW_PASSWORD).status == 303
    assert fetch(page, "/api/auth/me")["body"]["user"]["email"] == RESET_EMAIL

    # the link was for one use
    page.goto(link)
    page.fill("#password", "yet another password 3")
    page.fill("#password2", "yet another password 3")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url == link) as posted:
        page.click("button[type=submit]")
    page.wait_for_load_state()
    assert posted.value.status == 400 and "already used" in page.locator("p.error").inner_text()


def test_password_reset_request_page(page, server):
    page.goto(server.url("/login"))
    with page.expect_navigation():
        page.click("text=Forgot your password?")
    assert page.url == server.url("/password/reset")
    page.fill("#email", OTHER_EMAIL)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    assert navigation.value.status == 200
    assert page.locator("h1").inner_text() == "Check your inbox"
    assert OTHER_EMAIL in page.locator("main").inner_text()
