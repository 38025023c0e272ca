"""The salon benchmark's data and calls: a salon in Berlin with 20 staff (Monday to Saturday
09:00-18:00, an hour's break), five services, 12 chairs and a year of appointments (about 300
days back and 60 ahead, six or so a day each, every chair used by one at a time), loaded with
``bulk_create`` as a trusted import; then the availability search a booking page makes (one
service, any staff, one week) against the raw queries that read the same rows.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import crmcore
from crmcore.deployment import load_settings, save_settings
from plugins.beauty_salon.availability import free_slots
from plugins.beauty_salon.entities import HOLDING
from plugins.beauty_salon.scheduling import LONGEST, db_time, loading, midnight

STAFF = 20
CHAIRS = 12
TZ = ZoneInfo("Europe/Berlin")
#: name, minutes, buffer, price, needs a chair
SERVICES = [("Cut", 45, 15, "30.00", True), ("Colour", 90, 15, "80.00", True), ("Beard", 30, 10, "15.00", True),
            ("Nails", 30, 0, "25.00", False), ("Massage", 60, 10, "55.00", False)]
DAYS_BACK, DAYS_AHEAD = 300, 60


async def open_salon(path: Path, database_url: str | None) -> crmcore.Deployment:
    crmcore.init_deployment(path, currency="EUR", timezone="Europe/Berlin", region="DE")
    settings = load_settings(path)
    settings.plugins = [*settings.plugins, "beauty_salon"]
    save_settings(path, settings)
    return await crmcore.Deployment.open(path, database_url=database_url)


def _local(day: dt.date, minutes: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=TZ) + dt.timedelta(minutes=minutes)


async def seed(dep: crmcore.Deployment, today: dt.date) -> int:
    """The salon and its year of appointments; returns how many appointments."""
    records = dep.records
    rnd = random.Random(9)
    services = await records.bulk_create("beauty_salon_service", [
        {"name": name, "duration": minutes, "buffer_after": buffer, "price": {"amount": price, "currency": "EUR"},
         "resource_kind": "chair" if chair else None} for name, minutes, buffer, price, chair in SERVICES])
    chairs = await records.bulk_create("beauty_salon_resource", [
        {"name": f"Chair {n}", "kind": "chair"} for n in range(1, CHAIRS + 1)])
    staff = await records.bulk_create("beauty_salon_staff", [{"name": f"Stylist {n}"} for n in range(1, STAFF + 1)])
    await records.bulk_create("beauty_salon_working_hours", [
        {"staff": member, "weekday": weekday, "start_time": "09:00", "end_time": "18:00", "break_start": "13:00",
         "break_end": "14:00"} for member in staff for weekday in ("monday", "tuesday", "wednesday", "thursday",
                                                                   "friday", "saturday")])
    clients = await records.bulk_create("contact", [{"first_name": "Client", "last_name": str(n)} for n in range(2000)])
    appointments, lines = [], []
    for offset in range(-DAYS_BACK, DAYS_AHEAD):
        day = today + dt.timedelta(days=offset)
        if day.weekday() == 6:
            continue
        chair_free = dict.fromkeys(chairs, 0)  # minute of the day each chair is free again
        for member in staff:
            at = 9 * 60 + rnd.choice((0, 15, 30))
            while True:
                index = rnd.randrange(len(SERVICES))
                _, minutes, buffer, price, needs_chair = SERVICES[index]
                if at < 13 * 60 < at + minutes:
                    at = 14 * 60
                if at + minutes > 18 * 60:
                    break
                chair = next((c for c in chairs if chair_free[c] <= at), None) if needs_chair else None
                if not needs_chair or chair is not None:
                    if chair is not None:
                        chair_free[chair] = at + minutes + buffer
                    status = "completed" if offset < 0 else "booked"
                    if rnd.random() < 0.06:
                        status = rnd.choice(("cancelled", "no_show"))
                    appointments.append({
                        "client": rnd.choice(clients), "staff": member, "resource": chair, "status": status,
                        "cancel_reason": "ill" if status == "cancelled" else None,
                        "starts_at": _local(day, at), "ends_at": _local(day, at + minutes),
                        "blocked_until": _local(day, at + minutes + buffer),
                        "price": {"amount": price, "currency": "EUR"}})
                    lines.append({"service": services[index], "position": 1, "duration": minutes,
                                  "buffer_after": buffer, "price": {"amount": price, "currency": "EUR"}})
                at += minutes + buffer + rnd.choice((0, 0, 15, 30, 60))
    with loading():
        ids = await records.bulk_create("beauty_salon_appointment", appointments)
        await records.bulk_create("beauty_salon_appointment_service", [
            {**line, "appointment": appointment} for appointment, line in zip(ids, lines)])
    return len(ids)


def weeks(today: dt.date, count: int) -> list[dt.date]:
    """Mondays of the coming weeks (booked, partly)."""
    monday = today + dt.timedelta(days=7 - today.weekday())
    return [monday + dt.timedelta(weeks=n % 8) for n in range(count)]


async def search(dep: crmcore.Deployment, service: int, monday: dt.date) -> Any:
    return await free_slots(dep, [service], None, monday, monday + dt.timedelta(days=6))


def raw_queries(dep: crmcore.Deployment, raw: Any) -> Any:
    """The baseline: the same rows read by plain queries (staff, hours, offered services, time
    off, appointments of the week and resources), nothing computed from them."""
    holding = list(HOLDING)
    marks = ", ".join("?" for _ in holding)
    queries = [
        raw.query('SELECT "id", "name", "active" FROM beauty_salon_staff WHERE "deleted_at" IS NULL AND "active" = ?'),
        raw.query('SELECT "staff", "weekday", "start_time", "end_time", "break_start", "break_end" '
                  'FROM beauty_salon_working_hours WHERE "deleted_at" IS NULL'),
        raw.query('SELECT "staff", "service" FROM beauty_salon_staff_service WHERE "deleted_at" IS NULL'),
        raw.query('SELECT "staff", "starts_at", "ends_at" FROM beauty_salon_time_off WHERE "deleted_at" IS NULL '
                  'AND "starts_at" < ? AND "ends_at" > ?'),
        raw.query(f'SELECT "id", "staff", "resource", "starts_at", "blocked_until" FROM beauty_salon_appointment '
                  f'WHERE "deleted_at" IS NULL AND "status" IN ({marks}) AND "starts_at" > ? AND "starts_at" < ? '
                  'AND "blocked_until" > ?'),
        raw.query('SELECT "id", "kind" FROM beauty_salon_resource WHERE "deleted_at" IS NULL AND "active" = ?'),
    ]

    async def run(monday: dt.date) -> None:
        start, end = midnight(TZ, monday), midnight(TZ, monday + dt.timedelta(days=7))
        staff, hours, offered, time_off, appointments, resources = queries
        await staff(True)
        await hours()
        await offered()
        await time_off(db_time(dep, end), db_time(dep, start))
        await appointments(*holding, db_time(dep, start - LONGEST), db_time(dep, end), db_time(dep, start))
        await resources(True)

    return run
