"""The salon edition's demo: `crm run-demo DIR --edition salon` sets up a salon whose year of
history and next two weeks obey the booking rules, checked with plain SQL on the database."""

from __future__ import annotations

import asyncio
import datetime as dt
import tomllib
from zoneinfo import ZoneInfo

from crmcore.deployment import Deployment
from plugins.beauty_salon.demo import EDITION
from plugins.beauty_salon.entities import (
    APPOINTMENT,
    HOLDING,
    HOURS,
    STAFF,
    TIME_OFF,
    WEEKDAYS,
)

from ..conftest import crm


def _time(value) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


async def _check(dep) -> list[tuple]:
    """Check the demo's data in plain SQL; return its appointments (staff member, client, status,
    start, price), to compare runs."""
    table = {name: dep.registry.get(name).table for name in (APPOINTMENT, HOURS, STAFF, TIME_OFF, "contact")}
    holding = ", ".join(f"'{status}'" for status in HOLDING)
    live = f"a.\"deleted_at\" IS NULL AND a.\"status\" IN ({holding})"
    for who in ("staff", "resource"):  # no two holding appointments of one staff member or resource overlap
        clashes = await dep.db.fetch(
            f'SELECT a."id", b."id" FROM "{table[APPOINTMENT]}" a JOIN "{table[APPOINTMENT]}" b '
            f'ON a."{who}" = b."{who}" AND a."id" < b."id" AND a."starts_at" < b."blocked_until" '
            f'AND b."starts_at" < a."blocked_until" '
            f'WHERE {live} AND b."deleted_at" IS NULL AND b."status" IN ({holding})')
        assert clashes == [], who

    rows = await dep.db.fetch(f'SELECT "status", "starts_at", "ends_at", "staff", "price", "paid", "cancel_reason", "client" '
                              f'FROM "{table[APPOINTMENT]}"')
    statuses = {row[0] for row in rows}
    assert {"completed", "no_show", "cancelled", "booked", "confirmed"} <= statuses
    assert len(rows) > 5000  # a year of a seven-strong salon
    hours = {(staff, WEEKDAYS.index(day)): times for staff, day, *times in await dep.db.fetch(
        f'SELECT "staff", "weekday", "start_time", "end_time", "break_start", "break_end" FROM "{table[HOURS]}"')}
    time_off = await dep.db.fetch(f'SELECT "staff", "starts_at", "ends_at" FROM "{table[TIME_OFF]}"')
    berlin = ZoneInfo("Europe/Berlin")
    for status, start, end, staff, price, paid, reason, _ in rows:
        start, end = _time(start).astimezone(berlin), _time(end).astimezone(berlin)
        opens, closes, pause, resume = hours[staff, start.weekday()]
        assert start.date() == end.date() and opens <= start.strftime("%H:%M") and end.strftime("%H:%M") <= closes
        if pause:
            assert end.strftime("%H:%M") <= pause or start.strftime("%H:%M") >= resume
        assert not any(who == staff and _time(off_start) < end and start < _time(off_end)
                       for who, off_start, off_end in time_off)
        assert price is not None and (paid is not None) == (status == "completed")
        assert (reason is not None) == (status == "cancelled")

    now = dep.clock.now()
    upcoming = [row for row in rows if _time(row[1]) > now]
    assert len(upcoming) > 100 and all(row[0] in ("booked", "confirmed") for row in upcoming)
    assert max(_time(row[1]) for row in upcoming) < now + dt.timedelta(days=15)
    assert len({row[3] for row in upcoming}) == 7  # everybody has bookings ahead

    # the metrics on the clients are those of their completed visits, counted here in SQL
    counted = dict(await dep.db.fetch(
        f'SELECT "client", COUNT(*) FROM "{table[APPOINTMENT]}" WHERE "status" = \'completed\' GROUP BY "client"'))
    stored = dict(await dep.db.fetch(
        f'SELECT "id", "salon_visits" FROM "{table["contact"]}" WHERE "salon_visits" > 0'))
    assert stored == counted and len(stored) > 150
    spent = await dep.db.fetchrow(
        f'SELECT COUNT(*) FROM "{table["contact"]}" WHERE "salon_total_spent" IS NOT NULL '
        f'AND "salon_last_visit" IS NOT NULL AND "salon_favourite_staff" IS NOT NULL')
    assert spent[0] == len(stored)
    return sorted((row[3], row[7], row[0], _time(row[1]).astimezone(dt.UTC), str(row[4])) for row in rows)


def test_the_salon_edition_demo(tmp_path):
    target = tmp_path / "salon"
    result = crm("run-demo", target, "--edition", "salon", "--no-serve")
    assert "11 beauty_salon_service" in result.output and "7 beauty_salon_staff" in result.output
    config = tomllib.loads((target / "crm.toml").read_text())
    assert config["edition"] == "salon" and config["plugins"] == ["beauty_salon"]
    assert (config["currency"], config["timezone"]) == ("EUR", "Europe/Berlin")

    async def check() -> None:
        dep = await Deployment.open(target)
        try:
            await _check(dep)
        finally:
            await dep.close()

    asyncio.run(check())


async def test_the_demo_is_the_same_twice_on_each_database(make_deployment):
    """Loaded straight into deployments on SQLite and PostgreSQL: the rules hold, and a second
    salon made the same day has the same appointments (one seeded random source)."""
    runs = []
    for _ in range(2):
        dep = await make_deployment(plugins=["beauty_salon"], **EDITION.settings)
        await EDITION.demo(dep)
        runs.append(await _check(dep))
    assert runs[0] == runs[1]
