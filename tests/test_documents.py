"""Documents from templates: stored and plugin templates, sandboxed rendering with the record as
its reader sees it, HTML and PDF output, template errors with their line, generated documents
attached to the record (API, CLI, timeline) and the ``generate_document`` automation action."""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from pathlib import Path

import pytest
from babel.numbers import format_currency

import crmcore
from crmcore import SYSTEM, Forbidden, NotFound, ValidationError
from crmcore.auth.permissions import Role, Scope
from crmcore.testing import crm_user, make_user

from .conftest import crm, problem, run
from .document_plugin import DocumentPlugin

UTC = dt.timezone.utc
CONTRACT = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ template.label }}</title></head>
<body>
<h1>Contract: {{ record.name }}</h1>
<p class="amount">Amount: {{ record.amount }}</p>
<p class="plain">Plain: {{ record.amount.amount | money }}</p>
<p class="close">Close: {{ record.expected_close | date("long") }}</p>
<p class="signed">Signed: {{ record.signed_at }}</p>
<p class="count">Windows: {{ record.windows | number }}</p>
<p class="client">Client: {{ related.contact.first_name }} {{ related.contact.last_name }} ({{ related.company.name }})</p>
<p class="seller">Seller: {{ settings.name }}, {{ settings.currency }}</p>
<p class="missing">[{{ record.no_such_field }}][{{ related.nothing.name }}]</p>
{% for task in related("activity") %}<p class="task">{{ task.subject }}</p>{% endfor %}
</body></html>
"""


def _inflate(pdf: bytes) -> bytes:
    """A PDF's bytes with its compressed streams inflated (WeasyPrint compresses objects)."""
    parts = [pdf]
    for match in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            parts.append(zlib.decompress(match.group(1)))
        except zlib.error:
            pass
    return b"\n".join(parts)


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", _inflate(pdf)))


async def _world(dep):
    """A deal of a contact of a company, with a task; custom fields of a datetime and a number."""
    from crmcore import Field, FieldType

    await dep.add_custom_field("deal", Field(name="signed_at", type=FieldType.DATETIME))
    await dep.add_custom_field("deal", Field(name="windows", type=FieldType.INTEGER))
    company = await dep.records.create("company", {"name": "Demir Yapi"})
    contact = await dep.records.create("contact", {"first_name": "Ayse", "last_name": "Demir",
                                                   "company": company["id"]})
    deal = await dep.records.create("deal", {
        "name": "Windows for Demir", "amount": {"amount": "2400", "currency": "EUR"}, "contact": contact["id"],
        "company": company["id"], "expected_close": "2031-03-05", "signed_at": "2031-03-05T14:00:00+00:00",
        "windows": 12345})
    task = await dep.records.create("activity", {"kind": "task", "subject": "Send the contract", "deal": deal["id"]})
    return company, contact, deal, task


async def test_html_document_with_the_record_related_records_settings_and_formatting(make_deployment):
    dep = await make_deployment(currency="EUR", timezone="Europe/Istanbul", locale="en")
    company, contact, deal, task = await _world(dep)
    template = await dep.documents.create_template(
        {"name": "contract", "entity": "deal", "format": "html", "label": "Contract", "body": CONTRACT}, actor=SYSTEM)
    assert template["format"] == "html" and template["read_only"] is False

    content, fmt, filename = await dep.documents.render("contract", "deal", deal["id"], actor=SYSTEM)
    html = content.decode()
    assert fmt == "html" and filename == f"contract-deal-{deal['id']}.html"
    assert "<h1>Contract: Windows for Demir</h1>" in html
    euros = format_currency(2400, "EUR", locale="en")
    assert f"Amount: {euros}<" in html and f"Plain: {euros}<" in html
    assert "Close: March 5, 2031<" in html
    # 14:00 UTC is 17:00 in Istanbul, the deployment's zone (CLDR: a narrow no-break space before PM).
    assert "Signed: Mar 5, 2031 5:00\u202fPM<" in html
    assert "Windows: 12,345<" in html
    assert "Client: Ayse Demir (Demir Yapi)" in html
    assert f"Seller: {dep.settings.name}, EUR" in html
    assert '<p class="missing">[][]</p>' in html  # unknown values print nothing
    assert '<p class="task">Send the contract</p>' in html

    # Another locale: the same template reads as the deployment is set.
    turkish = await make_deployment(currency="TRY", timezone="Europe/Istanbul", locale="tr")
    *_, tr_deal, _ = await _world(turkish)
    await turkish.documents.create_template({"name": "contract", "entity": "deal", "format": "html", "body": CONTRACT},
                                            actor=SYSTEM)
    html = (await turkish.documents.render("contract", "deal", tr_deal["id"], actor=SYSTEM))[0].decode()
    assert f"Amount: {format_currency(2400, 'EUR', locale='tr')}<" in html
    assert f"Plain: {format_currency(2400, 'TRY', locale='tr')}<" in html
    assert "Close: 5 Mart 2031<" in html


