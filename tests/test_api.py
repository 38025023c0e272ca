"""The REST API, through HTTP: CRUD, errors as problem+json, lists, custom fields, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import random

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

import crmcore

from .conftest import problem


@pytest.fixture
def deployment_dir(tmp_path, crm_database_url):
    path = tmp_path / "dep"
    crmcore.init_deployment(path, region="TR", currency="EUR")
    return path


@pytest.fixture
def client(crm_client, deployment_dir):
    """The deployment's app, authenticated with an admin's API token (crmcore.testing)."""
    return crm_client(deployment_dir)


def test_create_read_update_delete_restore_history(client):
    created = client.post("/api/contact", json={
        "first_name": "Ayşe", "last_name": "Yılmaz", "email": "Ayse@Example.COM",
        "phone": "(0532) 123 45 67", "tags": ["vip", "istanbul"],
    })
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["version"] == 1
    assert record["phone"] == {"e164": "+905321234567", "raw": "(0532) 123 45 67"}
    assert record["email"] == "Ayse@example.com"
    rid = record["id"]
    assert client.get(f"/api/contact/{rid}").json() == record

    updated = client.patch(f"/api/contact/{rid}", json={"city": "İzmir", "version": 1})
    assert updated.status_code == 200, updated.text
    assert updated.json()["city"] == "İzmir" and updated.json()["version"] == 2

    client.post("/api/contact", json={"last_name": "Other"})
    assert client.get("/api/contact?count=1").json()["total"] == 2
    assert client.delete(f"/api/contact/{rid}").status_code == 204
    problem(client.get(f"/api/contact/{rid}"), 404)
    assert client.get("/api/contact?count=1").json()["total"] == 1  # the trash is not counted
    assert client.get("/api/contact/trash?count=1").json()["total"] == 1
    trash = client.get("/api/contact/trash").json()["items"]
    assert [r["id"] for r in trash] == [rid]
    restored = client.post(f"/api/contact/{rid}/restore")
    assert restored.status_code == 200 and restored.json()["city"] == "İzmir"

    history = client.get(f"/api/contact/{rid}/history").json()
    assert [h["action"] for h in history] == ["restore", "delete", "update", "create"]
    assert history[2]["changes"] == {"city": [None, "İzmir"]}
    assert history[3]["changes"]["last_name"] == [None, "Yılmaz"]


def test_stale_update_gets_409_with_current_record(client):
    rid = client.post("/api/contact", json={"last_name": "Kaya"}).json()["id"]
    assert client.patch(f"/api/contact/{rid}", json={"city": "Ankara"}, headers={"If-Match": "1"}).status_code == 200
    body = problem(client.patch(f"/api/contact/{rid}", json={"city": "Bursa", "version": 1}), 409)
    assert body["current"]["city"] == "Ankara" and body["current"]["version"] == 2
    assert body["changed_fields"] == ["city"]
    problem(client.patch(f"/api/contact/{rid}", json={"job_title": "CEO"}, headers={"If-Match": "1"}), 409)
    problem(client.delete(f"/api/contact/{rid}?version=1"), 409)
    assert client.get(f"/api/contact/{rid}").json()["city"] == "Ankara"


def test_invalid_email_is_422_naming_the_field(client):
    body = problem(client.post("/api/contact", json={"last_name": "X", "email": "not-an-email"}), 422)
    assert [e["field"] for e in body["errors"]] == ["email"]
    assert "e-mail" in body["errors"][0]["message"]
    assert client.get("/api/contact?count=true").json()["total"] == 0  # nothing half-written


@pytest.mark.parametrize("field, value, accepted", [
    ("last_name", 42, "string"),
    ("phone", "12", "phone number"),
    ("company", 999, "no company"),
    ("tags", ["x" * 100], "tag"),
    ("nope", 1, "fields are"),
    ("id", 5, "system"),
])
def test_bad_values_name_field_and_what_is_accepted(client, field, value, accepted):
    data = {"last_name": "X", field: value}
    body = problem(client.post("/api/contact", json=data), 422)
    messages = {e["field"]: e["message"] for e in body["errors"]}
    assert field in messages and accepted in messages[field]


def test_deal_money_and_required(client):
    body = problem(client.post("/api/deal", json={"amount": {"amount": "10.001", "currency": "EUR"}}), 422)
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert "name" in fields and "2 decimal places" in fields["amount"]
    deal = client.post("/api/deal", json={"name": "Windows", "amount": "1250.50"}).json()
    assert deal["amount"] == {"amount": "1250.50", "currency": "EUR"}
    assert deal["pipeline"] == "sales"  # the declared default


def test_no_input_produces_a_500(client):
    rid = client.post("/api/contact", json={"last_name": "Fuzz"}).json()["id"]
    rng = random.Random(7)
    atoms = [None, True, 0, -1, 2**80, 1.5, float("inf"), "", "x" * 20000, "\x00", "2026-13-45", [], {}, [1, "a"],
             {"amount": "x"}, {"id": "1"}, "+", "🙂", "NaN"]
    fields = [f["name"] for f in client.get("/api/meta/entities/contact").json()["fields"]] + ["version", "owner_id"]
    for _ in range(300):
        body = {rng.choice(fields): rng.choice(atoms) for _ in range(rng.randint(1, 4))}
        try:
            payload = json.dumps(body, allow_nan=True)
        except ValueError:
            continue
        for response in (
            client.post("/api/contact", content=payload, headers={"content-type": "application/json"}),
            client.patch(f"/api/contact/{rid}", content=payload, headers={"content-type": "application/json"}),
        ):
            assert response.status_code < 500, (body, response.text)
    for raw in [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b"[" * 10000]:
        assert client.post("/api/contact", content=raw).status_code < 500
        assert client.patch(f"/api/contact/{rid}", content=raw).status_code < 500
    for query in ["filter={", 'filter={"field": 1}', 'filter={"and": []}', "limit=0", "limit=x", "cursor=zzz",
                  "sort=-nope", "created_at__gt=yesterday", "tags__lt=1", "q=" + "a" * 5000, "fields=nope",
                  'filter={"not": 5}', "id__in=" + ",".join(["1"] * 2000), "amount__between=1"]:
        response = client.get(f"/api/contact?{query}")
        assert response.status_code == 422, (query, response.text)
    assert client.get("/api/contact/99999999999999999999").status_code in (404, 422)


def test_lists_filter_sort_cursor_search_count_fields(client):
    rows = [{"first_name": f"N{i}", "last_name": ["Demir", "Şahin", "Öztürk"][i % 3], "city": ["Izmir", None][i % 2],
             "tags": ["vip"] if i % 4 == 0 else []} for i in range(30)]
    ids = client.post("/api/contact/bulk", json=rows).json()["ids"]
    assert len(ids) == 30
    page = client.get("/api/contact?city=Izmir&count=true&limit=4&sort=-first_name").json()
    assert page["total"] == 15 and len(page["items"]) == 4
    seen = [r["first_name"] for r in page["items"]]
    while page["next_cursor"]:
        page = client.get(f"/api/contact?city=Izmir&limit=4&sort=-first_name&cursor={page['next_cursor']}").json()
        seen += [r["first_name"] for r in page["items"]]
    assert seen == sorted({f"N{i}" for i in range(0, 30, 2)}, reverse=True)

    vip = client.get("/api/contact", params={"tags__contains": "vip", "count": "1"}).json()
    assert vip["total"] == 8
    either = client.get("/api/contact", params={"filter": json.dumps({"or": [
        {"field": "first_name", "op": "eq", "value": "N1"}, {"field": "first_name", "op": "startswith", "value": "N2"}]}),
        "count": "1"}).json()
    assert either["total"] == 1 + 10 + 1  # N1, N2 and N20..N29
    found = client.get("/api/contact", params={"q": "sahi", "count": "1"}).json()
    assert found["total"] == 10 and {r["last_name"] for r in found["items"]} == {"Şahin"}
    slim = client.get("/api/contact?fields=first_name&limit=1").json()["items"][0]
    assert "first_name" in slim and "last_name" not in slim and "id" in slim


def test_bulk_create_is_all_or_nothing_with_row_errors(client):
    body = problem(client.post("/api/contact/bulk", json=[{"last_name": "A"}, {"email": "x"}, {"last_name": "C"}]), 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"rows[1].email", "rows[1].last_name"}
    assert client.get("/api/contact?count=1").json()["total"] == 0


def test_custom_field_by_api_is_live_in_filters_and_schema(client):
    added = client.post("/api/meta/entities/contact/fields", json={
        "name": "loyalty", "type": "choice", "choices": ["bronze", "gold"], "indexed": True})
    assert added.status_code == 201, added.text
    client.post("/api/contact", json={"last_name": "A", "loyalty": "gold"})
    client.post("/api/contact", json={"last_name": "B", "loyalty": "bronze"})
    problem(client.post("/api/contact", json={"last_name": "C", "loyalty": "platinum"}), 422)
    assert [r["last_name"] for r in client.get("/api/contact?loyalty=gold").json()["items"]] == ["A"]
    assert [r["last_name"] for r in client.get("/api/contact?sort=loyalty").json()["items"]] == ["B", "A"]
    schema = client.get("/schema").json()
    assert schema["components"]["schemas"]["ContactRecord"]["properties"]["loyalty"]
    problem(client.post("/api/meta/entities/contact/fields", json={"name": "Bad Name", "type": "text"}), 422)
    problem(client.post("/api/meta/entities/contact/fields", json={"name": "x", "type": "colour"}), 422)
    problem(client.post("/api/meta/entities/contact/fields", json={"name": "email", "type": "text"}), 422)

    assert client.patch("/api/meta/entities/contact/fields/loyalty", json={"label": "Loyalty tier"}).status_code == 200
    assert client.delete("/api/meta/entities/contact/fields/loyalty").status_code == 204
    problem(client.get("/api/contact?loyalty=gold"), 422)  # hidden everywhere ...
    assert "loyalty" not in client.get("/api/contact").json()["items"][0]
    listed = client.get("/api/meta/entities/contact/fields").json()
    assert [(f["name"], f["removed"], f["label"]) for f in listed] == [("loyalty", True, "Loyalty tier")]
    problem(client.patch("/api/meta/entities/contact/fields/loyalty", json={"hidden": False}), 422)
    assert client.post("/api/meta/entities/contact/fields/loyalty/restore").status_code == 200
    assert [r["last_name"] for r in client.get("/api/contact?loyalty=gold").json()["items"]] == ["A"]  # ... data kept
    assert client.delete("/api/meta/entities/contact/fields/loyalty").status_code == 204
    purged = client.post("/api/meta/entities/contact/fields/loyalty/purge")
    assert purged.status_code == 200 and purged.json()["backup"].startswith("crm_backup_")


def test_custom_field_added_by_another_process_is_filterable_at_once(client, deployment_dir, crm_database_url):
    client.post("/api/contact", json={"last_name": "Before"})

    async def add_from_elsewhere():  # what `crm fields add` does, from its own process
        dep = await crmcore.Deployment.open(deployment_dir, database_url=crm_database_url)
        try:
            await dep.add_custom_field("contact", crmcore.Field(name="score", type=crmcore.FieldType.INTEGER, indexed=True))
        finally:
            await dep.close()

    asyncio.run(add_from_elsewhere())
    assert client.post("/api/contact", json={"last_name": "After", "score": 80}).status_code == 201
    assert [r["last_name"] for r in client.get("/api/contact?score__gte=50").json()["items"]] == ["After"]
    assert "score" in client.get("/schema").json()["components"]["schemas"]["ContactCreate"]["properties"]


def test_openapi_is_valid_and_matches_responses(client):
    company = client.post("/api/company", json={"name": "Acme", "website": "https://acme.example", "tags": ["b2b"]}).json()
    client.post("/api/contact", json={"last_name": "Doe", "company": company["id"], "phone": "+49 30 1234567"})
    client.post("/api/deal", json={"name": "D", "amount": {"amount": "5", "currency": "JPY"}, "expected_close": "2026-12-01"})
    client.post("/api/activity", json={"kind": "task", "subject": "Call back", "due_at": "2026-11-25T15:00:00+03:00"})
    doc = client.get("/schema").json()
    validate_openapi(doc)
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    for entity in ("company", "contact", "deal", "activity"):
        name = entity.capitalize()
        page = client.get(f"/api/{entity}").json()
        page_schema = doc["paths"][f"/api/{entity}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({"$ref": "urn:doc#/components/schemas/" + f"{name}Record"}, registry=registry)
        assert page["items"], entity
        for item in page["items"]:
            validator.validate(item)
        assert set(page_schema["required"]) <= set(page)
    assert doc["paths"]["/api/contact/{record_id}"]["patch"]["responses"]["409"]
    assert "/api/health" in doc["paths"]


def test_meta_describes_entities_and_pipelines(client):
    meta = client.get("/api/meta").json()
    names = {e["name"] for e in meta["entities"]}
    assert {"contact", "company", "deal", "activity", "user"} <= names
    sales = next(p for p in meta["pipelines"] if p["name"] == "sales")
    assert [s["kind"] for s in sales["stages"]][-2:] == ["won", "lost"]
    problem(client.get("/api/nope"), 404)


def test_bulk_update_all_or_nothing_with_versions(client):
    ids = client.post("/api/contact/bulk", json=[{"last_name": f"L{i}"} for i in range(5)]).json()["ids"]
    done = client.patch("/api/contact/bulk", json=[{"id": ids[0], "city": "Rize", "version": 1},
                                                  {"id": ids[1], "city": "Rize"}])
    assert done.status_code == 200 and done.json()["updated"] == ids[:2]
    assert client.get("/api/contact?city=Rize&count=1").json()["total"] == 2
    body = problem(client.patch("/api/contact/bulk", json=[{"id": ids[2], "city": "Van"},
                                                         {"id": ids[0], "city": "Van", "version": 1},
                                                         {"id": 99999, "city": "Van"},
                                                         {"city": "Van"}]), 422)
    assert {e["field"] for e in body["errors"]} == {"rows[3].id"}
    body = problem(client.patch("/api/contact/bulk", json=[{"id": ids[2], "city": "Van"},
                                                         {"id": ids[0], "city": "Van", "version": 1},
                                                         {"id": 99999, "city": "Van"}]), 422)
    assert {e["field"] for e in body["errors"]} == {"rows[1].version", "rows[2].id"}
    assert client.get("/api/contact?city=Van&count=1").json()["total"] == 0
    history = client.get(f"/api/contact/{ids[1]}/history").json()
    assert history[0]["changes"] == {"city": [None, "Rize"]}


def test_export_csv_follows_filter_and_includes_custom_fields(client):
    client.post("/api/meta/entities/contact/fields", json={"name": "segment", "type": "text", "indexed": True})
    rows = [{"last_name": f"E{i:04d}", "segment": "a" if i % 3 else "b", "phone": "+90 532 123 45 67"} for i in range(1200)]
    client.post("/api/contact/bulk", json=rows)
    response = client.get("/api/exports/contact?segment=a&sort=-last_name")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = list(__import__("csv").DictReader(response.text.splitlines()))
    assert len(lines) == 800 and {line["segment"] for line in lines} == {"a"}
    assert [line["last_name"] for line in lines] == sorted((line["last_name"] for line in lines), reverse=True)
    assert lines[0]["phone"] == "+905321234567"
    some = client.get("/api/exports/contact", params={"q": "E0005", "fields": "last_name,segment"}).text.splitlines()
    assert some[0] == "id,last_name,segment" and len(some) == 2 and some[1].endswith(",E0005,a")
    problem(client.get("/api/exports/contact?nope=1"), 422)
    problem(client.get("/api/exports/contact?fields=nope"), 422, "fields")
    problem(client.get("/api/exports/contact?sort=nope"), 422)


def test_custom_field_options_change_safely(client):
    assert client.post("/api/meta/entities/company/fields", json={"name": "vat_id", "type": "text"}).status_code == 201
    client.post("/api/company/bulk", json=[{"name": "A", "vat_id": "TR1"}, {"name": "B", "vat_id": "TR1"}])
    body = problem(client.patch("/api/meta/entities/company/fields/vat_id", json={"unique": True}), 422)
    assert "share a value" in body["detail"]
    client.patch("/api/company/bulk", json=[{"id": 2, "vat_id": "TR2"}])
    assert client.patch("/api/meta/entities/company/fields/vat_id", json={"unique": True}).status_code == 200
    body = problem(client.post("/api/company", json={"name": "C", "vat_id": "TR2"}), 422)
    assert body["errors"][0]["field"] == "vat_id" and "unique" in body["errors"][0]["message"]
    problem(client.patch("/api/meta/entities/company/fields/vat_id", json={"type": "integer"}), 422)
    problem(client.post("/api/meta/entities/company/fields", json={"name": "size", "type": "integer", "default": "big"}), 422)
    problem(client.post("/api/contact", json={"last_name": "Owned", "owner_id": 424242}), 422)


def test_init_refuses_unusable_settings(tmp_path):
    for setting, value in [("region", "XX"), ("currency", "EURO"), ("timezone", "Mars/Base"), ("locale", "zz_ZZ")]:
        with pytest.raises(crmcore.DeploymentError, match=setting):
            crmcore.init_deployment(tmp_path / setting, **{setting: value})
        assert not (tmp_path / setting / "crm.toml").exists()
    settings = crmcore.init_deployment(tmp_path / "ok", region="tr", currency="try")
    assert (settings.region, settings.currency) == ("TR", "TRY")


def test_pip_installed_plugin_adds_an_entity_with_working_routes(sample_plugin, tmp_path, crm_client):
    path = tmp_path / "with-plugin"
    crmcore.init_deployment(path)
    settings = crmcore.deployment.load_settings(path)
    settings.plugins = ["sample"]
    crmcore.deployment.save_settings(path, settings)
    client = crm_client(path)
    contact = client.post("/api/contact", json={"last_name": "Öz", "sample_support_level": "gold"}).json()
    ticket = client.post("/api/sample_ticket", json={"subject": "Printer", "contact": contact["id"]})
    assert ticket.status_code == 201, ticket.text
    assert ticket.json()["priority"] == "normal"
    assert client.get("/api/sample_ticket?priority=normal&count=1").json()["total"] == 1
    problem(client.post("/api/sample_ticket", json={"subject": "x", "priority": "urgent"}), 422)
    assert client.get("/api/sample/open-tickets").json() == {"open": 1}
    doc = client.get("/schema").json()
    assert "/api/sample_ticket/{record_id}" in doc["paths"] and "/api/sample/open-tickets" in doc["paths"]

    assert client.post("/api/meta/plugins/sample/disable").json()["plugins"] == []
    problem(client.get("/api/sample_ticket"), 404)
    problem(client.get("/api/sample/open-tickets"), 404)
    assert "sample_support_level" not in client.get(f"/api/contact/{contact['id']}").json()

    assert client.post("/api/meta/plugins/sample/enable").json()["plugins"] == ["sample"]
    assert client.get("/api/sample/open-tickets").json() == {"open": 1}  # data kept
    assert client.get(f"/api/contact/{contact['id']}").json()["sample_support_level"] == "gold"
    problem(client.post("/api/meta/plugins/nope/enable"), 422)
    listed = {p["name"]: p for p in client.get("/api/meta/plugins").json()}
    assert listed["sample"]["enabled"] and listed["sample"]["version"] == "0.1.0"


def test_plugin_enabled_at_run_time_gets_its_routes(sample_plugin, client):
    problem(client.get("/api/sample/open-tickets"), 404)
    assert client.post("/api/meta/plugins/sample/enable").status_code == 200
    client.post("/api/sample_ticket", json={"subject": "A"})
    assert client.get("/api/sample/open-tickets").json() == {"open": 1}


def test_index_points_at_the_api(client, crm_client, deployment_dir):
    index = client.get("/").json()
    assert index["api"]["openapi"] == "/schema" and index["api"]["entities"]["contact"] == "/api/contact"
    anonymous = crm_client(deployment_dir, role=None).get("/").json()  # public, but says less
    assert anonymous["api"]["openapi"] == "/schema" and anonymous["login"] == "/login"
    assert "entities" not in anonymous["api"] and "edition" not in anonymous


def test_conflict_names_only_the_fields_changed_since_the_version_read(client):
    rid = client.post("/api/contact", json={"last_name": "Early", "city": "Adana"}).json()["id"]
    client.patch(f"/api/contact/{rid}", json={"job_title": "CTO"})  # v2
    client.patch(f"/api/contact/{rid}", json={"city": "Mersin"})  # v3
    client.delete(f"/api/contact/{rid}")  # v4
    client.post(f"/api/contact/{rid}/restore")  # v5
    assert problem(client.patch(f"/api/contact/{rid}", json={"city": "X", "version": 3}), 409)["changed_fields"] == []
    assert problem(client.patch(f"/api/contact/{rid}", json={"city": "X", "version": 2}), 409)["changed_fields"] == ["city"]
    changed = problem(client.patch(f"/api/contact/{rid}", json={"city": "X", "version": 1}), 409)["changed_fields"]
    assert sorted(changed) == ["city", "job_title"]


def test_simple_filter_parameters_on_money_and_phone_parts(client):
    client.post("/api/deal", json={"name": "Lira", "amount": {"amount": "100", "currency": "TRY"}})
    client.post("/api/deal", json={"name": "Euro", "amount": {"amount": "300", "currency": "EUR"}})
    names = lambda query: [d["name"] for d in client.get(f"/api/deal?{query}").json()["items"]]  # noqa: E731
    assert names("amount__currency=TRY") == ["Lira"]
    assert names("amount__currency__in=TRY,EUR&amount__gt=200") == ["Euro"]
    client.post("/api/contact", json={"last_name": "Tel", "phone": "(0532) 123 45 67"})
    assert client.get("/api/contact?phone__raw__startswith=(0532)&count=1").json()["total"] == 1
    assert client.get("/api/contact", params={"phone": "+90 532 123 4567", "count": "1"}).json()["total"] == 1
    assert client.get("/api/contact", params={"phone": "+90 532 123 4568", "count": "1"}).json()["total"] == 0
    body = problem(client.get("/api/deal?amount__bogus=1"), 422)
    assert "unknown operator" in body["detail"]
