"""The "salon" edition ("Salon CRM"): the core CRM with the beauty salon plugin, and demo data of a
salon in Berlin at work.

On top of the standard demo (users, companies, and the contacts who are the salon's clients):
services in categories with their durations, cleaning-up times, prices and the resource they
need (chairs, basins, treatment rooms); seven staff members with their own days, hours, breaks,
services, commission rates and time off; a year of history (completed visits, paid, sometimes
with a tip or a discount, no-shows, cancellations), loaded as a trusted import
(:func:`.scheduling.loading`: the booking path refuses the past) but laid out by the same rules:
within working hours and outside breaks and time off, one appointment at a time per staff
member and per resource. The next two weeks are booked through :func:`.booking.book`, so every
rule of the write path holds for them. Then every client's metrics are computed.

Deterministic for a given day: every choice comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import crmcore
from crmcore import SYSTEM, Edition, ListQuery, ValidationError

from . import metrics
from .booking import book
from .entities import (
    APPOINTMENT,
    APPOINTMENT_SERVICE,
    HOURS,
    RESOURCE,
    SERVICE,
    STAFF,
    STAFF_SERVICE,
    TIME_OFF,
    WEEKDAYS,
)
from .scheduling import loading

SEED = 11
HISTORY_DAYS = 365
AHEAD_DAYS = 14
#: name, category, minutes, cleaning-up minutes, price (EUR), resource kind
SERVICES = [
    ("Women's haircut", "hair", 60, 15, "48.00", "chair"),
    ("Men's haircut", "hair", 30, 10, "26.00", "chair"),
    ("Children's haircut", "hair", 30, 10, "18.00", "chair"),
    ("Blow-dry", "hair", 45, 10, "32.00", "chair"),
    ("Colour", "colour", 90, 15, "79.00", "basin"),
    ("Highlights", "colour", 120, 15, "115.00", "basin"),
    ("Manicure", "nails", 45, 10, "32.00", None),
    ("Pedicure", "nails", 60, 10, "42.00", "room"),
    ("Eyebrow shaping", "face", 20, 5, "16.00", None),
    ("Facial", "face", 60, 15, "68.00", "room"),
    ("Massage (60 min)", "body", 60, 15, "72.00", "room"),
]
#: Appointments of more than one service: each needs at most one kind of resource.
COMBOS = [("Women's haircut", "Blow-dry"), ("Manicure", "Eyebrow shaping"), ("Facial", "Eyebrow shaping")]
RESOURCES = [("Chair 1", "chair"), ("Chair 2", "chair"), ("Chair 3", "chair"), ("Chair 4", "chair"),
             ("Basin 1", "basin"), ("Basin 2", "basin"), ("Treatment room 1", "room"), ("Treatment room 2", "room")]
#: name, commission %, colour, categories (their services), {weekday: (start, end, break start, break end)}
LONG = ("09:00", "18:00", "13:00", "13:45")
STAFF_MEMBERS = [
    ("Lena Becker", "40", "#c0392b", ("hair",), {d: LONG for d in (1, 2, 3, 4)} | {5: ("09:00", "15:00", None, None)}),
    ("Jonas Weber", "35", "#2980b9", ("hair",), {d: ("10:00", "19:00", "14:00", "14:30") for d in range(5)}),
    ("Sophie Wagner", "45", "#8e44ad", ("hair", "colour"), {d: ("09:00", "17:00", "12:30", "13:00") for d in (1, 2, 3, 4, 5)}),
    ("Mia Schulz", "30", "#16a085", ("hair", "colour"), {d: LONG for d in (0, 2, 3, 4)} | {5: ("09:00", "15:00", None, None)}),
    ("Elif Yıldız", "35", "#d35400", ("nails", "face"), {d: ("09:00", "17:00", "12:00", "12:30") for d in range(5)}),
    ("Hannah Koch", "40", "#27ae60", ("face", "body", "nails"), {d: ("10:00", "18:00", "13:30", "14:00") for d in (1, 2, 3, 4, 5)}),
    ("Tobias Richter", "38", "#2c3e50", ("body",), {d: ("11:00", "19:00", "15:00", "15:30") for d in (2, 3, 4, 5)}),
]
CANCEL_REASONS = ["Client ill", "Client rescheduled by phone", "Appointment clash at work", "Childcare fell through"]


def editions(register: Any) -> None:
    register(EDITION)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class _Day:
    """One local day's free resources, as the minute each one is free again."""

    def __init__(self, resources: dict[str, list[int]]):
        self.free = {kind: dict.fromkeys(ids, 0) for kind, ids in resources.items()}

    def take(self, kind: str | None, start: int, until: int) -> int | None | bool:
        """A resource of ``kind`` free from ``start`` (taken until ``until``); None when none is
        needed, False when every one is busy."""
        if kind is None:
            return None
        resource = next((r for r, free in self.free[kind].items() if free <= start), None)
        if resource is None:
            return False
        self.free[kind][resource] = until
        return resource


