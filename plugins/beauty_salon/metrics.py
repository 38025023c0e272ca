"""Client metrics, computed in SQL and kept on the client (``contact``) as filterable fields.

What each one means (over the client's live appointments):

- ``salon_visits``: completed appointments; ``salon_no_shows``: appointments marked no-show;
- ``salon_first_visit`` / ``salon_last_visit``: the start of the first / latest completed one;
- ``salon_average_days``: days between visits on average, (last - first) / (visits - 1), one
  decimal; empty below two visits;
- ``salon_average_bill``: the average price of the completed visits that have a price;
- ``salon_total_spent``: what completed visits brought in: each one's ``paid`` when recorded,
  else its price (a visit whose payment was not entered was still paid at the desk);
- ``salon_favourite_staff``: who did most of their completed visits, and
  ``salon_favourite_service`` the service booked most in them (a tie goes to the one seen most
  recently, then to the lowest id).

A salon charges in one currency: the money metrics take the currency of the visits' prices.

They are recomputed, for the clients an appointment (or one of its services) names, after every
committed write of it, and written through the records service as the system, so the audit
history and webhooks see them like any change. Nobody else writes them: :func:`refuse_writes`
(the plugin's before-save check) refuses any other write of them, naming the field.
:func:`recompute_all` rebuilds every client's (after an import, or enabling the
plugin on a deployment with history).

"Not seen for N days" (win-back) is the contact list's filter :func:`not_seen_filter`
(``salon_last_visit lt <now - N days>``), e.g. ``GET /api/contact?filter=...``, or saved as a
view (segment) from the contact list; the upcoming appointment and the last visits are read
when the card is shown (they change with the clock, not with a write).
"""

from __future__ import annotations

import contextvars
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import babel.numbers

from crmcore import Field, FieldError, FieldType, Forbidden, ListQuery, Money, UIItem, ValidationError, relation_titles

from .entities import APPOINTMENT, APPOINTMENT_SERVICE, SERVICE, STAFF

T = FieldType

CLIENT = "contact"
CHUNK = 500
RECENT_VISITS = 5
#: Kept current by :func:`after_commit`.
FIELDS = [
    Field(name="salon_visits", type=T.INTEGER, indexed=True, label="Salon visits", help_text="completed appointments"),
    Field(name="salon_last_visit", type=T.DATETIME, indexed=True, label="Last salon visit",
          help_text="filter it for clients not seen for a while"),
    Field(name="salon_first_visit", type=T.DATETIME, label="First salon visit"),
    Field(name="salon_average_days", type=T.DECIMAL, indexed=True, label="Days between visits",
          help_text="on average, between the first and the last visit"),
    Field(name="salon_average_bill", type=T.MONEY, label="Average bill"),
    Field(name="salon_total_spent", type=T.MONEY, indexed=True, label="Total spent at the salon",
          help_text="what completed visits were paid (their price when no payment is recorded)"),
    Field(name="salon_no_shows", type=T.INTEGER, indexed=True, label="No-shows"),
    Field(name="salon_favourite_staff", type=T.RELATION, target=STAFF, indexed=True, label="Favourite staff member"),
    Field(name="salon_favourite_service", type=T.RELATION, target=SERVICE, label="Favourite service"),
]
NAMES = [f.name for f in FIELDS]


def client_fields(add_field: Any) -> None:
    for field in FIELDS:
        add_field(CLIENT, field)


# -- the SQL -------------------------------------------------------------------------------------


def _money(column: str, dialect: str) -> str:
    """A money column as a number SQL sums exactly: NUMERIC on PostgreSQL; on SQLite (decimal
    text) whole ten-thousandths, as the core's reports do (no currency has more decimals)."""
    return f'CAST(ROUND(CAST({column} AS REAL) * 10000) AS INTEGER)' if dialect == "sqlite" else column


def _favourite(what: str, target: str, source: str, marks: str) -> str:
    """Per client, the ``what`` (a live record of table ``target``: a departed staff member is
    nobody's favourite) of most completed visits, ranked 1; ties go to the one seen latest,
    then to the lowest id."""
    return (f'SELECT a."client", {what} AS "pick", ROW_NUMBER() OVER (PARTITION BY a."client" '
            f'ORDER BY COUNT(*) DESC, MAX(a."starts_at") DESC, {what}) AS "rank" FROM {source} '
            f'JOIN "{target}" f ON f."id" = {what} AND f."deleted_at" IS NULL '
            f'WHERE a."deleted_at" IS NULL AND a."status" = \'completed\' AND a."client" IN ({marks}) '
            f'GROUP BY a."client", {what}')


