"""Booking and moving appointments with their services, in one transaction each.

Both go through the core's records service as the acting user (permissions, audit history,
events hold); :func:`.scheduling.planned` tells the write path which services are booked, and
its checks compute the end, the price and the resource, or refuse.
"""

from __future__ import annotations

from typing import Any

from crmcore import FieldError, ListQuery, ValidationError

from .entities import APPOINTMENT, APPOINTMENT_SERVICE
from .scheduling import Calendar, Line, load_lines, lock, planned, refuse

BOOK_FIELDS = ("client", "staff", "services", "starts_at", "notes", "source", "status")
MOVE_FIELDS = ("version", "staff", "services", "starts_at", "notes")
#: Refusals that only mean "not this staff member": booking with any staff tries the next one.
_OTHER_STAFF = {"busy", "time_off", "out_of_hours", "break", "unavailable", "not_offered", "inactive"}


def _only(body: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise refuse("body", "invalid", "expected a JSON object")
    for key in body:
        if key not in keys:
            raise refuse(key, "unknown_field", "this takes: " + ", ".join(keys))
    return body


async def _service_rows(records: Any, appointment: int, lines: list[Line]) -> list[dict[str, Any]]:
    return [await records.create(APPOINTMENT_SERVICE, {
        "appointment": appointment, "service": line.service, "position": position, "duration": line.duration,
        "buffer_after": line.buffer_after, "price": line.price}) for position, line in enumerate(lines, 1)]


async def book(deployment: Any, actor: Any, body: Any) -> dict[str, Any]:
    """A new appointment and its service rows; without ``staff``, the first staff member (by
    id) who does every service and is free then."""
    data = _only(body, BOOK_FIELDS)
    lines = await load_lines(deployment, data.get("services"))
    values = {key: data[key] for key in BOOK_FIELDS if key in data and key not in ("services", "staff")}
    records = deployment.records.as_actor(actor)
    async with deployment.db.transaction():
        with planned(lines):
            if data.get("staff") is not None:
                appointment = await records.create(APPOINTMENT, {**values, "staff": data["staff"]})
            else:
                appointment = await _with_anyone(deployment, records, values, lines)
            services = await _service_rows(records, appointment["id"], lines)
    return {**appointment, "services": services}


async def _with_anyone(deployment: Any, records: Any, values: dict[str, Any], lines: list[Line]) -> dict[str, Any]:
    calendar = await Calendar.load(deployment, None, deployment.clock.now(), deployment.clock.now())
    candidates = [m.id for m in calendar.members.values()
                  if m.services is None or all(line.service in m.services for line in lines)]
    # Every candidate is locked before any is tried: the locks are taken in one order.
    await lock(deployment, candidates, [line.resource_kind for line in lines if line.resource_kind])
    for staff in candidates:
        try:
            return await records.create(APPOINTMENT, {**values, "staff": staff})
        except ValidationError as exc:
            if not all(error.code in _OTHER_STAFF for error in exc.errors):
                raise
    raise ValidationError([FieldError("staff", "unavailable", "nobody who does these services is free then; "
                                                              "choose another time (GET /api/beauty_salon/availability)")])


async def move(deployment: Any, actor: Any, appointment_id: int, body: Any) -> dict[str, Any]:
    """Reschedule (time, staff member) or change the services, at the version read (stale: 409)."""
    data = _only(body, MOVE_FIELDS)
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise refuse("version", "required", "the version of the appointment you read (an integer)")
    lines = await load_lines(deployment, data["services"]) if "services" in data else None
    records = deployment.records.as_actor(actor)
    changes = {key: data[key] for key in ("staff", "starts_at", "notes") if key in data}
    async with deployment.db.transaction():
        with planned(lines):
            await records.update(APPOINTMENT, appointment_id, changes, version=version)
            if lines is not None:
                for row in await booked_services(records, appointment_id):
                    await records.delete(APPOINTMENT_SERVICE, row["id"])
                await _service_rows(records, appointment_id, lines)
    return await read(deployment, actor, appointment_id)


async def booked_services(records: Any, appointment_id: int) -> list[dict[str, Any]]:
    page = await records.list(APPOINTMENT_SERVICE, ListQuery(
        filter={"field": "appointment", "op": "eq", "value": appointment_id}, sort=["position", "id"], limit=50))
    return page.items


async def read(deployment: Any, actor: Any, appointment_id: int) -> dict[str, Any]:
    records = deployment.records.as_actor(actor)
    appointment = await records.get(APPOINTMENT, appointment_id)
    return {**appointment, "services": await booked_services(records, appointment_id)}
