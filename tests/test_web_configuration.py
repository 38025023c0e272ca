"""The document-template and configuration-bundle settings pages over HTTP (their browser tests
are in tests/web/test_configuration_pages.py): templates added, refused with the line of their
error (the text kept), changed, previewed without storing a document, deleted; plugins'
templates read-only; a bundle uploaded with the session's CSRF token, its diff shown, applied."""

from __future__ import annotations

import functools
import html
import json
import re

from crmcore.auth import SYSTEM
from crmcore.auth.permissions import Role
from crmcore.testing import crm_user

from .document_plugin import DocumentPlugin

HTML = {"accept": "text/html"}


def call(client, fn, *args, **kwargs):
    return client.blocking_portal.call(functools.partial(fn, *args, **kwargs))


def page_of(response, status: int, *texts: str) -> str:
    """An HTML page answering with ``status`` and showing each of ``texts`` (as HTML)."""
    assert response.status_code == status, response.text[-3000:]
    assert response.headers["content-type"].startswith("text/html")
    for text in texts:
        assert text in response.text, (text, re.sub(r"\s+", " ", response.text)[-3000:])
    return response.text


def redirected(response, location: str) -> str:
    assert response.status_code == 303, response.text[-3000:]
    assert response.headers["location"].startswith(location), response.headers["location"]
    return response.headers["location"]


def textarea(page: str, name: str) -> str:
    """The text a page's textarea holds (as the browser reads it: the first newline dropped)."""
    found = re.search(rf'<textarea[^>]*name="{name}"[^>]*>\n?(.*?)</textarea>', page, re.S)
    assert found, page[-3000:]
    return found.group(1)


LETTER = {"name": "letter", "label": "Welcome letter", "entity": "contact", "format": "html",
          "body": "<style>h1 { color: navy }</style>\n<h1>Dear {{ record.first_name }} {{ record.last_name }}</h1>\n"
                  "<p>{{ settings.name }}</p>"}


def test_a_template_added_refused_changed_previewed_and_deleted(crm_client):
    client = crm_client(name="Window Shop")
    dep = client.app.state.deployment
    contact = client.post("/api/contact", json={"first_name": "Ayşe", "last_name": "Yılmaz"}).json()

    page_of(client.get("/settings/documents", headers=HTML), 200, "No document templates yet.",
            'href="/settings/documents/new"')
    page_of(client.get("/settings/documents/new", headers=HTML), 200, 'name="body"', 'class="code"')

    # A template error: 422, the line's message next to the body, the text kept as typed.
    broken = {**LETTER, "body": "<h1>Dear {{ record.last_name }}</h1>\r\n<p>{% if %}</p>"}
    page = page_of(client.post("/settings/documents", data=broken, headers=HTML), 422, "line 2: ")
    assert re.search(r'<textarea[^>]*name="body"[^>]*aria-invalid="true"', page)
    assert re.search(r'</textarea>\s*<span[^>]*>[^<]*</span>\s*<p class="field-error">line 2: ', page)
    assert textarea(page, "body") == "&lt;h1&gt;Dear {{ record.last_name }}&lt;/h1&gt;\n&lt;p&gt;{% if %}&lt;/p&gt;"
    assert 'value="letter"' in page and 'value="Welcome letter"' in page
    page_of(client.post("/settings/documents", data={**LETTER, "name": "Bad Name"}, headers=HTML), 422,
            "a name of lower-case letters")
    assert call(client, dep.documents.templates) == []

    location = redirected(client.post("/settings/documents", data=LETTER, headers=HTML, follow_redirects=False),
                          "/settings/documents/letter?ok=template_added")
    page = page_of(client.get(location, headers=HTML), 200, "Template added.", "Delete template")
    assert textarea(page, "body") == LETTER["body"].replace("<", "&lt;").replace(">", "&gt;")
    listed = page_of(client.get("/settings/documents", headers=HTML), 200, 'href="/settings/documents/letter"',
                     "Welcome letter", "stored")
    assert "read-only" not in listed

    # Changed: the body, the format; a broken change keeps the stored one.
    redirected(client.post("/settings/documents/letter", data={**LETTER, "format": "pdf", "label": "Letter",
                                                                "body": LETTER["body"] + "\n<p>Yours</p>"},
                           headers=HTML, follow_redirects=False), "/settings/documents/letter?ok=template_saved")
    stored = call(client, dep.documents.template, "letter")
    assert (stored["format"], stored["label"]) == ("pdf", "Letter") and stored["body"].endswith("<p>Yours</p>")
    page = page_of(client.post("/settings/documents/letter", data={**LETTER, "body": "{{ record.name }"},
                               headers=HTML), 422, "line 1: ")
    assert textarea(page, "body") == "{{ record.name }"
    assert call(client, dep.documents.template, "letter")["body"] == stored["body"]

    # A preview: the page frames the rendered record; nothing is stored.
    page = page_of(client.get(f"/settings/documents/letter?record_id={contact['id']}", headers=HTML), 200)
    frame = re.search(r'<iframe id="preview-frame" sandbox src="([^"]+)"', page)
    assert frame and frame.group(1) == f"/settings/documents/letter/preview?record_id={contact['id']}"
    preview = client.get(frame.group(1))
    assert preview.status_code == 200 and preview.headers["content-type"].startswith("text/html")
    assert "<h1>Dear Ayşe Yılmaz</h1>" in preview.text and "<p>Window Shop</p>" in preview.text
    assert "sandbox" in preview.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    pdf = client.get(frame.group(1) + "&format=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"].startswith("attachment")
    assert client.get(f"/api/documents?entity=contact&record_id={contact['id']}").json() == []

    # A preview that cannot be: the message, never a 500.
    page_of(client.get("/settings/documents/letter?record_id=99999", headers=HTML), 422, 'id="preview-errors"',
            "99999")
    page_of(client.get("/settings/documents/letter?record_id=ayse", headers=HTML), 422, "the id of a contact")
    assert client.get("/settings/documents/letter/preview?record_id=99999").status_code == 404
    call(client, dep.documents.update_template, "letter", {"body": "{{ 1 / 0 }}"}, actor=SYSTEM)
    page_of(client.get(f"/settings/documents/letter?record_id={contact['id']}", headers=HTML), 422,
            "line 1: ZeroDivisionError")
    failed = client.get(f"/settings/documents/letter/preview?record_id={contact['id']}")
    assert failed.status_code == 422 and "line 1: ZeroDivisionError" in failed.text
    assert failed.headers["content-type"].startswith("text/plain")

    # Deleted.
    redirected(client.post("/settings/documents/letter/delete", headers=HTML, follow_redirects=False),
               "/settings/documents?ok=template_deleted&what=letter")
    assert call(client, dep.documents.templates) == []
    page_of(client.get("/settings/documents/letter", headers=HTML), 404)


