"""Free start times for some services over a date range, per staff member, in the salon's time
zone: the booking page's question. The range's staff, hours, time off and appointments are read
with one query each (:meth:`.scheduling.Calendar.load`), then every candidate start is tried
against them in memory with the checks the write path makes, so what is offered can be booked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from .scheduling import Calendar, load_lines, midnight, refuse, span

#: The longest range one search covers, in days.
MAX_DAYS = 31


async def free_slots(deployment: Any, services: list[int], staff: int | None, first: dt.date, last: dt.date,
                     step: int = 15) -> dict[str, Any]:
    """``{"timezone", "minutes", "staff": [{"id", "name", "slots": [ISO times with offset]}]}``:
    the starts from now on at which ``services`` fit, every ``step`` minutes from the start of
    each stretch of working hours, for ``staff`` or everyone active who does them all."""
    if last < first:
        raise refuse("to", "invalid", "the range ends on or after its start")
    if (last - first).days >= MAX_DAYS:
        raise refuse("to", "too_long", f"a search covers at most {MAX_DAYS} days")
    if not 5 <= step <= 240:
        raise refuse("step", "invalid", "minutes between starts, 5 to 240")
    lines = await load_lines(deployment, services, "service")
    tz = ZoneInfo(deployment.settings.timezone)
    calendar = await Calendar.load(deployment, [staff] if staff is not None else None,
                                   midnight(tz, first), midnight(tz, last + dt.timedelta(days=1)))
    now = deployment.clock.now()
    kind = next((line.resource_kind for line in lines if line.resource_kind), None)
    every = dt.timedelta(minutes=step)
    found = []
    for member in calendar.members.values():
        if calendar.unfit(member.id, lines) is not None:
            continue
        slots = []
        for offset in range((last - first).days + 1):
            for window in calendar.windows(member.id, first + dt.timedelta(days=offset)):
                at = window.start
                end, until = span(lines, at)
                while end <= window.end:  # stepping in UTC: a DST day's hours have their real length
                    steps = 1
                    if at >= now and window.refusal(at, end) is None:
                        code, what = calendar.clash(member.id, at, end, until, kind)
                        if code is None:
                            slots.append(at.astimezone(tz).isoformat())
                        elif code == "busy":  # no start is free before that appointment is over
                            steps = max(1, -((at - what[1]) // every))
                    at, end, until = at + steps * every, end + steps * every, until + steps * every
        found.append({"id": member.id, "name": member.name, "slots": slots})
    minutes = sum(line.duration for line in lines)
    return {"timezone": deployment.settings.timezone, "minutes": minutes, "staff": found}
