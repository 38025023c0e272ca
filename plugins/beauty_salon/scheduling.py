"""Who may be booked when: the checks of the one write path (working hours, breaks, time off,
buffers, staff and resource conflicts), safe under concurrent bookings.

An appointment occupies its staff member from ``starts_at`` to ``blocked_until`` (the end of its
services plus the last one's buffer) and, when a service needs one, a resource of that kind for
the same time. Its services must fit the staff member's working hours (per weekday, in the
salon's time zone, converted with zoneinfo so DST days have their real length), outside the
break and any time off; the cleaning up after them may run into the break or past closing.

The appointment's services come as rows (``appointment_service``): :mod:`.booking` writes them
with the appointment, inside :func:`planned`, which tells the guard here which services are being
booked. Anyone else's create of an appointment, or write of its computed fields or service rows,
is refused with the route to use. On PostgreSQL a booking takes transaction-scoped advisory locks
on its staff member and the resources it may use, in one order, before it looks for conflicts;
SQLite's single writer already runs one booking at a time.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import msgspec

from crmcore import Change, FieldError, Money, ValidationError

from .entities import (
    APPOINTMENT,
    APPOINTMENT_SERVICE,
    HOLDING,
    HOURS,
    RESOURCE,
    SERVICE,
    STAFF,
    STAFF_SERVICE,
    TIME_OFF,
    WEEKDAYS,
)

UTC = dt.UTC
#: Written by the booking alone (from the services), never by hand.
COMPUTED = ("ends_at", "blocked_until", "price", "resource")
#: Status moves allowed; a cancelled or missed appointment stays so (book again instead).
MOVES = {
    "booked": {"confirmed", "arrived", "cancelled", "no_show"},
    "confirmed": {"arrived", "cancelled", "no_show"},
    "arrived": {"completed"},
    "completed": set(), "cancelled": set(), "no_show": set(),
}
#: Statuses in which an appointment may still be moved.
MOVABLE = ("booked", "confirmed")
#: The longest an appointment may occupy its staff member: bounds the range queries below.
LONGEST = dt.timedelta(hours=12)
ROUTE = "/api/beauty_salon/appointments"
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def refuse(field: str, code: str, message: str) -> ValidationError:
    return ValidationError([FieldError(field, code, message)])


class Line(msgspec.Struct, frozen=True):
    """One service as booked: what it takes and costs at booking time."""

    service: int
    name: str
    duration: int
    buffer_after: int
    price: Money
    resource_kind: str | None = None


_plan: contextvars.ContextVar[list[Line] | None] = contextvars.ContextVar("beauty_salon_plan", default=None)
_loading: contextvars.ContextVar[bool] = contextvars.ContextVar("beauty_salon_loading", default=False)


@contextlib.contextmanager
def planned(lines: list[Line] | None) -> Iterator[None]:
    """Writes inside book (or move) an appointment with ``lines`` (None: its booked services)."""
    token = _plan.set(lines)
    try:
        yield
    finally:
        _plan.reset(token)


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Writes inside are a trusted loader's, taken as given: history from another system, demo
    data, the benchmark's year of appointments (in the past, which a booking refuses)."""
    token = _loading.set(True)
    try:
        yield
    finally:
        _loading.reset(token)


# -- reading the salon's tables ----------------------------------------------------------------


def _table(deployment: Any, entity: str) -> str:
    return deployment.registry.get(entity).table


def db_time(deployment: Any, when: dt.datetime) -> Any:
    """A UTC time as the database compares it (fixed-width ISO text on SQLite)."""
    when = when.astimezone(UTC)
    return when.isoformat(timespec="microseconds") if deployment.db.dialect == "sqlite" else when