def test_a_plugins_template_is_read_only(crm_client):
    client = crm_client(extra_plugins=[DocumentPlugin])
    contact = client.post("/api/contact", json={"first_name": "Ali", "last_name": "Kaya"}).json()
    page_of(client.get("/settings/documents", headers=HTML), 200, "plugin docplug", "read-only",
            'href="/settings/documents/docplug.welcome"')
    page = page_of(client.get("/settings/documents/docplug.welcome", headers=HTML), 200, 'id="read-only-note"')
    assert "Welcome, {{ record.first_name }}" in textarea(page, "body")
    assert re.search(r'<textarea[^>]*name="body"[^>]*readonly', page)
    assert "Save template" not in page and "Delete template" not in page
    page_of(client.post("/settings/documents/docplug.welcome", data={"body": "mine"}, headers=HTML), 403)
    page_of(client.post("/settings/documents/docplug.welcome/delete", headers=HTML), 403)
    preview = client.get(f"/settings/documents/docplug.welcome/preview?record_id={contact['id']}")
    assert preview.status_code == 200 and "<h1>Welcome, Ali Kaya</h1>" in preview.text


def test_the_pages_need_their_permissions(crm_client):
    client = crm_client()
    dep = client.app.state.deployment
    agent = crm_user(client, role="agent")
    call(client, dep.auth.save_role, Role(name="schema_admin", entities={"*": {"read": "all"}},
                                          grants=["manage_schema"]), actor=SYSTEM)
    schema_admin = crm_user(client, role="schema_admin")
    for path in ("/settings/documents", "/settings/documents/new", "/settings/bundle"):
        page_of(client.get(path, headers={**HTML, **agent.headers}), 403, "Not allowed")
    page_of(client.post("/settings/documents", data=LETTER, headers={**HTML, **agent.headers}), 403)
    assert client.get("/settings/documents", headers={**HTML, **schema_admin.headers}).status_code == 200
    settings = client.get("/settings", headers={**HTML, **schema_admin.headers}).text
    assert 'href="/settings/documents"' in settings and 'href="/settings/bundle"' not in settings  # all three needed
    assert 'href="/settings/bundle"' in client.get("/settings", headers=HTML).text
    # The bundle page needs all three permissions a bundle touches, and says which are missing.
    page_of(client.get("/settings/bundle", headers={**HTML, **schema_admin.headers}), 403,
            "missing: manage_roles, manage_automation")
    page_of(client.post("/settings/bundle/apply", data={"bundle": '{"format": 1, "teams": ["Intruders"]}'},
                        headers={**HTML, **schema_admin.headers}), 403)
    assert "Intruders" not in [t["name"] for t in call(client, dep.auth.teams)]


