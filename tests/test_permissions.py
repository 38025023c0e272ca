"""Permissions enforced by the records service itself: scopes on every read and write, field
rules on input, output, filters, sorting, search and history. Actors are built directly here;
tests/test_api_auth.py goes through tokens and sessions."""

from __future__ import annotations

import msgspec
import pytest

from crmcore import SYSTEM, DeploymentError, Forbidden, ListQuery, NotFound, ValidationError
from crmcore.auth.permissions import ADMIN, BUILTIN_ROLES, Actor, Role, Scope, effective_grants


class World:
    """Two teams (north: manager Mia, agents Ali and Ada; south: agent Sam) and their actors."""

    def __init__(self, dep):
        self.dep = dep
        self.ids: dict[str, int] = {}
        self.teams: dict[str, int] = {}

    async def build(self) -> World:
        db = self.dep.db
        for name in ("north", "south"):
            await db.execute('INSERT INTO crm_team ("name", "created_at") VALUES (?, ?)', (name, "2026-01-01T00:00:00+00:00"))
            self.teams[name] = await db.fetchval('SELECT "id" FROM crm_team WHERE "name" = ?', (name,))
        for name, team in (("mia", "north"), ("ali", "north"), ("ada", "north"), ("sam", "south")):
            user = await self.dep.records.create("user", {"name": name.capitalize(), "email": f"{name}@example.com"})
            self.ids[name] = user["id"]
            await db.execute('INSERT INTO crm_team_member ("team_id", "user_id", "position") VALUES (?, ?, 0)',
                             (self.teams[team], user["id"]))
        return self

    def actor(self, name: str, role: str | Role = "agent", **extra) -> Actor:
        role = BUILTIN_ROLES[role] if isinstance(role, str) else role
        team = "south" if name == "sam" else "north"
        return Actor(user_id=self.ids[name], role=role, team_ids=(self.teams[team],),
                     grants=effective_grants(role, {}), via="session", **extra)

    def records(self, name: str, role: str | Role = "agent", **extra):
        return self.dep.records.as_actor(self.actor(name, role, **extra))


@pytest.fixture
async def world(make_deployment):
    return await World(await make_deployment()).build()


async def test_agents_reach_only_their_own_records(world):
    ali, sam = world.records("ali"), world.records("sam")
    mine = await ali.create("contact", {"last_name": "Kaya", "email": "kaya@example.com"})
    assert mine["owner_id"] == world.ids["ali"] and mine["team_id"] == world.teams["north"]
    theirs = await sam.create("contact", {"last_name": "Kaya", "email": "other@example.com"})

    # Another agent's record does not exist for them: 404 everywhere, never 403.
    for attempt in (
        sam.get("contact", mine["id"]),
        sam.update("contact", mine["id"], {"city": "Izmir"}),
        sam.delete("contact", mine["id"]),
        sam.history("contact", mine["id"]),
    ):
        with pytest.raises(NotFound):
            await attempt
    page = await ali.list("contact", ListQuery(count=True))
    assert [r["id"] for r in page.items] == [mine["id"]] and page.total == 1
    found = await ali.list("contact", ListQuery(search="kaya"))
    assert [r["id"] for r in found.items] == [mine["id"]]
    admin_view = await world.dep.records.list("contact", ListQuery(search="kaya", count=True))
    assert admin_view.total == 2

    # Their own record: every action works.
    assert (await ali.update("contact", mine["id"], {"city": "Izmir"}))["city"] == "Izmir"
    assert [h["action"] for h in await ali.history("contact", mine["id"])] == ["update", "create"]
    await ali.delete("contact", mine["id"])
    assert (await ali.list("contact", ListQuery(deleted=True))).items[0]["id"] == mine["id"]
    await ali.restore("contact", mine["id"])
    with pytest.raises(NotFound):
        await ali.restore("contact", theirs["id"])


