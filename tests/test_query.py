"""The read language: filters, sorting, keyset paging, search, counts and their errors.

Expected results are computed in Python from the same rows, so each operator is checked on
every field type against an independent model; every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest

import crmcore
from crmcore import ListQuery, ValidationError
from crmcore.records.query import OPERATORS, parse_filter_params

UTC = dt.timezone.utc

# name, qty, ratio, price (amount, currency), active, day, at (UTC), tags, sizes, phone
ROWS: list[tuple] = [
    ("Alpha", 5, "1.5", ("9.99", "EUR"), True, "2026-01-15", "2026-01-15T08:00:00+00:00", ["vip", "b2b"], ["s"], "0532 123 45 67"),
    ("alpha beta", 10, "2.25", ("100", "USD"), False, "2026-02-01", "2026-02-01T23:30:00-02:00", ["b2b"], ["s", "m"], "0212 555 12 34"),
    ("Beta", -3, "10", ("0", "EUR"), None, "2025-12-31", "2025-12-31T23:59:59+00:00", [], ["l"], None),
    ("Gamma_1", 0, "-0.5", None, True, None, None, None, None, "+44 20 7946 0958"),
    ("100% pure", 10, None, ("5.5", "EUR"), False, "2026-01-15", "2026-01-15T09:00:00+01:00", ["vip"], None, "0532 123 45 68"),
    (None, None, "2.25", ("1000.01", "USD"), True, "2026-03-01", "2026-03-01T00:00:00+00:00", ["retail"], ["m", "l"], None),
    ("Delta", 7, "3", ("100", "EUR"), None, "2026-01-15", None, ["vip", "retail"], [], "0533 999 88 77"),
    ("alphabet", 100, "0.1", ("20", "EUR"), True, None, "2026-01-10T12:00:00+00:00", None, ["s"], None),
    ("Beta", 5, "1.5", ("9.99", "EUR"), False, "2026-02-01", "2026-01-15T08:00:00+00:00", ["b2b"], None, "0532 123 45 67"),
    ("Gamma", None, None, None, None, None, None, None, None, None),
    ("epsilon", 5, "2.25", ("20", "USD"), True, "2025-12-31", "2026-02-01T23:30:00-02:00", ["vip"], ["m"], None),
    ("Zeta", -3, "10", ("100", "EUR"), True, "2026-03-01", "2026-03-01T00:00:00+00:00", None, ["s", "m", "l"], None),
]
COLUMNS = ("name", "qty", "ratio", "price", "active", "day", "at", "tags", "sizes", "phone")


def as_input(row: tuple) -> dict[str, Any]:
    data = dict(zip(COLUMNS, row))
    if data["price"] is not None:
        data["price"] = {"amount": data["price"][0], "currency": data["price"][1]}
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
async def loaded(dep):
    """``dep`` with ROWS in ``lab_item``; returns (deployment, {id: record})."""
    ids = await dep.records.bulk_create("lab_item", [as_input(r) for r in ROWS])
    page = await dep.records.list("lab_item", ListQuery(limit=500))
    records = {r["id"]: r for r in page.items}
    assert sorted(records) == sorted(ids)
    return dep, records


# -- a Python model of the filter language -------------------------------------------------------


def comparable(name: str, value: Any) -> Any:
    """A record's value as the filter compares it."""
    if value is None:
        return None
    if name == "price":
        return value.amount
    if name == "phone":
        return value.e164
    return value


def parse(name: str, raw: Any) -> Any:
    """A filter value as the filter reads it."""
    if raw is None:
        return None
    if name in ("qty",):
        return int(raw)
    if name in ("ratio", "price"):
        return Decimal(str(raw))
    if name == "day":
        return dt.date.fromisoformat(raw)
    if name == "at":
        return dt.datetime.fromisoformat(raw).astimezone(UTC)
    if name == "phone":
        return crmcore.normalize_phone(raw, "TR")
    if name == "active" and isinstance(raw, str):
        return raw.lower() in ("true", "1", "yes", "on")
    return raw


