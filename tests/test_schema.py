"""Custom fields and the schema they change: real columns and indexes, recorded history, soft
removal, backed-up purge, search, and other processes picking the change up."""

from __future__ import annotations

import asyncio

import pytest

import crmcore
from crmcore import Field, FieldType, ListQuery, RegistryError, ValidationError

T = FieldType


async def history(dep, kind: str | None = None) -> list[tuple]:
    rows = await dep.schema.history(limit=10_000)
    return [r for r in rows if kind is None or r[2] == kind]


async def test_custom_field_is_a_real_indexed_column(dep):
    before = len(await history(dep))
    field = await dep.add_custom_field("contact", Field(name="loyalty", type=T.CHOICE,
                                                        choices=["bronze", "silver", "gold"], indexed=True))
    assert field.custom is True
    assert "loyalty" in await dep.schema.columns("crm_contact")
    assert "crm_contact__loyalty" in await dep.schema.indexes()
    added = await history(dep)
    assert len(added) > before
    kinds = {(r[2], r[3]) for r in added}
    assert ("add_column", "crm_contact.loyalty") in kinds
    assert ("create_index", "crm_contact__loyalty") in kinds
    statement = next(r[4] for r in added if r[2] == "add_column" and r[3] == "crm_contact.loyalty")
    assert "loyalty" in statement and "ALTER TABLE" in statement.upper()

    # live at once, validated like any field, filterable
    record = await dep.records.create("contact", {"last_name": "A", "loyalty": "gold"})
    assert record["loyalty"] == "gold"
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "B", "loyalty": "platinum"})
    assert exc.value.errors[0].field == "loyalty" and "bronze" in exc.value.errors[0].message
    page = await dep.records.list("contact", ListQuery(filter={"field": "loyalty", "op": "eq", "value": "gold"}))
    assert [r["id"] for r in page.items] == [record["id"]]


async def test_a_new_field_with_a_default_fills_the_records_already_there(dep):
    old = await dep.records.create("contact", {"last_name": "Before"})
    deal = await dep.records.create("deal", {"name": "Old deal"})
    await dep.add_custom_field("contact", Field(name="tier", type=T.CHOICE, choices=["a", "b"], required=True,
                                                default="b"))
    await dep.add_custom_field("deal", Field(name="budget", type=T.MONEY, default={"amount": "10", "currency": "USD"}))
    assert (await dep.records.get("contact", old["id"]))["tier"] == "b"
    page = await dep.records.list("contact", ListQuery(filter={"field": "tier", "op": "eq", "value": "b"}))
    assert [r["id"] for r in page.items] == [old["id"]]
    budget = (await dep.records.get("deal", deal["id"]))["budget"]
    assert (str(budget.amount), budget.currency) in (("10", "USD"), ("10.00", "USD"))


@pytest.mark.parametrize("type_", [t for t in FieldType if t not in (T.RELATION,)])
async def test_custom_field_of_every_type(dep, type_):
    kw = {"choices": ["a", "b"]} if type_ in (T.CHOICE, T.MULTI_CHOICE) else {}
    await dep.add_custom_field("company", Field(name="extra", type=type_, **kw))
    columns = await dep.schema.columns("crm_company")
    assert {c for c in columns if c.startswith("extra")} == set(Field(name="extra", type=type_).columns())
    record = await dep.records.create("company", {"name": "Acme"})
    assert record["extra"] is None


async def test_custom_relation_and_unique_fields(dep):
    await dep.add_custom_field("deal", Field(name="partner", type=T.RELATION, target="company"))
    assert "crm_deal__partner" in await dep.schema.indexes()
    with pytest.raises(ValidationError):
        await dep.records.create("deal", {"name": "d", "partner": 99})
    await dep.add_custom_field("contact", Field(name="card", type=T.TEXT, unique=True))
    assert "crm_contact__card__uq" in await dep.schema.indexes()
    await dep.records.create("contact", {"last_name": "A", "card": "X1"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "B", "card": "X1"})
    assert exc.value.errors[0].field == "card"