async def salon_demo(deployment: Any) -> None:
    await crmcore.load_standard_demo(deployment)
    records = deployment.records
    currency = deployment.settings.currency
    tz = ZoneInfo(deployment.settings.timezone)
    today = deployment.clock.now().astimezone(tz).date()
    rng = random.Random(SEED)

    ids = await records.bulk_create(SERVICE, [
        {"name": name, "category": category, "duration": minutes, "buffer_after": buffer,
         "price": {"amount": price, "currency": currency}, "resource_kind": kind}
        for name, category, minutes, buffer, price, kind in SERVICES])
    services = {row[0]: (service, *row[1:]) for service, row in zip(ids, SERVICES)}
    resource_ids = await records.bulk_create(RESOURCE, [{"name": name, "kind": kind} for name, kind in RESOURCES])
    resources: dict[str, list[int]] = {}
    for resource, (_, kind) in zip(resource_ids, RESOURCES):
        resources.setdefault(kind, []).append(resource)
    staff_ids = await records.bulk_create(STAFF, [
        {"name": name, "commission_rate": rate, "color": color, "phone": f"+49 151 2345 67{n:02d}",
         "email": name.lower().replace(" ", ".").replace("ı", "i") + "@salon-demo.example"}
        for n, (name, rate, color, _, _) in enumerate(STAFF_MEMBERS, 1)])
    staff = {}  # id -> (the services they do, their hours per weekday)
    for member, (_, _, _, categories, hours) in zip(staff_ids, STAFF_MEMBERS):
        staff[member] = ([name for name, row in services.items() if row[1] in categories], hours)
    await records.bulk_create(STAFF_SERVICE, [{"staff": member, "service": services[name][0]}
                                              for member, (names, _) in staff.items() for name in names])
    await records.bulk_create(HOURS, [
        {"staff": member, "weekday": WEEKDAYS[day], "start_time": start, "end_time": end,
         "break_start": pause, "break_end": resume}
        for member, (_, hours) in staff.items() for day, (start, end, pause, resume) in sorted(hours.items())])
    time_off = _time_off(staff_ids, today)
    await records.bulk_create(TIME_OFF, [
        {"staff": member, "starts_at": _at(tz, first, 0), "ends_at": _at(tz, last + dt.timedelta(days=1), 0),
         "reason": reason} for member, first, last, reason in time_off])

    clients = [c["id"] for c in (await records.list("contact", ListQuery(sort=["id"], limit=500, fields=["first_name"]))).items]
    regulars = clients[: len(clients) // 3]  # a third of them come most often
    await _history(deployment, rng, today, tz, staff, services, resources, time_off, clients, regulars)
    await _upcoming(deployment, rng, today, tz, staff, services, clients, regulars)
    await metrics.recompute_all(deployment)


def _at(tz: ZoneInfo, day: dt.date, minute: int) -> dt.datetime:
    """The salon's local ``minute`` of ``day``, in UTC."""
    local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=tz)
    return local.astimezone(dt.UTC)


def _time_off(staff_ids: list[int], today: dt.date) -> list[tuple[int, dt.date, dt.date, str]]:
    """Summer holidays in the past year, a training day and a day off in the coming two weeks."""
    summer = today - dt.timedelta(days=150)
    return [
        (staff_ids[0], summer, summer + dt.timedelta(days=13), "Summer holiday"),
        (staff_ids[2], summer + dt.timedelta(days=21), summer + dt.timedelta(days=34), "Summer holiday"),
        (staff_ids[4], today - dt.timedelta(days=60), today - dt.timedelta(days=56), "Ill"),
        (staff_ids[1], today + dt.timedelta(days=3), today + dt.timedelta(days=3), "Colour training"),
        (staff_ids[5], today + dt.timedelta(days=8), today + dt.timedelta(days=9), "Day off"),
    ]


def _pick(rng: random.Random, names: list[str]) -> list[str]:
    """The services of one visit: one, or now and then a combination the staff member does."""
    combos = [combo for combo in COMBOS if all(name in names for name in combo)]
    if combos and rng.random() < 0.2:
        return list(rng.choice(combos))
    return [rng.choice(names)]