def matches(record: dict, node: dict) -> bool:
    if "and" in node:
        return all(matches(record, n) for n in node["and"])
    if "or" in node:
        return any(matches(record, n) for n in node["or"])
    if "not" in node:
        return not matches(record, node["not"])
    name, op, raw = node["field"], node.get("op", "eq"), node.get("value")
    value = comparable(name, record[name])
    if op == "is_null":
        return (value is None) == bool(raw)
    if name in ("tags", "sizes"):
        items = value or []
        return raw in items if op == "contains" else any(v in items for v in raw)
    if op in ("contains", "startswith"):
        if value is None:
            return False
        text, needle = value.lower(), raw.lower()
        if name == "phone" and op == "contains":
            needle = needle.lstrip("+")
        return needle in text if op == "contains" else text.startswith(needle)
    if op == "in":
        return value in [parse(name, v) for v in raw]
    if op == "between":
        low, high = (parse(name, v) for v in raw)
        return value is not None and low <= value <= high
    target = parse(name, raw)
    if op == "eq":
        return value == target
    if op == "ne":
        return value is None or value != target
    if value is None:
        return False
    return {"lt": value < target, "lte": value <= target, "gt": value > target, "gte": value >= target}[op]


# What to filter each field type with: values that split the rows in interesting ways.
PROBES: dict[str, dict[str, list[Any]]] = {
    "name": {
        "eq": ["Beta", "beta", "nobody"], "ne": ["Beta"], "lt": ["Beta"], "lte": ["Beta"], "gt": ["Delta"],
        "gte": ["alpha"], "in": [["Beta", "Delta", "x"]], "contains": ["alpha", "ETA", "_", "%"],
        "startswith": ["alpha", "Gamma_", "100%"], "is_null": [True, False], "between": [["B", "Gamma"]],
    },
    "qty": {
        "eq": [5, "10"], "ne": [5], "lt": [0], "lte": [5], "gt": [7], "gte": [-3], "in": [[5, 100]],
        "is_null": [True, False], "between": [[0, 10], ["-3", "5"]],
    },
    "ratio": {
        "eq": ["2.25", 10], "ne": ["2.25"], "lt": ["1.5"], "lte": ["1.5"], "gt": ["2.25"], "gte": ["0.1"],
        "in": [["0.1", "3"]], "is_null": [True, False], "between": [["-1", "2.25"]],
    },
    "price": {
        "eq": ["100", "9.99"], "ne": ["100"], "lt": ["20"], "lte": ["20"], "gt": ["99.5"], "gte": ["0"],
        "in": [["0", "1000.01"]], "is_null": [True, False], "between": [["5", "100"]],
    },
    "day": {
        "eq": ["2026-01-15"], "ne": ["2026-01-15"], "lt": ["2026-01-15"], "lte": ["2026-01-15"],
        "gt": ["2026-02-01"], "gte": ["2026-02-01"], "in": [["2025-12-31", "2026-03-01"]],
        "is_null": [True, False], "between": [["2026-01-01", "2026-02-01"]],
    },
    "at": {
        "eq": ["2026-01-15T09:00:00+01:00", "2026-01-15T08:00:00Z"], "ne": ["2026-01-15T08:00:00Z"],
        "lt": ["2026-01-15T08:00:00+00:00"], "lte": ["2026-01-15T10:00:00+02:00"],
        "gt": ["2026-02-02T01:30:00+00:00"], "gte": ["2026-02-02T01:30:00+00:00"],
        "in": [["2026-03-01T03:00:00+03:00"]], "is_null": [True, False],
        "between": [["2026-01-01T00:00:00Z", "2026-01-31T23:59:59Z"]],
    },
    "active": {"eq": [True, "false"], "ne": [True], "is_null": [True, False], "in": [[True]]},
    "tags": {"contains": ["vip", "b2b", "none"], "in": [["retail", "b2b"]], "is_null": [True, False]},
    "sizes": {"contains": ["s", "l"], "in": [["m"]], "is_null": [True, False]},
    "phone": {
        "eq": ["(0532) 123 45 67", "+90 532 1234567", "0532-123-4567"], "ne": ["0532 123 45 67"],
        "in": [["0532 123 45 68", "+44 20 7946 0958"]], "contains": ["532123", "+90532"],
        "startswith": ["+90532", "+44"], "is_null": [True, False],
    },
}
CASES = [
    (name, op, value)
    for name, ops in PROBES.items()
    for op, values in ops.items()
    for value in values
]