async def test_agents_cannot_create_for_others_nor_hand_records_over(world):
    ali = world.records("ali")
    with pytest.raises(Forbidden) as refused:
        await ali.create("contact", {"last_name": "A", "owner_id": world.ids["sam"]})
    assert refused.value.errors[0].field == "owner_id"
    with pytest.raises(Forbidden) as refused:
        await ali.bulk_create("contact", [{"last_name": "A"}, {"last_name": "B", "owner_id": world.ids["ada"]}])
    assert [e.field for e in refused.value.errors] == ["rows[1].owner_id"]
    assert (await world.dep.records.list("contact", ListQuery(count=True))).total == 0

    mine = await ali.create("contact", {"last_name": "A"})
    with pytest.raises(Forbidden) as refused:
        await ali.update("contact", mine["id"], {"owner_id": world.ids["ada"]})
    assert refused.value.errors[0].field == "owner_id"
    with pytest.raises(Forbidden):
        await ali.update("contact", mine["id"], {"team_id": world.teams["south"]})


async def test_managers_reach_their_teams_and_hand_records_over_within_it(world):
    ali, sam = world.records("ali"), world.records("sam")
    mia = world.records("mia", "sales_manager")
    north = await ali.create("contact", {"last_name": "North"})
    south = await sam.create("contact", {"last_name": "South"})
    assert [r["id"] for r in (await mia.list("contact", ListQuery())).items] == [north["id"]]
    with pytest.raises(NotFound):
        await mia.get("contact", south["id"])

    # Hand the client over to another employee: the owner changes, the history stays.
    await ali.update("contact", north["id"], {"city": "Izmir"})
    moved = await mia.update("contact", north["id"], {"owner_id": world.ids["ada"]})
    assert moved["owner_id"] == world.ids["ada"] and moved["team_id"] == world.teams["north"]
    history = await mia.history("contact", north["id"])
    assert [h["action"] for h in history] == ["update", "update", "create"]
    assert history[0]["changes"]["owner_id"] == [world.ids["ali"], world.ids["ada"]]
    assert history[0]["user_id"] == world.ids["mia"]
    with pytest.raises(NotFound):
        await ali.get("contact", north["id"])
    assert (await world.records("ada").get("contact", north["id"]))["city"] == "Izmir"

    # Not to someone outside the team; an admin may, and the record follows its new owner's team.
    with pytest.raises(Forbidden):
        await mia.update("contact", north["id"], {"owner_id": world.ids["sam"]})
    handed = await world.records("mia", "admin").update("contact", north["id"], {"owner_id": world.ids["sam"]})
    assert handed["team_id"] == world.teams["south"]
    assert (await sam.get("contact", north["id"]))["last_name"] == "North"

    # Bulk: records outside the scope are "not found", row by row.
    with pytest.raises(ValidationError) as refused:
        await mia.bulk_update("contact", [{"id": north["id"], "city": "X"}])
    assert refused.value.errors[0].field == "rows[0].id" and refused.value.errors[0].code == "not_found"


async def test_read_only_roles_and_tokens_change_nothing(world):
    record = await world.records("ali").create("contact", {"last_name": "A"})
    viewer = world.records("sam", "read_only")
    assert (await viewer.get("contact", record["id"]))["last_name"] == "A"
    for attempt in (
        viewer.create("contact", {"last_name": "B"}),
        viewer.update("contact", record["id"], {"city": "X"}),
        viewer.delete("contact", record["id"]),
        viewer.bulk_create("contact", [{"last_name": "B"}]),
    ):
        with pytest.raises(Forbidden):
            await attempt
    token = world.records("mia", "admin", read_only=True)
    assert (await token.list("contact", ListQuery(count=True))).total == 1
    with pytest.raises(Forbidden):
        await token.update("contact", record["id"], {"city": "X"})


async def test_no_scope_means_no_access_to_the_entity(world):
    role = msgspec.structs.replace(BUILTIN_ROLES["agent"], name="no_deals",
                                   entities={**BUILTIN_ROLES["agent"].entities, "deal": {"read": Scope.OWN}})
    records = world.records("ali", role)
    with pytest.raises(Forbidden) as refused:
        await records.create("deal", {"name": "D"})
    assert "create deals" in str(refused.value)
    assert (await records.list("deal", ListQuery())).items == []
    exporter = msgspec.structs.replace(role, entities={"*": {"read": Scope.ALL}})
    with pytest.raises(Forbidden):
        await world.records("ali", exporter).list("contact", ListQuery(), action="export")