@pytest.mark.parametrize("field, words", [
    (Field(name="email", type=T.TEXT), "already has a field"),
    (Field(name="Bad Name", type=T.TEXT), "invalid"),
    (Field(name="a__b", type=T.TEXT), "invalid"),
    (Field(name="version", type=T.INTEGER), "reserved"),
    (Field(name="pick", type=T.CHOICE), "needs choices"),
    (Field(name="link", type=T.RELATION, target="nothing"), "not a known entity"),
    (Field(name="must", type=T.TEXT, required=True), "needs a default"),
    (Field(name="score", type=T.INTEGER, default="high"), "default"),
])
async def test_bad_custom_fields_are_refused_clearly(dep, field, words):
    with pytest.raises(RegistryError) as exc:
        await dep.add_custom_field("contact", field)
    assert words in str(exc.value)
    if dep.registry.get("contact").field(field.name) is None and field.name not in crmcore.entities.SYSTEM_COLUMNS:
        assert field.name not in await dep.schema.columns("crm_contact")
    with pytest.raises(RegistryError) as exc:
        await dep.add_custom_field("no_such_entity", Field(name="x", type=T.TEXT))
    assert "unknown entity" in str(exc.value)


async def test_required_custom_field_with_default_fills_new_records(dep):
    await dep.add_custom_field("contact", Field(name="tier", type=T.TEXT, required=True, default="basic"))
    assert (await dep.records.create("contact", {"last_name": "A"}))["tier"] == "basic"


async def test_remove_hides_but_keeps_data(dep):
    await dep.add_custom_field("contact", Field(name="shoe", type=T.INTEGER))
    rid = (await dep.records.create("contact", {"last_name": "A", "shoe": 42}))["id"]
    await dep.remove_custom_field("contact", "shoe")
    record = await dep.records.get("contact", rid)
    assert "shoe" not in record
    assert "shoe" in await dep.schema.columns("crm_contact")
    assert await dep.db.fetchval('SELECT "shoe" FROM crm_contact WHERE "id" = ?', (rid,)) == 42
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "B", "shoe": 40})
    assert exc.value.errors[0].code == "unknown_field"
    # the name stays taken until it is purged
    with pytest.raises(RegistryError) as exc:
        await dep.add_custom_field("contact", Field(name="shoe", type=T.INTEGER))
    assert "purge" in str(exc.value)
    # a removed field is not merely hidden: showing it is refused, restoring brings the data back
    with pytest.raises(RegistryError, match="restore"):
        await dep.update_custom_field("contact", "shoe", hidden=False)
    assert [(f.name, removed) for f, removed in await dep.custom_fields("contact")] == [("shoe", True)]
    await dep.restore_custom_field("contact", "shoe")
    assert (await dep.records.get("contact", rid))["shoe"] == 42


async def test_purge_backs_up_then_drops(dep):
    await dep.add_custom_field("contact", Field(name="shoe", type=T.INTEGER, indexed=True))
    rid = (await dep.records.create("contact", {"last_name": "A", "shoe": 42}))["id"]
    await dep.records.create("contact", {"last_name": "B"})
    with pytest.raises(RegistryError) as exc:
        await dep.purge_custom_field("contact", "shoe")
    assert "removed before" in str(exc.value)
    await dep.remove_custom_field("contact", "shoe")
    backup = await dep.purge_custom_field("contact", "shoe")
    assert backup.startswith("crm_backup_crm_contact__shoe")
    assert backup in await dep.schema.tables()
    assert await dep.db.fetch(f'SELECT "id", "shoe" FROM "{backup}"') == [(rid, 42)]
    assert "shoe" not in await dep.schema.columns("crm_contact")
    assert "crm_contact__shoe" not in await dep.schema.indexes()
    kinds = [(r[2], r[3]) for r in await history(dep)]
    assert ("backup", backup) in kinds and ("drop_column", "crm_contact.shoe") in kinds
    assert kinds.index(("drop_column", "crm_contact.shoe")) < kinds.index(("backup", backup))  # newest first
    # the name is free again, the records still work
    await dep.add_custom_field("contact", Field(name="shoe", type=T.TEXT))
    assert (await dep.records.update("contact", rid, {"shoe": "43 EU"}))["shoe"] == "43 EU"