async def ids_for(dep, query: ListQuery) -> list[int]:
    page = await dep.records.list("lab_item", query)
    return [r["id"] for r in page.items]


def test_every_operator_is_probed():
    probed = {op for ops in PROBES.values() for op in ops}
    assert probed == set(OPERATORS)


@pytest.mark.parametrize("name, op, value", CASES, ids=[f"{n}-{o}-{v}" for n, o, v in CASES])
async def test_operator(loaded, name, op, value):
    dep, records = loaded
    node = {"field": name, "op": op, "value": value}
    expected = sorted(rid for rid, r in records.items() if matches(r, node))
    assert await ids_for(dep, ListQuery(filter=node, limit=500)) == expected
    # the negation selects exactly the other rows
    others = sorted(set(records) - set(expected))
    assert await ids_for(dep, ListQuery(filter={"not": node}, limit=500)) == others


async def test_text_eq_is_case_sensitive_but_contains_is_not(loaded):
    dep, records = loaded
    assert len(await ids_for(dep, ListQuery(filter={"field": "name", "op": "eq", "value": "alpha"}))) == 0
    found = await ids_for(dep, ListQuery(filter={"field": "name", "op": "contains", "value": "ALPHA"}))
    assert sorted(records[i]["name"] for i in found) == ["Alpha", "alpha beta", "alphabet"]


async def test_like_wildcards_are_literal(loaded):
    dep, records = loaded
    found = await ids_for(dep, ListQuery(filter={"field": "name", "op": "contains", "value": "%"}))
    assert [records[i]["name"] for i in found] == ["100% pure"]
    found = await ids_for(dep, ListQuery(filter={"field": "name", "op": "contains", "value": "_"}))
    assert [records[i]["name"] for i in found] == ["Gamma_1"]


async def test_money_currency_column(loaded):
    dep, records = loaded
    node = {"field": "price__currency", "op": "eq", "value": "USD"}
    found = await ids_for(dep, ListQuery(filter=node))
    assert found == sorted(i for i, r in records.items() if r["price"] and r["price"].currency == "USD")


@pytest.mark.parametrize("node", [
    {"and": [{"field": "qty", "op": "gte", "value": 0}, {"field": "active", "op": "eq", "value": True}]},
    {"or": [{"field": "tags", "op": "contains", "value": "vip"}, {"field": "qty", "op": "lt", "value": 0}]},
    {"and": [{"field": "name", "op": "contains", "value": "a"},
             {"or": [{"field": "price", "op": "gte", "value": 100}, {"not": {"field": "day", "op": "is_null", "value": False}}]}]},
    {"not": {"or": [{"field": "sizes", "op": "contains", "value": "s"}, {"field": "ratio", "op": "is_null", "value": True}]}},
])
async def test_and_or_not(loaded, node):
    dep, records = loaded
    expected = sorted(rid for rid, r in records.items() if matches(r, node))
    assert expected  # the case selects something
    assert await ids_for(dep, ListQuery(filter=node, limit=500)) == expected


async def test_query_string_filters(loaded):
    dep, records = loaded
    node = parse_filter_params({"qty__gte": "5", "tags__contains": "vip", "price__currency": "EUR"})
    found = await ids_for(dep, ListQuery(filter=node))
    assert found == sorted(
        i for i, r in records.items()
        if r["qty"] is not None and r["qty"] >= 5 and "vip" in (r["tags"] or []) and r["price"] and r["price"].currency == "EUR"
    )
    assert found


# -- sorting and keyset paging ------------------------------------------------------------------


def sort_key(records: dict[int, dict], sort: list[str]):
    """NULLs sort as the largest value: last ascending, first descending; then by id."""

    def key(rid: int):
        parts = []
        for item in sort:
            desc = item.startswith("-")
            name = item.lstrip("-")
            value = comparable(name, records[rid][name])
            if desc:
                parts.append((0, _Reverse(value)) if value is None else (1, _Reverse(value)))
            else:
                parts.append((1, 0) if value is None else (0, value))
        parts.append(rid)
        return parts

    return key


class _Reverse:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return self.value == other.value

    def __lt__(self, other):
        return other.value < self.value