def _session(client) -> str:
    """Signs the client in with a password (a session cookie); the session's CSRF token."""
    admin = crm_user(client, role="admin", token=False)
    login = client.post("/api/auth/login", json={"email": admin.email, "password": admin.password})
    assert login.status_code == 200, login.text
    return login.json()["csrf_token"]


def test_a_bundle_uploaded_shown_and_applied(crm_client):
    source = crm_client()
    source.post("/api/auth/teams", json={"name": "Windows"})
    source.post("/api/meta/entities/contact/fields", json={"name": "loyalty", "type": "choice",
                                                          "choices": ["gold", "silver"]})
    source.post("/api/document-templates", json={**LETTER})
    bundle = source.get("/api/bundle").content

    target = crm_client(role=None)
    csrf = _session(target)
    dep = target.app.state.deployment
    call(target, dep.auth.create_team, "Local", actor=SYSTEM)
    call(target, dep.documents.create_template, {**LETTER, "label": "Old letter"}, actor=SYSTEM)
    page = page_of(target.get("/settings/bundle", headers=HTML), 200, 'enctype="multipart/form-data"',
                   'href="/api/bundle"', f'name="_csrf" value="{csrf}"')
    download = target.get("/api/bundle")  # the download works with the session cookie
    assert download.status_code == 200 and "-bundle.json" in download.headers["content-disposition"]

    # Without the session's CSRF token an upload is refused.
    assert target.post("/settings/bundle/plan", files={"file": ("shop.json", bundle)}, headers=HTML).status_code == 403
    page = page_of(target.post("/settings/bundle/plan", data={"_csrf": csrf}, files={"file": ("shop.json", bundle)},
                               headers=HTML), 200, "Changes in shop.json", "Apply")
    changes = {item: change for change, item in re.findall(r'<li data-change="(\w+)" data-item="([^"]+)">', page)}
    assert changes == {"contact.loyalty": "add", "Windows": "add", "Local": "only_here", "letter": "change"}
    assert "(label)" in page and "kept: only here" in page and "Bundle applied" not in page
    assert call(target, dep.custom_fields, "contact") == []  # nothing changes before Apply

    # Apply posts the bundle back from the page (nothing was kept on the server); what changed is shown.
    kept = html.unescape(textarea(page, "bundle"))
    assert json.loads(kept)["teams"] == ["Windows"]
    applied = page_of(target.post("/settings/bundle/apply", data={"_csrf": csrf, "bundle": kept}, headers=HTML), 200,
                      "Bundle applied", "Changes made: 3.")
    assert re.findall(r'<li data-change="(\w+)">', applied) == ["add", "add", "change"]
    assert [f.name for f, _ in call(target, dep.custom_fields, "contact")] == ["loyalty"]
    assert {t["name"] for t in call(target, dep.auth.teams)} == {"Windows", "Local"}
    assert call(target, dep.documents.template, "letter")["label"] == "Welcome letter"
    page_of(target.post("/settings/bundle/plan", data={"_csrf": csrf}, files={"file": ("shop.json", bundle)},
                        headers=HTML), 200, "Nothing to change")

    # A bad file: a clear message, nothing applied.
    for content, words in [(b"{not json", "this is not JSON"), (b"\xff\xfe\x00", "not UTF-8"),
                           (b'{"format": 1, "roles": [{"label": "x"}]}', "roles[0]"),
                           (b'{"format": 1, "gadgets": []}', "unknown field `gadgets`")]:
        page_of(target.post("/settings/bundle/plan", data={"_csrf": csrf}, files={"file": ("bad.json", content)},
                            headers=HTML), 422, "This bundle cannot be used", words)
    page_of(target.post("/settings/bundle/plan", data={"_csrf": csrf}, headers=HTML), 422, "choose a bundle file")
    unknown_user = json.dumps({"format": 1, "web_forms": [{"name": "w", "owner": "nobody@shop.example"}]})
    page_of(target.post("/settings/bundle/apply", data={"_csrf": csrf, "bundle": unknown_user}, headers=HTML), 422,
            "web_forms", "nobody@shop.example")
    assert call(target, dep.forms.list) == []