async def _history(deployment: Any, rng: random.Random, today: dt.date, tz: ZoneInfo, staff: dict,
                   services: dict, resources: dict, time_off: list, clients: list[int], regulars: list[int]) -> None:
    """A year of past appointments, laid out one after another per staff member on each working
    day (a free resource of the kind taken for each), written in bulk as a trusted import."""
    appointments, lines = [], []
    for back in range(HISTORY_DAYS, 0, -1):
        day = today - dt.timedelta(days=back)
        taken = _Day(resources)
        for member, (names, hours) in staff.items():
            if day.weekday() not in hours or any(m == member and first <= day <= last for m, first, last, _ in time_off):
                continue
            start, end, pause, resume = hours[day.weekday()]
            at = _minutes(start) + rng.choice((0, 0, 15, 30))
            while True:
                visit = [services[name] for name in _pick(rng, names)]
                minutes = sum(row[2] for row in visit)
                ends, until = at + minutes, at + minutes + visit[-1][3]
                if pause and at < _minutes(resume) and ends > _minutes(pause):
                    at = _minutes(resume)
                    continue
                if ends > _minutes(end):
                    break
                resource = taken.take(next((row[5] for row in visit if row[5]), None), at, until)
                if resource is not False:
                    appointments.append(_past(rng, member, resource, visit, _at(tz, day, at), _at(tz, day, ends),
                                              _at(tz, day, until), rng.choice(regulars if rng.random() < 0.6 else clients),
                                              deployment.settings.currency))
                    lines.append(visit)
                at = until + rng.choice((0, 0, 15, 30, 45, 60, 90))
    with loading():
        ids = await deployment.records.bulk_create(APPOINTMENT, appointments)
        await deployment.records.bulk_create(APPOINTMENT_SERVICE, [
            {"appointment": appointment, "service": row[0], "position": position, "duration": row[2],
             "buffer_after": row[3], "price": {"amount": row[4], "currency": deployment.settings.currency}}
            for appointment, visit in zip(ids, lines) for position, row in enumerate(visit, 1)])


def _past(rng: random.Random, member: int, resource: int | None, visit: list, start: dt.datetime,
          end: dt.datetime, until: dt.datetime, client: int, currency: str) -> dict[str, Any]:
    """One past appointment: mostly completed and paid (a tip or a loyalty discount now and
    then), sometimes missed or cancelled."""
    price = sum((Decimal(row[4]) for row in visit), Decimal(0))
    roll = rng.random()
    status = "completed" if roll < 0.88 else "no_show" if roll < 0.93 else "cancelled"
    paid = None
    if status == "completed":
        paid = price + rng.choice((0, 0, 0, 2, 5)) if rng.random() < 0.9 else (price * Decimal("0.9")).quantize(Decimal("0.01"))
    return {"client": client, "staff": member, "resource": resource, "status": status,
            "cancel_reason": rng.choice(CANCEL_REASONS) if status == "cancelled" else None,
            "starts_at": start, "ends_at": end, "blocked_until": until,
            "price": {"amount": str(price), "currency": currency},
            "paid": {"amount": str(paid), "currency": currency} if paid is not None else None,
            "source": rng.choice(("salon", "salon", "phone", "online"))}


async def _upcoming(deployment: Any, rng: random.Random, today: dt.date, tz: ZoneInfo, staff: dict, services: dict,
                    clients: list[int], regulars: list[int]) -> None:
    """The next two weeks, booked through the booking path: a start it refuses (a resource
    taken, time off) is simply skipped, as a receptionist would offer another."""
    for ahead in range(1, AHEAD_DAYS + 1):
        day = today + dt.timedelta(days=ahead)
        for member, (names, hours) in staff.items():
            if day.weekday() not in hours:
                continue
            start, end, pause, resume = hours[day.weekday()]
            # fuller soon, sparser later: bookings come in over time
            at, gap = _minutes(start) + rng.choice((0, 30, 60)), 30 if ahead <= 4 else 120
            while at < _minutes(end):
                visit = _pick(rng, names)
                if pause and _minutes(pause) <= at < _minutes(resume):
                    at = _minutes(resume)
                try:
                    await book(deployment, SYSTEM, {
                        "client": rng.choice(regulars if rng.random() < 0.6 else clients), "staff": member,
                        "services": [services[name][0] for name in visit], "starts_at": _at(tz, day, at),
                        "status": "confirmed" if ahead <= 2 else "booked",
                        "source": rng.choice(("salon", "phone", "online", "online"))})
                except ValidationError:
                    pass
                at += sum(services[name][2] for name in visit) + services[visit[-1]][3] + rng.choice((0, gap))


EDITION = Edition(name="salon", label="Salon CRM",
                  description="The core CRM with services, staff, appointments without double booking, online "
                              "booking, client metrics and calendar feeds for a beauty salon",
                  plugins=["beauty_salon"], settings={"currency": "EUR", "region": "DE", "timezone": "Europe/Berlin"},
                  demo=salon_demo)
