"""The salon's reports on a small salon whose figures are worked out by hand (in the comments) and
again by plain SQL over its tables, on SQLite and PostgreSQL: revenue by staff member and month
and no-shows by staff member (the core's report engine), commissions, utilisation and the
services' popularity (:mod:`plugins.beauty_salon.staff_reports`).

Anna (40 %) works Monday to Friday 09:00-17:00 with a break 12:00-13:00 (420 minutes a day) and
is off on Wednesday 3 March 2027; Ben (33.33 %) works Monday and Tuesday 10:00-14:00. Berlin
time; the appointments are booked through the booking function ahead, then the clock passes them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from crmcore import SYSTEM, ValidationError
from crmcore.testing import make_user
from plugins.beauty_salon import booking, staff_reports
from plugins.beauty_salon.entities import (
    APPOINTMENT,
    HOLDING,
    HOURS,
    RESOURCE,
    SERVICE,
    STAFF,
    STAFF_SERVICE,
    TIME_OFF,
)

from .conftest import MONDAY, at, ok, problem

BERLIN = ZoneInfo("Europe/Berlin")
SETTINGS = {"currency": "EUR", "timezone": "Europe/Berlin", "region": "DE", "in_process_worker": False}
MARCH = (dt.date(2027, 3, 1), dt.date(2027, 3, 31))
FIRST_WEEK = (dt.date(2027, 3, 1), dt.date(2027, 3, 7))


def _at(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=BERLIN)


def _eur(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "EUR"}


async def _salon(make_deployment):
    dep = await make_deployment(plugins=["beauty_salon"], **SETTINGS)
    dep.clock.set(dt.datetime(2027, 2, 1, 8, tzinfo=dt.UTC))
    records = dep.records
    cut, colour, nails = [(await records.create(SERVICE, {
        "name": name, "duration": minutes, "buffer_after": buffer, "price": _eur(price), "resource_kind": kind}))["id"]
        for name, minutes, buffer, price, kind in (("Cut", 45, 15, "30.00", "chair"), ("Colour", 60, 15, "50.00", "chair"),
                                                   ("Nails", 30, 0, "25.00", None))]
    for name in ("Chair 1", "Chair 2"):
        await records.create(RESOURCE, {"name": name, "kind": "chair"})
    anna = (await records.create(STAFF, {"name": "Anna", "commission_rate": "40"}))["id"]
    ben = (await records.create(STAFF, {"name": "Ben", "commission_rate": "33.33"}))["id"]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday"):
        await records.create(HOURS, {"staff": anna, "weekday": day, "start_time": "09:00", "end_time": "17:00",
                                     "break_start": "12:00", "break_end": "13:00"})
    for day in ("monday", "tuesday"):
        await records.create(HOURS, {"staff": ben, "weekday": day, "start_time": "10:00", "end_time": "14:00"})
    await records.create(STAFF_SERVICE, {"staff": ben, "service": colour})  # Ben does these three only
    await records.create(STAFF_SERVICE, {"staff": ben, "service": cut})
    await records.create(STAFF_SERVICE, {"staff": ben, "service": nails})
    await records.create(TIME_OFF, {"staff": anna, "starts_at": _at("2027-03-03", "00:00"),
                                    "ends_at": _at("2027-03-04", "00:00"), "reason": "Day off"})
    client = (await records.create("contact", {"first_name": "Clara", "last_name": "Kunde"}))["id"]

    async def visit(staff, day, hhmm, services, *statuses, reason=None):
        made = await booking.book(dep, SYSTEM, {"client": client, "staff": staff, "services": services,
                                                "starts_at": _at(day, hhmm)})
        for status in statuses:
            await records.update(APPOINTMENT, made["id"], {"status": status, **({"cancel_reason": reason} if reason else {})})
        return made

    done = ("arrived", "completed")
    await visit(anna, "2027-03-01", "09:00", [cut], *done)  # 30.00, 45 min
    await visit(anna, "2027-03-01", "10:00", [cut, colour], *done)  # 80.00, 105 min
    await visit(anna, "2027-03-02", "09:00", [nails], "no_show")  # holds no time
    await visit(ben, "2027-03-01", "10:00", [colour], *done)  # 50.00, 60 min
    await visit(ben, "2027-03-02", "10:00", [cut], "cancelled", reason="ill")  # holds no time
    await visit(ben, "2027-03-02", "11:00", [nails])  # still booked: 30 min held
    await visit(anna, "2027-03-08", "09:00", [nails], *done)  # 25.00, the week after
    await visit(anna, "2027-04-05", "09:00", [cut], *done)  # 30.00, April (summer time)
    dep.clock.set(dt.datetime(2027, 5, 1, 8, tzinfo=dt.UTC))
    return dep, {"anna": anna, "ben": ben, "cut": cut, "colour": colour, "nails": nails}


def _period(first: dt.date, last: dt.date) -> list[dt.datetime]:
    return [dt.datetime.combine(first, dt.time(), BERLIN).astimezone(dt.UTC),
            dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), BERLIN).astimezone(dt.UTC)]


def _utc(value) -> dt.datetime:
    return (dt.datetime.fromisoformat(value) if isinstance(value, str) else value).astimezone(dt.UTC)


async def _appointments(dep, first: dt.date, last: dt.date) -> list[tuple]:
    """Plain SQL: the period's appointments with their staff member's rate."""
    table, staff = dep.registry.get(APPOINTMENT).table, dep.registry.get(STAFF).table
    start, end = _period(first, last)
    rows = await dep.db.fetch(f'SELECT a."staff", a."status", a."price", s."commission_rate", a."starts_at", a."ends_at" '
                              f'FROM "{table}" a JOIN "{staff}" s ON s."id" = a."staff" WHERE a."deleted_at" IS NULL')
    return [row for row in rows if start <= _utc(row[4]) < end]


async def test_revenue_and_no_shows_by_staff_on_the_report_engine(make_deployment):
    dep, ids = await _salon(make_deployment)
    result = await dep.reports.run("beauty_salon.revenue_by_staff_month")
    rows = {(row["staff"], row["starts_at_month"]): (row["visits"], row["revenue"], row["average_bill"], row["currency"])
            for row in result["rows"]}
    assert rows == {(ids["anna"], "2027-03-01"): (3, Decimal("135.00"), Decimal("45.00"), "EUR"),  # 30 + 80 + 25
                    (ids["ben"], "2027-03-01"): (1, Decimal("50.00"), Decimal("50.00"), "EUR"),
                    (ids["anna"], "2027-04-01"): (1, Decimal("30.00"), Decimal("30.00"), "EUR")}
    assert result["labels"]["staff"] == {str(ids["anna"]): "Anna", str(ids["ben"]): "Ben"}
    listed = {report["name"] for report in await dep.reports.list()}
    assert {"beauty_salon.revenue_by_staff_month", "beauty_salon.no_shows_by_staff"} <= listed
    march = await dep.reports.run("beauty_salon.revenue_by_staff_month", filter={
        "field": "starts_at", "op": "between", "value": [t.isoformat() for t in _period(*MARCH)]})
    by_sql: dict[int, Decimal] = {}
    for staff, status, price, *_ in await _appointments(dep, *MARCH):
        if status == "completed":
            by_sql[staff] = by_sql.get(staff, Decimal(0)) + Decimal(str(price))
    assert {row["staff"]: row["revenue"] for row in march["rows"]} == by_sql

    no_shows = {row["staff"]: (row["appointments"], row["completed"], row["no_shows"], row["cancelled"])
                for row in (await dep.reports.run("beauty_salon.no_shows_by_staff"))["rows"]}
    assert no_shows == {ids["anna"]: (5, 4, 1, 0), ids["ben"]: (3, 1, 0, 1)}
    dep.clock.set(dt.datetime(2027, 3, 2, 10, tzinfo=dt.UTC))  # due by then: Ben's Nails at 11:00 Berlin is not
    no_shows = {row["staff"]: row["appointments"] for row in (await dep.reports.run("beauty_salon.no_shows_by_staff"))["rows"]}
    assert no_shows == {ids["anna"]: 3, ids["ben"]: 2}


async def test_commissions_per_staff_member_and_period(make_deployment):
    dep, _ = await _salon(make_deployment)
    rows = {row["name"]: row for row in await staff_reports.commissions(dep, SYSTEM, *MARCH)}
    assert (rows["Anna"]["visits"], rows["Anna"]["revenue"], rows["Anna"]["rate"], rows["Anna"]["commission"]) == (
        3, Decimal("135.00"), Decimal(40), Decimal("54.00"))
    assert (rows["Ben"]["revenue"], rows["Ben"]["commission"]) == (Decimal("50.00"), Decimal("16.67"))  # 16.665, half up
    spring = {row["name"]: row["commission"] for row in await staff_reports.commissions(
        dep, SYSTEM, dt.date(2027, 3, 1), dt.date(2027, 4, 30))}
    assert spring == {"Anna": Decimal("66.00"), "Ben": Decimal("16.67")}  # April's cut adds 30.00 × 40 %
    # plain SQL: each completed visit's price times its staff member's rate
    by_sql: dict[int, Decimal] = {}
    for staff, status, price, rate, *_ in await _appointments(dep, *MARCH):
        if status == "completed":
            by_sql[staff] = by_sql.get(staff, Decimal(0)) + Decimal(str(price)) * Decimal(str(rate)) / 100
    assert {row["staff"]: row["commission"] for row in rows.values()} == {
        staff: total.quantize(Decimal("0.01"), "ROUND_HALF_UP") for staff, total in by_sql.items()}
    assert await staff_reports.commissions(dep, SYSTEM, dt.date(2027, 6, 1), dt.date(2027, 6, 30)) == []


async def test_utilisation_per_staff_member_and_week(make_deployment):
    dep, ids = await _salon(make_deployment)
    rows = {(row["name"], row["week"]): row for row in await staff_reports.utilisation(dep, SYSTEM, *FIRST_WEEK)}
    anna, ben = rows["Anna", "2027-03-01"], rows["Ben", "2027-03-01"]
    # Anna: four days of 420 minutes (Wednesday off); 45 + 105 booked (the no-show holds nothing)
    assert (anna["working_minutes"], anna["booked_minutes"], anna["utilisation"]) == (1680, 150, Decimal("8.9"))
    # Ben: two days of 240 minutes; 60 + 30 booked (the cancelled cut holds nothing)
    assert (ben["working_minutes"], ben["booked_minutes"], ben["utilisation"]) == (480, 90, Decimal("18.8"))
    two_weeks = await staff_reports.utilisation(dep, SYSTEM, dt.date(2027, 3, 1), dt.date(2027, 3, 14))
    assert [(row["name"], row["week"], row["booked_minutes"]) for row in two_weeks] == [
        ("Anna", "2027-03-01", 150), ("Anna", "2027-03-08", 30), ("Ben", "2027-03-01", 90), ("Ben", "2027-03-08", 0)]
    # plain SQL: the holding appointments' minutes per staff member in the week
    booked: dict[int, float] = {}
    for staff, status, _, _, starts, ends in await _appointments(dep, *FIRST_WEEK):
        if status in HOLDING:
            booked[staff] = booked.get(staff, 0) + (_utc(ends) - _utc(starts)).total_seconds() / 60
    assert booked == {ids["anna"]: anna["booked_minutes"], ids["ben"]: ben["booked_minutes"]}


async def test_services_popularity(make_deployment):
    dep, ids = await _salon(make_deployment)
    rows = [(row["name"], row["times"], row["revenue"]) for row in await staff_reports.service_popularity(dep, SYSTEM, *MARCH)]
    # completed in March: cut (alone, and with colour), colour (with cut, and Ben's), nails (the 8th)
    assert rows == [("Cut", 2, Decimal("60.00")), ("Colour", 2, Decimal("100.00")), ("Nails", 1, Decimal("25.00"))]
    start, end = _period(*MARCH)
    services, appointments = dep.registry.get("beauty_salon_appointment_service").table, dep.registry.get(APPOINTMENT).table
    counted = await dep.db.fetch(
        f'SELECT s."service", COUNT(*) FROM "{services}" s JOIN "{appointments}" a ON a."id" = s."appointment" '
        f'WHERE a."status" = ? AND s."deleted_at" IS NULL AND a."starts_at" >= ? AND a."starts_at" < ? GROUP BY s."service"',
        ["completed", *((t.isoformat(timespec="microseconds") if dep.db.dialect == "sqlite" else t) for t in (start, end))])
    assert dict(counted) == {ids["cut"]: 2, ids["colour"]: 2, ids["nails"]: 1}


async def test_a_period_is_checked_and_a_reader_sees_only_their_scope(make_deployment):
    dep, _ = await _salon(make_deployment)
    for first, last, code in ((dt.date(2027, 3, 2), dt.date(2027, 3, 1), "invalid"),
                              (dt.date(2026, 1, 1), dt.date(2027, 3, 1), "too_long")):
        with pytest.raises(ValidationError) as refused:
            await staff_reports.utilisation(dep, SYSTEM, first, last)
        assert [(error.field, error.code) for error in refused.value.errors] == [("to", code)]
    agent = await dep.auth.actor_for_user((await make_user(dep, role="agent")).id)  # owns none of them
    for report in (staff_reports.commissions, staff_reports.utilisation, staff_reports.service_popularity):
        assert await report(dep, agent, *MARCH) == []
    assert (await dep.reports.run("beauty_salon.revenue_by_staff_month", agent))["rows"] == []


def test_the_staff_reports_routes(salon):
    s = salon()
    ok(s.client.patch(f"/api/beauty_salon_staff/{s.anna['id']}", json={"commission_rate": "40", "version": 1}))
    visit = ok(s.book(at(MONDAY, "10:00"), s.cut, staff=s.anna), 201)
    for version, status in ((1, "arrived"), (2, "completed")):
        ok(s.client.patch(f"/api/beauty_salon_appointment/{visit['id']}", json={"status": status, "version": version}))
    day = {"from": MONDAY.isoformat(), "to": MONDAY.isoformat()}
    [anna] = [row for row in ok(s.client.get("/api/beauty_salon/commissions", params=day))["rows"]]
    assert (anna["name"], anna["revenue"], anna["rate"], anna["commission"]) == ("Anna", "30.00", "40", "12.00")
    week = ok(s.client.get("/api/beauty_salon/utilisation", params=day))
    assert week["from"] == MONDAY.isoformat()
    # 09:00-18:00 less the hour's break: 480 minutes; the cut's 45 booked (its cleaning up not)
    assert [(row["name"], row["working_minutes"], row["booked_minutes"], row["utilisation"]) for row in week["rows"]] == [
        ("Anna", 480, 45, "9.4"), ("Ben", 480, 0, "0.0")]
    popular = ok(s.client.get("/api/beauty_salon/service_popularity", params=day))["rows"]
    assert [(row["name"], row["times"], row["revenue"]) for row in popular] == [("Cut", 1, "30.00")]
    assert problem(s.client.get("/api/beauty_salon/utilisation", params={"from": "monday", "to": "2027-03-01"})) == {
        "from": "invalid"}