async def test_hidden_fields_leak_nowhere(world):
    role = Role(name="no_email", entities={"*": {a: Scope.ALL for a in ("read", "create", "edit", "export")}},
                fields={"contact": {"email": "hidden", "job_title": "read"}})
    admin, limited = world.dep.records, world.records("ali", role)
    record = await admin.create("contact", {"last_name": "Kaya", "email": "secret-lead@hidden.example",
                                            "job_title": "CTO"})
    await admin.update("contact", record["id"], {"email": "other-secret@hidden.example"})

    got = await limited.get("contact", record["id"])
    assert "email" not in got and got["job_title"] == "CTO"
    listed = (await limited.list("contact", ListQuery())).items[0]
    assert "email" not in listed
    assert (await limited.list("contact", ListQuery(search="secret"))).items == []
    assert (await admin.list("contact", ListQuery(search="secret"))).items != []
    assert (await limited.list("contact", ListQuery(search="kaya"))).items[0]["id"] == record["id"]
    for query in (
        ListQuery(filter={"field": "email", "op": "startswith", "value": "secret"}),
        ListQuery(sort=["email"]),
        ListQuery(fields=["last_name", "email"]),
    ):
        with pytest.raises(ValidationError) as refused:
            await limited.list("contact", query)
        assert "email" in str(refused.value)
    for entry in await limited.history("contact", record["id"]):
        assert "email" not in entry["changes"]
    assert any("email" in e["changes"] for e in await admin.history("contact", record["id"]))

    # Writing a hidden field: as unknown as a field that does not exist; a read-only one: 403.
    with pytest.raises(ValidationError) as refused:
        await limited.update("contact", record["id"], {"email": "x@example.com"})
    assert refused.value.errors[0].code == "unknown_field" and "email" not in refused.value.errors[0].message
    with pytest.raises(Forbidden) as refused:
        await limited.update("contact", record["id"], {"job_title": "CEO"})
    assert refused.value.errors[0].field == "job_title"
    updated = await limited.update("contact", record["id"], {"city": "Izmir"})
    assert "email" not in updated
    assert (await admin.get("contact", record["id"]))["email"] == "other-secret@hidden.example"


async def test_teams_given_must_exist_and_be_the_actors(world):
    with pytest.raises(ValidationError) as refused:
        await world.dep.records.create("contact", {"last_name": "A", "team_id": 999})
    assert refused.value.errors[0].field == "team_id"
    with pytest.raises(Forbidden):
        await world.records("ali").create("contact", {"last_name": "A", "team_id": world.teams["south"]})
    record = await world.records("ali").create("contact", {"last_name": "A", "team_id": world.teams["north"]})
    assert record["team_id"] == world.teams["north"]
    filtered = await world.dep.records.list("contact", ListQuery(filter={"field": "team_id", "op": "eq",
                                                                          "value": world.teams["north"]}))
    assert [r["id"] for r in filtered.items] == [record["id"]]


async def test_system_and_admin_reach_everything(world):
    record = await world.records("sam").create("contact", {"last_name": "S"})
    admin = Actor(user_id=world.ids["mia"], role=ADMIN, grants=effective_grants(ADMIN, {}))
    assert admin.has("manage_users")
    assert (await world.dep.records.as_actor(admin).get("contact", record["id"]))["owner_id"] == world.ids["sam"]
    assert not world.actor("ali").has("manage_users")


async def test_automation_runs_as_its_configured_user(make_deployment):
    dep = await make_deployment()
    assert (await dep.automation_actor()).system
    dep = await make_deployment(automation_user="robot@example.com")
    with pytest.raises(DeploymentError, match="robot@example.com"):
        await dep.automation_actor()
    robot = await dep.auth.create_user(name="Robot", email="robot@example.com", role="agent", actor=SYSTEM)
    actor = await dep.automation_actor()
    assert actor.user_id == robot["id"] and actor.via == "automation" and not actor.system
    other = await dep.records.create("user", {"name": "Other", "email": "other@example.com"})
    with pytest.raises(Forbidden):  # the robot's role applies to what automation does
        await dep.records.as_actor(actor).create("contact", {"last_name": "A", "owner_id": other["id"]})
    await dep.auth.set_active(robot["id"], False, actor=SYSTEM)
    with pytest.raises(DeploymentError, match="disabled"):
        await dep.automation_actor()