async def test_values_are_escaped(make_deployment):
    dep = await make_deployment()
    contact = await dep.records.create("contact", {"last_name": "<script>alert(1)</script>"})
    await dep.documents.create_template({"name": "letter", "entity": "contact", "format": "html",
                                         "body": "<p>{{ record.last_name }}</p>"}, actor=SYSTEM)
    html = (await dep.documents.render("letter", "contact", contact["id"], actor=SYSTEM))[0].decode()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_pdf_output_and_pdf_a(make_deployment):
    dep = await make_deployment()
    *_, deal, _ = await _world(dep)
    body = CONTRACT.replace("</body>", '<p style="page-break-before: always">Signatures</p></body>')
    await dep.documents.create_template({"name": "contract", "entity": "deal", "body": body}, actor=SYSTEM)
    content, fmt, filename = await dep.documents.render("contract", "deal", deal["id"], actor=SYSTEM)
    assert fmt == "pdf" and filename.endswith(".pdf")
    assert content.startswith(b"%PDF-") and _pages(content) == 2
    assert b"pdfaid" not in _inflate(content)
    archival, *_ = await dep.documents.render("contract", "deal", deal["id"], actor=SYSTEM, pdf_a=True)
    assert archival.startswith(b"%PDF-") and _pages(archival) == 2
    assert re.search(rb'pdfaid:part="3"', _inflate(archival))
    # The same record as HTML on request.
    html, fmt, _ = await dep.documents.render("contract", "deal", deal["id"], actor=SYSTEM, format="html")
    assert fmt == "html" and b"Windows for Demir" in html


async def test_pdf_loads_no_file_or_network_resource(make_deployment, tmp_path):
    dep = await make_deployment()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for documents")
    contact = await dep.records.create("contact", {"last_name": "Kaya"})
    await dep.documents.create_template({"name": "letter", "entity": "contact", "body": (
        f'<img src="file://{secret}"><link rel="stylesheet" href="http://127.0.0.1:9/x.css"><p>{{{{ record.last_name }}}}</p>')},
        actor=SYSTEM)
    content, *_ = await dep.documents.render("letter", "contact", contact["id"], actor=SYSTEM)
    assert content.startswith(b"%PDF-") and b"not for documents" not in _inflate(content)


@pytest.mark.parametrize("body, line, words", [
    ("<p>one</p>\n<p>two</p>\n{% if record.name %}<p>three</p>", 3, "end of template"),
    ("<p>one</p>\n{{ record.name | no_such_filter }}", 2, "no_such_filter"),
    ("<p>{{ record.name }</p>", 1, "unexpected"),
])
async def test_a_syntax_error_names_its_line_when_saved(make_deployment, body, line, words):
    dep = await make_deployment()
    with pytest.raises(ValidationError) as refused:
        await dep.documents.create_template({"name": "broken", "entity": "deal", "body": body}, actor=SYSTEM)
    [error] = refused.value.errors
    assert error.field == "body" and error.message.startswith(f"line {line}: ") and words in error.message
    assert await dep.documents.templates() == []


async def test_a_runtime_error_names_its_line(make_deployment):
    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "D"})
    await dep.documents.create_template({"name": "broken", "entity": "deal", "format": "html",
                                         "body": "<p>{{ record.name }}</p>\n\n<p>{{ 1 // 0 }}</p>"}, actor=SYSTEM)
    with pytest.raises(ValidationError) as refused:
        await dep.documents.render("broken", "deal", deal["id"], actor=SYSTEM)
    [error] = refused.value.errors
    assert error.field == "body" and error.message.startswith("line 3: ") and "division" in error.message
    await dep.documents.update_template("broken", {"body": "<p>\n{{ related('no_such_entity') }}</p>"}, actor=SYSTEM)
    with pytest.raises(ValidationError, match="line 2: .*no_such_entity"):
        await dep.documents.render("broken", "deal", deal["id"], actor=SYSTEM)
    with pytest.raises(ValidationError, match="no_such_entity"):  # nothing was stored
        await dep.documents.generate("broken", "deal", deal["id"], actor=SYSTEM)
    assert await dep.documents.documents("deal", deal["id"], actor=SYSTEM) == []


