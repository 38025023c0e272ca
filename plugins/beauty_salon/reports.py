"""The salon's reports on the core's report engine (one GROUP BY in SQL over the appointments the
reader may read, with charts and CSV/XLSX exports; a period is the run's extra filter on
``starts_at``):

- ``beauty_salon.revenue_by_staff_month``: completed visits, their revenue (the prices booked)
  and average bill, per staff member and month, per currency;
- ``beauty_salon.no_shows_by_staff``: per staff member, the appointments that were due by now,
  and how many of them were completed, missed and cancelled.

What one GROUP BY over one table cannot say is in :mod:`.staff_reports`, in SQL of its own with
routes: commissions (each staff member's revenue times *their* rate, a field of another table:
the engine's measures neither join nor multiply), utilisation (booked minutes against the
minutes of working hours, which are no rows to add up) and the services' popularity (booked
service rows counted by their appointment's status, on another table).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .entities import APPOINTMENT


def _status(status: str) -> dict[str, Any]:
    return {"field": "status", "op": "eq", "value": status}


def reports(register: Any, deployment: Any) -> None:
    register({
        "name": "revenue_by_staff_month", "label": "Revenue by staff member and month", "entity": APPOINTMENT,
        "description": "Completed visits per staff member and month: how many, their prices added up, the average bill.",
        "filter": _status("completed"), "group_by": ["staff", {"field": "starts_at", "bucket": "month"}],
        "measures": [{"op": "count", "name": "visits", "label": "Visits"},
                     {"op": "sum", "field": "price", "name": "revenue", "label": "Revenue"},
                     {"op": "avg", "field": "price", "name": "average_bill", "label": "Average bill"}],
        "sort": ["starts_at_month", "-revenue"], "chart": "bar"})
    register(_no_shows(dt.datetime.now(dt.UTC)), make=_no_shows)


def _no_shows(now: dt.datetime) -> dict[str, Any]:
    """Appointments due before ``now`` (the run's time): the ones ahead cannot be missed yet."""
    return {"name": "no_shows_by_staff", "label": "No-shows by staff member", "entity": APPOINTMENT,
            "description": "Per staff member, the appointments due by now: completed, missed (no-show) and cancelled.",
            "filter": {"field": "starts_at", "op": "lt", "value": now.isoformat()}, "group_by": ["staff"],
            "measures": [{"op": "count", "name": "appointments", "label": "Appointments due"},
                         {"op": "count", "name": "completed", "label": "Completed", "filter": _status("completed")},
                         {"op": "count", "name": "no_shows", "label": "No-shows", "filter": _status("no_show")},
                         {"op": "count", "name": "cancelled", "label": "Cancelled", "filter": _status("cancelled")}],
            "sort": ["-no_shows"], "chart": "bar"}