def _time(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value.astimezone(UTC)


def _marks(values: list[Any]) -> str:
    return ", ".join("?" for _ in values)


async def load_lines(deployment: Any, ids: Any, field: str = "services") -> list[Line]:
    """The services ``ids`` as booked now, in order; refused naming ``field`` when one is unknown
    or inactive, or when they need resources of more than one kind."""
    if (not isinstance(ids, list) or not ids or len(ids) > 10
            or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in ids)):
        raise refuse(field, "invalid", "a list of 1 to 10 service ids")
    rows = await deployment.db.fetch(
        f'SELECT "id", "name", "duration", "buffer_after", "price", "price__currency", "resource_kind", "active" '
        f'FROM "{_table(deployment, SERVICE)}" WHERE "deleted_at" IS NULL AND "id" IN ({_marks(ids)})', sorted(set(ids)))
    found = {row[0]: row for row in rows}
    lines = []
    for service in ids:
        row = found.get(service)
        if row is None:
            raise refuse(field, "not_found", f"no service with id {service}")
        if not row[7]:
            raise refuse(field, "inactive", f"{row[1]} is not offered any more")
        lines.append(Line(service, row[1], row[2], row[3] or 0, Money(Decimal(str(row[4])), row[5]), row[6] or None))
    if len({line.price.currency for line in lines}) > 1:
        raise refuse(field, "currency", "the services are priced in different currencies")
    if len({line.resource_kind for line in lines if line.resource_kind}) > 1:
        raise refuse(field, "resource_kind", "book services needing different kinds of resource separately")
    if dt.timedelta(minutes=sum(line.duration + line.buffer_after for line in lines)) > LONGEST:
        raise refuse(field, "too_long", f"an appointment takes at most {LONGEST.seconds // 3600} hours")
    return lines


async def _booked_lines(deployment: Any, appointment: int) -> list[Line]:
    rows = await deployment.db.fetch(
        f'SELECT a."service", s."name", a."duration", a."buffer_after", a."price", a."price__currency", s."resource_kind" '
        f'FROM "{_table(deployment, APPOINTMENT_SERVICE)}" a JOIN "{_table(deployment, SERVICE)}" s ON s."id" = a."service" '
        f'WHERE a."appointment" = ? AND a."deleted_at" IS NULL ORDER BY a."position"', [appointment])
    currency = deployment.settings.currency  # a loaded row may come without a price
    return [Line(r[0], r[1], r[2], r[3] or 0, Money(Decimal(str(r[4] or 0)), r[5] or currency), r[6] or None)
            for r in rows]


class Window(NamedTuple):
    """One stretch of working hours of one day, in UTC, and its break."""

    start: dt.datetime
    end: dt.datetime
    break_start: dt.datetime | None
    break_end: dt.datetime | None

    def refusal(self, start: dt.datetime, end: dt.datetime) -> str | None:
        if start < self.start or end > self.end:
            return "out_of_hours"
        if self.break_start is not None and start < self.break_end and end > self.break_start:
            return "break"
        return None


class Member(NamedTuple):
    id: int
    name: str
    active: bool
    #: weekday (0 Monday) -> (start, end, break start, break end) as HH:MM texts
    hours: dict[int, list[tuple[str, str, str | None, str | None]]]
    #: the services they do; None: every one
    services: frozenset[int] | None


class Booking(NamedTuple):
    id: int
    staff: int
    resource: int | None
    start: dt.datetime
    until: dt.datetime


class Bookings:
    """One staff member's or resource's bookings, by start time."""

    def __init__(self) -> None:
        self.starts: list[dt.datetime] = []
        self.items: list[Booking] = []

    def add(self, booking: Booking) -> None:  # in order of start
        self.starts.append(booking.start)
        self.items.append(booking)

    def overlapping(self, start: dt.datetime, until: dt.datetime, exclude: int | None) -> Booking | None:
        """A booking other than ``exclude`` overlapping ``start`` - ``until``: only those starting
        at most LONGEST before it can."""
        low, high = bisect.bisect_left(self.starts, start - LONGEST), bisect.bisect_left(self.starts, until)
        return next((b for b in self.items[low:high] if b.until > start and b.id != exclude), None)


NOTHING = Bookings()