@pytest.mark.parametrize("body", [
    "{{ ''.__class__.__mro__ }}",
    "<p>\n{{ cycler.__init__.__globals__ }}</p>",
    "{{ record['__class__'] }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
])
async def test_a_sandbox_escape_is_refused_when_saved(make_deployment, body):
    dep = await make_deployment()
    with pytest.raises(ValidationError) as refused:
        await dep.documents.create_template({"name": "evil", "entity": "deal", "body": body}, actor=SYSTEM)
    [error] = refused.value.errors
    assert error.field == "body" and re.match(r"line \d+: '__\w+__' is not allowed", error.message), error.message


@pytest.mark.parametrize("body", [
    "{% set name = '__cla' ~ 'ss__' %}\n{{ ''[name] }}",
    "{% set name = '__glob' ~ 'als__' %}\n{{ cycler.next[name] }}",
    "{{ record.update({'name': 'x'}) }}\n",
    "{{ ''.format.__self__ }}",
])
async def test_a_sandbox_escape_is_refused_when_run(make_deployment, body):
    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "D"})
    # A name built at run time passes the check on saving: the sandbox refuses it when it runs.
    try:
        await dep.documents.create_template({"name": "evil", "entity": "deal", "format": "html", "body": body},
                                            actor=SYSTEM)
    except ValidationError as refused:
        assert refused.errors[0].field == "body" and "not allowed" in refused.errors[0].message
        return
    with pytest.raises(ValidationError) as refused:
        await dep.documents.render("evil", "deal", deal["id"], actor=SYSTEM)
    [error] = refused.value.errors
    assert error.field == "body" and error.message.startswith("line ") and (
        "not allowed" in error.message or "unsafe" in error.message), error.message
    assert (await dep.records.get("deal", deal["id"]))["name"] == "D"


async def test_hidden_fields_are_absent_from_a_document_an_agent_renders(make_deployment):
    dep = await make_deployment()
    *_, deal, _ = await _world(dep)
    await dep.auth.save_role(Role(name="no_amounts", entities={"*": {a: Scope.ALL for a in ("read", "create", "edit")}},
                                  fields={"deal": {"amount": "hidden"}}), actor=SYSTEM)
    agent = await make_user(dep, role="no_amounts")
    actor = await dep.auth.actor_for_user(agent.id)
    await dep.documents.create_template({"name": "contract", "entity": "deal", "format": "html", "body": CONTRACT},
                                        actor=SYSTEM)
    theirs = (await dep.documents.render("contract", "deal", deal["id"], actor=actor))[0].decode()
    mine = (await dep.documents.render("contract", "deal", deal["id"], actor=SYSTEM))[0].decode()
    euros = format_currency(2400, "EUR", locale="en")
    assert euros in mine and "2400" not in theirs and "2,400" not in theirs
    assert '<p class="amount">Amount: </p>' in theirs and "Windows for Demir" in theirs

    # A stored document shows what its maker saw: one made by someone who saw the amount is not
    # theirs to read (not listed, not on the timeline, not downloadable); their own is.
    full = await dep.documents.generate("contract", "deal", deal["id"], actor=SYSTEM)
    partial = await dep.documents.generate("contract", "deal", deal["id"], actor=actor)
    assert [d["id"] for d in await dep.documents.documents("deal", deal["id"], actor=actor)] == [partial["id"]]
    assert [d["id"] for d in await dep.documents.documents("deal", deal["id"], actor=SYSTEM)] == [
        partial["id"], full["id"]]
    with pytest.raises(NotFound):
        await dep.documents.content(full["id"], actor=actor)
    assert b"2,400" not in (await dep.documents.content(partial["id"], actor=actor))[1]
    page = await dep.timeline.timeline("deal", deal["id"], actor=actor)
    assert [i.id for i in page.items if i.kind == "document"] == [partial["id"]]

    # Someone who may not read the record cannot make a document of it.
    plain = await make_user(dep, role="agent")
    with pytest.raises(NotFound):
        await dep.documents.generate("contract", "deal", deal["id"], actor=await dep.auth.actor_for_user(plain.id))
    # Nor manage templates.
    with pytest.raises(Forbidden):
        await dep.documents.create_template({"name": "x", "entity": "deal", "body": "x"}, actor=actor)


