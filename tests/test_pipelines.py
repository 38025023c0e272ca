"""Pipelines: stored and plugin-declared definitions (service, API, CLI), stage moves through the
records service (stage of the pipeline, lost reason, first stage, probability), stage history
with time per stage, permissions and scope. Real deployments on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import jsonschema
import msgspec
import pytest
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

import crmcore
from crmcore import EntityType, Field, FieldType, Pipeline, PluginInfo, Stage, ValidationError, hookimpl
from crmcore.testing import crm_user, make_user

from .conftest import crm, problem

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RENEWALS = {"name": "renewals", "entity": "deal", "label": "Renewals", "stages": [
    {"name": "due", "probability": 40}, {"name": "talking", "probability": 60},
    {"name": "renewed", "kind": "won"}, {"name": "churned", "kind": "lost"},
]}


def stamp(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def errors_of(exc: pytest.ExceptionInfo) -> dict[str, str]:
    return {e.field: e.message for e in exc.value.errors}


async def history_rows(dep, record_id: int) -> list[tuple]:
    return await dep.db.fetch(
        'SELECT "id", "pipeline", "from_stage", "to_stage", "user_id" FROM crm_stage_history '
        'WHERE "entity" = ? AND "record_id" = ? ORDER BY "id"', ("deal", record_id))


# -- stage moves through the records service ----------------------------------------------------


async def test_new_deal_gets_the_first_stage_and_probability_follows_the_stage(make_deployment):
    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "Windows", "amount": "1200"})
    assert (deal["pipeline"], deal["stage"], deal["probability"]) == ("sales", "prospecting", 10)
    moved = await dep.records.update("deal", deal["id"], {"stage": "quote"})
    assert (moved["stage"], moved["probability"]) == ("quote", 50)
    given = await dep.records.update("deal", deal["id"], {"stage": "negotiation", "probability": 90})
    assert given["probability"] == 90  # given with the move: kept
    renamed = await dep.records.update("deal", deal["id"], {"name": "Windows and doors"})
    assert renamed["probability"] == 90  # no move: untouched
    started = await dep.records.create("deal", {"name": "Doors", "stage": "qualification"})
    assert started["probability"] == 25
    ids = await dep.records.bulk_create("deal", [{"name": "a"}, {"name": "b", "stage": "won"}])
    rows = [await dep.records.get("deal", i) for i in ids]
    assert [(r["stage"], r["probability"]) for r in rows] == [("prospecting", 10), ("won", 100)]
    await dep.records.bulk_update("deal", [{"id": ids[0], "stage": "quote"}, {"id": ids[1], "name": "bee"}])
    assert (await dep.records.get("deal", ids[0]))["probability"] == 50
    # the audit has the move like any change, made by the records service
    history = await dep.records.history("deal", deal["id"])
    assert history[-1]["action"] == "create" and history[-2]["changes"]["stage"] == ["prospecting", "quote"]


async def test_a_stage_must_be_one_of_the_records_pipeline(make_deployment):
    dep = await make_deployment()
    await dep.pipeline_service.create(RENEWALS)
    deal = await dep.records.create("deal", {"name": "Windows"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("deal", deal["id"], {"stage": "due"})  # a stage of another pipeline
    message = errors_of(exc)["stage"]
    assert "'due' is not a stage of pipeline 'sales'" in message and "prospecting, qualification, quote" in message
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("deal", {"name": "x", "stage": "nowhere"})
    assert "stage" in errors_of(exc)
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("deal", {"name": "x", "pipeline": "nope"})
    assert "sales, renewals" in errors_of(exc)["pipeline"]
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("deal", deal["id"], {"stage": None})
    assert errors_of(exc)["stage"].startswith("a record in a pipeline needs a stage")
    # another pipeline: the stage given must be one of it; none given: its first stage
    moved = await dep.records.update("deal", deal["id"], {"pipeline": "renewals"})
    assert (moved["pipeline"], moved["stage"], moved["probability"]) == ("renewals", "due", 40)
    back = await dep.records.update("deal", deal["id"], {"pipeline": "sales", "stage": "quote"})
    assert (back["stage"], back["probability"]) == ("quote", 50)
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("deal", [{"name": "ok"}, {"name": "bad", "stage": "due"}])
    assert set(errors_of(exc)) == {"rows[1].stage"}
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_update("deal", [{"id": deal["id"], "stage": "churned"}])
    assert set(errors_of(exc)) == {"rows[0].stage"}
    assert (await dep.records.get("deal", deal["id"]))["stage"] == "quote"


async def test_a_lost_stage_needs_a_lost_reason(make_deployment):
    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "Windows"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("deal", deal["id"], {"stage": "lost"})
    assert set(errors_of(exc)) == {"lost_reason"}
    with pytest.raises(ValidationError):
        await dep.records.update("deal", deal["id"], {"stage": "lost", "lost_reason": "   "})
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("deal", {"name": "x", "stage": "lost"})
    assert set(errors_of(exc)) == {"lost_reason"}
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("deal", [{"name": "x", "stage": "lost"}])
    assert set(errors_of(exc)) == {"rows[0].lost_reason"}
    lost = await dep.records.update("deal", deal["id"], {"stage": "lost", "lost_reason": "too expensive"})
    assert (lost["stage"], lost["probability"], lost["lost_reason"]) == ("lost", 0, "too expensive")
    with pytest.raises(ValidationError) as exc:  # a lost deal keeps its reason
        await dep.records.update("deal", deal["id"], {"lost_reason": None})
    assert set(errors_of(exc)) == {"lost_reason"}
    reopened = await dep.records.update("deal", deal["id"], {"stage": "negotiation"})
    assert reopened["probability"] == 75


async def test_stage_history_and_time_per_stage(make_deployment):
    dep = await make_deployment()
    seller = await make_user(dep, role="sales_manager")
    records = dep.records.as_actor(await dep.auth.actor_for_user(seller.id))
    deal = await records.create("deal", {"name": "Windows", "amount": "1500"})
    await records.update("deal", deal["id"], {"stage": "quote"})
    await records.update("deal", deal["id"], {"name": "Windows!"})  # not a move: no entry
    await dep.records.update("deal", deal["id"], {"stage": "prospecting"})
    await records.update("deal", deal["id"], {"stage": "quote"})
    await records.update("deal", deal["id"], {"stage": "won"})
    rows = await history_rows(dep, deal["id"])
    assert [(r[2], r[3]) for r in rows] == [
        (None, "prospecting"), ("prospecting", "quote"), ("quote", "prospecting"), ("prospecting", "quote"), ("quote", "won")]
    assert [r[4] for r in rows] == [seller.id, seller.id, None, seller.id, seller.id]
    # times set through the stored timestamps: 1 h, 2 days, 30 min, 3 h, then won
    offsets = [dt.timedelta(0), dt.timedelta(hours=1), dt.timedelta(days=2, hours=1),
               dt.timedelta(days=2, hours=1, minutes=30), dt.timedelta(days=2, hours=4, minutes=30)]
    for (row_id, *_), offset in zip(rows, offsets):
        await dep.db.execute('UPDATE crm_stage_history SET "at" = ? WHERE "id" = ?', (stamp(T0 + offset), row_id))
    now = T0 + dt.timedelta(days=30)
    found = await dep.pipeline_service.stage_history("deal", deal["id"], now=now)
    assert found["stage"] == "won" and found["since"] == stamp(T0 + offsets[-1])
    assert [e["seconds"] for e in found["history"]] == [3600, 2 * 86400, 1800, 3 * 3600, None]  # won: closed
    assert found["history"][0]["left_at"] == stamp(T0 + offsets[1])
    durations = {d["stage"]: (d["seconds"], d["visits"]) for d in found["durations"]}
    assert durations == {"prospecting": (3600 + 1800, 2), "quote": (2 * 86400 + 3 * 3600, 2), "won": (None, 1)}
    # an open stage counts until now
    await dep.records.update("deal", deal["id"], {"stage": "negotiation"})
    last = (await history_rows(dep, deal["id"]))[-1][0]
    await dep.db.execute('UPDATE crm_stage_history SET "at" = ? WHERE "id" = ?', (stamp(T0 + dt.timedelta(days=29)), last))
    found = await dep.pipeline_service.stage_history("deal", deal["id"], now=now)
    assert found["history"][-2]["seconds"] == (dt.timedelta(days=29) - offsets[-1]).total_seconds()
    assert found["history"][-1]["seconds"] == 86400


async def test_probability_follows_the_stage_where_the_role_may_only_read_it(make_deployment):
    dep = await make_deployment()
    agent = await dep.auth.role("agent")
    await dep.auth.save_role(msgspec.structs.replace(
        agent, fields={**agent.fields, "deal": {"probability": "read"}}), actor=crmcore.SYSTEM)
    user = await make_user(dep, role="agent")
    records = dep.records.as_actor(await dep.auth.actor_for_user(user.id))
    deal = await records.create("deal", {"name": "Windows"})
    assert (await records.update("deal", deal["id"], {"stage": "quote"}))["probability"] == 50
    with pytest.raises(crmcore.Forbidden):  # what the user gives is still checked
        await records.update("deal", deal["id"], {"stage": "negotiation", "probability": 99})
    await records.bulk_update("deal", [{"id": deal["id"], "stage": "negotiation"}])
    assert (await records.get("deal", deal["id"]))["probability"] == 75


class AutoQuote:
    """A plugin whose crm_before_save moves deals with an amount to the quote stage."""

    PLUGIN = PluginInfo(name="autoquote", version="1.0")

    @staticmethod
    @hookimpl(tryfirst=True)
    def crm_before_save(change):
        if change.entity == "deal" and change.batch is None and change.values.get("amount") is not None:
            change.values["stage"] = "quote" if change.values.get("name") != "give up" else "lost"


async def test_a_stage_other_plugins_set_is_checked_and_recorded(make_deployment):
    dep = await make_deployment(extra_plugins=[AutoQuote])
    deal = await dep.records.create("deal", {"name": "Windows", "amount": "100"})
    assert (deal["stage"], deal["probability"]) == ("quote", 50)
    assert [(r[2], r[3]) for r in await history_rows(dep, deal["id"])] == [(None, "quote")]
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("deal", {"name": "give up", "amount": "100"})
    assert set(errors_of(exc)) == {"lost_reason"}


async def test_stage_history_is_written_with_the_write_or_not_at_all(make_deployment):
    dep = await make_deployment()
    deal = await dep.records.create("deal", {"name": "Windows"})
    with pytest.raises(ValidationError):  # refused after the hooks ran: a relation that does not exist
        await dep.records.update("deal", deal["id"], {"stage": "quote", "contact": 999})
    with pytest.raises(ValidationError):
        await dep.records.create("deal", {"name": "x", "stage": "quote", "contact": 999})
    assert [(r[2], r[3]) for r in await history_rows(dep, deal["id"])] == [(None, "prospecting")]
    assert await dep.db.fetchval("SELECT COUNT(*) FROM crm_stage_history") == 1


# -- definitions -----------------------------------------------------------------------------------


async def test_stored_pipelines_crud(make_deployment):
    dep = await make_deployment()
    service = dep.pipeline_service
    other = await make_deployment(path=dep.path)  # another process on the same database
    created = await service.create(RENEWALS)
    assert created.plugin == "custom" and [s.probability for s in created.stages] == [40, 60, 100, 0]
    assert "renewals" in dep.pipelines
    with pytest.raises(ValidationError) as exc:  # it has not looked yet, the database still refuses
        await other.pipeline_service.create({**RENEWALS, "label": "Mine"})
    assert "already exists" in errors_of(exc)["name"]
    assert await other.refresh() and other.pipelines["renewals"].stages[0].name == "due"
    with pytest.raises(ValidationError) as exc:
        await service.create(RENEWALS)
    assert "already exists" in errors_of(exc)["name"]
    with pytest.raises(ValidationError) as exc:
        await service.create({"name": "sales", "stages": [{"name": "a"}]})
    assert "customise" in errors_of(exc)["name"]
    # relabel, reorder, add, change probability and kind, remove an unused stage
    changed = await service.update("renewals", {"label": "Contract renewals", "stages": [
        {"name": "talking", "probability": 70}, {"name": "due", "label": "Due soon", "probability": 30},
        {"name": "offer_sent", "probability": 80}, {"name": "renewed", "kind": "won"}, {"name": "churned", "kind": "lost"},
    ]})
    assert changed.label == "Contract renewals"
    assert [(s.name, s.probability) for s in changed.stages][:3] == [("talking", 70), ("due", 30), ("offer_sent", 80)]
    deal = await dep.records.create("deal", {"name": "Renewal", "pipeline": "renewals"})
    assert (deal["stage"], deal["probability"]) == ("talking", 70)  # the first stage, now
    with pytest.raises(ValidationError) as exc:
        await service.update("renewals", {"stages": [{"name": "due"}, {"name": "renewed", "kind": "won"}]})
    assert "talking (1)" in errors_of(exc)["stages"]
    with pytest.raises(ValidationError) as exc:
        await service.update("renewals", {"name": "renewals2"})
    assert "1 records" in errors_of(exc)["name"]
    with pytest.raises(ValidationError) as exc:
        await service.delete("renewals")
    assert "in_use" == exc.value.errors[0].code
    await dep.records.update("deal", deal["id"], {"pipeline": "sales"})
    renamed = await service.update("renewals", {"name": "renewals2"})
    assert renamed.name == "renewals2" and "renewals" not in dep.pipelines
    assert await service.delete("renewals2") is None
    assert set(dep.pipelines) == {"sales"}
    with pytest.raises(crmcore.NotFound):
        service.get("renewals2")


async def test_a_plugin_pipeline_is_customised_and_reverted(make_deployment):
    dep = await make_deployment()
    service = dep.pipeline_service
    with pytest.raises(ValidationError) as exc:
        await service.delete("sales")
    assert "cannot" in errors_of(exc)["name"] or "not deleted" in errors_of(exc)["name"]
    stages = [msgspec_stage(s) for s in dep.pipelines["sales"].stages]
    stages.insert(4, {"name": "installation", "probability": 95})
    custom = await service.update("sales", {"label": "Window sales", "stages": stages})
    assert custom.customised and custom.plugin == "core" and custom.label == "Window sales"
    deal = await dep.records.create("deal", {"name": "Windows", "stage": "installation"})
    assert deal["probability"] == 95
    with pytest.raises(ValidationError) as exc:  # the declaration lacks the stage a deal is in
        await service.delete("sales")
    assert "installation (1)" in errors_of(exc)["name"]
    assert dep.pipelines["sales"].customised
    await dep.records.update("deal", deal["id"], {"stage": "won"})
    restored = await service.delete("sales")
    assert restored is not None and not restored.customised and restored.label == "Sales"
    assert "installation" not in [s.name for s in dep.pipelines["sales"].stages]


def msgspec_stage(stage: Stage) -> dict:
    return {"name": stage.name, "label": stage.label, "probability": stage.probability, "kind": stage.kind}


@pytest.mark.parametrize("data, field", [
    ({"name": "Bad Name", "stages": [{"name": "a"}]}, "name"),
    ({"name": "x", "entity": "contact", "stages": [{"name": "a"}]}, "entity"),
    ({"name": "x", "entity": "nope", "stages": [{"name": "a"}]}, "entity"),
    ({"name": "x", "stages": []}, "stages"),
    ({"name": "x", "stages": [{"name": "won", "kind": "won"}, {"name": "lost", "kind": "lost"}]}, "stages"),
    ({"name": "x", "stages": [{"name": "a"}, {"name": "b", "kind": "maybe"}]}, "stages[1].kind"),
    ({"name": "x", "stages": [{"name": "a", "probability": 101}]}, "stages[0].probability"),
    ({"name": "x", "stages": [{"name": "a", "probability": True}]}, "stages[0].probability"),
    ({"name": "x", "stages": [{"name": "a"}, {"name": "a"}]}, "stages[1].name"),
    ({"name": "x", "stages": [{"name": "a", "colour": "red"}]}, "stages[0].colour"),
    ({"name": "x", "stages": [{"name": "a"}], "colour": "red"}, "colour"),
    ({"name": "x", "label": "two\nlines", "stages": [{"name": "a"}]}, "label"),
    (["not", "an", "object"], "body"),
])
async def test_bad_definitions_name_the_field(make_deployment, data, field):
    dep = await make_deployment()
    with pytest.raises(ValidationError) as exc:
        await dep.pipeline_service.create(data)
    assert field in errors_of(exc), exc.value.errors


class Helpdesk:
    """A plugin with its own entity (no pipeline field) and its pipeline."""

    PLUGIN = PluginInfo(name="helpdesk", version="1.0", description="tickets")

    @staticmethod
    @hookimpl
    def crm_register_entities(register):
        register(EntityType(name="ticket", fields=[
            Field(name="subject", type=FieldType.TEXT, required=True),
            Field(name="stage", type=FieldType.TEXT),
        ]))

    @staticmethod
    @hookimpl
    def crm_register_pipelines(register):
        register(Pipeline(name="support", entity="helpdesk_ticket", stages=[
            Stage(name="new"), Stage(name="working"), Stage(name="solved", kind="won"),
        ]))


async def test_a_plugin_entity_has_its_pipeline(make_deployment):
    dep = await make_deployment(extra_plugins=[Helpdesk])
    ticket = await dep.records.create("helpdesk_ticket", {"subject": "Printer"})
    assert ticket["stage"] == "new"
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("helpdesk_ticket", ticket["id"], {"stage": "quote"})
    assert "new, working, solved" in errors_of(exc)["stage"]
    await dep.records.update("helpdesk_ticket", ticket["id"], {"stage": "working"})
    found = await dep.pipeline_service.stage_history("helpdesk_ticket", ticket["id"])
    assert [e["to_stage"] for e in found["history"]] == ["new", "working"]
    with pytest.raises(ValidationError) as exc:  # one pipeline only: the entity has no pipeline field
        await dep.pipeline_service.create({"name": "more", "entity": "helpdesk_ticket", "stages": [{"name": "a"}]})
    assert "support" in errors_of(exc)["entity"]
    summary = await dep.pipeline_service.summary("support")
    assert [s["count"] for s in summary["stages"]] == [0, 1, 0] and summary["amount"] is None


@pytest.mark.parametrize("stages, message", [
    ([], "no stages"),
    ([Stage(name="won", kind="won")], "at least one open stage"),
    ([Stage(name="a"), Stage(name="a")], "appears twice"),
    ([Stage(name="a", probability=150)], "0 to 100"),
])
async def test_a_bad_plugin_declaration_is_refused_clearly(make_deployment, stages, message):
    class Bad:
        PLUGIN = PluginInfo(name="bad", version="1.0")

        @staticmethod
        @hookimpl
        def crm_register_pipelines(register):
            register(Pipeline(name="broken", entity="deal", stages=stages))

    with pytest.raises(crmcore.PluginError) as exc:
        await make_deployment(extra_plugins=[Bad])
    assert "'bad'" in str(exc.value) and "'broken'" in str(exc.value) and message in str(exc.value)


# -- HTTP --------------------------------------------------------------------------------------


def test_time_per_stage_follows_the_deployment_clock(crm_client):
    site = crm_client()
    clock = site.app.state.deployment.clock
    clock.set(T0)
    deal = site.post("/api/deal", json={"name": "Windows"}).json()
    clock.advance(hours=5)
    site.patch(f"/api/deal/{deal['id']}", json={"stage": "qualification"})
    clock.advance(days=1)
    site.patch(f"/api/deal/{deal['id']}", json={"stage": "quote"})
    clock.advance(minutes=30)
    found = site.get(f"/api/deal/{deal['id']}/stages").json()
    assert [e["at"] for e in found["history"]] == [
        stamp(T0), stamp(T0 + dt.timedelta(hours=5)), stamp(T0 + dt.timedelta(days=1, hours=5))]
    assert {d["stage"]: d["seconds"] for d in found["durations"]} == {
        "prospecting": 5 * 3600, "qualification": 86400, "quote": 1800}
    assert found["stage"] == "quote" and found["since"] == stamp(T0 + dt.timedelta(days=1, hours=5))
    # a second deal: 3 h in prospecting, then won; averages over the stays that ended
    other = site.post("/api/deal", json={"name": "Doors"}).json()
    clock.advance(hours=3)
    site.patch(f"/api/deal/{other['id']}", json={"stage": "won"})
    summary = site.get("/api/pipelines/sales/summary", params={"durations": "true"}).json()
    by_stage = {s["name"]: (s["stays"], s["average_seconds"]) for s in summary["stages"]}
    assert by_stage["prospecting"] == (2, (5 * 3600 + 3 * 3600) / 2)
    assert by_stage["qualification"] == (1, 86400) and by_stage["quote"] == (0, None) and by_stage["won"] == (0, None)
    assert "average_seconds" not in site.get("/api/pipelines/sales/summary").json()["stages"][0]



def fields_of(body: dict) -> dict[str, str]:
    return {e["field"]: e["message"] for e in body.get("errors", [])}


def test_api_manages_pipelines_and_agents_may_not(crm_client):
    site = crm_client()
    agent = crm_user(site, role="agent", teams=["East"])
    created = site.post("/api/pipelines", json=RENEWALS)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "custom" and created.json()["stages"][2]["probability"] == 100
    assert [p["name"] for p in site.get("/api/pipelines").json()] == ["sales", "renewals"]
    assert [p["name"] for p in site.get("/api/pipelines", params={"entity": "contact"}).json()] == []
    assert site.get("/api/pipelines/renewals").json()["label"] == "Renewals"
    assert "renewals" in [p["name"] for p in site.get("/api/meta").json()["pipelines"]]
    problem(site.get("/api/pipelines/nope"), 404)
    # bad input: 422 naming the field, never a 500
    assert "stages[1].kind" in fields_of(problem(site.post("/api/pipelines", json={
        "name": "x", "stages": [{"name": "a"}, {"name": "b", "kind": "maybe"}]}), 422))
    assert "stages" in fields_of(problem(site.post("/api/pipelines", json={
        "name": "x", "stages": [{"name": "w", "kind": "won"}]}), 422))
    assert "body" in fields_of(problem(site.post("/api/pipelines", content=b"{", headers={"content-type": "application/json"}), 422))
    assert "name" in fields_of(problem(site.post("/api/pipelines", json=RENEWALS), 422))
    assert "stages" in fields_of(problem(site.put("/api/pipelines/renewals", json={"stages": "due"}), 422))
    # the agent reads them, cannot change them
    h = agent.headers
    assert site.get("/api/pipelines", headers=h).status_code == 200
    problem(site.post("/api/pipelines", json={**RENEWALS, "name": "mine"}, headers=h), 403)
    problem(site.put("/api/pipelines/renewals", json={"label": "x"}, headers=h), 403)
    problem(site.put("/api/pipelines/sales", json={"label": "x"}, headers=h), 403)
    problem(site.delete("/api/pipelines/renewals", headers=h), 403)
    # change, customise, revert, delete
    changed = site.put("/api/pipelines/renewals", json={"label": "Contract renewals", "stages": [
        {"name": "talking", "probability": 70}, {"name": "due"}, {"name": "renewed", "kind": "won"}]})
    assert changed.status_code == 200, changed.text
    assert [s["name"] for s in changed.json()["stages"]] == ["talking", "due", "renewed"]
    custom = site.put("/api/pipelines/sales", json={**site.get("/api/pipelines/sales").json(), "label": "Window sales"})
    assert custom.status_code == 200, custom.text  # what a GET answers may be sent back
    assert custom.json()["source"] == "customised" and custom.json()["plugin"] == "core"
    reverted = site.delete("/api/pipelines/sales")
    assert reverted.status_code == 200 and reverted.json()["restored"]["label"] == "Sales"
    assert "name" in fields_of(problem(site.delete("/api/pipelines/sales"), 422))
    assert site.delete("/api/pipelines/renewals").json() == {"deleted": "renewals", "restored": None}
    problem(site.get("/api/pipelines/renewals"), 404)


def test_api_stage_moves_history_and_summary_within_scope(crm_client):
    site = crm_client()
    east = crm_user(site, role="agent", teams=["East"])
    west = crm_user(site, role="agent", teams=["West"])
    created = site.post("/api/deal", json={"name": "Windows", "amount": "1000"}, headers=east.headers)
    assert created.status_code == 201, created.text
    deal = created.json()
    assert (deal["stage"], deal["probability"]) == ("prospecting", 10)
    site.post("/api/deal", json={"name": "Doors", "amount": "500", "stage": "quote"}, headers=west.headers)
    site.post("/api/deal", json={"name": "Roof", "amount": {"amount": "300", "currency": "USD"}, "stage": "quote"})
    url = f"/api/deal/{deal['id']}"
    body = problem(site.patch(url, json={"stage": "signed"}, headers=east.headers), 422)
    assert "prospecting, qualification, quote, negotiation, won, lost" in fields_of(body)["stage"]
    assert set(fields_of(problem(site.patch(url, json={"stage": "lost"}, headers=east.headers), 422))) == {"lost_reason"}
    moved = site.patch(url, json={"stage": "quote"}, headers=east.headers)
    assert moved.status_code == 200 and moved.json()["probability"] == 50
    stages = site.get(f"{url}/stages", headers=east.headers)
    assert stages.status_code == 200, stages.text
    history = stages.json()["history"]
    assert [(e["from_stage"], e["to_stage"], e["user_id"]) for e in history] == [
        (None, "prospecting", east.id), ("prospecting", "quote", east.id)]
    assert stages.json()["durations"][0]["stage"] == "prospecting"
    problem(site.get(f"{url}/stages", headers=west.headers), 404)  # another agent's deal
    problem(site.patch(url, json={"stage": "won"}, headers=west.headers), 404)
    assert site.get(f"{url}/stages").status_code == 200  # the admin reads every deal
    problem(site.get("/api/deal/999999/stages"), 404)
    problem(site.get("/api/contact/1/stages"), 404)  # contacts have no pipeline
    # summary: each sees the deals they may read
    mine = site.get("/api/pipelines/sales/summary", headers=east.headers).json()
    quote = {s["name"]: s for s in mine["stages"]}["quote"]
    assert mine["count"] == 1 and quote["count"] == 1 and quote["amount"] == [{"amount": "1000.00", "currency": "EUR"}]
    everything = site.get("/api/pipelines/sales/summary").json()
    quote = {s["name"]: s for s in everything["stages"]}["quote"]
    assert everything["count"] == 3 and quote["count"] == 3
    assert quote["amount"] == [{"amount": "1500.00", "currency": "EUR"}, {"amount": "300.00", "currency": "USD"}]
    assert quote["weighted_amount"] == [{"amount": "750.00", "currency": "EUR"}, {"amount": "150.00", "currency": "USD"}]
    assert everything["expected_amount"] == quote["weighted_amount"]
    # conversion: the admin's deal and the west one started at quote; the east one went through prospecting
    reached = {s["name"]: (s["reached"], s["conversion"]) for s in everything["stages"]}
    assert everything["entered"] == 3 and reached["prospecting"] == (1, 33.3) and reached["quote"] == (3, 100.0)
    assert reached["won"] == (0, 0.0)
    assert {s["name"]: s["reached"] for s in mine["stages"]}["prospecting"] == 1 and mine["entered"] == 1
    problem(site.get("/api/pipelines/nope/summary"), 404)


def test_openapi_describes_the_pipeline_routes(crm_client):
    site = crm_client()
    site.post("/api/pipelines", json=RENEWALS)
    deal = site.post("/api/deal", json={"name": "Windows", "amount": "10"}).json()
    doc = site.get("/schema").json()
    validate_openapi(doc)
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))

    def check(response, path, method, status):
        assert response.status_code == int(status), response.text
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(_rebase(schema), registry=registry).validate(response.json())

    check(site.get("/api/pipelines"), "/api/pipelines", "get", "200")
    check(site.get("/api/pipelines/sales"), "/api/pipelines/{name}", "get", "200")
    check(site.post("/api/pipelines", json={**RENEWALS, "name": "more"}), "/api/pipelines", "post", "201")
    check(site.put("/api/pipelines/sales", json={"label": "S"}), "/api/pipelines/{name}", "put", "200")
    check(site.delete("/api/pipelines/sales"), "/api/pipelines/{name}", "delete", "200")
    check(site.get("/api/pipelines/sales/summary"), "/api/pipelines/{name}/summary", "get", "200")
    check(site.get("/api/pipelines/sales/summary?durations=1"), "/api/pipelines/{name}/summary", "get", "200")
    check(site.get(f"/api/deal/{deal['id']}/stages"), "/api/deal/{record_id}/stages", "get", "200")
    assert "422" in doc["paths"]["/api/pipelines"]["post"]["responses"]
    assert "/api/contact/{record_id}/stages" not in doc["paths"]


def _rebase(schema):
    if isinstance(schema, dict):
        return {k: ("urn:doc" + v if k == "$ref" else _rebase(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


# -- CLI -----------------------------------------------------------------------------------------


def cli_out(*args, **options) -> str:
    return crm(*args, **options).output


def test_cli_manages_pipelines(tmp_path, crm_backend):
    path = tmp_path / "acme"
    cli_out("init", path, *(["--database-url", crm_backend.database_url] if crm_backend.database_url else []))
    out = cli_out("pipelines", "add", "renewals", "--entity", "deal", "--stage", "due:40", "--stage", "renewed:100:won",
                  "--stage", "churned:0:lost", deployment=path)
    assert "due > renewed > churned" in out
    listed = cli_out("pipelines", "list", deployment=path)
    assert "renewals" in listed and "custom" in listed and "prospecting > qualification" in listed
    shown = cli_out("pipelines", "show", "renewals", deployment=path)
    assert '"probability": 40' in shown
    file = tmp_path / "renewals.json"
    file.write_text(shown.replace('"Due"', '"Due soon"'))
    assert "Saved pipeline renewals" in cli_out("pipelines", "set", "renewals", "--file", file, deployment=path)
    assert '"Due soon"' in cli_out("pipelines", "show", "renewals", deployment=path)
    assert "customised" in cli_out("pipelines", "set", "sales", "--label", "Window sales", deployment=path)
    assert "in force again" in cli_out("pipelines", "remove", "sales", deployment=path)
    assert "can be customised, not deleted" in cli_out("pipelines", "remove", "sales", deployment=path, ok=False)
    assert "at least one open stage" in cli_out("pipelines", "add", "x", "--stage", "w:100:won", deployment=path, ok=False)
    assert "probability" in cli_out("pipelines", "add", "x", "--stage", "a:lots", deployment=path, ok=False)
    assert "open, won or lost" in cli_out("pipelines", "add", "x", "--stage", "a:1:maybe", deployment=path, ok=False)
    assert "does not exist" in cli_out("pipelines", "show", "nope", deployment=path, ok=False)
    summary = cli_out("pipelines", "summary", "sales", "--durations", deployment=path)
    assert "Sales (sales, deal): 0 records" in summary and "prospecting" in summary and "average stay" in summary
    assert "Removed pipeline renewals" in cli_out("pipelines", "remove", "renewals", deployment=path)
    assert "renewals" not in cli_out("pipelines", "list", deployment=path)