async def test_purge_money_field_backs_up_both_columns(dep):
    await dep.add_custom_field("company", Field(name="budget", type=T.MONEY))
    await dep.records.create("company", {"name": "A", "budget": {"amount": "10.50", "currency": "USD"}})
    await dep.remove_custom_field("company", "budget")
    backups = (await dep.purge_custom_field("company", "budget")).split(", ")
    assert len(backups) == 2
    assert not {"budget", "budget__currency"} & await dep.schema.columns("crm_company")


async def test_searchable_custom_field(dep):
    rid = (await dep.records.create("contact", {"last_name": "A"}))["id"]
    await dep.add_custom_field("contact", Field(name="nickname", type=T.TEXT))
    await dep.records.update("contact", rid, {"nickname": "Zorro"})
    found = await dep.records.list("contact", ListQuery(search="zorr"))
    assert [r["id"] for r in found.items] == [rid]
    # a number is not searchable by default; made searchable, existing values are indexed
    await dep.add_custom_field("contact", Field(name="member_no", type=T.INTEGER))
    await dep.records.update("contact", rid, {"member_no": 987654})
    assert (await dep.records.list("contact", ListQuery(search="987654"))).items == []
    await dep.update_custom_field("contact", "member_no", searchable=True)
    found = await dep.records.list("contact", ListQuery(search="987654"))
    assert [r["id"] for r in found.items] == [rid]
    assert await history(dep, "rebuild_search")


async def test_reopen_keeps_custom_fields(make_deployment):
    dep = await make_deployment()
    await dep.add_custom_field("contact", Field(name="loyalty", type=T.TEXT, indexed=True, label="Loyalty level"))
    await dep.add_custom_field("contact", Field(name="gone", type=T.TEXT))
    rid = (await dep.records.create("contact", {"last_name": "A", "loyalty": "gold"}))["id"]
    await dep.remove_custom_field("contact", "gone")
    await dep.close()
    again = await make_deployment(path=dep.path)
    field = again.registry.get("contact").field("loyalty")
    assert field is not None and field.custom and field.label == "Loyalty level" and field.indexed
    assert again.registry.get("contact").field("gone").hidden
    assert (await again.records.get("contact", rid))["loyalty"] == "gold"
    assert again.pending_changes == []  # nothing to migrate


async def test_another_instance_sees_the_field_after_refresh(make_deployment):
    first = await make_deployment()
    second = await make_deployment(path=first.path)
    assert await second.refresh() is False  # nothing new: cheap
    await first.add_custom_field("contact", Field(name="loyalty", type=T.TEXT))
    rid = (await first.records.create("contact", {"last_name": "A", "loyalty": "gold"}))["id"]
    assert second.registry.get("contact").field("loyalty") is None
    assert await second.refresh() is True
    assert (await second.records.get("contact", rid))["loyalty"] == "gold"
    updated = await second.records.update("contact", rid, {"loyalty": "silver"})
    assert (await first.records.get("contact", rid))["loyalty"] == "silver" == updated["loyalty"]
    await first.remove_custom_field("contact", "loyalty")
    assert await second.refresh() is True
    assert "loyalty" not in await second.records.get("contact", rid)


async def test_schema_sync_is_idempotent(make_deployment):
    dep = await make_deployment()
    count = len(await history(dep))
    assert await dep.schema.sync(list(dep.registry)) == []
    await dep.close()
    again = await make_deployment(path=dep.path)
    assert len(await history(again)) == count  # re-opening changes nothing
    assert again.pending_changes == []