async def test_generated_documents_are_attached_and_on_the_timeline(make_deployment):
    dep = await make_deployment()
    _, contact, deal, _ = await _world(dep)
    await dep.documents.create_template({"name": "contract", "entity": "deal", "body": CONTRACT}, actor=SYSTEM)
    made = await dep.documents.generate("contract", "deal", deal["id"], actor=SYSTEM)
    document, content = await dep.documents.content(made["id"], actor=SYSTEM)
    assert content.startswith(b"%PDF-") and document["size"] == len(content)
    assert document["media_type"] == "application/pdf" and document["filename"] == f"contract-deal-{deal['id']}.pdf"
    assert [d["id"] for d in await dep.documents.documents("deal", deal["id"], actor=SYSTEM)] == [made["id"]]
    assert await dep.documents.documents("contact", contact["id"], actor=SYSTEM) == []

    page = await dep.timeline.timeline("deal", deal["id"], actor=SYSTEM)
    [item] = [i for i in page.items if i.kind == "document"]
    assert item.source == "core" and item.link == f"/api/documents/{made['id']}"
    assert document["filename"] in item.title and item.data["template"] == "contract"
    assert item.at == made["created_at"]
    # The template gone, its documents stay.
    await dep.documents.delete_template("contract", actor=SYSTEM)
    assert (await dep.documents.content(made["id"], actor=SYSTEM))[1] == content


async def test_plugin_templates_are_listed_read_only_and_render(make_deployment):
    dep = await make_deployment(extra_plugins=[DocumentPlugin])
    company = await dep.records.create("company", {"name": "Kaya Ltd"})
    contact = await dep.records.create("contact", {"first_name": "Ali", "last_name": "Kaya", "company": company["id"]})
    listed = await dep.documents.templates()
    assert [(t["name"], t["entity"], t["plugin"], t["read_only"]) for t in listed] == [
        ("docplug.welcome", "contact", "docplug", True)]
    assert await dep.documents.templates(entity="deal") == []
    shown = await dep.documents.template("docplug.welcome")
    assert "Welcome, {{ record.first_name }}" in shown["body"]
    html = (await dep.documents.render("docplug.welcome", "contact", contact["id"], actor=SYSTEM,
                                       format="html"))[0].decode()
    assert "<h1>Welcome, Ali Kaya</h1>" in html and "work with Kaya Ltd." in html
    pdf = await dep.documents.generate("docplug.welcome", "contact", contact["id"], actor=SYSTEM)
    assert pdf["format"] == "pdf" and pdf["template"] == "docplug.welcome"
    with pytest.raises(Forbidden):
        await dep.documents.update_template("docplug.welcome", {"body": "x"}, actor=SYSTEM)
    with pytest.raises(Forbidden):
        await dep.documents.delete_template("docplug.welcome", actor=SYSTEM)
    # Without the plugin, its template is gone.
    plain = await make_deployment()
    assert await plain.documents.templates() == []


async def test_the_generate_document_action(make_deployment):
    dep = await make_deployment()
    *_, deal, _ = await _world(dep)
    await dep.documents.create_template({"name": "contract", "entity": "deal", "body": CONTRACT}, actor=SYSTEM)
    await dep.documents.create_template({"name": "letter", "entity": "contact", "body": "<p>x</p>"}, actor=SYSTEM)
    bad = [({"template": "nope"}, "actions[0].template"), ({"template": "letter"}, "actions[0].template"),
           ({"template": "contract", "format": "doc"}, "actions[0].format")]
    for params, field in bad:
        with pytest.raises(ValidationError) as refused:
            await dep.automation.create({"name": "doc", "entity": "deal", "trigger": {"type": "stage_entered", "stage": "won"},
                                         "actions": [{"type": "generate_document", **params}]}, actor=SYSTEM)
        assert field in [e.field for e in refused.value.errors], refused.value
    assert "generate_document" in dep.automation.action_types()
    await dep.automation.create({"name": "contract-on-won", "entity": "deal",
                                 "trigger": {"type": "stage_entered", "stage": "won"},
                                 "actions": [{"type": "generate_document", "template": "contract", "pdf_a": True}]},
                                actor=SYSTEM)
    await dep.records.update("deal", deal["id"], {"stage": "won"})
    [firing] = await dep.automation.firings()
    assert firing["outcome"] == "done", firing
    [document] = await dep.documents.documents("deal", deal["id"], actor=SYSTEM)
    assert firing["results"] == [{"document": document["id"], "filename": document["filename"]}]
    content = (await dep.documents.content(document["id"], actor=SYSTEM))[1]
    assert re.search(rb'pdfaid:part="3"', _inflate(content))

    # A template broken since: the firing fails, naming the line, and the stage move stands.
    await dep.documents.update_template("contract", {"body": "<p>\n{{ 1 // 0 }}</p>"}, actor=SYSTEM)
    other = await dep.records.create("deal", {"name": "Other"})
    await dep.records.update("deal", other["id"], {"stage": "won"})
    failed = [f for f in await dep.automation.firings() if f["record_id"] == other["id"]]
    assert failed[0]["outcome"] == "failed" and "line 2" in failed[0]["error"]
    assert (await dep.records.get("deal", other["id"]))["stage"] == "won"
    assert await dep.documents.documents("deal", other["id"], actor=SYSTEM) == []


