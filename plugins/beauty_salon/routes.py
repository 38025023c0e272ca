"""HTTP routes of the beauty salon plugin (JSON; refusals as problem+json naming the field).

``POST /api/beauty_salon/appointments``: book ``{client, staff?, services: [ids], starts_at,
notes?, source?, status?}`` (no staff: the first free one who does every service); the
appointment and its service rows are written in one transaction, with its end, cleaning-up time,
price and resource computed. ``GET|PATCH /api/beauty_salon/appointments/{id}``: read it with its
services; move it ``{version, starts_at?, staff?, services?, notes?}`` (stale version: 409).
Status changes (confirm, arrive, complete, cancel with ``cancel_reason``, no-show) go through the
generic ``PATCH /api/beauty_salon_appointment/{id}``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, patch, post

from crmcore import FieldError, ValidationError
from crmcore.api import CurrentActor, CurrentDeployment

from .booking import book, move, read

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


ROUTES = [book_appointment, read_appointment, move_appointment]
