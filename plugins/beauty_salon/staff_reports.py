"""The salon's reports that one GROUP BY of the core's report engine cannot say (see
:mod:`.reports`), each a function over a period of the salon's local days (``first`` to ``last``,
both included), served by :mod:`.routes` as ``{"from", "to", "rows"}``:

- :func:`commissions` (``GET /api/beauty_salon/commissions?from=&to=``): per staff member, the
  completed visits, their revenue (the prices booked) summed in SQL per currency, their
  ``commission_rate`` and the commission, revenue × rate / 100 rounded half up to the cent
  (the rate is a field of the staff member: the engine's measures neither join nor multiply);
- :func:`utilisation` (``GET /api/beauty_salon/utilisation?from=&to=``): per staff member and
  week (from Monday), the minutes booked (holding appointments, their services' time without the
  cleaning up) against the minutes of their working hours (breaks and time off taken out, a day
  the clocks change at its real length), and the share booked; the working minutes are no rows
  to add up, so they are worked out from the hours as the booking checks read them;
- :func:`service_popularity` (``GET /api/beauty_salon/service_popularity?from=&to=``): per
  service, how often it was done in completed visits and what it brought in (the service rows
  counted by their appointment's status, a field of another table).

Each reads only what the reader may: the appointments (and service rows) within their role's
scope, hidden fields refused.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crmcore import Forbidden, ListQuery

from .entities import APPOINTMENT, APPOINTMENT_SERVICE, HOLDING, SERVICE, STAFF
from .metrics import _money
from .scheduling import Calendar, db_time, midnight, refuse

__all__ = ["commissions", "service_popularity", "utilisation"]

#: The longest period one report covers, in days.
MAX_DAYS = 366
CENT = Decimal("0.01")
PRICE = '"price"'


def _period(deployment: Any, first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The local days ``first`` to ``last`` as UTC instants [start, end)."""
    if last < first:
        raise refuse("to", "invalid", "the period ends on or after its start")
    if (last - first).days >= MAX_DAYS:
        raise refuse("to", "too_long", f"a report covers at most {MAX_DAYS} days")
    tz = ZoneInfo(deployment.settings.timezone)
    return midnight(tz, first), midnight(tz, last + dt.timedelta(days=1))


