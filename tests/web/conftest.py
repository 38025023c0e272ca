"""Browser tests of the web UI: headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright; never ``playwright install``) against the app served by uvicorn on a free port of
127.0.0.1 in a thread of the test process, so test plugins (``sample_plugin``) can be enabled.

Fixtures:

- ``site`` (module): a deployment with an admin, an agent (team "Sales") and a read-only user,
  a custom field ``loyalty`` (choice) on contacts, a few companies, contacts and deals, and the
  sample plugin; ``site.url(path)``, ``site.users[name]`` -> (email, password), ``site.run(fn)``
  runs ``await fn(deployment)`` on the server's event loop.
- ``page``: a fresh browser profile; ``login(page, site, "admin")`` signs in through the form.
- ``shot(page, name)`` saves a screenshot to ``artifacts/screenshots/<name>.png`` (CI keeps it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import crmcore
from crmcore.auth import SYSTEM
from crmcore.testing import ServedApp, serve_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("CRM_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts")) / "screenshots"
USERS = {
    "admin": ("admin@example.com", "admin password 123", "admin"),
    "agent": ("agent@example.com", "agent password 123", "agent"),
    "reader": ("reader@example.com", "reader password 123", "read_only"),
}

pytestmark = pytest.mark.timeout(300)


class Site:
    def __init__(self, served: ServedApp):
        self.served = served
        self.base, self.app = served.url, served.app
        self.users = {name: (email, password) for name, (email, password, _) in USERS.items()}
        self.ids: dict[str, Any] = {}

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def deployment(self) -> crmcore.Deployment:
        return self.app.state.deployment

    def run(self, fn) -> Any:
        """``await fn(deployment)`` on the server's loop (where the deployment's connections live)."""
        return self.served.run(fn(self.deployment))


async def _prepare(dep: crmcore.Deployment) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    await dep.auth.create_team("Sales", actor=SYSTEM)
    for name, (email, password, role) in USERS.items():
        user = await dep.auth.create_user(name=name.title(), email=email, password=password, role=role,
                                          teams=["Sales"] if role != "read_only" else [], actor=SYSTEM)
        ids[name] = user["id"]
    await dep.add_custom_field("contact", crmcore.Field(name="loyalty", type="choice", label="Loyalty",
                                                        choices=["gold", "silver", "bronze"], in_list=True))
    acme = await dep.records.create("company", {"name": "Acme Windows", "owner_id": ids["agent"]})
    ids["company"] = acme["id"]
    contacts = []
    for first, last, loyalty in [("Ayşe", "Yılmaz", "gold"), ("Mehmet", "Demir", "silver"), ("Emily", "Clarke", None)]:
        contact = await dep.records.create("contact", {
            "first_name": first, "last_name": last, "loyalty": loyalty, "company": acme["id"],
            "email": f"{first.lower()}@example.com", "owner_id": ids["agent"]})
        contacts.append(contact["id"])
    ids["contacts"] = contacts
    ids["deals"] = [(await dep.records.create("deal", {
        "name": f"Deal {n}", "amount": {"amount": str(1000 * n), "currency": "EUR"}, "stage": stage,
        "contact": contacts[0], "owner_id": ids["agent"]}))["id"]
        for n, stage in enumerate(["prospecting", "prospecting", "qualification", "quote"], 1)]
    return ids


def serve(path: Path, extra_plugins: Any = ()) -> Any:
    """Serve the deployment in ``path`` (its SQLite file); yields the :class:`Site`."""
    with serve_app(path, database_url=f"sqlite:///{path / 'crm.db'}", extra_plugins=extra_plugins) as served:
        yield Site(served)


def plugin_site(tmp_path_factory, plugins: list[str], *, region: str = "DE", currency: str = "EUR",
                timezone: str = "Europe/Berlin", **options: Any) -> Any:
    """Serve a new deployment with ``plugins`` enabled and the users and records of
    :func:`_prepare` (``site.ids``); yields the :class:`Site`. For a module's ``site`` fixture::

        for site in plugin_site(tmp_path_factory, ["invoicing"]):
            site.ids.update(site.run(my_records))
            yield site
    """
    path = tmp_path_factory.mktemp("ui") / "site"
    crmcore.init_deployment(path, region=region, currency=currency, timezone=timezone, in_process_worker=False, **options)
    settings = crmcore.deployment.load_settings(path)
    settings.plugins = list(plugins)
    crmcore.deployment.save_settings(path, settings)
    for result in serve(path):
        result.ids = result.run(_prepare)
        yield result


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from . import sample_plugin

    path = tmp_path_factory.mktemp("ui") / "shop"
    crmcore.init_deployment(path, region="TR", currency="EUR", timezone="Europe/Istanbul")
    settings = crmcore.deployment.load_settings(path)
    settings.in_process_worker = False
    crmcore.deployment.save_settings(path, settings)
    for result in serve(path, extra_plugins=[sample_plugin]):
        result.ids = result.run(_prepare)
        yield result


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, site):
    """A fresh browser profile; requests anywhere but the test server are refused; a script
    error on a page fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    context.set_default_timeout(15_000)
    context.route("**/*", lambda route: route.fallback() if route.request.url.startswith(site.base)
                  or route.request.url.startswith(("about:", "data:")) else route.abort())
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "Content Security" in msg.text else None)
    try:
        yield tab
        assert not errors, f"errors in the page: {errors}"
    finally:
        context.close()


def login(page, site: Site, who: str = "admin", next_path: str = "/") -> None:
    email, password = site.users[who]
    page.goto(site.url(f"/login?next={quote(next_path, safe='')}"))
    page.fill("#email", email)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target
