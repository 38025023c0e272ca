"""HTTP routes of the beauty salon plugin (JSON; refusals as problem+json naming the field).

``POST /api/beauty_salon/appointments``: book ``{client, staff?, services: [ids], starts_at,
notes?, source?, status?}`` (no staff: the first free one who does every service); the
appointment and its service rows are written in one transaction, with its end, cleaning-up time,
price and resource computed. ``GET|PATCH /api/beauty_salon/appointments/{id}``: read it with its
services; move it ``{version, starts_at?, staff?, services?, notes?}`` (stale version: 409).
Status changes (confirm, arrive, complete, cancel with ``cancel_reason``, no-show) go through the
generic ``PATCH /api/beauty_salon_appointment/{id}``.

``GET /api/beauty_salon/availability?service=ID[&service=ID2]&staff=ID&from=YYYY-MM-DD&to=YYYY-MM-DD&step=15``:
free start times per staff member, in the salon's time zone.

``GET /api/beauty_salon/commissions|utilisation|service_popularity?from=YYYY-MM-DD&to=YYYY-MM-DD``:
the staff reports of :mod:`.staff_reports` over those local days, ``{"from", "to", "rows"}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Request, get, patch, post

from crmcore import FieldError, Forbidden, ValidationError
from crmcore.api import CurrentActor, CurrentDeployment

from .availability import free_slots
from .booking import book, move, read
from .entities import APPOINTMENT
from .staff_reports import commissions, service_popularity, utilisation

__all__ = ["ROUTES"]

MAX_BODY = 64 * 1024


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ValidationError([FieldError("body", "too_large", f"a body is at most {MAX_BODY // 1024} KB")])
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValidationError([FieldError("body", "invalid_json", f"the body is not valid JSON: {exc}")]) from None


def _ids(request: Request, name: str) -> list[int]:
    values = request.query_params.getall(name, [])
    if not all(value.isdigit() for value in values):
        raise ValidationError([FieldError(name, "invalid", "the id of a record")])
    return [int(value) for value in values]


def _day(request: Request, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(request.query_params.get(name) or "")
    except ValueError:
        raise ValidationError([FieldError(name, "invalid", "a date as YYYY-MM-DD")]) from None


@post("/api/beauty_salon/appointments", status_code=201)
async def book_appointment(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await book(deployment, actor, await _body(request))


@get("/api/beauty_salon/appointments/{appointment_id:int}")
async def read_appointment(appointment_id: int, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await read(deployment, actor, appointment_id)


@patch("/api/beauty_salon/appointments/{appointment_id:int}")
async def move_appointment(appointment_id: int, request: Request, actor: CurrentActor,
                           deployment: CurrentDeployment) -> dict[str, Any]:
    return await move(deployment, actor, appointment_id, await _body(request))


@get("/api/beauty_salon/availability")
async def availability(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    if not actor.can(APPOINTMENT, "read"):
        raise Forbidden("your role may not read appointments")
    staff = _ids(request, "staff")
    step = request.query_params.get("step") or "15"
    if not step.isdigit():
        raise ValidationError([FieldError("step", "invalid", "minutes between starts, 5 to 240")])
    return await free_slots(deployment, _ids(request, "service"), staff[0] if staff else None,
                            _day(request, "from"), _day(request, "to"), int(step))


async def _report(request: Request, actor: Any, deployment: Any, report: Any) -> dict[str, Any]:
    first, last = _day(request, "from"), _day(request, "to")
    return {"from": first.isoformat(), "to": last.isoformat(), "rows": await report(deployment, actor, first, last)}


@get("/api/beauty_salon/commissions")
async def commissions_report(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await _report(request, actor, deployment, commissions)


@get("/api/beauty_salon/utilisation")
async def utilisation_report(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict[str, Any]:
    return await _report(request, actor, deployment, utilisation)


@get("/api/beauty_salon/service_popularity")
async def service_popularity_report(request: Request, actor: CurrentActor,
                                    deployment: CurrentDeployment) -> dict[str, Any]:
    return await _report(request, actor, deployment, service_popularity)


ROUTES = [book_appointment, read_appointment, move_appointment, availability, commissions_report, utilisation_report,
          service_popularity_report]