# -- the API -----------------------------------------------------------------------------------


def test_api_templates_render_download_and_permissions(crm_client):
    client = crm_client(extra_plugins=[DocumentPlugin])
    deal = client.post("/api/deal", json={"name": "Windows", "amount": {"amount": "99.5", "currency": "EUR"}}).json()
    created = client.post("/api/document-templates", json={
        "name": "quote", "entity": "deal", "format": "html", "label": "Quote",
        "body": "<h1>{{ record.name }}</h1><p>{{ record.amount }}</p>"})
    assert created.status_code == 201, created.text
    assert created.json()["label"] == "Quote"
    problem(client.post("/api/document-templates", json={"name": "quote", "entity": "deal", "body": "x"}), 422, "name")
    problem(client.post("/api/document-templates", json={"name": "new", "entity": "deal", "body": "x"}), 422, "name")
    problem(client.post("/api/document-templates", json={"name": "Bad Name", "entity": "nope", "body": "x"}), 422,
            "entity")
    body = problem(client.post("/api/document-templates", json={"name": "broken", "entity": "deal",
                                                                 "body": "<p>\n{% for x in %}</p>"}), 422, "body")
    assert "line 2" in body["errors"][0]["message"]
    problem(client.post("/api/document-templates", json={"name": "evil", "entity": "deal",
                                                         "body": "{{ ''.__class__.__mro__ }}"}), 422, "body")
    listed = client.get("/api/document-templates").json()
    assert [t["name"] for t in listed] == ["quote", "docplug.welcome"] and "body" not in listed[0]
    assert [t["name"] for t in client.get("/api/document-templates", params={"entity": "deal"}).json()] == ["quote"]
    assert client.get("/api/document-templates/quote").json()["body"].startswith("<h1>")
    problem(client.get("/api/document-templates/nope"), 404)
    changed = client.patch("/api/document-templates/quote", json={"body": "<h1>{{ record.name }}!</h1>"})
    assert changed.status_code == 200 and changed.json()["body"] == "<h1>{{ record.name }}!</h1>"
    problem(client.patch("/api/document-templates/quote", json={"body": "{% endif %}"}), 422, "body")
    problem(client.patch("/api/document-templates/docplug.welcome", json={"label": "x"}), 403)

    made = client.post("/api/document-templates/quote/render", json={"entity": "deal", "record_id": deal["id"]})
    assert made.status_code == 201, made.text
    document = made.json()
    assert document["format"] == "html" and document["record_id"] == deal["id"]
    pdf = client.post("/api/document-templates/quote/render",
                      json={"entity": "deal", "record_id": deal["id"], "format": "pdf", "pdf_a": True}).json()
    listed = client.get("/api/documents", params={"entity": "deal", "record_id": deal["id"]}).json()
    assert [d["id"] for d in listed] == [pdf["id"], document["id"]]
    got = client.get(f"/api/documents/{pdf['id']}")
    assert got.status_code == 200 and got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == f'attachment; filename="quote-deal-{deal["id"]}.pdf"'
    assert got.content.startswith(b"%PDF-")
    got = client.get(f"/api/documents/{document['id']}")
    assert got.headers["content-type"].startswith("text/html") and got.text == "<h1>Windows!</h1>"
    assert "sandbox" in got.headers["content-security-policy"]
    problem(client.post("/api/document-templates/quote/render", json={"entity": "contact", "record_id": 1}), 422,
            "entity")
    problem(client.post("/api/document-templates/quote/render", json={"entity": "deal", "record_id": 999}), 404)
    problem(client.post("/api/document-templates/quote/render", json={"entity": "deal", "record_id": deal["id"],
                                                                      "format": "docx"}), 422, "format")
    problem(client.get("/api/documents"), 422, "entity")
    problem(client.get("/api/documents/999"), 404)
    # The record's timeline shows both documents.
    timeline = client.get(f"/api/deal/{deal['id']}/timeline").json()
    assert [i["id"] for i in timeline["items"] if i["kind"] == "document"] == [pdf["id"], document["id"]]

    # An agent: lists templates, renders nothing of a record not theirs, manages nothing.
    agent = crm_user(client, role="agent")
    assert client.get("/api/document-templates", headers=agent.headers).status_code == 200
    problem(client.post("/api/document-templates", headers=agent.headers,
                        json={"name": "mine", "entity": "deal", "body": "x"}), 403)
    problem(client.delete("/api/document-templates/quote", headers=agent.headers), 403)
    problem(client.post("/api/document-templates/quote/render", headers=agent.headers,
                        json={"entity": "deal", "record_id": deal["id"]}), 404)
    problem(client.get("/api/documents", headers=agent.headers, params={"entity": "deal", "record_id": deal["id"]}), 404)
    problem(client.get(f"/api/documents/{pdf['id']}", headers=agent.headers), 404)
    problem(client.delete(f"/api/documents/{pdf['id']}", headers=agent.headers), 404)
    own = client.post("/api/deal", headers=agent.headers, json={"name": "Mine"}).json()
    mine = client.post("/api/document-templates/quote/render", headers=agent.headers,
                       json={"entity": "deal", "record_id": own["id"]})
    assert mine.status_code == 201 and mine.json()["created_by"] == agent.id
    assert client.get(f"/api/documents/{mine.json()['id']}", headers=agent.headers).text == "<h1>Mine!</h1>"

    assert client.delete(f"/api/documents/{pdf['id']}").status_code == 204
    assert client.delete("/api/document-templates/quote").status_code == 204
    assert [d["id"] for d in client.get("/api/documents", params={"entity": "deal", "record_id": deal["id"]}).json()] \
        == [document["id"]]
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/api/document-templates", "/api/document-templates/{name}/render", "/api/documents/{document_id}"} <= set(paths)


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path, crm_backend) -> Path:
    """A fresh deployment on the test's backend."""
    folder = tmp_path / "acme"
    crmcore.init_deployment(folder, database_url=crm_backend.database_url)
    return folder


