"""Reports on SQLite and PostgreSQL: figures checked against direct SQL on the same data, groups
(two fields, date buckets in the deployment's time zone), measures, the reader's scope and hidden
fields, definitions refused with the key named, the built-in reports, the API, the CLI and the
CSV/XLSX exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal

import pytest

import crmcore
from openapi_spec_validator import validate as validate_openapi
from openpyxl import load_workbook

from crmcore import Field, FieldType, ValidationError, hookimpl
from crmcore.auth import SYSTEM
from crmcore.auth.permissions import BUILTIN_ROLES, Actor, Role, effective_grants
from crmcore.records.errors import Forbidden
from crmcore.reports import _offsets, chart_svg, to_csv, to_xlsx
from crmcore.testing import crm_user, make_user
from tests.conftest import crm, problem, run

UTC = dt.timezone.utc

#: (name, amount, currency, stage, expected_close, owner: "ali" | "sam")
DEALS = [
    ("A", "1000.10", "EUR", "won", "2026-01-15", "ali"),
    ("B", "250.25", "EUR", "won", "2026-01-31", "ali"),
    ("C", "99.99", "USD", "won", "2026-02-01", "ali"),
    ("D", "400.00", "EUR", "won", "2026-02-14", "sam"),
    ("E", "12.50", "EUR", "lost", "2026-02-20", "sam"),
    ("F", "77.70", "EUR", "quote", "2026-03-03", "ali"),
    ("G", "300.00", "USD", "lost", "2026-03-09", "ali"),
    ("H", None, None, "won", "2026-03-10", "sam"),
]


async def setup(dep):
    ali = await make_user(dep, role="agent", name="Ali")
    sam = await make_user(dep, role="agent", name="Sam")
    users = {"ali": ali, "sam": sam}
    actors = {k: await dep.auth.actor_for_user(u.id) for k, u in users.items()}
    for name, amount, currency, stage, close, owner in DEALS:
        records = dep.records.as_actor(actors[owner])
        data = {"name": name, "expected_close": close}
        if amount:
            data["amount"] = {"amount": amount, "currency": currency}
        deal = await records.create("deal", data)
        await records.update("deal", deal["id"], {"stage": "qualification"})
        move = {"stage": stage}
        if stage == "lost":
            move["lost_reason"] = "price" if name == "E" else "timing"
        await records.update("deal", deal["id"], move)
    return users, actors


async def direct(dep, sql, params=()):
    return [tuple(r) for r in await dep.db.fetch(sql, params)]


async def test_figures_match_a_direct_sql_computation(make_deployment):
    dep = await make_deployment()
    users, actors = await setup(dep)
    result = await dep.reports.run({
        "name": "revenue", "entity": "deal", "filter": {"field": "stage", "op": "eq", "value": "won"},
        "group_by": ["owner_id", {"field": "expected_close", "bucket": "month"}],
        "measures": [{"op": "count"}, {"op": "sum", "field": "amount"}, {"op": "avg", "field": "amount"},
                     {"op": "min", "field": "amount"}, {"op": "max", "field": "amount"}],
    })
    assert [c["key"] for c in result["columns"]] == [
        "owner_id", "expected_close_month", "currency", "count", "sum_amount", "avg_amount", "min_amount", "max_amount"]
    numeric = "CAST(amount AS NUMERIC)" if dep.db.dialect == "postgres" else "CAST(amount AS REAL)"
    expected = await direct(dep, f"""
        SELECT owner_id, substr(CAST(expected_close AS TEXT), 1, 7), amount__currency, COUNT(*), SUM({numeric}),
               MIN({numeric}), MAX({numeric}), COUNT(amount)
        FROM crm_deal WHERE deleted_at IS NULL AND stage = 'won'
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""")
    got = [(r["owner_id"], r["expected_close_month"][:7], r["currency"], r["count"], r["sum_amount"],
            r["min_amount"], r["max_amount"], r["avg_amount"]) for r in result["rows"]]
    assert len(got) == len(expected) == 4

    def money(value):
        return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))

    for mine, theirs in zip(got, expected):
        owner, month, currency, count, total, low, high, present = theirs
        assert mine[:4] == (owner, month, currency, count)
        assert money(mine[4]) == (money(total) if total is not None else Decimal("0.00"))
        assert money(mine[5]) == money(low) and money(mine[6]) == money(high)
        assert mine[7] == (None if not present else (Decimal(str(total)) / present).quantize(Decimal("0.01")))
    # money sums per currency: Ali's January in EUR, February in USD
    ali = {(r["expected_close_month"], r["currency"]): r["sum_amount"] for r in result["rows"]
           if r["owner_id"] == users["ali"].id}
    assert ali == {("2026-01-01", "EUR"): Decimal("1250.35"), ("2026-02-01", "USD"): Decimal("99.99")}
    assert result["labels"]["owner_id"] == {str(users["ali"].id): "Ali", str(users["sam"].id): "Sam"}


async def test_group_by_two_fields_measure_filters_sort_and_limit(make_deployment):
    dep = await make_deployment()
    await setup(dep)
    result = await dep.reports.run({
        "name": "by_stage", "entity": "deal", "group_by": ["stage", "lost_reason"],
        "measures": [{"op": "count"}, {"op": "count", "name": "in_euros", "filter": {"field": "amount__currency", "op": "eq", "value": "EUR"}}],
        "sort": ["-count"], "limit": 2,
    })
    expected = await direct(dep, "SELECT stage, lost_reason, COUNT(*) FROM crm_deal WHERE deleted_at IS NULL "
                                 "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2")
    assert [(r["stage"], r["lost_reason"], r["count"]) for r in result["rows"]] == expected[:2]
    assert result["truncated"] is True
    assert result["rows"][0]["in_euros"] == 3  # won: A, B, D in euros (C in dollars, H without amount)


async def test_date_buckets_in_the_deployments_time_zone(make_deployment):
    dep = await make_deployment(timezone="Europe/Istanbul")
    records = dep.records
    # 22:30 UTC on 31 January is 01:30 on 1 February in Istanbul (UTC+3)
    for due in ("2026-01-31T22:30:00+00:00", "2026-01-31T20:00:00+00:00", "2026-03-29T21:30:00+00:00",
                "2026-12-31T21:00:00+00:00"):
        await records.create("activity", {"kind": "call", "subject": "x", "due_at": due})
    counts = {}
    for bucket in ("day", "week", "month", "quarter", "year"):
        result = await dep.reports.run({"name": "t", "entity": "activity", "measures": ["count"],
                                        "group_by": [{"field": "due_at", "bucket": bucket}]})
        counts[bucket] = {r[f"due_at_{bucket}"]: r["count"] for r in result["rows"]}
    assert counts["day"] == {"2026-01-31": 1, "2026-02-01": 1, "2026-03-30": 1, "2027-01-01": 1}
    assert counts["week"] == {"2026-01-26": 2, "2026-03-30": 1, "2026-12-28": 1}
    assert counts["month"] == {"2026-01-01": 1, "2026-02-01": 1, "2026-03-01": 1, "2027-01-01": 1}
    assert counts["quarter"] == {"2026-01-01": 3, "2027-01-01": 1}
    assert counts["year"] == {"2026-01-01": 3, "2027-01-01": 1}


def test_time_zone_offsets_follow_daylight_saving():
    from zoneinfo import ZoneInfo

    spans = _offsets(ZoneInfo("America/New_York"), dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 12, 31, tzinfo=UTC))
    assert spans == [("2026-03-08T07:00:00.000000+00:00", -300), ("2026-11-01T06:00:00.000000+00:00", -240), (None, -300)]


async def test_an_agents_report_counts_only_their_records_and_hidden_fields_are_refused(make_deployment):
    dep = await make_deployment()
    users, actors = await setup(dep)
    definition = {"name": "all", "entity": "deal", "group_by": ["stage"], "measures": ["count", "sum:amount"]}
    mine = await dep.reports.run(definition, actors["sam"])
    expected = await direct(dep, "SELECT stage, amount__currency, COUNT(*) FROM crm_deal WHERE deleted_at IS NULL "
                                 "AND owner_id = ? GROUP BY 1, 2 ORDER BY 1, 2", [users["sam"].id])
    assert [(r["stage"], r["currency"], r["count"]) for r in mine["rows"]] == expected
    assert sum(r["count"] for r in mine["rows"]) == 3
    everyone = await dep.reports.run(definition)
    assert sum(r["count"] for r in everyone["rows"]) == len(DEALS)

    role = Role(name="no_money", label="No money", entities={"*": {"read": BUILTIN_ROLES["agent"].entities["*"]["read"]}},
                fields={"deal": {"amount": "hidden"}})
    secretive = Actor(user_id=users["sam"].id, role=role, grants=effective_grants(role, {}), via="session")
    with pytest.raises(Forbidden, match="amount"):
        await dep.reports.run(definition, secretive)
    with pytest.raises(Forbidden, match="amount"):
        await dep.reports.run({"name": "x", "entity": "deal", "group_by": ["stage"]}, secretive,
                              filter={"field": "amount", "op": "gt", "value": 10})
    counted = await dep.reports.run({"name": "x", "entity": "deal", "group_by": ["stage"]}, secretive)
    assert sum(r["count"] for r in counted["rows"]) == 3
    nobody = Role(name="nobody", label="Nobody", entities={})
    with pytest.raises(Forbidden):
        await dep.reports.run(definition, Actor(user_id=users["sam"].id, role=nobody, via="session"))


@pytest.mark.parametrize("definition, key", [
    ({"entity": "deal"}, "name"),
    ({"name": "Bad Name", "entity": "deal"}, "name"),
    ({"name": "x", "entity": "nope"}, "entity"),
    ({"name": "x", "entity": "deal", "colour": "red"}, "colour"),
    ({"name": "x", "entity": "deal", "group_by": ["a", "b", "c"]}, "group_by"),
    ({"name": "x", "entity": "deal", "group_by": ["nope"]}, "group_by[0]"),
    ({"name": "x", "entity": "deal", "group_by": [{"field": "expected_close", "bucket": "fortnight"}]}, "group_by[0].bucket"),
    ({"name": "x", "entity": "deal", "group_by": [{"field": "stage", "bucket": "month"}]}, "group_by[0].bucket"),
    ({"name": "x", "entity": "deal", "measures": [{"op": "median", "field": "amount"}]}, "measures[0].op"),
    ({"name": "x", "entity": "deal", "measures": [{"op": "sum", "field": "name"}]}, "measures[0].field"),
    ({"name": "x", "entity": "deal", "measures": [{"op": "sum"}]}, "measures[0].field"),
    ({"name": "x", "entity": "deal", "measures": ["count", "count"]}, "measures[1].name"),
    ({"name": "x", "entity": "deal", "filter": {"field": "nope", "op": "eq", "value": 1}}, "filter.nope"),
    ({"name": "x", "entity": "deal", "sort": ["nope"]}, "sort[0]"),
    ({"name": "x", "entity": "deal", "limit": 0}, "limit"),
    ({"name": "x", "entity": "deal", "chart": "radar"}, "chart"),
])
async def test_bad_definitions_name_the_key(make_deployment, definition, key):
    dep = await make_deployment()
    with pytest.raises(ValidationError) as exc:
        dep.reports.validate(definition)
    assert exc.value.errors[0].field == key, exc.value.errors


async def test_built_in_reports_on_a_small_dataset(make_deployment):
    dep = await make_deployment()
    users, actors = await setup(dep)
    names = [r["name"] for r in await dep.reports.list()]
    assert {"sales_funnel", "won_lost", "revenue_by_owner", "activities_per_employee", "time_in_stage"} <= set(names)

    funnel = {r["stage"]: r for r in (await dep.reports.run("sales_funnel"))["rows"]}
    assert funnel["prospecting"]["reached"] == len(DEALS) and funnel["qualification"]["reached"] == len(DEALS)
    assert funnel["won"]["reached"] == 5 and funnel["won"]["conversion"] == Decimal("62.5")
    # a stage counts the deals that reached it or a later one: won deals passed quote and negotiation
    assert [funnel[s]["reached"] for s in ("quote", "negotiation", "lost")] == [6, 5, 2]
    assert funnel["negotiation"]["step"] == Decimal("83.3") and funnel["won"]["step"] == Decimal("100.0")
    assert funnel["prospecting"]["step"] is None and funnel["lost"]["conversion"] == Decimal("25.0")
    sams = {r["stage"]: r["reached"] for r in (await dep.reports.run("sales_funnel", actors["sam"]))["rows"]}
    assert sams["prospecting"] == 3 and sams["won"] == 2

    won_lost = {(r["stage"], r["lost_reason"], r["currency"]): (r["count"], r["sum_amount"])
                for r in (await dep.reports.run("won_lost"))["rows"]}
    assert won_lost[("lost", "price", "EUR")] == (1, Decimal("12.50"))
    assert won_lost[("lost", "timing", "USD")] == (1, Decimal("300.00"))

    revenue = (await dep.reports.run("revenue_by_owner"))["rows"]
    expected = await direct(dep, "SELECT owner_id, amount__currency, COUNT(*) FROM crm_deal WHERE stage = 'won' "
                                 "AND deleted_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2")
    totals: dict = {}
    for r in revenue:
        totals[(r["owner_id"], r["currency"])] = totals.get((r["owner_id"], r["currency"]), 0) + r["count"]
    assert sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")) == \
        sorted((((o, c), n) for o, c, n in expected), key=lambda kv: (kv[0][0], kv[0][1] or ""))

    now = dep.clock.now()
    past, future = (now - dt.timedelta(days=2)).isoformat(), (now + dt.timedelta(days=2)).isoformat()
    for kind, done, due, who in (("call", True, past, "ali"), ("call", False, past, "ali"), ("task", True, past, "ali"),
                                 ("task", False, past, "sam"), ("task", False, future, "sam"), ("email", True, past, "sam")):
        await dep.records.create("activity", {"kind": kind, "subject": "s", "done": done, "due_at": due,
                                              "assignee": users[who].id})
    activities = {r["assignee"]: (r["calls"], r["tasks_done"], r["overdue"])
                  for r in (await dep.reports.run("activities_per_employee"))["rows"]}
    assert activities == {users["ali"].id: (2, 1, 1), users["sam"].id: (0, 0, 1)}

    # time in stage: every deal stayed in prospecting, then qualification
    history = await direct(dep, 'SELECT "id", "record_id", "to_stage" FROM crm_stage_history ORDER BY "record_id", "id"')
    base = dt.datetime(2026, 1, 1, tzinfo=UTC)
    hours = {"prospecting": 0, "qualification": 24, "won": 72, "lost": 72, "quote": 72}
    for row_id, record_id, stage in history:
        at = base + dt.timedelta(hours=hours[stage] + (12 if stage != "prospecting" and record_id % 2 else 0))
        await dep.db.execute('UPDATE crm_stage_history SET "at" = ? WHERE "id" = ?',
                             (at.isoformat(timespec="microseconds"), row_id))
    stays = {r["stage"]: (r["stays"], r["average_days"]) for r in (await dep.reports.run("time_in_stage"))["rows"]}
    assert stays["prospecting"][0] == len(DEALS) and stays["qualification"][0] == len(DEALS)
    assert stays["prospecting"][1] == Decimal("1.25")  # 1 day, or 1.5 for odd ids: half of each
    assert stays["qualification"][1] == Decimal("2.00")
    assert stays["won"] == (0, None)


async def test_saved_reports_need_manage_schema_and_plugins_add_reports(make_deployment):
    class Estate:
        PLUGIN = crmcore_plugin_info("estate")

        @staticmethod
        @hookimpl
        def crm_register_reports(register):
            register({"name": "by_stage", "entity": "deal", "group_by": ["stage"], "chart": "pie"})

    dep = await make_deployment(extra_plugins=[Estate])
    users, actors = await setup(dep)
    assert (await dep.reports.get("estate.by_stage"))["source"] == "estate"
    assert sum(r["count"] for r in (await dep.reports.run("estate.by_stage"))["rows"]) == len(DEALS)
    with pytest.raises(Forbidden, match="manage_schema"):
        await dep.reports.save({"name": "mine", "entity": "deal"}, actors["ali"])
    admin = await dep.auth.actor_for_user((await make_user(dep, role="admin")).id)
    saved = await dep.reports.save({"name": "mine", "entity": "deal", "group_by": ["stage"]}, admin)
    assert saved["source"] == "saved" and saved["measures"] == [{"op": "count", "name": "count"}]
    with pytest.raises(ValidationError) as exc:
        await dep.reports.save({"name": "won_lost", "entity": "deal"}, admin)
    assert exc.value.errors[0].field == "name"
    assert "mine" in [r["name"] for r in await dep.reports.list(actors["ali"])]
    with pytest.raises(Forbidden):
        await dep.reports.remove("mine", actors["ali"])
    await dep.reports.remove("mine", admin)
    assert "mine" not in [r["name"] for r in await dep.reports.list()]


def crmcore_plugin_info(name):
    from crmcore import PluginInfo

    return PluginInfo(name=name, version="1")


async def test_exports_csv_xlsx_and_a_chart(make_deployment):
    dep = await make_deployment()
    users, _ = await setup(dep)
    result = await dep.reports.run("revenue_by_owner")
    book = load_workbook(io.BytesIO(to_xlsx(result)))
    sheet = book.active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == tuple(c["label"] for c in result["columns"])
    assert rows[1][0] == "Ali" and rows[1][1] == "2026-01" and rows[1][2] == "EUR"
    assert Decimal(str(rows[1][3])) == Decimal("1250.35") and rows[1][4] == 2
    assert len(rows) == len(result["rows"]) + 1
    lines = to_csv(result).splitlines()
    assert lines[0] == "owner_id,expected_close_month,currency,sum_amount,count"
    assert lines[1] == "Ali,2026-01,EUR,1250.35,2"
    svg = chart_svg(result)
    assert svg.count('class="bar"') == len(result["rows"]) and "<title" in svg and 'role="img"' in svg
    # two owners (and currencies): one series each, months along the axis, with a key
    assert 'class="key-label"' in svg and ">Ali / EUR</text>" in svg and ">2026-01</text>" in svg
    assert "<title>Ali / EUR, 2026-01: 1,250.35</title>" in svg
    single = await dep.reports.run({"name": "s", "entity": "deal", "group_by": ["stage"]})
    assert 'class="key-label"' not in chart_svg(single) and chart_svg(single).count('class="bar"') == len(single["rows"])
    for kind in ("line", "pie", "funnel"):
        assert "<svg" in chart_svg({**result, "chart": kind})
    assert chart_svg({**result, "chart": "none"}) == ""


# -- the API and the CLI -------------------------------------------------------------------------


def test_api_lists_runs_saves_and_exports(crm_client):
    client = crm_client()
    agent = crm_user(client, role="agent")
    for name, owner in (("A", client.crm_user), ("B", agent), ("C", agent)):
        response = client.post("/api/deal", json={"name": name, "amount": {"amount": "10", "currency": "EUR"}},
                               headers=owner.headers)
        assert response.status_code == 201, response.text
    listed = client.get("/api/reports").json()
    assert "sales_funnel" in [r["name"] for r in listed]
    body = {"name": "by_stage", "entity": "deal", "group_by": ["stage"], "measures": ["count", "sum:amount"]}
    problem(client.post("/api/reports", json={**body, "chart": "radar"}), 422, "chart")
    problem(client.post("/api/reports", json=body, headers=agent.headers), 403)
    assert client.post("/api/reports", json=body).status_code == 201
    assert client.get("/api/reports/by_stage").json()["group_by"] == [{"field": "stage"}]
    run = client.get("/api/reports/by_stage/run").json()
    assert run["rows"][0]["count"] == 3 and run["rows"][0]["sum_amount"] == "30.00"
    mine = client.get("/api/reports/by_stage/run", headers=agent.headers).json()
    assert mine["rows"][0]["count"] == 2
    narrowed = client.post("/api/reports/by_stage/run", json={"filter": {"field": "name", "op": "eq", "value": "A"}}).json()
    assert narrowed["rows"][0]["count"] == 1
    problem(client.post("/api/reports/by_stage/run", json={"filter": {"field": "nope", "op": "eq", "value": 1}}), 422, "filter.nope")
    csv_answer = client.get("/api/reports/by_stage/run?format=csv")
    assert csv_answer.headers["content-type"].startswith("text/csv") and csv_answer.text.splitlines()[1] == "prospecting,EUR,3,30.00"
    xlsx = client.get("/api/reports/by_stage/run?format=xlsx")
    assert load_workbook(io.BytesIO(xlsx.content)).active["C2"].value == 3
    problem(client.get("/api/reports/nope/run"), 404)
    tried = client.post("/api/reports/run", json={"name": "try", "entity": "deal", "measures": ["count"]}, headers=agent.headers)
    assert tried.status_code == 200 and tried.json()["rows"] == [{"count": 2}]
    problem(client.post("/api/reports/run", json={"name": "try", "entity": "deal", "group_by": ["nope"]}), 422, "group_by[0]")
    problem(client.delete("/api/reports/by_stage", headers=agent.headers), 403)
    assert client.delete("/api/reports/by_stage").status_code == 204
    doc = client.get("/schema").json()
    validate_openapi(doc)
    assert {"/api/reports", "/api/reports/{name}", "/api/reports/{name}/run"} <= set(doc["paths"])
    assert "ReportResult" in doc["components"]["schemas"]


def test_cli_lists_adds_runs_and_removes(tmp_path, crm_backend):
    path = tmp_path / "acme"
    crmcore.init_deployment(path, database_url=crm_backend.database_url)
    run(path, setup)
    listed = crm("reports", "list", deployment=path).output
    assert "sales_funnel" in listed and "won_lost" in listed
    file = tmp_path / "report.json"
    file.write_text(json.dumps({"name": "stages_saved", "entity": "deal", "group_by": ["stage"], "measures": ["count"]}))
    assert "stages_saved" in crm("reports", "add", str(file), deployment=path).output
    assert '"group_by"' in crm("reports", "show", "stages_saved", deployment=path).output
    out = tmp_path / "out.csv"
    crm("reports", "run", "stages_saved", "--format", "csv", "--output", str(out), deployment=path)
    lines = out.read_text().splitlines()
    assert lines[0] == "stage,count" and "won,5" in lines
    data = json.loads(crm("reports", "run", "stages_saved", "--format", "json", deployment=path).output)
    assert {r["stage"]: r["count"] for r in data["rows"]}["lost"] == 2
    table = crm("reports", "run", "stages_saved", deployment=path).output
    assert "Stage" in table and "won" in table
    xlsx = tmp_path / "out.xlsx"
    crm("reports", "run", "won_lost", "--output", str(xlsx), deployment=path)
    assert load_workbook(xlsx).active["A1"].value == "Stage"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "entity": "deal", "chart": "radar"}))
    assert "chart" in crm("reports", "add", str(bad), deployment=path, ok=False).output
    assert "report nope does not exist" in crm("reports", "run", "nope", deployment=path, ok=False).output
    crm("reports", "remove", "stages_saved", deployment=path)
    assert "stages_saved" not in crm("reports", "list", deployment=path).output


async def test_sorting_on_an_average_with_a_filter_of_its_own(make_deployment):
    dep = await make_deployment()
    await setup(dep)
    result = await dep.reports.run({
        "name": "avg", "entity": "deal", "group_by": ["owner_id"], "filter": {"field": "amount__currency", "op": "eq", "value": "EUR"},
        "measures": [{"op": "avg", "field": "amount", "name": "won_avg", "filter": {"field": "stage", "op": "eq", "value": "won"}},
                     {"op": "sum", "field": "amount"}, {"op": "avg", "field": "amount"}],
        "sort": ["-won_avg"],
    })
    averages = [r["won_avg"] for r in result["rows"]]
    assert averages == sorted(averages, reverse=True) and len(averages) == 2
    expected = await direct(dep, "SELECT owner_id, COUNT(*) FROM crm_deal WHERE stage = 'won' AND amount__currency = 'EUR' "
                                 "GROUP BY 1 ORDER BY 1")
    ali_first = result["rows"][0]
    assert ali_first["won_avg"] == Decimal("625.18") and ali_first["avg_amount"] == Decimal("442.68")
    assert ali_first["owner_id"] == expected[0][0]
    result = await dep.reports.run({"name": "x", "entity": "deal", "group_by": ["owner_id"], "sort": ["-owner_id"]})
    assert [r["owner_id"] for r in result["rows"]] == sorted((r["owner_id"] for r in result["rows"]), reverse=True)


async def test_money_sums_keep_their_currencys_minor_unit(make_deployment):
    dep = await make_deployment()
    for amount, currency in [("1.125", "KWD"), ("2.250", "KWD"), ("1000", "JPY"), ("250", "JPY"), ("0.10", "EUR"), ("0.20", "EUR")]:
        await dep.records.create("deal", {"name": currency, "amount": {"amount": amount, "currency": currency}})
    result = await dep.reports.run({"name": "x", "entity": "deal", "measures": [
        {"op": "sum", "field": "amount"}, {"op": "sum", "field": "amount", "name": "none",
                                           "filter": {"field": "name", "op": "eq", "value": "nothing"}}]})
    sums = {r["currency"]: (str(r["sum_amount"]), str(r["none"])) for r in result["rows"]}
    assert sums == {"KWD": ("3.375", "0.000"), "JPY": ("1250", "0"), "EUR": ("0.30", "0.00")}
    await dep.add_custom_field("deal", Field(name="fee", type=FieldType.MONEY))  # two money fields: a currency each
    await dep.records.create("deal", {"name": "fee", "amount": {"amount": "7", "currency": "JPY"},
                                      "fee": {"amount": "0.500", "currency": "KWD"}})
    result = await dep.reports.run({"name": "x", "entity": "deal", "filter": {"field": "name", "op": "eq", "value": "fee"},
                                    "measures": [{"op": "sum", "field": "amount"}, {"op": "sum", "field": "fee"}]})
    assert [(r["amount_currency"], str(r["sum_amount"]), r["fee_currency"], str(r["sum_fee"])) for r in result["rows"]] == [
        ("JPY", "7", "KWD", "0.500")]


async def test_a_saved_report_naming_a_removed_field_is_refused_clearly(make_deployment):
    dep = await make_deployment()
    await dep.add_custom_field("deal", Field(name="region", type=FieldType.TEXT))
    await dep.reports.save({"name": "by_region", "entity": "deal", "group_by": ["region"]}, SYSTEM)
    await dep.records.create("deal", {"name": "A", "region": "north"})
    assert (await dep.reports.run("by_region"))["rows"] == [{"region": "north", "count": 1}]
    await dep.remove_custom_field("deal", "region")
    with pytest.raises(ValidationError) as exc:
        await dep.reports.run("by_region")
    assert exc.value.errors[0].field == "group_by[0]"


async def test_revenue_by_owner_and_month_of_the_won_move(make_deployment):
    dep = await make_deployment(timezone="Europe/Istanbul")
    users, actors = await setup(dep)
    # the moves to won: A at 22:30 UTC on 31 January (February in Istanbul), the others in March
    moves = await direct(dep, "SELECT h.id, d.name FROM crm_stage_history h JOIN crm_deal d ON d.id = h.record_id "
                              "WHERE h.to_stage = 'won'")
    for move_id, name in moves:
        at = "2026-01-31T22:30:00.000000+00:00" if name == "A" else "2026-03-05T10:00:00.000000+00:00"
        await dep.db.execute('UPDATE crm_stage_history SET "at" = ? WHERE "id" = ?', (at, move_id))
    rows = (await dep.reports.run("revenue_by_owner_won_month"))["rows"]
    got = {(r["owner_id"], r["won_month"], r["currency"]): (r["sum_amount"], r["count"]) for r in rows}
    ali, sam = users["ali"].id, users["sam"].id
    assert got == {
        (ali, "2026-02-01", "EUR"): (Decimal("1000.10"), 1), (ali, "2026-03-01", "EUR"): (Decimal("250.25"), 1),
        (ali, "2026-03-01", "USD"): (Decimal("99.99"), 1), (sam, "2026-03-01", "EUR"): (Decimal("400.00"), 1),
        (sam, "2026-03-01", None): (Decimal("0.00"), 1),
    }
    mine = (await dep.reports.run("revenue_by_owner_won_month", actors["sam"]))["rows"]
    assert {r["owner_id"] for r in mine} == {sam}


async def test_exports_keep_text_that_looks_like_a_formula_as_text(make_deployment):
    dep = await make_deployment()
    await dep.records.create("deal", {"name": "A", "stage": "lost", "lost_reason": "=HYPERLINK(\"http://x\")"})
    result = await dep.reports.run("won_lost")
    assert list(csv.reader(io.StringIO(to_csv(result))))[1][:2] == ["lost", "'=HYPERLINK(\"http://x\")"]
    cell = load_workbook(io.BytesIO(to_xlsx(result))).active["B2"]
    assert cell.value == '=HYPERLINK("http://x")' and cell.data_type == "s"