class Calendar:
    """What a stretch of time holds for some staff: their hours, time off and appointments, and
    every appointment holding a resource (shared by all staff). Read with one query each; the
    booking check (:meth:`refusal`) and the availability search ask it the same questions."""

    def __init__(self, tz: ZoneInfo, members: dict[int, Member], time_off: dict[int, list[tuple[dt.datetime, dt.datetime]]],
                 bookings: list[Booking], resources: dict[str, list[int]]):
        self.tz, self.members, self.time_off, self.resources = tz, members, time_off, resources
        self.by_staff: dict[int, Bookings] = {}
        self.using: dict[int, Bookings] = {}  # resource -> its bookings
        for booking in sorted(bookings, key=lambda b: b.start):
            self.by_staff.setdefault(booking.staff, Bookings()).add(booking)
            if booking.resource is not None:
                self.using.setdefault(booking.resource, Bookings()).add(booking)

    @classmethod
    async def load(cls, deployment: Any, staff: list[int] | None, start: dt.datetime, end: dt.datetime) -> Calendar:
        """The calendar of ``staff`` (None: every active member) from ``start`` to ``end`` (UTC)."""
        db = deployment.db
        where, params = ('"id" IN (' + _marks(staff) + ")", list(staff)) if staff is not None else ('"active" = ?', [True])
        members = {row[0]: row for row in await db.fetch(
            f'SELECT "id", "name", "active" FROM "{_table(deployment, STAFF)}" WHERE "deleted_at" IS NULL AND {where}', params)}
        ids = sorted(members)
        hours: dict[int, dict[int, list]] = {}
        offered: dict[int, set[int]] = {}
        time_off: dict[int, list] = {}
        bookings: list[Booking] = []
        if ids:
            marks = _marks(ids)
            for who, weekday, *times in await db.fetch(
                f'SELECT "staff", "weekday", "start_time", "end_time", "break_start", "break_end" '
                f'FROM "{_table(deployment, HOURS)}" WHERE "deleted_at" IS NULL AND "staff" IN ({marks})', ids):
                hours.setdefault(who, {}).setdefault(WEEKDAYS.index(weekday), []).append(tuple(times))
            for who, service in await db.fetch(
                f'SELECT "staff", "service" FROM "{_table(deployment, STAFF_SERVICE)}" '
                f'WHERE "deleted_at" IS NULL AND "staff" IN ({marks})', ids):
                offered.setdefault(who, set()).add(service)
            for who, off_start, off_end in await db.fetch(
                f'SELECT "staff", "starts_at", "ends_at" FROM "{_table(deployment, TIME_OFF)}" WHERE "deleted_at" IS NULL '
                f'AND "staff" IN ({marks}) AND "starts_at" < ? AND "ends_at" > ? ORDER BY "starts_at"',
                [*ids, db_time(deployment, end), db_time(deployment, start)]):
                time_off.setdefault(who, []).append((_time(off_start), _time(off_end)))
        # The staff's appointments and every one holding a resource; LONGEST bounds the scan of starts_at.
        holding = list(HOLDING)
        for row in await db.fetch(
            f'SELECT "id", "staff", "resource", "starts_at", "blocked_until" FROM "{_table(deployment, APPOINTMENT)}" '
            f'WHERE "deleted_at" IS NULL AND "status" IN ({_marks(holding)}) AND "starts_at" > ? AND "starts_at" < ? '
            f'AND "blocked_until" > ? AND ("resource" IS NOT NULL' + (f' OR "staff" IN ({_marks(ids)}))' if ids else ")"),
            [*holding, db_time(deployment, start - LONGEST), db_time(deployment, end), db_time(deployment, start), *ids]):
            bookings.append(Booking(row[0], row[1], row[2], _time(row[3]), _time(row[4])))
        resources: dict[str, list[int]] = {}
        for resource, kind in await db.fetch(
            f'SELECT "id", "kind" FROM "{_table(deployment, RESOURCE)}" WHERE "deleted_at" IS NULL AND "active" = ? '
            'ORDER BY "id"', [True]):
            resources.setdefault(kind, []).append(resource)
        return cls(ZoneInfo(deployment.settings.timezone),
                   {i: Member(i, members[i][1], bool(members[i][2]), hours.get(i, {}),
                              frozenset(offered[i]) if i in offered else None) for i in ids},
                   time_off, bookings, resources)

    def windows(self, staff: int, day: dt.date) -> list[Window]:
        """The staff member's working hours on the salon's local ``day``, as UTC instants: a day
        when the clocks change is an hour shorter or longer."""

        def at(text: str | None) -> dt.datetime | None:
            if not text:
                return None
            return dt.datetime.combine(day, dt.time.fromisoformat(text), tzinfo=self.tz).astimezone(UTC)

        return [Window(at(start), at(end), at(b_start), at(b_end) if b_start else None)
                for start, end, b_start, b_end in self.members[staff].hours.get(day.weekday(), [])]

    def clash(self, staff: int, start: dt.datetime, end: dt.datetime, until: dt.datetime, kind: str | None,
              exclude: int | None = None, prefer: int | None = None) -> tuple[str | None, Any]:
        """What keeps the staff member from ``start`` - ``until`` (services until ``end``) apart
        from their hours, as ``(code, what)``: time off, another appointment, no free resource
        of ``kind``; else ``(None, the resource to use)`` (``prefer`` when it is free). Cheap:
        the availability search asks it thousands of times."""
        for off in self.time_off.get(staff, ()):
            if off[0] < end and off[1] > start:
                return "time_off", off
        other = self.by_staff.get(staff, NOTHING).overlapping(start, until, exclude)
        if other is not None:
            return "busy", (other.start, other.until)
        if not kind:
            return None, None
        free = (r for r in ([prefer] if prefer is not None else []) + self.resources.get(kind, [])
                if self.using.get(r, NOTHING).overlapping(start, until, exclude) is None)
        resource = next(free, None)
        return ("unavailable", (start, until)) if resource is None else (None, resource)

    def unfit(self, staff: int, lines: list[Line]) -> FieldError | None:
        """Why ``staff`` never does ``lines``: gone, inactive, or not their services."""
        member = self.members.get(staff)
        if member is None or not member.active:
            return FieldError("staff", "inactive", "this staff member is not (or no longer) bookable")
        for line in lines:
            if member.services is not None and line.service not in member.services:
                return FieldError("staff", "not_offered", f"{member.name} does not do {line.name}")
        return None

    def refusal(self, staff: int, lines: list[Line], start: dt.datetime, exclude: int | None = None,
                prefer: int | None = None) -> tuple[FieldError | None, int | None]:
        """Why ``lines`` cannot be booked with ``staff`` at ``start``, or the resource they get."""
        error = self.unfit(staff, lines)
        if error is not None:
            return error, None
        member = self.members[staff]
        end, until = span(lines, start)
        local_day = start.astimezone(self.tz).date()
        codes = [window.refusal(start, end) for window in self.windows(staff, local_day)]
        if None not in codes:
            if "break" in codes:
                return FieldError("starts_at", "break", f"{member.name} has a break then"), None
            return FieldError("starts_at", "out_of_hours", f"{member.name} does not work from {self.local(start)} to "
                              f"{self.local(end)}"), None
        kind = next((line.resource_kind for line in lines if line.resource_kind), None)
        code, what = self.clash(staff, start, end, until, kind, exclude, prefer)
        if code is None:
            return None, what
        span_text = f"from {self.local(what[0])} to {self.local(what[1])}"
        return {
            "time_off": FieldError("starts_at", code, f"{member.name} is off {span_text}"),
            "busy": FieldError("staff", code, f"{member.name} is booked {span_text} (cleaning up included)"),
            "unavailable": FieldError("resource", code, f"no {kind} is free {span_text}"),
        }[code], None

    def local(self, when: dt.datetime) -> str:
        return when.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")