SORTS = [
    ["name"], ["-name"], ["qty"], ["-qty"], ["ratio", "-name"], ["-price", "qty"], ["day", "-at"],
    ["-day", "at"], ["active", "name"], ["-active"], ["phone"], ["-created_at"], ["id"],
]


@pytest.mark.parametrize("sort", SORTS, ids=[",".join(s) for s in SORTS])
async def test_sort_with_nulls(loaded, sort):
    dep, records = loaded
    expected = sorted(records, key=sort_key(records, sort))
    assert await ids_for(dep, ListQuery(sort=sort, limit=500)) == expected


@pytest.mark.parametrize("sort", SORTS, ids=[",".join(s) for s in SORTS])
@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_keyset_paging_visits_every_row_once(loaded, sort, limit):
    dep, records = loaded
    expected = sorted(records, key=sort_key(records, sort))
    seen: list[int] = []
    cursor = None
    for _ in range(len(records) + 2):
        page = await dep.records.list("lab_item", ListQuery(sort=sort, limit=limit, cursor=cursor))
        assert len(page.items) <= limit
        seen += [r["id"] for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    assert len(seen) == len(set(seen))


async def test_keyset_paging_with_a_filter_and_many_duplicates(dep):
    await dep.records.bulk_create("lab_item", [
        {"name": ["a", "b", None][i % 3], "qty": i % 4 or None, "active": i % 2 == 0} for i in range(60)
    ])
    for sort in (["name", "-qty"], ["-name", "qty"], ["qty"]):
        query = dict(sort=sort, filter={"field": "active", "op": "eq", "value": True}, limit=7)
        seen, cursor = [], None
        while True:
            page = await dep.records.list("lab_item", ListQuery(**query, cursor=cursor))
            seen += [r["id"] for r in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        everything = await dep.records.list("lab_item", ListQuery(**{**query, "limit": 500}))
        assert seen == [r["id"] for r in everything.items]
        assert len(seen) == len(set(seen)) == 30


async def test_paging_sees_rows_written_between_pages_once(loaded):
    dep, records = loaded
    first = await dep.records.list("lab_item", ListQuery(sort=["qty"], limit=4))
    await dep.records.create("lab_item", {"name": "late", "qty": 1000})
    seen = [r["id"] for r in first.items]
    cursor = first.next_cursor
    while cursor:
        page = await dep.records.list("lab_item", ListQuery(sort=["qty"], limit=4, cursor=cursor))
        seen += [r["id"] for r in page.items]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == len(records) + 1


# -- search and counts --------------------------------------------------------------------------


async def test_full_text_search_with_prefix(dep):
    await dep.records.bulk_create("contact", [
        {"first_name": "Ayşe", "last_name": "Yılmaz", "email": "ayse@example.com", "tags": ["istanbul"]},
        {"first_name": "Mehmet", "last_name": "Yıldız", "city": "Izmir"},
        {"first_name": "John", "last_name": "Smith", "email": "john@acme.org", "notes": "met at the fair"},
    ])

    async def names(text: str) -> list[str]:
        page = await dep.records.list("contact", ListQuery(search=text, sort=["last_name"]))
        return [r["last_name"] for r in page.items]

    assert await names("yılmaz") == ["Yılmaz"]
    assert await names("yıl") == ["Yıldız", "Yılmaz"]  # prefix
    assert await names("yilmaz") == ["Yılmaz"]  # the dotless ı is typed as i
    assert await names("ayse yilm") == ["Yılmaz"]
    assert await names("mehmet yildiz") == ["Yıldız"]
    assert await names("smi") == ["Smith"]
    assert await names("acme") == ["Smith"]  # e-mail domain words
    assert await names("john smith") == ["Smith"]  # every word must match
    assert await names("john yılmaz") == []
    assert await names("istanbul") == ["Yılmaz"]  # tags
    assert await names("fair") == ["Smith"]  # long text
    assert await names("nobody") == []
    phoned = await dep.records.create("contact", {"last_name": "Phoned", "phone": "(0532) 123 45 67"})
    assert await names("905321") == ["Phoned"]  # E.164 digits, as a prefix
    assert await names("0532") == ["Phoned"]  # what was typed
    await dep.records.delete("contact", phoned["id"])
    assert await names("  ") == ["Smith", "Yıldız", "Yılmaz"]  # no words: no search
    assert await names('"*(') == ["Smith", "Yıldız", "Yılmaz"]  # operators are not syntax
    # search follows updates and deletes
    smith = (await dep.records.list("contact", ListQuery(search="smith"))).items[0]
    await dep.records.update("contact", smith["id"], {"last_name": "Smythe"})
    assert await names("smith") == [] and await names("smyth") == ["Smythe"]
    await dep.records.delete("contact", smith["id"])
    assert await names("smyth") == []


async def test_search_follows_bulk_updates_refused_updates_and_purges(dep):
    ids = await dep.records.bulk_create("contact", [
        {"last_name": "Ozturk", "city": "Izmir"}, {"last_name": "Ozdemir"}, {"last_name": "Oztas"},
    ])

    async def found(text: str) -> list[int]:
        return sorted(r["id"] for r in (await dep.records.list("contact", ListQuery(search=text))).items)

    await dep.records.bulk_update("contact", [{"id": ids[0], "city": "Bursa"}, {"id": ids[1], "last_name": "Kaplan"}])
    assert await found("izmir") == [] and await found("bursa") == [ids[0]]
    assert await found("ozdemir") == [] and await found("kaplan") == [ids[1]]
    # A refused update (stale version) leaves the index as the record is.
    with pytest.raises(crmcore.Conflict):
        await dep.records.update("contact", ids[2], {"last_name": "Yeni", "version": 99})
    assert await found("oztas") == [ids[2]] and await found("yeni") == []
    await dep.records.delete("contact", ids[2])
    await dep.records.purge("contact", ids[2])
    again = await dep.records.create("contact", {"last_name": "Oztas"})
    assert await found("oztas") == [again["id"]]
    assert await found("oz") == sorted([ids[0], again["id"]])


async def test_search_combines_with_filters(dep):
    await dep.records.bulk_create("contact", [
        {"last_name": "Kaya", "city": "Izmir"}, {"last_name": "Kaya", "city": "Ankara"}, {"last_name": "Kara"},
    ])
    page = await dep.records.list("contact", ListQuery(
        search="kay", filter={"field": "city", "op": "eq", "value": "Izmir"}, count=True))
    assert [r["city"] for r in page.items] == ["Izmir"] and page.total == 1


async def test_counts(loaded):
    dep, records = loaded
    page = await dep.records.list("lab_item", ListQuery(count=True, limit=2))
    assert page.total == len(records) and len(page.items) == 2
    node = {"field": "tags", "op": "contains", "value": "vip"}
    page = await dep.records.list("lab_item", ListQuery(filter=node, count=True, limit=1))
    assert page.total == sum(matches(r, node) for r in records.values())
    assert (await dep.records.list("lab_item", ListQuery())).total is None  # only when asked
    await dep.records.delete("lab_item", next(iter(records)))
    assert (await dep.records.list("lab_item", ListQuery(count=True))).total == len(records) - 1
    assert (await dep.records.list("lab_item", ListQuery(count=True, deleted=True))).total == 1


async def test_fields_selects_columns(loaded):
    dep, _ = loaded
    page = await dep.records.list("lab_item", ListQuery(fields=["name", "price"], limit=1))
    assert {"name", "price", "id", "version"} <= set(page.items[0]) and "qty" not in page.items[0]


# -- bad queries get clear errors ---------------------------------------------------------------


def error(exc: pytest.ExceptionInfo) -> tuple[str, str]:
    assert len(exc.value.errors) == 1
    e = exc.value.errors[0]
    return e.field, e.message


@pytest.mark.parametrize("query, field, words", [
    (ListQuery(filter={"field": "bogus", "op": "eq", "value": 1}), "filter.bogus", ["unknown field", "qty", "name"]),
    (ListQuery(filter={"field": "qty", "op": "like", "value": 1}), "filter.qty", ["like", "eq", "between"]),
    (ListQuery(filter={"field": "qty", "op": "eq", "value": "many"}), "filter.qty", ["whole number"]),
    (ListQuery(filter={"field": "day", "op": "gt", "value": "yesterday"}), "filter.day", ["YYYY-MM-DD"]),
    (ListQuery(filter={"field": "at", "op": "gt", "value": "2026-01-01T00:00:00"}), "filter.at", ["offset"]),
    (ListQuery(filter={"field": "price", "op": "gt", "value": "lots"}), "filter.price", ["number"]),
    (ListQuery(filter={"field": "tags", "op": "eq", "value": "vip"}), "filter.tags", ["contains", "in", "is_null"]),
    (ListQuery(filter={"field": "tags", "op": "startswith", "value": "v"}), "filter.tags", ["contains"]),
    (ListQuery(filter={"field": "active", "op": "lt", "value": True}), "filter.active", ["eq", "ne"]),
    (ListQuery(filter={"field": "qty", "op": "contains", "value": "5"}), "filter.qty", ["text fields"]),
    (ListQuery(filter={"field": "qty", "op": "between", "value": [1]}), "filter.qty", ["two values"]),
    (ListQuery(filter={"field": "qty", "op": "in", "value": []}), "filter.qty", ["list"]),
    (ListQuery(filter={"field": "color", "op": "eq", "value": "pink"}), "filter.color", ["red, green, blue"]),
    (ListQuery(filter={"and": []}), "filter", ["non-empty list"]),
    (ListQuery(filter={"or": [{"field": "qty", "op": "gt", "value": "x"}]}), "filter.or[0].qty", ["whole number"]),
    (ListQuery(filter={"op": "eq", "value": 1}), "filter", ["field"]),
    (ListQuery(sort=["bogus"]), "sort.bogus", ["unknown field", "qty"]),
    (ListQuery(sort=["tags"]), "sort.tags", ["cannot be sorted"]),
    (ListQuery(limit=0), "limit", ["between 1 and 500"]),
    (ListQuery(limit=501), "limit", ["between 1 and 500"]),
    (ListQuery(cursor="garbage"), "cursor", ["next_cursor"]),
    (ListQuery(search="x" * 201), "q", ["200"]),
    (ListQuery(fields=["bogus"]), "fields", ["unknown field", "qty"]),
])
async def test_bad_queries_name_the_field_and_what_is_accepted(dep, query, field, words):
    with pytest.raises(ValidationError) as exc:
        await dep.records.list("lab_item", query)
    got_field, message = error(exc)
    assert got_field == field
    for word in words:
        assert word in message, message


async def test_a_cursor_from_another_sort_is_refused(loaded):
    dep, _ = loaded
    page = await dep.records.list("lab_item", ListQuery(sort=["name", "qty"], limit=2))
    with pytest.raises(ValidationError) as exc:
        await dep.records.list("lab_item", ListQuery(sort=["name"], limit=2, cursor=page.next_cursor))
    assert error(exc)[0] == "cursor"


async def test_hidden_fields_cannot_be_filtered(dep):
    await dep.add_custom_field("contact", crmcore.Field(name="secret", type=crmcore.FieldType.TEXT))
    await dep.remove_custom_field("contact", "secret")
    with pytest.raises(ValidationError) as exc:
        await dep.records.list("contact", ListQuery(filter={"field": "secret", "op": "eq", "value": "x"}))
    assert error(exc)[0] == "filter.secret"


def test_cases_cover_every_probe():
    # guard against a PROBES typo silently dropping cases
    assert len(CASES) == sum(len(v) for ops in PROBES.values() for v in ops.values())
    assert len(list(itertools.chain(SORTS))) >= 10


async def test_sorting_by_id_descending_breaks_ties_newest_first(dep):
    ids = await dep.records.bulk_create("contact", [{"last_name": f"Same {i}", "city": "Tie"} for i in range(12)])
    tie = {"field": "city", "op": "eq", "value": "Tie"}
    page = await dep.records.list("contact", ListQuery(filter=tie, sort=["-id"], limit=50))
    assert [r["id"] for r in page.items] == sorted(ids, reverse=True)
    # created_at is the same for the whole batch: "-id" decides, across pages too
    seen, cursor = [], None
    while True:
        page = await dep.records.list("contact", ListQuery(filter=tie, sort=["-created_at", "-id"], limit=5,
                                                          cursor=cursor))
        seen += [r["id"] for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    ascending = await dep.records.list("contact", ListQuery(filter=tie, sort=["city", "id"], limit=50))
    assert [r["id"] for r in ascending.items] == sorted(ids)
