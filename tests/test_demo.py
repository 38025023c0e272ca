"""Demo data: loaded through the records service, realistic, deterministic, refused twice."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest

import crmcore
from crmcore import ListQuery, normalize_phone
from crmcore.demo import DemoError, load_demo

TODAY = dt.date(2026, 5, 4)


async def all_records(dep, entity: str) -> list[dict]:
    items, cursor = [], None
    while True:
        page = await dep.records.list(entity, ListQuery(limit=500, cursor=cursor))
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items


async def test_demo_loads_a_realistic_book_of_business(make_deployment):
    dep = await make_deployment(region="TR", currency="TRY", timezone="Europe/Istanbul")
    counts = await load_demo(dep, today=TODAY)
    assert counts["contact"] == 240 and 55 <= counts["company"] <= 65 and counts["user"] >= 3
    assert counts["deal"] >= 50 and counts["activity"] >= 200

    contacts = await all_records(dep, "contact")
    companies = await all_records(dep, "company")
    deals = await all_records(dep, "deal")
    activities = await all_records(dep, "activity")
    users = await all_records(dep, "user")
    assert len(contacts) == 240 and len(companies) == counts["company"] and len(users) == counts["user"]

    # Phones: every one stored as E.164 next to what was "typed", from several countries; Turkish
    # numbers in the national format of the deployment's region, the others with +CC.
    phones = [p for r in contacts + companies + users for p in (r.get("phone"), r.get("mobile")) if p]
    assert len(phones) > 300
    for phone in phones:
        assert re.fullmatch(r"\+[1-9]\d{6,14}", phone.e164)
        assert normalize_phone(phone.raw, "TR") == phone.e164
    assert any(re.fullmatch(r"\(05\d\d\) \d{3} \d{2} \d{2}", p.raw) for p in phones)
    assert all(p.raw.startswith("+") for p in phones if not p.e164.startswith("+90"))
    prefixes = Counter(p.e164[:3] for p in phones)
    assert {"+90", "+49", "+44", "+33", "+31"} <= set(prefixes) and "+1" in {p.e164[:2] for p in phones}

    countries = Counter(c["country"] for c in contacts)
    assert countries["TR"] > 80 and len(countries) >= 5
    assert len({c["city"] for c in contacts}) >= 10 and "İstanbul" in {c["city"] for c in contacts}
    assert sum(1 for c in contacts if c["email"]) > 200
    assert sum(1 for c in contacts if c["company"]) > 180
    assert any(c["tags"] for c in contacts) and any(c["tags"] for c in companies)
    assert len({c["last_name"] for c in contacts}) > 100

    # Deals cover every stage of the sales pipeline; lost ones say why; money is exact.
    stages = Counter(d["stage"] for d in deals)
    assert set(stages) == {s.name for s in dep.pipelines["sales"].stages}
    assert all(d["lost_reason"] for d in deals if d["stage"] == "lost")
    assert not any(d["lost_reason"] for d in deals if d["stage"] != "lost")
    assert all(d["pipeline"] == "sales" and d["amount"].amount > 0 for d in deals)
    assert {d["amount"].currency for d in deals} >= {"TRY", "EUR"}
    assert all(d["expected_close"] > TODAY for d in deals if d["stage"] not in ("won", "lost"))

    # Activities of every kind; tasks due around today, some overdue, some done.
    kinds = Counter(a["kind"] for a in activities)
    assert set(kinds) == {"call", "meeting", "email", "note", "task"}
    now = dt.datetime.combine(TODAY, dt.time(9), dt.timezone.utc)
    tasks = [a for a in activities if a["kind"] == "task"]
    assert any(t["due_at"] < now and not t["done"] for t in tasks)  # overdue
    assert any(t["done"] for t in tasks) and any(t["due_at"] > now for t in tasks)
    user_ids = {u["id"] for u in users}
    assert all(a["assignee"] in user_ids for a in activities)
    assert {c["owner_id"] for c in contacts} <= user_ids

    # Everything went through the one write path: audited.
    history = await dep.records.history("contact", contacts[0]["id"])
    assert history[0]["action"] == "create"


async def test_demo_is_deterministic(make_deployment):
    first = await make_deployment(region="TR")
    second = await make_deployment(region="TR")
    await load_demo(first, contacts=60, seed=7, today=TODAY)
    await load_demo(second, contacts=60, seed=7, today=TODAY)

    def key(rows):
        return [(r["first_name"], r["last_name"], r["email"], r["mobile"]) for r in rows]

    assert key(await all_records(first, "contact")) == key(await all_records(second, "contact"))


async def test_demo_refuses_to_load_twice(make_deployment):
    dep = await make_deployment()
    await dep.records.create("contact", {"last_name": "Existing"})
    with pytest.raises(DemoError, match="already holds 1 contacts"):
        await load_demo(dep)
    assert isinstance(DemoError("x"), crmcore.DeploymentError)  # the CLI shows it as Error: ...


async def test_demo_phones_valid_in_any_region(make_deployment):
    dep = await make_deployment(region="US", currency="USD")
    await load_demo(dep, contacts=80, seed=3, today=TODAY)
    contacts = await all_records(dep, "contact")
    phones = [p for c in contacts for p in (c["phone"], c["mobile"]) if p]
    # Turkish numbers are given with +90 here; US ones as dialled in the US.
    assert all(p.raw.startswith("+90") for p in phones if p.e164.startswith("+90"))
    assert any(p.raw.startswith("(") for p in phones if p.e164.startswith("+1"))
    assert all(normalize_phone(p.raw, "US") == p.e164 for p in phones)


async def test_demo_with_a_zero_decimal_currency(make_deployment):
    dep = await make_deployment(region="JP", currency="JPY")
    counts = await load_demo(dep, contacts=20, seed=2, today=TODAY)
    assert counts["contact"] == 20
    deals = await all_records(dep, "deal")
    assert any(d["amount"].currency == "JPY" and d["amount"].amount == int(d["amount"].amount) for d in deals)


async def test_demo_automation_works_on_a_website_lead(make_deployment):
    dep = await make_deployment(region="TR")
    counts = await load_demo(dep, contacts=30, today=TODAY)
    assert counts["rule"] == len(crmcore.demo.DEMO_RULES)
    start = dt.datetime(2031, 1, 6, 9, tzinfo=dt.timezone.utc)
    dep.clock.set(start)
    submitted = await dep.forms.submit("contact-us", {"name": "Deniz", "surname": "Aksoy", "tel": "0532 765 43 21"},
                                       ip="127.0.0.1")
    lead = await dep.records.get("contact", submitted.record_id)
    [task] = (await dep.records.list("activity", ListQuery(filter={"field": "contact", "op": "eq", "value": lead["id"]}))).items
    assert task["subject"] == "Call Deniz Aksoy" and task["assignee"] == lead["owner_id"]
    owner = await dep.records.get("user", lead["owner_id"])
    assert owner["manager"] is not None  # agents report to their team's sales manager
    dep.clock.advance(minutes=16)
    while await dep.jobs.run_due(100):  # the demo's own timers (reminders, close dates) too
        pass
    titles = [r[0] for r in await dep.db.fetch('SELECT "title" FROM crm_notification WHERE "user_id" = ?',
                                                (owner["manager"],))]
    assert "Lead Aksoy not called within 15 minutes" in titles