def test_cli_templates_and_render(tmp_path, path):
    async def setup(dep):
        return await dep.records.create("deal", {"name": "Windows", "amount": {"amount": "10", "currency": "EUR"}})

    deal = run(path, setup)
    file = tmp_path / "quote.html"
    file.write_text("<h1>{{ record.name }}</h1>\n<p>{{ record.amount }}</p>", encoding="utf-8")
    assert "No document templates" in crm("documents", "templates", "list", deployment=path).output
    out = crm("documents", "templates", "add", file, "--entity", "deal", "--name", "quote", "--format", "html",
              deployment=path).output
    assert "Template quote (deal, html) saved" in out
    listed = crm("documents", "templates", "list", deployment=path).output
    assert re.search(r"quote\s+deal\s+html", listed)
    assert json.loads(crm("documents", "templates", "list", "--json", deployment=path).output)[0]["name"] == "quote"
    assert "<h1>{{ record.name }}</h1>" in crm("documents", "templates", "show", "quote", deployment=path).output
    # A broken template: a clear error with its line, nothing saved.
    broken = tmp_path / "broken.html"
    broken.write_text("<p>\n{% if record.name %}", encoding="utf-8")
    out = crm("documents", "templates", "add", broken, "--entity", "deal", "--name", "broken", deployment=path,
              ok=False).output
    assert "body: line 2:" in out
    out = crm("documents", "templates", "add", file, "--entity", "deal", "--name", "quote", deployment=path,
              ok=False).output
    assert "already" in out
    file.write_text("<h1>{{ record.name }}!</h1>", encoding="utf-8")
    crm("documents", "templates", "add", file, "--entity", "deal", "--name", "quote", "--replace", deployment=path)

    target = tmp_path / "out" / "quote.pdf"
    target.parent.mkdir()
    out = crm("documents", "render", "quote", "--entity", "deal", "--id", deal["id"], "--format", "pdf",
              "--output", target, deployment=path).output
    assert "attached to deal" in out and target.read_bytes().startswith(b"%PDF-")
    html = tmp_path / "quote.html.out"
    crm("documents", "render", "quote", "--entity", "deal", "--id", deal["id"], "--output", html, deployment=path)
    assert html.read_text(encoding="utf-8") == "<h1>Windows!</h1>"
    listed = crm("documents", "list", "--entity", "deal", "--id", deal["id"], deployment=path).output
    assert listed.count(f"quote-deal-{deal['id']}") == 2
    out = crm("documents", "render", "quote", "--entity", "deal", "--id", 999, deployment=path, ok=False).output
    assert "deal 999 does not exist" in out
    crm("documents", "templates", "remove", "quote", deployment=path)
    out = crm("documents", "templates", "show", "quote", deployment=path, ok=False).output
    assert "document template quote does not exist" in out