def metrics_sql(tables: dict[str, str], dialect: str, count: int) -> str:
    """One statement giving, per client of ``count`` ids (bound three times: the ids, thrice),
    ``client, visits, first, last, no_shows, priced, price_sum, spent, currency, staff,
    service``; a client without appointments gives no row. ``tables``: entity name -> table."""
    marks = ", ".join("?" * count)
    price, paid = _money('a."price"', dialect), _money('a."paid"', dialect)
    done = "a.\"status\" = 'completed'"
    appointments = tables[APPOINTMENT]
    staff = _favourite('a."staff"', tables[STAFF], f'"{appointments}" a', marks)
    service = _favourite('s."service"', tables[SERVICE], f'"{tables[APPOINTMENT_SERVICE]}" s JOIN "{appointments}" a '
                         'ON a."id" = s."appointment" AND s."deleted_at" IS NULL', marks)
    return (
        f'WITH totals AS (SELECT a."client", SUM(CASE WHEN {done} THEN 1 ELSE 0 END) AS "visits", '
        f'MIN(CASE WHEN {done} THEN a."starts_at" END) AS "first", '
        f'MAX(CASE WHEN {done} THEN a."starts_at" END) AS "last", '
        f'SUM(CASE WHEN a."status" = \'no_show\' THEN 1 ELSE 0 END) AS "no_shows", '
        f'COUNT(CASE WHEN {done} THEN a."price" END) AS "priced", '
        f'SUM(CASE WHEN {done} THEN {price} END) AS "price_sum", '
        f'SUM(CASE WHEN {done} THEN COALESCE({paid}, {price}) END) AS "spent", '
        f'MAX(CASE WHEN {done} THEN COALESCE(a."price__currency", a."paid__currency") END) AS "currency" '
        f'FROM "{appointments}" a WHERE a."deleted_at" IS NULL AND a."client" IN ({marks}) GROUP BY a."client"), '
        f'staff AS ({staff}), service AS ({service}) '
        'SELECT t."client", t."visits", t."first", t."last", t."no_shows", t."priced", t."price_sum", t."spent", '
        't."currency", staff."pick", service."pick" FROM totals t '
        'LEFT JOIN staff ON staff."client" = t."client" AND staff."rank" = 1 '
        'LEFT JOIN service ON service."client" = t."client" AND service."rank" = 1'
    )


def _time(value: Any) -> dt.datetime | None:
    """A timestamp as the database gave it (ISO text on SQLite) as an aware datetime."""
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _values(row: tuple | None, dialect: str, default_currency: str) -> dict[str, Any]:
    """The fields' values from a row of :func:`metrics_sql` (None: no appointments at all)."""
    if row is None:
        return {**dict.fromkeys(NAMES), "salon_visits": 0, "salon_no_shows": 0}
    _, visits, first, last, no_shows, priced, price_sum, spent, currency, staff, service = row
    first, last = _time(first), _time(last)
    currency = currency or default_currency
    unit = Decimal(1).scaleb(-babel.numbers.get_currency_precision(currency))

    def money(total: Any, count: int = 1) -> Money | None:
        if total is None or not count:
            return None
        total = Decimal(int(total)) / 10000 if dialect == "sqlite" else Decimal(total)
        return Money((total / count).quantize(unit, ROUND_HALF_UP), currency)

    average_days = None
    if visits > 1:
        days = Decimal((last - first).total_seconds()) / 86400 / (visits - 1)
        average_days = days.quantize(Decimal("0.1"), ROUND_HALF_UP)
    return {"salon_visits": visits, "salon_last_visit": last, "salon_first_visit": first,
            "salon_average_days": average_days, "salon_average_bill": money(price_sum, priced),
            "salon_total_spent": money(spent), "salon_no_shows": no_shows,
            "salon_favourite_staff": staff, "salon_favourite_service": service}