def midnight(tz: ZoneInfo, day: dt.date) -> dt.datetime:
    """When the salon's local ``day`` starts, in UTC."""
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)


def span(lines: list[Line], start: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """When the services end, and when the staff member is free again (the last one's buffer)."""
    end = start + dt.timedelta(minutes=sum(line.duration for line in lines))
    return end, end + dt.timedelta(minutes=lines[-1].buffer_after)


async def lock(deployment: Any, staff: list[int], kinds: list[str]) -> None:
    """PostgreSQL: hold the staff members and every resource of ``kinds`` until the transaction
    ends, always in the same order (staff, then resources, by id) so two bookings never wait on
    each other. A transaction takes all its locks at once: later calls only ask for held ones."""
    db = deployment.db
    if db.dialect != "postgres":
        return
    resources = []
    if kinds:
        resources = [r[0] for r in await db.fetch(
            f'SELECT "id" FROM "{_table(deployment, RESOURCE)}" WHERE "kind" IN ({_marks(kinds)}) ORDER BY "id"', kinds)]
    for namespace, ids in ((STAFF, sorted(set(staff))), (RESOURCE, resources)):
        for key in ids:
            await db.execute("SELECT pg_advisory_xact_lock(hashtext(?), ?)", [namespace, key])


# -- the guard of the one write path ------------------------------------------------------------


def before_save(change: Change, deployment: Any) -> Any:
    if _loading.get():
        return None
    if change.entity == APPOINTMENT_SERVICE and _plan.get() is None:
        raise refuse("appointment", "read_only", f"an appointment's services are booked with it: POST {ROUTE} "
                     f"or PATCH {ROUTE}/{{id}}")
    if change.entity == HOURS and change.action in ("create", "update"):
        if change.batch is None:
            _check_hours({**(change.before or {}), **change.values})
        for index, values in enumerate(change.batch or ()):
            _check_hours({**(change.befores[index] if change.befores else {}), **values}, f"rows[{index}].")
    if change.entity == APPOINTMENT:
        if change.batch is not None:
            raise refuse("rows", "one_at_a_time", f"appointments are booked one at a time: POST {ROUTE}")
        if change.action in ("create", "update"):
            return _appointment(change, deployment)
        if change.action == "restore":
            return _restore(change.before, deployment)
    return None


def _check_hours(values: dict[str, Any], where: str = "") -> None:
    for name in ("start_time", "end_time", "break_start", "break_end"):
        if values.get(name) and not _TIME.match(values[name]):
            raise refuse(where + name, "invalid", "a time as HH:MM, e.g. 09:30")
    if values["start_time"] >= values["end_time"]:
        raise refuse(where + "end_time", "invalid", "the day ends after it starts (the same day)")
    if bool(values.get("break_start")) != bool(values.get("break_end")):
        raise refuse(where + "break_end", "required", "a break has a start and an end, or neither")
    if values.get("break_start") and not values["start_time"] <= values["break_start"] < values["break_end"] <= values["end_time"]:
        raise refuse(where + "break_start", "invalid", "the break lies within the working hours and ends after it starts")


async def _appointment(change: Change, deployment: Any) -> None:
    plan = _plan.get()
    values, before = change.values, change.before or {}
    if change.action == "create":
        if plan is None:
            raise refuse("services", "required", f"book an appointment with its services: POST {ROUTE} "
                         "(client, staff, services, starts_at)")
        if values.get("status") not in MOVABLE:
            raise refuse("status", "invalid", "a new appointment is booked or confirmed")
        values.update(await _place(deployment, values, plan))
        return
    for name in COMPUTED:  # a form sending them back unchanged is fine; changing them is not
        if name in values and values[name] == before.get(name):
            del values[name]
        elif name in values and plan is None:
            raise refuse(name, "read_only", f"{name} follows from the services, the time and the staff member")
    old, status = before["status"], values.get("status", before["status"])
    if status != old and status not in MOVES[old]:
        allowed = ", ".join(sorted(MOVES[old])) or "none"
        raise refuse("status", "invalid_move", f"a {old} appointment cannot become {status} (allowed: {allowed})")
    if status == "cancelled" and status != old and not values.get("cancel_reason", before.get("cancel_reason")):
        raise refuse("cancel_reason", "required", "say why the appointment is cancelled")
    moved = plan is not None or any(n in values and values[n] != before.get(n) for n in ("starts_at", "staff"))
    if moved:
        if old not in MOVABLE or status not in MOVABLE:
            raise refuse("starts_at", "not_movable", f"a {status if status not in MOVABLE else old} appointment is not moved")
        values.update(await _place(deployment, {**before, **values}, plan or await _booked_lines(deployment, before["id"]),
                                   exclude=before["id"], prefer=before.get("resource")))


async def _restore(before: dict[str, Any], deployment: Any) -> None:
    """A trashed appointment freed its slot: it comes back only if the slot is still free."""
    if before["status"] not in MOVABLE or before["starts_at"] < deployment.clock.now():
        return
    placed = await _place(deployment, before, await _booked_lines(deployment, before["id"]), exclude=before["id"],
                          prefer=before.get("resource"))
    if placed["resource"] != before.get("resource"):
        raise refuse("resource", "unavailable", "its resource was given to another appointment: book it again")


async def _place(deployment: Any, values: dict[str, Any], lines: list[Line], exclude: int | None = None,
                 prefer: int | None = None) -> dict[str, Any]:
    """The computed fields of ``lines`` booked at ``values``' time with its staff member, or the
    refusal naming what is in the way."""
    if not lines:
        raise refuse("services", "required", "an appointment has at least one service")
    start, staff = values["starts_at"], values["staff"]
    if start < deployment.clock.now():
        raise refuse("starts_at", "past", "this time has passed; choose a time from now on")
    end, until = span(lines, start)
    await lock(deployment, [staff], [line.resource_kind for line in lines if line.resource_kind])
    calendar = await Calendar.load(deployment, [staff], start, until)
    error, resource = calendar.refusal(staff, lines, start, exclude, prefer)
    if error is not None:
        raise ValidationError([error])
    price = Money(sum((line.price.amount for line in lines), Decimal(0)), lines[0].price.currency)
    return {"ends_at": end, "blocked_until": until, "price": price, "resource": resource}