def _where(deployment: Any, actor: Any, entity: str, needs: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The reader's scope of ``entity`` as SQL over its bare columns, refused when a field the
    report adds up is hidden from them."""
    _, fields, scope = deployment.records.as_actor(actor).readable(entity)
    for name in needs:
        if name not in fields:
            raise Forbidden(f"this report uses {entity}.{name}, which your role may not see")
    return ('"deleted_at" IS NULL' + (f" AND {scope[0]}" if scope else ""), list(scope[1]) if scope else [])


def _amount(deployment: Any, total: Any) -> Decimal:
    """A sum of :func:`.metrics._money` as a Decimal."""
    if deployment.db.dialect == "sqlite":
        return (Decimal(int(total)) / 10000).quantize(CENT)
    return Decimal(total).quantize(CENT)


async def _titles(deployment: Any, actor: Any, entity: str, ids: set[int], fields: list[str]) -> dict[int, dict]:
    if not ids:
        return {}
    page = await deployment.records.as_actor(actor).list(entity, ListQuery(
        filter={"field": "id", "op": "in", "value": sorted(ids)}, limit=500, fields=fields))
    return {item["id"]: item for item in page.items}


async def commissions(deployment: Any, actor: Any, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """``[{staff, name, currency, visits, revenue, rate, commission}]`` for completed visits
    starting in the period, by staff member."""
    start, end = _period(deployment, first, last)
    where, params = _where(deployment, actor, APPOINTMENT, ("staff", "price", "status", "starts_at"))
    table = deployment.registry.get(APPOINTMENT).table
    rows = await deployment.db.fetch(
        f'SELECT "staff", "price__currency", COUNT(*), SUM({_money(PRICE, deployment.db.dialect)}) '
        f'FROM "{table}" WHERE {where} AND "status" = ? AND "starts_at" >= ? AND "starts_at" < ? '
        'GROUP BY "staff", "price__currency" ORDER BY "staff", "price__currency"',
        [*params, "completed", db_time(deployment, start), db_time(deployment, end)])
    staff = await _titles(deployment, actor, STAFF, {row[0] for row in rows}, ["name", "commission_rate"])
    found = []
    for member, currency, visits, total in rows:
        revenue = _amount(deployment, total or 0)
        rate = Decimal(str(staff.get(member, {}).get("commission_rate") or 0))
        found.append({"staff": member, "name": staff.get(member, {}).get("name"), "currency": currency,
                      "visits": visits, "revenue": revenue, "rate": rate,
                      "commission": (revenue * rate / 100).quantize(CENT, ROUND_HALF_UP)})
    return found


def _minus(spans: list[tuple[dt.datetime, dt.datetime]], cut: tuple[dt.datetime, dt.datetime]) -> list:
    """``spans`` without the time of ``cut``."""
    left = []
    for start, end in spans:
        if cut[1] <= start or cut[0] >= end:
            left.append((start, end))
            continue
        if start < cut[0]:
            left.append((start, cut[0]))
        if cut[1] < end:
            left.append((cut[1], end))
    return left


async def utilisation(deployment: Any, actor: Any, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """``[{staff, name, week, working_minutes, booked_minutes, utilisation}]`` for each active
    staff member and week (its Monday) of the period, a week cut by the period counting its days
    in the period only; utilisation in percent, one decimal, empty for a week without working
    hours."""
    start, end = _period(deployment, first, last)
    where, params = _where(deployment, actor, APPOINTMENT, ("staff", "status", "starts_at", "ends_at"))
    tz = ZoneInfo(deployment.settings.timezone)
    calendar = await Calendar.load(deployment, None, start, end)
    working: dict[tuple[int, dt.date], float] = defaultdict(float)
    for member in calendar.members:
        for offset in range((last - first).days + 1):
            day = first + dt.timedelta(days=offset)
            monday = day - dt.timedelta(days=day.weekday())
            working[member, monday] += 0  # a week without hours is still listed
            for window in calendar.windows(member, day):
                spans = [(window.start, window.end)]
                for cut in ([(window.break_start, window.break_end)] if window.break_start else []) + [
                        off for off in calendar.time_off.get(member, ())]:
                    spans = _minus(spans, cut)
                working[member, monday] += sum((b - a).total_seconds() for a, b in spans) / 60
    table = deployment.registry.get(APPOINTMENT).table
    holding = list(HOLDING)
    booked: dict[tuple[int, dt.date], float] = defaultdict(float)
    for member, starts, ends in await deployment.db.fetch(
            f'SELECT "staff", "starts_at", "ends_at" FROM "{table}" WHERE {where} '
            f'AND "status" IN ({", ".join("?" for _ in holding)}) AND "starts_at" >= ? AND "starts_at" < ?',
            [*params, *holding, db_time(deployment, start), db_time(deployment, end)]):
        starts, ends = (dt.datetime.fromisoformat(t) if isinstance(t, str) else t for t in (starts, ends))
        day = starts.astimezone(tz).date()
        booked[member, day - dt.timedelta(days=day.weekday())] += (ends - starts).total_seconds() / 60
    names = await _titles(deployment, actor, STAFF, {member for member, _ in working}, ["name"])
    rows = []
    for (member, monday), minutes in sorted(working.items()):
        if member not in names:  # a staff member the reader may not see
            continue
        done = booked.get((member, monday), 0)
        rows.append({"staff": member, "name": names[member]["name"], "week": monday.isoformat(),
                     "working_minutes": round(minutes), "booked_minutes": round(done),
                     "utilisation": (Decimal(done * 100 / minutes).quantize(Decimal("0.1"), ROUND_HALF_UP)
                                     if minutes else None)})
    return rows


async def service_popularity(deployment: Any, actor: Any, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """``[{service, name, category, currency, times, revenue}]``: the services done in completed
    visits starting in the period, the most done first."""
    start, end = _period(deployment, first, last)
    rows_where, rows_params = _where(deployment, actor, APPOINTMENT_SERVICE, ("service", "price", "appointment"))
    where, params = _where(deployment, actor, APPOINTMENT, ("status", "starts_at"))
    dialect = deployment.db.dialect
    rows = await deployment.db.fetch(
        f'SELECT "service", "price__currency", COUNT(*), SUM({_money(PRICE, dialect)}) '
        f'FROM "{deployment.registry.get(APPOINTMENT_SERVICE).table}" WHERE {rows_where} AND "appointment" IN ('
        f'SELECT "id" FROM "{deployment.registry.get(APPOINTMENT).table}" WHERE {where} AND "status" = ? '
        'AND "starts_at" >= ? AND "starts_at" < ?) GROUP BY "service", "price__currency" ORDER BY 3 DESC, 1',
        [*rows_params, *params, "completed", db_time(deployment, start), db_time(deployment, end)])
    services = await _titles(deployment, actor, SERVICE, {row[0] for row in rows}, ["name", "category"])
    return [{"service": service, "name": services.get(service, {}).get("name"),
             "category": services.get(service, {}).get("category"), "currency": currency, "times": times,
             "revenue": _amount(deployment, total or 0)} for service, currency, times, total in rows]