async def compute(deployment: Any, client_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The metrics' field values of each client of ``client_ids`` (at most :data:`CHUNK`), in
    one SQL statement over every appointment (no permission applies: they describe the client)."""
    records, db = deployment.records, deployment.db
    tables = {name: records.entity(name).table for name in (APPOINTMENT, APPOINTMENT_SERVICE, STAFF, SERVICE)}
    sql = metrics_sql(tables, db.dialect, len(client_ids))
    rows = {row[0]: row for row in await db.fetch(sql, [*client_ids] * 3)}
    currency = deployment.settings.currency
    return {client: _values(rows.get(client), db.dialect, currency) for client in client_ids}


def _same(current: dict[str, Any], values: dict[str, Any]) -> bool:
    return all(current.get(name) == value for name, value in values.items())


async def recompute(deployment: Any, client_ids: Any) -> int:
    """Compute and store the metrics of ``client_ids`` (live contacts; others are skipped), as
    the system, writing only the clients whose values changed; returns how many were written."""
    written, ids = 0, sorted(set(client_ids))
    for start in range(0, len(ids), CHUNK):
        page = await deployment.records.list(CLIENT, ListQuery(
            filter={"field": "id", "op": "in", "value": ids[start:start + CHUNK]}, limit=CHUNK, fields=NAMES))
        written += await _store(deployment, page.items)
    return written


async def recompute_all(deployment: Any) -> int:
    """Rebuild every client's metrics (after an import, or once the plugin is enabled on a
    deployment with history): one SQL statement and at most one bulk write per
    :data:`CHUNK` clients. Returns how many clients changed."""
    written, cursor = 0, None
    while True:
        page = await deployment.records.list(CLIENT, ListQuery(sort=["id"], limit=CHUNK, cursor=cursor, fields=NAMES))
        written += await _store(deployment, page.items)
        if not page.next_cursor:
            return written
        cursor = page.next_cursor


async def _store(deployment: Any, clients: list[dict[str, Any]]) -> int:
    if not clients:
        return 0
    metrics = await compute(deployment, [client["id"] for client in clients])
    changed = [{"id": client["id"], **metrics[client["id"]]} for client in clients
               if not _same(client, metrics[client["id"]])]
    if changed:
        token = _storing.set(True)
        try:
            await deployment.records.bulk_update(CLIENT, changed)
        finally:
            _storing.reset(token)
    return len(changed)


#: Set while the metrics store what they computed: the only writes of their fields.
_storing: contextvars.ContextVar[bool] = contextvars.ContextVar("salon_metrics_storing", default=False)


def refuse_writes(change: Any) -> None:
    """The metrics are computed: a client's form, the API, an import or a rule may not set them."""
    if change.entity != CLIENT or _storing.get():
        return
    rows = change.batch if change.batch else [change.values]
    befores = change.befores or [change.before or {}] * len(rows)
    for values, before in zip(rows, befores):  # a form sending a value back unchanged is fine
        given = sorted(name for name in set(values) & set(NAMES) if values[name] != (before or {}).get(name))
        if given:
            raise ValidationError([FieldError(given[0], "read_only", f"{given[0]} is computed from the client's "
                                                                     "appointments; it cannot be set")])


async def after_commit(event: Any, deployment: Any) -> None:
    """Recompute the clients of a written appointment or booked service. The metrics' own write
    (to ``contact``) comes back here as an event of the contact, which is ignored."""
    if event.entity == APPOINTMENT:
        ids = {record.get("client") for record in event.records}
        ids |= {change["client"][0] for change in event.changes if "client" in change}
    elif event.entity == APPOINTMENT_SERVICE:
        appointments, ids = sorted({record["appointment"] for record in event.records}), set()
        for start in range(0, len(appointments), CHUNK):  # a bulk write's event holds thousands
            page = await deployment.records.list(APPOINTMENT, ListQuery(
                filter={"field": "id", "op": "in", "value": appointments[start:start + CHUNK]}, limit=CHUNK,
                fields=["client"]))
            ids |= {item["client"] for item in page.items}
    else:
        return
    await recompute(deployment, ids - {None})


def not_seen_filter(days: int, now: dt.datetime) -> dict[str, Any]:
    """The contact list's filter of clients who have come, but not in the ``days`` days before
    ``now`` (win-back): ``GET /api/contact?filter=<this, as JSON>``."""
    return {"field": "salon_last_visit", "op": "lt", "value": (now - dt.timedelta(days=days)).isoformat()}


# -- the client card ----------------------------------------------------------------------------


def metrics_ui_items(register: Any) -> None:
    register(UIItem(slot="record.panel", entity=CLIENT, name="salon_metrics", label="Salon",
                    template="beauty_salon/metrics_panel.html", order=20, context=panel_context))


async def panel_context(deployment: Any, actor: Any, record: dict[str, Any], entity: str) -> dict[str, Any]:
    """The names of the favourite staff member and service, the next appointment and the last
    visits, read as the viewer (the metrics themselves are the record's fields)."""
    titles = await relation_titles(deployment, actor, deployment.registry.get(CLIENT), [record])
    out: dict[str, Any] = {
        "favourite_staff": titles.get((STAFF, record.get("salon_favourite_staff"))),
        "favourite_service": titles.get((SERVICE, record.get("salon_favourite_service"))),
        "appointments": False}
    records = deployment.records.as_actor(actor)
    client = {"field": "client", "op": "eq", "value": record["id"]}
    try:
        upcoming = await records.list(APPOINTMENT, ListQuery(filter={"and": [
            client, {"field": "status", "op": "in", "value": ["booked", "confirmed"]},
            {"field": "starts_at", "op": "gte", "value": deployment.clock.now().isoformat()}]},
            sort=["starts_at"], limit=1))
        visits = await records.list(APPOINTMENT, ListQuery(filter={"and": [
            client, {"field": "status", "op": "eq", "value": "completed"}]}, sort=["-starts_at"], limit=RECENT_VISITS))
    except Forbidden:  # the viewer may not read appointments: the client's fields only
        return out
    shown = upcoming.items + visits.items
    staff = await relation_titles(deployment, actor, deployment.registry.get(APPOINTMENT), shown)
    return {**out, "appointments": True, "upcoming": upcoming.items[0] if upcoming.items else None,
            "visits": visits.items, "staff_names": {i: t for (target, i), t in staff.items() if target == STAFF}}
