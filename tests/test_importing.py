"""Imports (CSV, XLSX) and exports (CSV, XLSX, JSON) through deployment.imports and the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import openpyxl
import pytest

from crmcore import Forbidden, ListQuery, ValidationError
from crmcore.auth import SYSTEM
from crmcore.importing import guess_mapping
from crmcore.testing import make_user

from .conftest import crm

async def contacts(dep) -> list[dict]:
    page = await dep.records.list("contact", ListQuery(sort=["id"], limit=500))
    return page.items


def write_csv(path, rows, encoding="utf-8"):
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


HEADERS = ["Prénom", "Surname", "E-Mail", "Tel", "Notes"]


async def test_import_with_duplicates_malformed_rows_and_error_report(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    await dep.records.create("contact", {"last_name": "Existing", "email": "old@example.com"})
    path = write_csv(tmp_path / "people.csv", [
        HEADERS,
        ["Ayşe", "Yılmaz", "ayse@example.com", "0532 123 45 67", "first"],   # row 2: new
        ["Ayse", "Yilmaz", "AYSE@example.com", "", "same e-mail"],           # row 3: duplicate in the file
        ["Can", "Demir", "", "+90 532 123 45 67", "same phone"],             # row 4: duplicate by phone
        ["Old", "Person", "OLD@example.com", "", ""],                        # row 5: duplicate in the database
        ["Bad", "Row", "not-an-email", "12", ""],                            # row 6: malformed
        ["No", "", "nolast@example.com", "", ""],                            # row 7: required missing
        ["Deniz", "Kaya", "deniz@example.com", "", ""],                      # row 8: new
    ])
    errors = tmp_path / "errors.csv"
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, errors_file=errors)
    assert (result.created, result.skipped, result.rejected, result.updated) == (2, 3, 2, 0)
    names = sorted(c["last_name"] for c in await contacts(dep))
    assert names == ["Existing", "Kaya", "Yılmaz"]
    with open(errors, encoding="utf-8") as f:
        report = list(csv.DictReader(f))
    assert {(r["row"], r["column"], r["value"]) for r in report} == {
        ("6", "E-Mail", "not-an-email"), ("6", "Tel", "12"), ("7", "Surname", ""),
    }
    assert all(r["reason"] for r in report)
    created = next(c for c in await contacts(dep) if c["last_name"] == "Yılmaz")
    assert created["phone"].e164 == "+905321234567" and created["first_name"] == "Ayşe"


async def test_dry_run_writes_nothing_and_reports_the_same(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    path = write_csv(tmp_path / "p.csv", [HEADERS, ["A", "One", "a@example.com", "", ""],
                                          ["A", "Again", "a@example.com", "", ""], ["B", "", "", "", ""]])
    dry = await dep.imports.import_file(path, "contact", actor=SYSTEM, dry_run=True)
    assert (dry.created, dry.skipped, dry.rejected) == (1, 1, 1)
    assert await contacts(dep) == []
    real = await dep.imports.import_file(path, "contact", actor=SYSTEM)
    assert (real.created, real.skipped, real.rejected) == (dry.created, dry.skipped, dry.rejected)
    assert len(await contacts(dep)) == 1


async def test_bad_encoding_is_a_clear_error_and_writes_nothing(make_deployment, tmp_path):
    dep = await make_deployment()
    path = write_csv(tmp_path / "latin.csv", [["Surname", "E-mail"], ["Smith", "s@example.com"],
                                              ["Müller", "m@example.com"]], encoding="cp1252")
    with pytest.raises(ValidationError) as caught:
        await dep.imports.import_file(path, "contact", actor=SYSTEM)
    [error] = caught.value.errors
    assert error.field == "encoding" and "row 3" in error.message and "0xfc" in error.message
    assert "--encoding" in error.message
    assert await contacts(dep) == []  # not even the good row before it
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, encoding="cp1252")
    assert result.created == 2
    assert "Müller" in {c["last_name"] for c in await contacts(dep)}


async def test_utf8_with_bom_and_semicolons(make_deployment, tmp_path):
    dep = await make_deployment()
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffLast name;Email\nÇelik;c@example.com\n".encode("utf-8"))
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM)
    assert result.mapping == {"Last name": "last_name", "Email": "email"}
    assert [(c["last_name"], c["email"]) for c in await contacts(dep)] == [("Çelik", "c@example.com")]


async def test_mapping_guess_override_and_saved_mapping(make_deployment, tmp_path):
    dep = await make_deployment()
    entity = dep.records.entity("contact")
    guessed = guess_mapping(entity, ["E-mail", "TEL", "surname", "Given Name", "Cell", "Favourite colour"])
    assert guessed == {"E-mail": "email", "TEL": "phone", "surname": "last_name", "Given Name": "first_name",
                       "Cell": "mobile", "Favourite colour": None}
    path = write_csv(tmp_path / "odd.csv", [["Col A", "Col B", "Whatever"], ["Jones", "j@example.com", "x"]])
    with pytest.raises(ValidationError) as caught:
        await dep.imports.import_file(path, "contact", actor=SYSTEM)
    assert caught.value.errors[0].field == "mapping"
    await dep.imports.save_mapping("odd", "contact", {"Col A": "last_name", "Col B": "email"}, actor=SYSTEM)
    assert [m["name"] for m in await dep.imports.mappings("contact")] == ["odd"]
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, mapping="odd",
                                           overrides={"Whatever": "job_title"})
    assert result.created == 1
    [record] = await contacts(dep)
    assert (record["last_name"], record["email"], record["job_title"]) == ("Jones", "j@example.com", "x")
    with pytest.raises(ValidationError):
        await dep.imports.save_mapping("bad", "contact", {"Col A": "no_such_field"}, actor=SYSTEM)


async def test_update_mode_and_key_field(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    first = await dep.records.create("contact", {"last_name": "Old", "email": "a@example.com", "job_title": "x"})
    path = write_csv(tmp_path / "u.csv", [["Email", "Job title", "Last name"],
                                          ["A@example.com", "CEO", "New"], ["b@example.com", "CTO", "Bee"]])
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, on_duplicate="update")
    assert (result.created, result.updated) == (1, 1)
    records = {c["id"]: c for c in await contacts(dep)}
    assert (records[first["id"]]["job_title"], records[first["id"]]["last_name"]) == ("CEO", "New")
    assert records[first["id"]]["version"] == first["version"] + 1
    # by key: job titles name the records now
    path = write_csv(tmp_path / "k.csv", [["job_title", "city"], ["CEO", "Izmir"], ["CTO", "Ankara"]])
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, key="job_title", on_duplicate="update")
    assert (result.created, result.updated, result.rejected) == (0, 2, 0)
    assert sorted(c["city"] for c in await contacts(dep)) == ["Ankara", "Izmir"]


async def test_xlsx_import(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Name", "Amount", "Expected close", "Probability"])
    sheet.append(["Big deal", "1500.50 EUR", dt.datetime(2026, 5, 1), 40])
    sheet.append(["Small deal", None, None, "many"])
    sheet.append(["Third", 99, dt.date(2026, 6, 2), 10.0])
    path = tmp_path / "deals.xlsx"
    book.save(path)
    result = await dep.imports.import_file(path, "deal", actor=SYSTEM)
    assert (result.created, result.rejected) == (2, 1)
    assert result.errors[0].row == 3 and result.errors[0].column == "Probability"
    page = await dep.records.list("deal", ListQuery(sort=["id"]))
    big, third = page.items
    assert str(big["amount"].amount) == "1500.50" and big["expected_close"] == dt.date(2026, 5, 1)
    assert big["probability"] == 40 and third["probability"] == 10


async def test_batches_are_all_or_nothing(make_deployment, tmp_path):
    """A row the records layer refuses at write time (a relation to nothing) is rejected; the
    other rows of its batch are written, never half of a row."""
    dep = await make_deployment()
    company = await dep.records.create("company", {"name": "ACME"})
    path = write_csv(tmp_path / "c.csv", [["last_name", "company"], ["A", str(company["id"])], ["B", "999"]])
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM)
    assert (result.created, result.rejected) == (1, 1)
    assert result.errors[0].row == 3 and "999" in result.errors[0].reason
    assert [c["last_name"] for c in await contacts(dep)] == ["A"]


async def test_permissions_agent_owns_imports_read_only_cannot(make_deployment, tmp_path):
    dep = await make_deployment()
    agent = await make_user(dep, role="agent")
    reader = await make_user(dep, role="read_only")
    path = write_csv(tmp_path / "p.csv", [["last_name"], ["Mine"]])
    as_agent = await dep.auth.actor_for_user(agent.id, via="session")
    result = await dep.imports.import_file(path, "contact", actor=as_agent)
    assert result.created == 1
    [record] = await contacts(dep)
    assert record["owner_id"] == agent.id
    as_reader = await dep.auth.actor_for_user(reader.id, via="session")
    for dry_run in (True, False):
        with pytest.raises(Forbidden):
            await dep.imports.import_file(path, "contact", actor=as_reader, dry_run=dry_run)
    assert len(await contacts(dep)) == 1
    # an agent cannot update someone else's record through an import
    other = await dep.records.create("contact", {"last_name": "Theirs", "email": "t@example.com"})
    path = write_csv(tmp_path / "t.csv", [["last_name", "email"], ["Changed", "t@example.com"]])
    result = await dep.imports.import_file(path, "contact", actor=as_agent, on_duplicate="update")
    assert result.rejected == 1 and result.updated == 0
    assert (await dep.records.get("contact", other["id"]))["last_name"] == "Theirs"


def _comparable(record: dict) -> dict:
    skip = {"id", "version", "created_at", "updated_at", "created_by", "updated_by", "owner_id", "team_id"}
    return {k: (v.e164 if hasattr(v, "e164") else v) for k, v in record.items() if k not in skip}


async def test_export_round_trip_csv_into_a_fresh_deployment(make_deployment, tmp_path):
    source = await make_deployment(region="TR")
    await source.records.bulk_create("contact", [
        {"first_name": "Ayşe", "last_name": "Yılmaz", "email": "ayse@example.com", "phone": "0532 123 45 67",
         "tags": ["vip", "b2b"], "notes": "line one\nline two, with \"quotes\""},
        {"last_name": "Bare"},
        {"first_name": "Ömer", "last_name": "Çelik", "mobile": "+44 20 7946 0958", "city": "İzmir"},
    ])
    out = tmp_path / "contacts.csv"
    with open(out, "wb") as f:
        assert await source.exports.export("contact", f, fmt="csv", actor=SYSTEM) == 3
    target = await make_deployment(region="TR")
    result = await target.imports.import_file(out, "contact", actor=SYSTEM)
    assert (result.created, result.rejected) == (3, 0), result.errors
    assert [_comparable(r) for r in await contacts(target)] == [_comparable(r) for r in await contacts(source)]


async def test_export_json_xlsx_filter_and_everything(make_deployment, tmp_path):
    dep = await make_deployment()
    await dep.records.bulk_create("contact", [{"last_name": f"P{i}", "city": "Izmir" if i % 2 else "Bursa"}
                                              for i in range(1203)])
    buf = io.BytesIO()
    count = await dep.exports.export("contact", buf, fmt="json", actor=SYSTEM, filter={"field": "city", "value": "Izmir"})
    data = json.loads(buf.getvalue())
    assert count == len(data) == 601 and all(r["city"] == "Izmir" for r in data)
    buf = io.BytesIO()
    assert await dep.exports.export("contact", buf, fmt="xlsx", actor=SYSTEM) == 1203
    sheet = openpyxl.load_workbook(io.BytesIO(buf.getvalue()), read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("id", "owner_id", "first_name", "last_name") and len(rows) == 1204
    counts = await dep.exports.export_all(tmp_path / "all", fmt="csv", actor=SYSTEM)
    assert counts["contact"] == 1203 and (tmp_path / "all" / "company.csv").is_file()


def test_cli_import_export(tmp_path):
    folder = tmp_path / "d"
    crm("init", str(folder), "--region", "TR")
    path = write_csv(tmp_path / "p.csv", [HEADERS, ["A", "One", "a@example.com", "", ""],
                                          ["B", "", "b@example.com", "", ""]])
    out = crm("import", str(path), "--dry-run", deployment=folder, ok=False)
    assert "1 would be created" in out.output and "row 3, Surname" in out.output
    errors = tmp_path / "errors.csv"
    out = crm("import", str(path), "--errors", str(errors), "--save-mapping", "people", deployment=folder, ok=False)
    assert "1 created" in out.output and errors.is_file()
    assert "people" in crm("import", "mappings", deployment=folder).output
    latin = write_csv(tmp_path / "l.csv", [["Surname"], ["Müller"]], encoding="latin-1")
    out = crm("import", str(latin), deployment=folder, ok=False)
    assert "Error:" in out.output and "--encoding" in out.output
    out = crm("import", str(latin), "--encoding", "latin-1", "--progress", deployment=folder).output
    assert "1 created" in out and "Importing [" in out and "100%" in out
    target = tmp_path / "c.json"
    crm("export", "contact", "--output", str(target), "--filter", '{"field": "last_name", "value": "Müller"}', deployment=folder)
    assert [r["last_name"] for r in json.loads(target.read_text())] == ["Müller"]
    crm("export", "--all", "--output", str(tmp_path / "all"), deployment=folder)
    assert (tmp_path / "all" / "contact.csv").is_file()
    # the CLI follows a list's query: search, sort, columns
    listed = crm("export", "contact", "--search", "one", "--fields", "last_name,email", deployment=folder).output
    assert listed.splitlines() == ["id,last_name,email", f"{listed.splitlines()[1].split(',')[0]},One,a@example.com"]
    ordered = crm("export", "contact", "--sort", "-last_name", "--fields", "last_name", deployment=folder).output
    assert [line.split(",")[1] for line in ordered.splitlines()[1:]] == ["One", "Müller"]
    cards = tmp_path / "c.vcf"
    crm("export", "contact", "--output", str(cards), deployment=folder)
    assert cards.read_text().count("BEGIN:VCARD") == 2
    # a refused export names its reason and leaves no file behind
    bad = tmp_path / "bad.csv"
    out = crm("export", "contact", "--output", str(bad), "--fields", "nope", deployment=folder, ok=False)
    assert "nope" in out.output and not bad.exists() and not list(tmp_path.glob("bad.csv*"))
    out = crm("export", "deal", "--format", "vcf", deployment=folder, ok=False)
    assert "vCard" in out.output


async def test_every_error_goes_to_the_report_while_memory_keeps_the_first(make_deployment, tmp_path):
    from crmcore.importing import BATCH, KEEP_ERRORS

    dep = await make_deployment(region="TR")
    rows = [["Surname", "E-mail"]]
    for i in range(2 * BATCH + 500):  # one row in four is bad, across three batches
        rows.append([f"P{i}", f"p{i}@example.com" if i % 4 else f"bad {i}"])
    errors = tmp_path / "errors.csv"
    result = await dep.imports.import_file(write_csv(tmp_path / "p.csv", rows), "contact", actor=SYSTEM,
                                           errors_file=errors)
    bad = (2 * BATCH + 500 + 3) // 4
    assert (result.rejected, result.error_count, len(result.errors)) == (bad, bad, min(bad, KEEP_ERRORS))
    assert result.created == 2 * BATCH + 500 - bad and result.errors_file == str(errors)
    with open(errors, encoding="utf-8") as f:
        report = list(csv.DictReader(f))
    assert [int(r["row"]) for r in report] == [i + 2 for i in range(0, 2 * BATCH + 500, 4)]  # every one, by row
    assert [e.row for e in result.errors] == [int(r["row"]) for r in report][:KEEP_ERRORS]
    clean = await dep.imports.import_file(write_csv(tmp_path / "q.csv", [["Surname"], ["Q"]]), "contact",
                                          actor=SYSTEM, errors_file=tmp_path / "none.csv")
    assert clean.errors_file is None and not (tmp_path / "none.csv").exists()


# -- over HTTP ------------------------------------------------------------------------------------


def _run_jobs(client) -> None:
    dep = client.app.state.deployment
    client.blocking_portal.call(dep.jobs.run_due)


def test_import_api_upload_dry_run_run_status_errors(crm_client):
    from crmcore.testing import crm_user

    from .conftest import problem

    client = crm_client(in_process_worker=False, region="TR")
    body = "Surname,E-mail,Tel\nKaya,k@example.com,0532 123 45 67\n,bad,\nKaya2,K@example.com,\n"
    uploaded = client.post("/api/imports", files={"file": ("people.csv", body.encode(), "text/csv")},
                           data={"entity": "contact"})
    assert uploaded.status_code == 201, uploaded.text
    info = uploaded.json()
    assert info["status"] == "uploaded"
    assert info["preview"]["mapping"] == {"Surname": "last_name", "E-mail": "email", "Tel": "phone"}
    assert info["preview"]["rows"][0] == ["Kaya", "k@example.com", "0532 123 45 67"]
    import_id = info["id"]

    queued = client.post(f"/api/imports/{import_id}/run", json={"dry_run": True})
    assert queued.status_code == 202, queued.text
    _run_jobs(client)
    dry = client.get(f"/api/imports/{import_id}").json()
    assert (dry["status"], dry["dry_run"], dry["created"], dry["skipped"], dry["rejected"]) == ("done", True, 1, 1, 1)
    assert client.get("/api/contact").json()["items"] == []

    problem(client.post(f"/api/imports/{import_id}/run", json={"on_duplicate": "sometimes"}), 422, "on_duplicate")
    client.post(f"/api/imports/{import_id}/run", json={"mapping": {"Surname": "last_name", "E-mail": "email",
                                                                   "Tel": None}, "save_mapping": "people"})
    _run_jobs(client)
    done = client.get(f"/api/imports/{import_id}").json()
    assert (done["status"], done["created"], done["rejected"], done["processed"]) == ("done", 1, 1, 3)
    [record] = client.get("/api/contact").json()["items"]
    assert record["last_name"] == "Kaya" and record["phone"] is None and record["owner_id"] == client.crm_user.id
    report = client.get(f"/api/imports/{import_id}/errors")
    assert report.status_code == 200 and "row,column,value,reason" in report.text and "3,E-mail,bad" in report.text
    assert [m["name"] for m in client.get("/api/import-mappings").json()] == ["people"]
    problem(client.post(f"/api/imports/{import_id}/run", json={}), 422, "status")

    reader = crm_user(client, role="read_only")
    denied = client.post("/api/imports", files={"file": ("p.csv", body.encode(), "text/csv")},
                         data={"entity": "contact"}, headers=reader.headers)
    problem(denied, 403)
    problem(client.get(f"/api/imports/{import_id}", headers=reader.headers), 404)

    exported = client.get("/api/exports/contact", params={"format": "json"})
    assert exported.status_code == 200 and [r["last_name"] for r in exported.json()] == ["Kaya"]
    vcf = client.get("/api/exports/contact", params={"format": "vcf"})
    assert vcf.text.startswith("BEGIN:VCARD") and "Kaya" in vcf.text
    xlsx = client.get("/api/exports/contact", params={"format": "xlsx"})
    assert openpyxl.load_workbook(io.BytesIO(xlsx.content)).worksheets[0].max_row == 2
    problem(client.get("/api/exports/contact", params={"format": "pdf"}), 422, "format")
    from openapi_spec_validator import validate as validate_openapi

    doc = client.get("/schema/openapi.json").json()
    validate_openapi(doc)
    assert "/api/imports/{import_id}/run" in doc["paths"] and "ImportRun" in doc["components"]["schemas"]


async def test_a_unique_value_taken_rejects_only_its_row(dep, tmp_path):
    await dep.records.create("lab_item", {"name": "first", "code": "A-1"})
    rows = [["name", "code"], *[[f"n{i}", f"C-{i}"] for i in range(7)], ["clash", "A-1"], ["twice", "C-3"]]
    result = await dep.imports.import_file(write_csv(tmp_path / "items.csv", rows), "lab_item", actor=SYSTEM)
    assert (result.created, result.rejected) == (7, 2), result.errors
    assert [(e.row, e.column) for e in result.errors] == [(9, "code"), (10, "code")]
    page = await dep.records.list("lab_item", ListQuery(limit=50))
    assert sorted(r["name"] for r in page.items) == ["first", *[f"n{i}" for i in range(7)]]


async def test_an_agent_may_not_give_records_to_others_row_by_row(make_deployment, tmp_path):
    dep = await make_deployment()
    agent = await make_user(dep, role="agent")
    other = await make_user(dep, role="agent")
    as_agent = await dep.auth.actor_for_user(agent.id, via="session")
    path = write_csv(tmp_path / "o.csv", [["last_name", "owner"], ["Mine", str(agent.id)], ["Theirs", str(other.id)],
                                          ["Default", ""]])
    result = await dep.imports.import_file(path, "contact", actor=as_agent)
    assert (result.created, result.rejected) == (2, 1)
    assert result.errors[0].row == 3
    assert sorted((c["last_name"], c["owner_id"]) for c in await contacts(dep)) == [
        ("Default", agent.id), ("Mine", agent.id)]


@pytest.mark.parametrize("preload", [True, False])
async def test_duplicates_found_in_the_database_with_or_without_reading_every_key_first(
        make_deployment, tmp_path, monkeypatch, preload):
    import crmcore.importing

    monkeypatch.setattr(crmcore.importing, "PRELOAD_UP_TO", 10**9 if preload else 0)
    dep = await make_deployment(region="TR")
    await dep.records.bulk_create("contact", [
        {"last_name": "Mail", "email": "Mixed.Case@Example.com"},
        {"last_name": "Phone", "mobile": "+90 532 999 88 77"},
        {"last_name": "Title", "job_title": "Boss"},
    ])
    path = write_csv(tmp_path / "d.csv", [["last_name", "email", "phone", "job_title"],
                                          ["A", "mixed.case@example.com", "", ""], ["B", "", "0532 999 88 77", ""],
                                          ["C", "new@example.com", "", "boss"]])
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, dry_run=True)
    assert (result.created, result.skipped) == (1, 2)
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, key="job_title", on_duplicate="update")
    assert (result.created, result.updated) == (2, 1)
    assert {c["last_name"] for c in await contacts(dep)} == {"Mail", "Phone", "C", "A", "B"}


async def test_related_records_named_by_their_title(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    acme = await dep.records.create("company", {"name": "Acme Windows"})
    for _ in range(2):
        await dep.records.create("company", {"name": "Twin Doors"})
    agent = await make_user(dep, role="agent", email="Sales.Agent@example.com")
    path = write_csv(tmp_path / "people.csv", [
        ["Surname", "Company", "Owner"],
        ["Named", "Acme Windows", "sales.agent@example.com"],   # row 2: by title, owner by e-mail (any case)
        ["ById", str(acme["id"]), ""],                          # row 3: an id still works
        ["Unknown", "Nobody Ltd", ""],                          # row 4: no such company
        ["Twice", "Twin Doors", ""],                            # row 5: two companies have that name
    ])
    errors = tmp_path / "errors.csv"
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM, errors_file=errors,
                                           mapping={"Surname": "last_name", "Company": "company", "Owner": "owner_id"})
    assert (result.created, result.rejected) == (2, 2)
    made = {c["last_name"]: c for c in await contacts(dep)}
    assert made["Named"]["company"] == acme["id"] and made["Named"]["owner_id"] == agent.id
    assert made["ById"]["company"] == acme["id"]
    with open(errors, encoding="utf-8") as f:
        report = {r["row"]: r for r in csv.DictReader(f)}
    assert report["4"]["column"] == "Company" and "no company named 'Nobody Ltd'" in report["4"]["reason"]
    assert "2 company records are named 'Twin Doors'" in report["5"]["reason"]


def test_import_files_go_once_imported_or_a_week_old(crm_client):
    from .conftest import problem

    client = crm_client(in_process_worker=False, region="TR")
    dep = client.app.state.deployment

    def upload() -> int:
        body = "Surname,E-mail\nKaya,k@example.com\nBad,not-an-email\n".encode()
        answer = client.post("/api/imports", files={"file": ("p.csv", body, "text/csv")}, data={"entity": "contact"})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    imported, waiting = upload(), upload()
    folder = dep.imports.folder
    client.post(f"/api/imports/{imported}/run", json={})
    _run_jobs(client)
    assert client.get(f"/api/imports/{imported}").json()["status"] == "done"
    assert not list((folder / str(imported)).glob("upload.*"))  # imported: the upload is not needed
    assert "3,E-mail,not-an-email" in client.get(f"/api/imports/{imported}/errors").text  # the report stays
    assert list((folder / str(waiting)).glob("upload.*"))
    dep.clock.advance(days=8)
    upload()  # uploading sweeps the old files
    assert not (folder / str(imported)).exists() and not (folder / str(waiting)).exists()
    assert client.get(f"/api/imports/{imported}").json()["has_errors"] is False
    problem(client.get(f"/api/imports/{imported}/errors"), 404)
    later = client.get(f"/api/imports/{waiting}", params={"preview": 1}).json()
    assert "upload it again" in later["preview_error"]
    client.post(f"/api/imports/{waiting}/run", json={})
    _run_jobs(client)
    failed = client.get(f"/api/imports/{waiting}").json()
    assert failed["status"] == "failed" and "upload it again" in failed["error"]
