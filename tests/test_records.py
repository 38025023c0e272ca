"""The records service, the one write path: CRUD, trash, audit, versions, validation, bulk.

Every test runs on SQLite and on PostgreSQL (the ``dep`` fixture uses ``crm_backend``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest

import crmcore
from crmcore import Conflict, Money, NotFound, Phone, ValidationError

from .conftest import VALUES


def errors_of(exc: pytest.ExceptionInfo) -> dict[str, str]:
    return {e.field: e.message for e in exc.value.errors}


# -- the life of a record -----------------------------------------------------------------------


async def test_create_get_update_delete_restore_purge(dep):
    records = dep.records
    created = await records.create("contact", {"first_name": "Ayşe", "last_name": "Yılmaz", "city": "Izmir"})
    rid = created["id"]
    assert created["version"] == 1
    assert created["first_name"] == "Ayşe" and created["city"] == "Izmir"
    assert created["deleted_at"] is None
    assert isinstance(created["created_at"], dt.datetime) and created["created_at"].utcoffset() == dt.timedelta(0)
    assert await records.get("contact", rid) == created

    updated = await records.update("contact", rid, {"city": "İstanbul"}, version=1)
    assert updated["version"] == 2 and updated["city"] == "İstanbul"
    assert updated["updated_at"] >= created["updated_at"]

    await records.delete("contact", rid, version=2)
    with pytest.raises(NotFound):
        await records.get("contact", rid)
    trashed = await records.get("contact", rid, trashed=True)
    assert trashed["deleted_at"] is not None
    live = await records.list("contact", crmcore.ListQuery())
    assert rid not in [r["id"] for r in live.items]
    trash = await records.list("contact", crmcore.ListQuery(deleted=True))
    assert [r["id"] for r in trash.items] == [rid]

    restored = await records.restore("contact", rid)
    assert restored["deleted_at"] is None and restored["city"] == "İstanbul"
    assert restored["version"] == 4

    with pytest.raises(NotFound):  # purge only takes what is in the trash
        await records.purge("contact", rid)
    await records.delete("contact", rid)
    await records.purge("contact", rid)
    for trashed in (False, True):
        with pytest.raises(NotFound):
            await records.get("contact", rid, trashed=trashed)
    history = await records.history("contact", rid)
    assert [h["action"] for h in history] == ["purge", "delete", "restore", "delete", "update", "create"]


async def test_unknown_record_and_entity(dep):
    with pytest.raises(NotFound):
        await dep.records.get("contact", 12345)
    with pytest.raises(NotFound):
        await dep.records.update("contact", 12345, {"city": "x"})
    with pytest.raises(NotFound):
        await dep.records.delete("contact", 12345)
    with pytest.raises(NotFound):
        await dep.records.get("no_such_entity", 1)
    with pytest.raises(NotFound):
        await dep.records.history("contact", 12345)


async def test_audit_history_has_old_and_new_values(dep):
    as_user = lambda user_id: dep.records.as_actor(crmcore.Actor(user_id=user_id, role=crmcore.auth.ADMIN, system=True))
    rid = (await as_user(7).create("contact", {"last_name": "Kaya", "city": "Ankara"}))["id"]
    await as_user(8).update("contact", rid, {"city": "Izmir", "first_name": "Can"})
    await dep.records.update("contact", rid, {"city": "Izmir"})  # no change: no version, no entry
    history = await dep.records.history("contact", rid)
    assert [h["action"] for h in history] == ["update", "create"]
    update, create = history
    assert update["changes"] == {"city": ["Ankara", "Izmir"], "first_name": [None, "Can"]}
    assert update["user_id"] == 8
    assert create["changes"] == {"last_name": [None, "Kaya"], "city": [None, "Ankara"]}
    assert create["user_id"] == 7
    assert (await dep.records.get("contact", rid))["version"] == 2


async def test_stale_version_is_a_conflict_naming_what_changed(dep):
    rid = (await dep.records.create("contact", {"last_name": "Demir"}))["id"]
    await dep.records.update("contact", rid, {"city": "Bursa"}, version=1)
    with pytest.raises(Conflict) as exc:
        await dep.records.update("contact", rid, {"city": "Izmir"}, version=1)
    assert exc.value.current["version"] == 2 and exc.value.current["city"] == "Bursa"
    assert exc.value.changed == ["city"]
    # a version inside the data works the same way
    with pytest.raises(Conflict):
        await dep.records.update("contact", rid, {"city": "Izmir", "version": 1})
    with pytest.raises(Conflict):
        await dep.records.delete("contact", rid, version=1)
    assert (await dep.records.get("contact", rid))["city"] == "Bursa"
    with pytest.raises(ValidationError) as bad:
        await dep.records.update("contact", rid, {"version": "two"})
    assert "version" in errors_of(bad)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES))
async def test_every_field_type_accepts_good_and_names_the_field_on_bad(dep, name):
    good, bad = VALUES[name]
    record = await dep.records.create("lab_item", {name: good})
    assert record[name] is not None
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("lab_item", {name: bad})
    errors = errors_of(exc)
    assert list(errors) == [name], errors
    assert errors[name]  # says what was wrong / accepted
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("lab_item", record["id"], {name: bad})
    assert list(errors_of(exc)) == [name]
    assert (await dep.records.get("lab_item", record["id"]))[name] == record[name]


async def test_values_round_trip_in_their_python_types(dep):
    record = await dep.records.create("lab_item", {name: good for name, (good, _) in VALUES.items()})
    assert record["qty"] == 42
    assert record["ratio"] == Decimal("3.25") and isinstance(record["ratio"], Decimal)
    assert record["price"] == Money(Decimal("9.99"), "EUR")
    assert record["active"] is True
    assert record["day"] == dt.date(2026, 5, 1)
    assert record["at"] == dt.datetime(2026, 5, 1, 13, 0, tzinfo=dt.timezone.utc)  # stored in UTC
    assert record["sizes"] == ["s", "l"] and record["tags"] == ["vip", "b2b"]
    assert record["phone"] == Phone("+442079460958", "+44 20 7946 0958")
    assert record["notes"] == "long\ntext"
    assert await dep.records.get("lab_item", record["id"]) == record


async def test_several_bad_fields_are_all_reported(dep):
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("lab_item", {"qty": "x", "email": "nope", "color": "pink", "bogus": 1})
    errors = errors_of(exc)
    assert set(errors) == {"qty", "email", "color", "bogus"}
    assert "red, green, blue" in errors["color"]
    assert "unknown field" in errors["bogus"] and "name" in errors["bogus"]
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "A", "id": 5, "version": 3})
    assert set(errors_of(exc)) == {"id", "version"}


@pytest.mark.parametrize("value", ["not-an-email", "a@", "@b.com", "a b@c.com", "ayse@@example.com", 5])
async def test_email_refused(dep, value):
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "A", "email": value})
    assert list(errors_of(exc)) == ["email"]


async def test_email_normalised(dep):
    record = await dep.records.create("contact", {"last_name": "A", "email": "  Ayse@Example.COM "})
    assert record["email"] == "Ayse@example.com"


@pytest.mark.parametrize("typed", ["(0532) 123 45 67", "+90 532 1234567", "0532-123-4567", "+905321234567"])
async def test_phone_normalised_in_region(dep, typed):
    record = await dep.records.create("contact", {"last_name": "A", "phone": typed})
    assert record["phone"] == Phone("+905321234567", typed)
    found = await dep.records.list("contact", crmcore.ListQuery(
        filter={"field": "phone", "op": "eq", "value": "0532 123 45 67"}))
    assert [r["id"] for r in found.items] == [record["id"]]


async def test_phone_region_comes_from_settings(make_deployment):
    us = await make_deployment(region="US")
    record = await us.records.create("contact", {"last_name": "A", "phone": "(202) 555-0123"})
    assert record["phone"].e164 == "+12025550123"
    assert crmcore.normalize_phone("(0532) 123 45 67", "TR") == crmcore.normalize_phone("0532-123-4567", "TR") \
        == "+905321234567"


@pytest.mark.parametrize("currency, ok, bad", [
    ("JPY", "1500", "1500.5"),
    ("KWD", "12.345", "12.3456"),
    ("EUR", "12.34", "12.345"),
    ("USD", "0.5", "0.501"),
])
async def test_money_decimal_places_per_currency(dep, currency, ok, bad):
    record = await dep.records.create("deal", {"name": "d", "amount": {"amount": ok, "currency": currency}})
    assert record["amount"] == Money(Decimal(ok), currency)
    assert str(record["amount"].amount) == ok  # exactly as given
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("deal", {"name": "d", "amount": {"amount": bad, "currency": currency}})
    errors = errors_of(exc)
    assert list(errors) == ["amount"] and currency in errors["amount"]


async def test_money_default_currency_and_exactness(make_deployment):
    dep = await make_deployment(currency="KWD")
    record = await dep.records.create("deal", {"name": "d", "amount": "1234567890123.125"})
    assert record["amount"] == Money(Decimal("1234567890123.125"), "KWD")
    again = await dep.records.get("deal", record["id"])
    assert str(again["amount"].amount) == "1234567890123.125"
    lower = await dep.records.create("deal", {"name": "e", "amount": {"amount": "1", "currency": "usd"}})
    assert lower["amount"].currency == "USD"


async def test_unique_violation_names_the_field(dep):
    await dep.records.create("user", {"name": "Ayşe", "email": "ayse@example.com"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("user", {"name": "Other", "email": "ayse@example.com"})
    errors = errors_of(exc)
    assert list(errors) == ["email"] and "unique" in errors["email"]
    other = await dep.records.create("user", {"name": "Other", "email": "other@example.com"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("user", other["id"], {"email": "ayse@example.com"})
    assert list(errors_of(exc)) == ["email"]
    # a unique plugin field too
    await dep.records.create("lab_item", {"code": "A-1"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("lab_item", {"code": "A-1"})
    assert list(errors_of(exc)) == ["code"]


async def test_unique_ignores_trashed_records_until_restore(dep):
    first = await dep.records.create("user", {"name": "A", "email": "a@example.com"})
    await dep.records.delete("user", first["id"])
    await dep.records.create("user", {"name": "B", "email": "a@example.com"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.restore("user", first["id"])
    assert list(errors_of(exc)) == ["email"]
    assert (await dep.records.get("user", first["id"], trashed=True))["deleted_at"] is not None


async def test_relation_to_missing_or_trashed_record_is_refused(dep):
    company = await dep.records.create("company", {"name": "Acme"})
    contact = await dep.records.create("contact", {"last_name": "A", "company": company["id"]})
    assert contact["company"] == company["id"]
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "B", "company": 999})
    errors = errors_of(exc)
    assert list(errors) == ["company"] and "999" in errors["company"]
    await dep.records.delete("company", company["id"])
    with pytest.raises(ValidationError):
        await dep.records.create("contact", {"last_name": "C", "company": company["id"]})
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "C", "company": "abc"})
    assert list(errors_of(exc)) == ["company"]
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "C", "owner_id": 424242})
    assert list(errors_of(exc)) == ["owner_id"]


async def test_required_fields(dep):
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"first_name": "No last name"})
    assert errors_of(exc) == {"last_name": "this field is required"}
    for empty in ("", None):
        with pytest.raises(ValidationError) as exc:
            await dep.records.create("activity", {"kind": "call", "subject": empty})
        assert list(errors_of(exc)) == ["subject"]
    rid = (await dep.records.create("contact", {"last_name": "A"}))["id"]
    with pytest.raises(ValidationError) as exc:
        await dep.records.update("contact", rid, {"last_name": ""})
    assert list(errors_of(exc)) == ["last_name"]
    # an update that leaves a required field alone is fine
    assert (await dep.records.update("contact", rid, {"city": "Izmir"}))["last_name"] == "A"


async def test_defaults(dep):
    user = await dep.records.create("user", {"name": "A", "email": "a@example.com"})
    assert user["locale"] == "en" and user["time_zone"] == "UTC" and user["active"] is True
    deal = await dep.records.create("deal", {"name": "d"})
    assert deal["pipeline"] == "sales"
    task = await dep.records.create("activity", {"kind": "task", "subject": "s", "done": True})
    assert task["done"] is True  # a given value beats the default
    other = await dep.records.create("activity", {"kind": "task", "subject": "s"})
    assert other["done"] is False


async def test_owner_defaults_to_the_creating_user(dep):
    user = await dep.records.create("user", {"name": "A", "email": "a@example.com"})
    actor = crmcore.Actor(user_id=user["id"], role=crmcore.auth.ADMIN, grants=frozenset({"*"}))
    record = await dep.records.as_actor(actor).create("contact", {"last_name": "A"})
    assert record["owner_id"] == user["id"] and record["created_by"] == user["id"]
    moved = await dep.records.update("contact", record["id"], {"owner_id": None})
    assert moved["owner_id"] is None


# -- bulk ---------------------------------------------------------------------------------------


async def test_bulk_create_all_or_nothing_with_row_numbered_errors(dep):
    rows = [
        {"last_name": "A", "email": "a@example.com"},
        {"last_name": "B", "email": "broken"},
        {"first_name": "no last name"},
        {"last_name": "D"},
    ]
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("contact", rows)
    errors = errors_of(exc)
    assert set(errors) == {"rows[1].email", "rows[2].last_name"}
    assert (await dep.records.list("contact", crmcore.ListQuery(count=True))).total == 0

    ids = await dep.records.bulk_create("contact", [rows[0], rows[3]])
    assert len(ids) == 2
    page = await dep.records.list("contact", crmcore.ListQuery(sort=["id"]))
    assert [r["last_name"] for r in page.items] == ["A", "D"] and [r["id"] for r in page.items] == ids
    assert [h["action"] for h in await dep.records.history("contact", ids[1])] == ["create"]


async def test_bulk_create_rolls_back_on_a_database_refusal(dep):
    await dep.records.create("user", {"name": "A", "email": "a@example.com"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("user", [
            {"name": "B", "email": "b@example.com"}, {"name": "C", "email": "a@example.com"},
        ])
    assert any("email" in field for field in errors_of(exc))
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("contact", [{"last_name": "A"}, {"last_name": "B", "company": 77}])
    assert list(errors_of(exc)) == ["company"]
    assert (await dep.records.list("user", crmcore.ListQuery(count=True))).total == 1
    assert (await dep.records.list("contact", crmcore.ListQuery(count=True))).total == 0


async def test_bulk_create_search_index_and_empty(dep):
    assert await dep.records.bulk_create("contact", []) == []
    await dep.records.bulk_create("contact", [{"last_name": f"Name{i}", "city": "Izmir"} for i in range(50)])
    found = await dep.records.list("contact", crmcore.ListQuery(search="name4", count=True))
    assert found.total == 11  # a prefix: Name4, Name40..Name49
    found = await dep.records.list("contact", crmcore.ListQuery(search="name42", count=True))
    assert found.total == 1


async def test_bulk_create_streams_chunks_in_one_transaction(dep, monkeypatch):
    """A generator of rows is written chunk by chunk; a bad row in a later chunk undoes the
    earlier ones, and every bad row is named by its position in the whole input."""
    import crmcore.records.service as service

    monkeypatch.setattr(service, "BULK_CHUNK", 40)
    monkeypatch.setattr(service, "AUDIT_SLICE", 15)
    seen: list[int] = []

    def rows(bad: set[int]):
        for i in range(130):
            seen.append(i)
            yield {"last_name": f"Row{i}", "email": "broken" if i in bad else f"row{i}@example.com"}

    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("contact", rows({3, 97}))
    assert set(errors_of(exc)) == {"rows[3].email", "rows[97].email"}
    assert len(seen) == 130  # all rows were checked
    assert (await dep.records.list("contact", crmcore.ListQuery(count=True))).total == 0

    seen.clear()
    ids = await dep.records.bulk_create("contact", rows(set()))
    assert len(ids) == 130 == len(set(ids))
    page = await dep.records.list("contact", crmcore.ListQuery(sort=["id"], limit=200, count=True))
    assert page.total == 130 and [r["last_name"] for r in page.items] == [f"Row{i}" for i in range(130)]
    found = await dep.records.list("contact", crmcore.ListQuery(search="row129"))
    assert [r["id"] for r in found.items] == [ids[129]]
    # Each record's history starts with its own values, though one entry covers a slice.
    for i in (0, 14, 15, 64, 129):
        [create] = await dep.records.history("contact", ids[i])
        assert create["action"] == "create"
        assert create["changes"] == {"last_name": [None, f"Row{i}"], "email": [None, f"row{i}@example.com"]}
    await dep.records.update("contact", ids[15], {"city": "Izmir"})
    history = await dep.records.history("contact", ids[15])
    assert [h["action"] for h in history] == ["update", "create"]
    assert history[1]["changes"]["last_name"] == [None, "Row15"]
    assert [h["action"] for h in await dep.records.history("contact", ids[15], limit=1)] == ["update"]


async def test_a_large_bulk_create_keeps_indexes_and_unique_checks(dep, monkeypatch):
    """On SQLite a load larger than its table builds plain indexes at the end; whatever the
    database, unique fields refuse duplicates within the load and the indexes are there after."""
    import crmcore.records.service as service

    monkeypatch.setattr(service, "BULK_CHUNK", 50)
    monkeypatch.setattr(service, "DEFER_INDEXES_FROM", 100)
    before = await dep.schema.indexes()
    rows = [{"name": f"User {i}", "email": f"user{i}@example.com"} for i in range(300)]
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("user", [*rows, {"name": "Again", "email": "user7@example.com"}])
    assert "email" in " ".join(errors_of(exc))
    assert (await dep.records.list("user", crmcore.ListQuery(count=True))).total == 0
    assert await dep.schema.indexes() == before
    ids = await dep.records.bulk_create("user", rows)
    assert await dep.schema.indexes() == before
    page = await dep.records.list("user", crmcore.ListQuery(
        filter={"field": "email", "op": "eq", "value": "user250@example.com"}))
    assert [r["id"] for r in page.items] == [ids[250]]
    with pytest.raises(ValidationError):
        await dep.records.create("user", {"name": "Dup", "email": "user1@example.com"})


async def test_bulk_update(dep):
    ids = await dep.records.bulk_create("contact", [{"last_name": n} for n in "ABC"])
    changed = await dep.records.bulk_update("contact", [
        {"id": ids[0], "city": "Izmir", "version": 1}, {"id": ids[1], "city": "Bursa"},
    ])
    assert changed == ids[:2]
    assert (await dep.records.get("contact", ids[0]))["city"] == "Izmir"
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_update("contact", [
            {"id": ids[2], "city": "Ankara"}, {"id": ids[0], "version": 1, "city": "Van"}, {"id": 999, "city": "x"},
        ])
    assert set(errors_of(exc)) == {"rows[1].version", "rows[2].id"}
    assert (await dep.records.get("contact", ids[2]))["city"] is None


async def test_concurrent_updates_of_one_version_leave_exactly_one_winner(dep):
    rid = (await dep.records.create("contact", {"last_name": "Race"}))["id"]

    async def edit(city):
        try:
            return await dep.records.update("contact", rid, {"city": city}, version=1)
        except Conflict:
            return None

    results = await asyncio.gather(*(edit(f"City {i}") for i in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    final = await dep.records.get("contact", rid)
    assert final["version"] == 2 and final["city"] == winners[0]["city"]
    assert [h["action"] for h in await dep.records.history("contact", rid)] == ["update", "create"]