async def test_a_watching_instance_is_told_of_changes(make_deployment):
    """A server watches for schema changes: on PostgreSQL by notification (no query per request)."""
    first = await make_deployment()
    server = await make_deployment(path=first.path)
    await server.watch_schema()
    assert await server.refresh() is False
    await first.add_custom_field("contact", Field(name="tier", type=T.TEXT))
    for _ in range(200):  # the notification arrives asynchronously
        if await server.refresh():
            break
        await asyncio.sleep(0.01)
    assert server.registry.get("contact").field("tier") is not None


async def test_unknown_field_rechecks_the_schema_before_refusing(make_deployment):
    first = await make_deployment()
    server = await make_deployment(path=first.path)
    await server.watch_schema()
    await first.add_custom_field("contact", Field(name="tier", type=T.TEXT))
    # no refresh() call: the write itself notices the name and re-reads the schema once
    created = await server.records.create("contact", {"last_name": "A", "tier": "gold"})
    assert created["tier"] == "gold"
    page = await server.records.list("contact", ListQuery(filter={"field": "tier", "op": "eq", "value": "gold"}))
    assert [r["id"] for r in page.items] == [created["id"]]


def _declaring(field_type):
    class Shop:
        PLUGIN = crmcore.PluginInfo(name="shop", version="1")

        @staticmethod
        @crmcore.hookimpl
        def crm_register_entities(register):
            register(crmcore.EntityType(name="item", fields=[
                Field(name="title", type=T.TEXT), Field(name="size", type=field_type, searchable=False),
            ]))
    return Shop


async def test_type_change_waits_for_an_explicit_migration_that_keeps_old_values(make_deployment):
    dep = await make_deployment(extra_plugins=[_declaring(T.TEXT)])
    ids = await dep.records.bulk_create("shop_item", [{"title": "a", "size": "42"}, {"title": "b", "size": "big"}])
    await dep.close()

    changed = await make_deployment(path=dep.path, extra_plugins=[_declaring(T.INTEGER)])
    assert [(c.kind, c.column) for c in changed.pending_changes] == [("type_change", "size")]
    assert await changed.db.fetchval('SELECT "size" FROM shop_item WHERE "id" = ?', (ids[1],)) == "big"  # untouched

    report = await changed.apply_pending()
    assert "1 of 2 values converted" in report[0]
    backup = report[0].rsplit(" ", 1)[-1]
    assert changed.pending_changes == []
    assert (await changed.records.get("shop_item", ids[0]))["size"] == 42
    assert (await changed.records.get("shop_item", ids[1]))["size"] is None
    kept = sorted(tuple(r) for r in await changed.db.fetch(f'SELECT "id", "size" FROM "{backup}"'))
    assert kept == [(ids[0], "42"), (ids[1], "big")]
    page = await changed.records.list("shop_item", ListQuery(filter={"field": "size", "op": "gt", "value": 40}))
    assert [r["id"] for r in page.items] == [ids[0]]


async def test_processes_opening_a_new_database_together_take_turns(tmp_path, crm_database_url):
    """Two servers started at once on a new database: the schema is made once, without the
    collisions concurrent DDL gives (PostgreSQL: 'tuple concurrently updated', duplicate keys)."""
    paths = []
    for name in ("one", "two", "three"):
        crmcore.init_deployment(tmp_path / name)
        paths.append(tmp_path / name if crm_database_url else tmp_path / "one")
    deployments = await asyncio.gather(*(crmcore.Deployment.open(p, database_url=crm_database_url) for p in paths))
    try:
        record = await deployments[0].records.create("contact", {"last_name": "Once"})
        for dep in deployments[1:]:
            assert (await dep.records.get("contact", record["id"]))["last_name"] == "Once"
    finally:
        for dep in deployments:
            await dep.close()