@pytest.mark.parametrize("body, words", [
    ("<p>\n{{ 'x' * 100000000000 }}</p>", "line 2: refused: a repetition"),
    ("<p>\n\n{{ 10 ** 100000 }}</p>", "line 3: refused: a power"),
    ("<p>\n{{ 10 ** 1000 ** 1000 ** 1000 }}</p>", "line 2: refused: a power"),
    ("{% macro m() %}{{ m() }}{% endmacro %}\n{{ m() }}", "too deeply"),
])
async def test_huge_values_and_endless_recursion_are_refused(make_deployment, body, words):
    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "D"})
    await dep.documents.create_template({"name": "big", "entity": "deal", "format": "html", "body": body}, actor=SYSTEM)
    with pytest.raises(ValidationError) as refused:
        await dep.documents.render("big", "deal", deal["id"], actor=SYSTEM)
    assert refused.value.errors[0].field == "body" and words in refused.value.errors[0].message


async def test_the_owner_is_a_related_record(make_deployment):
    dep = await make_deployment()
    owner = await make_user(dep, role="agent", name="Mia Manager")
    actor = await dep.auth.actor_for_user(owner.id)
    deal = await dep.records.as_actor(actor).create("deal", {"name": "D"})
    await dep.documents.create_template({"name": "t", "entity": "deal", "format": "html",
                                         "body": "{{ related.owner.name }} <{{ related.owner.email }}>"}, actor=SYSTEM)
    content, *_ = await dep.documents.render("t", "deal", deal["id"], actor=actor)
    assert content.decode() == f"Mia Manager <{owner.email}>"


async def test_output_size_and_queries_are_bounded(make_deployment, monkeypatch):
    import crmcore.documents as documents

    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "D"})
    await dep.documents.create_template({"name": "loop", "entity": "deal", "format": "html", "body": (
        "<p>\n{% for i in range(100000) %}{% for j in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endfor %}</p>")},
        actor=SYSTEM)
    monkeypatch.setattr(documents, "MAX_OUTPUT", 100_000)
    with pytest.raises(ValidationError, match=r"body: refused: the document would be larger than 100,000 characters"):
        await dep.documents.render("loop", "deal", deal["id"], actor=SYSTEM)
    monkeypatch.setattr(documents, "MAX_OUTPUT", 10**12)
    monkeypatch.setattr(documents, "MAX_SECONDS", 0.2)
    with pytest.raises(ValidationError, match=r"body: refused: filling the template took longer"):
        await dep.documents.render("loop", "deal", deal["id"], actor=SYSTEM)
    await dep.documents.update_template("loop", {"body": (
        "{% for i in range(100000) %}\n{% for j in range(100000) %}{% endfor %}{% endfor %}")}, actor=SYSTEM)
    with pytest.raises(ValidationError, match=r"line 2: refused: the template's loops would run over 1,000,000 times"):
        await dep.documents.render("loop", "deal", deal["id"], actor=SYSTEM)
    await dep.documents.update_template("loop", {"body": "{% for i in range(1000) %}{{ related('activity') }}{% endfor %}"},
                                        actor=SYSTEM)
    with pytest.raises(ValidationError, match=r"line 1: refused: related\(\) may be called at most"):
        await dep.documents.render("loop", "deal", deal["id"], actor=SYSTEM)
