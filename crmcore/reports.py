"""Reports: saved definitions run in SQL, the core's built-in reports, charts and exports.

A report definition is data (JSON)::

    {"name": "revenue_by_owner", "label": "Revenue by owner and month", "entity": "deal",
     "filter": {"field": "stage", "op": "eq", "value": "won"},       # the records' filter language
     "group_by": ["owner_id", {"field": "expected_close", "bucket": "month"}],   # up to two
     "measures": [{"op": "count"}, {"op": "sum", "field": "amount"}],
     "sort": ["-sum_amount"], "limit": 1000, "chart": "bar"}

- ``group_by``: up to two fields; a date or datetime field is grouped by a ``bucket`` (``day``,
  ``week`` (starting Monday), ``month``, ``quarter``, ``year``), in the deployment's time zone.
- ``measures``: ``count`` (of records, or of a field's non-empty values), ``sum``, ``avg``,
  ``min``, ``max`` of a number, money (``min``/``max``: also dates) field; an optional
  ``filter`` counts only the records matching it (``{"op": "count", "filter": {...}, "name":
  "calls", "label": "Calls"}``); ``name`` is the measure's column (default ``count``,
  ``sum_amount``...). Sums of money are per currency: the currency becomes a column.
- ``sort``: column names, ``-`` first for descending; ``chart``: ``bar``, ``line``, ``pie``,
  ``funnel`` or ``none``.

A run is one ``SELECT ... GROUP BY`` in the database (never a loop over rows), limited to the
records the reader may read and refused when it names a field hidden from them: a report is a
read. Saved definitions live in ``crm_report``; the core's built-in reports and plugins' (hook
``crm_register_reports``, named ``plugin.name``) are listed beside them. The core's:

- ``sales_funnel``: deals that reached each stage of the sales pipeline or a later one (from the
  stage history), the conversion from those that entered it and from the stage before;
- ``won_lost``: won and lost deals with the lost reasons (count, amounts per currency);
- ``revenue_by_owner``: won deals' amounts by owner and month of expected close;
- ``revenue_by_owner_won_month``: the same by month of the move to a won stage;
- ``activities_per_employee``: per assignee, calls, tasks done, open activities past due;
- ``time_in_stage``: the average days deals stayed in each stage before moving on.

Each of them takes an extra filter (a period: ``{"field": "created_at", "op": "between", ...}``).
Results are ``{name, label, entity, chart, columns, rows, labels, truncated}``; :func:`to_csv`,
:func:`to_xlsx` and :func:`chart_svg` (bar, line, pie, funnel, drawn here: no script) present
them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec

from .auth.permissions import Actor, Scope
from .entities import EntityType, Field, FieldType
from .fieldvalues import currency_precision
from .records.errors import FieldError, Forbidden, NotFound, ValidationError
from .records.query import SYSTEM_FIELDS

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["REPORT_TABLES", "ReportService", "BUCKETS", "OPS", "CHARTS", "chart_svg", "to_csv", "to_xlsx"]

#: System tables (placeholders as in storage.schema.SYSTEM_TABLES).
REPORT_TABLES: list[str] = [
    # Saved report definitions; "definition" is the definition as JSON. Times in ISO 8601, UTC.
    """CREATE TABLE IF NOT EXISTS crm_report (
        "name" TEXT PRIMARY KEY, "definition" TEXT NOT NULL, "created_at" TEXT NOT NULL,
        "updated_at" TEXT NOT NULL, "created_by" BIGINT)""",
]

BUCKETS = ("day", "week", "month", "quarter", "year")
OPS = ("count", "sum", "avg", "min", "max")
CHARTS = ("bar", "line", "pie", "funnel", "none")
KEYS = ("name", "label", "description", "entity", "filter", "group_by", "measures", "sort", "limit", "chart")
MAX_LIMIT = 10000
PERMISSION = "manage_schema"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NUMERIC = (FieldType.INTEGER, FieldType.DECIMAL, FieldType.MONEY)
_DATES = (FieldType.DATE, FieldType.DATETIME)
_NOT_GROUPABLE = (FieldType.TAGS, FieldType.MULTI_CHOICE, FieldType.LONG_TEXT, FieldType.MONEY, FieldType.DECIMAL)
_USER_FIELDS = ("owner_id", "created_by", "updated_by")
#: Sums on SQLite add whole multiples of 1/SCALE (exact; no floating-point drift).
_SCALE = 10000
UTC = dt.timezone.utc
log = logging.getLogger(__name__)


def _fail(field: str, message: str, code: str = "invalid") -> ValidationError:
    return ValidationError([FieldError(field, code, message)])


def _now_iso() -> str:
    return dt.datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Builtin:
    """A report declared by code: a definition, or a ``run`` of its own (``run(service, actor,
    definition, extra_filter)`` returning a result) for what one GROUP BY cannot say."""

    definition: dict[str, Any]
    source: str
    run: Callable[..., Awaitable[dict[str, Any]]] | None = None
    #: Makes the definition at run time (e.g. with today's date); else ``definition`` as is.
    make: Callable[[dt.datetime], dict[str, Any]] | None = None


class _Only:
    """A plugin manager look-alike whose hook has one implementation (for :func:`call_each`)."""

    def __init__(self, pm: Any, impl: Any):
        self.hook = type("Hooks", (), {})()
        setattr(self.hook, "crm_register_reports", type("Hook", (), {"get_hookimpls": staticmethod(lambda: [impl])})())


# -- validation --------------------------------------------------------------------------------


def _field_of(entity: EntityType, name: Any, where: str) -> Field:
    field = SYSTEM_FIELDS.get(name) if isinstance(name, str) else None
    if field is None and isinstance(name, str):
        field = next((f for f in entity.visible_fields if f.name == name), None)
    if field is None:
        known = ", ".join(sorted({f.name for f in entity.visible_fields} | set(SYSTEM_FIELDS)))
        raise _fail(where, f"unknown field {name!r} of {entity.name}; known fields: {known}", "unknown_field")
    return field


def _groups(entity: EntityType, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 2:
        raise _fail("group_by", 'group_by is a list of at most two fields, e.g. ["owner_id", '
                                '{"field": "expected_close", "bucket": "month"}]')
    groups = []
    for i, item in enumerate(value):
        where = f"group_by[{i}]"
        if isinstance(item, str):
            name, _, bucket = item.partition(":")
            item = {"field": name, **({"bucket": bucket} if bucket else {})}
        if not isinstance(item, dict) or set(item) - {"field", "bucket"}:
            raise _fail(where, "a field name, or {field, bucket}")
        field = _field_of(entity, item.get("field"), where)
        bucket = item.get("bucket")
        if field.type in _DATES:
            bucket = bucket or "day"
            if bucket not in BUCKETS:
                raise _fail(f"{where}.bucket", f"bucket is one of {', '.join(BUCKETS)}")
        elif bucket is not None:
            raise _fail(f"{where}.bucket", f"{field.name} is not a date: only dates group by a bucket")
        elif field.type in _NOT_GROUPABLE:
            raise _fail(where, f"a {field.type.value} field cannot be grouped on")
        groups.append({"field": field.name, **({"bucket": bucket} if bucket else {})})
    if len({(g["field"], g.get("bucket")) for g in groups}) != len(groups):
        raise _fail("group_by", "the same field is grouped on twice")
    return groups


def _measures(entity: EntityType, value: Any) -> list[dict[str, Any]]:
    if value is None:
        value = [{"op": "count"}]
    if not isinstance(value, list) or not 1 <= len(value) <= 10:
        raise _fail("measures", 'measures is a list of 1 to 10 {op, field}, e.g. [{"op": "count"}, '
                                '{"op": "sum", "field": "amount"}]')
    measures, names = [], set()
    for i, item in enumerate(value):
        where = f"measures[{i}]"
        if isinstance(item, str):
            op, _, name = item.partition(":")
            item = {"op": op, **({"field": name} if name else {})}
        if not isinstance(item, dict):
            raise _fail(where, "a measure is {op, field}")
        extra = set(item) - {"op", "field", "filter", "name", "label"}
        if extra:
            raise _fail(f"{where}.{sorted(extra)[0]}", "a measure takes op, field, filter, name and label", "unknown_key")
        op = item.get("op")
        if op not in OPS:
            raise _fail(f"{where}.op", f"op is one of {', '.join(OPS)}")
        measure: dict[str, Any] = {"op": op}
        if item.get("field") is not None or op != "count":
            if item.get("field") is None:
                raise _fail(f"{where}.field", f"{op} needs a field")
            field = _field_of(entity, item["field"], f"{where}.field")
            allowed = _NUMERIC + (_DATES if op in ("min", "max") else ())
            if op != "count" and field.type not in allowed:
                raise _fail(f"{where}.field", f"{op} takes a number or money field{' or a date' if op in ('min', 'max') else ''}; "
                                              f"{field.name} is {field.type.value}")
            measure["field"] = field.name
        if item.get("filter") is not None:
            if not isinstance(item["filter"], dict):
                raise _fail(f"{where}.filter", "a filter is an object, as in the records' filter language")
            measure["filter"] = item["filter"]
        name = item.get("name") or (op if "field" not in measure else f"{op}_{measure['field']}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(f"{where}.name", "a name: lowercase letters, digits and _")
        if name in names:
            raise _fail(f"{where}.name", f"two measures are named {name!r}: give one a name of its own")
        names.add(name)
        measure["name"] = name
        if item.get("label"):
            measure["label"] = str(item["label"])[:200]
        measures.append(measure)
    return measures


# -- SQL pieces --------------------------------------------------------------------------------


def _zone_sql(zone_name: str) -> str:
    if not re.match(r"^[A-Za-z0-9_+\-/]+$", zone_name):
        raise _fail("timezone", f"not a time zone: {zone_name!r}")
    return zone_name


def _offsets(zone: ZoneInfo, low: dt.datetime, high: dt.datetime) -> list[tuple[str | None, int]]:
    """The zone's UTC offsets (minutes) between two instants: [(until ISO UTC, offset), ...,
    (None, last offset)], found day by day and narrowed to the minute."""
    def offset(at: dt.datetime) -> int:
        return int(at.astimezone(zone).utcoffset().total_seconds() // 60)

    low, high = low.astimezone(UTC), high.astimezone(UTC)
    if (high - low).days > 366 * 200:
        high = low + dt.timedelta(days=366 * 200)
    spans: list[tuple[str | None, int]] = []
    current = offset(low)
    at = low
    while at < high:
        step = min(at + dt.timedelta(days=1), high)
        if offset(step) != current:
            lo, hi = at, step
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == current:
                    lo = mid
                else:
                    hi = mid
            hi = hi.replace(second=0, microsecond=0)
            while offset(hi) == current:
                hi += dt.timedelta(minutes=1)
            spans.append((hi.isoformat(timespec="microseconds"), current))
            current = offset(hi)
            at = hi
        else:
            at = step
    spans.append((None, current))
    return spans


class _Run:
    """One report run's SQL: SELECT groups and measures FROM the table WHERE scope and filters."""

    def __init__(self, service: ReportService, entity: EntityType, actor: Actor):
        self.service = service
        self.dep = service.deployment
        self.dialect = self.dep.db.dialect
        self.entity = entity
        self.actor = actor
        self.compiler = self.dep.records.as_actor(actor).filter_compiler(entity.name)
        self.zone = self.dep.settings.timezone or "UTC"

    def column(self, name: str) -> str:
        return f'"{name}"'

    def number(self, field: Field, op: str) -> str:
        column = self.column(field.name)
        if self.dialect == "sqlite" and field.type in (FieldType.DECIMAL, FieldType.MONEY):
            if op == "sum":
                return f"CAST(ROUND(CAST({column} AS REAL) * {_SCALE}) AS INTEGER)"
            return f"CAST({column} AS REAL)"
        return column

    async def bucket(self, field: Field, bucket: str) -> str:
        return await self.time_bucket(self.column(field.name), bucket, datetime=field.type is FieldType.DATETIME,
                                      table=f'"{self.entity.table}"')

    async def time_bucket(self, column: str, bucket: str, *, datetime: bool, table: str, text: bool = False,
                          bounds: str | None = None) -> str:
        """The first day of ``bucket`` holding ``column``'s value (a date, or a UTC time seen in
        the deployment's time zone; ``text``: ISO text in UTC, as the stage history keeps).
        ``bounds``: the column as ``table`` names it, when ``column`` names it otherwise."""
        if self.dialect == "postgres":
            # Local wall-clock time (a timestamp without time zone), truncated, as a date: no
            # text formatting per row.
            if datetime:
                moment = f"CAST({column} AS timestamptz)" if text else column
                local = f"({moment} AT TIME ZONE '{_zone_sql(self.zone)}')"
            else:
                local = f"CAST({column} AS timestamp)"
            return f"CAST(date_trunc('{bucket}', {local}) AS date)"
        # The local day as 'YYYY-MM-DD' text (computed once per row), then cut or moved to
        # its bucket's first day with string functions, cheaper than strftime on SQLite.
        day = await self.sqlite_local_date(column, table, bounds or column) if datetime else column
        if bucket == "day":
            return day
        if bucket == "month":
            return f"substr({day}, 1, 7) || '-01'"
        if bucket == "year":
            return f"substr({day}, 1, 4) || '-01-01'"
        if bucket == "quarter":
            return (f"substr({day}, 1, 5) || substr('010101040404070707101010', "
                    f"CAST(substr({day}, 6, 2) AS INTEGER) * 2 - 1, 2) || '-01'")
        return f"date({day}, '-6 days', 'weekday 1')"  # the Monday on or before the day

    async def sqlite_local_date(self, column: str, table: str, bounds: str) -> str:
        """The local date of a UTC datetime column on SQLite: its offset by a CASE over the
        zone's offset changes between the column's smallest and largest values."""
        zone = ZoneInfo(self.zone)
        low, high = await self.dep.db.fetchrow(f"SELECT MIN({bounds}), MAX({bounds}) FROM {table}")
        if low is None:
            return f"date({column})"
        spans = _offsets(zone, dt.datetime.fromisoformat(low), dt.datetime.fromisoformat(high) + dt.timedelta(days=1))
        if len(spans) == 1:
            if spans[0][1] == 0:  # UTC: the stored text starts with the date
                return f"substr({column}, 1, 10)"
            shift = f"'{spans[0][1]:+d} minutes'"
        else:
            whens = " ".join(f"WHEN {column} < '{until}' THEN '{minutes:+d} minutes'" for until, minutes in spans[:-1])
            shift = f"CASE {whens} ELSE '{spans[-1][1]:+d} minutes' END"
        return f"date({column}, {shift})"


# -- the service -------------------------------------------------------------------------------


class ReportService:
    """Report definitions (saved and declared), runs and exports (``deployment.reports``)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self._builtins: dict[str, Builtin] | None = None
        self._builtins_pm: Any = None

    @property
    def db(self):
        return self.deployment.db

    # -- definitions -------------------------------------------------------------------------

    def builtins(self) -> dict[str, Builtin]:
        """The core's reports and those plugins declare through ``crm_register_reports``."""
        if self._builtins is None or self._builtins_pm is not self.deployment.pm:
            from .plugins import PluginError, call_each

            found: dict[str, Builtin] = {}
            for builtin in core_reports():
                found[builtin.definition["name"]] = builtin

            def make(plugin: str) -> dict[str, Any]:
                def register(definition: dict[str, Any], *,
                             make: Callable[[dt.datetime], dict[str, Any]] | None = None) -> None:
                    if not isinstance(definition, dict) or not isinstance(definition.get("name"), str):
                        raise ValueError("a report definition is a dict with a name")
                    name = definition["name"] if plugin == "core" else f"{plugin}.{definition['name']}"
                    if name in found:
                        raise ValueError(f"report {name!r} is already declared")
                    clean = self.validate({**definition, "name": definition["name"]})
                    made = None
                    if make is not None:
                        def made(now: dt.datetime, make=make, raw=definition["name"], name=name) -> dict[str, Any]:
                            return {**self.validate({**make(now), "name": raw}), "name": name}
                    found[name] = Builtin({**clean, "name": name}, plugin, make=made)
                return {"register": register, "deployment": self.deployment}

            # Plugin by plugin: a broken plugin's reports are missing (logged), the others listed.
            for impl in self.deployment.pm.hook.crm_register_reports.get_hookimpls():
                try:
                    call_each(_Only(self.deployment.pm, impl), "crm_register_reports", make)
                except PluginError:
                    log.exception("plugin %r failed declaring its reports", impl.plugin_name)
            self._builtins, self._builtins_pm = found, self.deployment.pm
        return self._builtins

    def validate(self, definition: Any) -> dict[str, Any]:
        """A definition checked and normalised; ValidationError naming the key otherwise."""
        if not isinstance(definition, dict):
            raise _fail("definition", "a report definition is an object: {name, entity, group_by, measures, ...}")
        for key in definition:
            if key not in KEYS and key not in ("source", "created_at", "updated_at"):
                raise _fail(str(key), f"unknown key {key!r}; a report takes {', '.join(KEYS)}", "unknown_key")
        name = definition.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail("name", "name is required: lowercase letters, digits and _ (at most 63), starting with a letter")
        entity = self.deployment.registry.get(definition.get("entity")) if isinstance(definition.get("entity"), str) else None
        if entity is None:
            known = ", ".join(sorted(e.name for e in self.deployment.registry))
            raise _fail("entity", f"entity is one of: {known}", "unknown_entity")
        for key in ("label", "description"):
            if not isinstance(definition.get(key, ""), str):
                raise _fail(key, f"{key} is a text")
        clean: dict[str, Any] = {
            "name": name, "label": definition.get("label") or name.replace("_", " ").capitalize(),
            "description": definition.get("description") or "", "entity": entity.name,
        }
        clean["filter"] = definition.get("filter") or None
        if clean["filter"] is not None:
            if not isinstance(clean["filter"], dict):
                raise _fail("filter", "filter is an object in the records' filter language")
            self._compile_check(entity, clean["filter"], "filter")
        clean["group_by"] = _groups(entity, definition.get("group_by"))
        clean["measures"] = _measures(entity, definition.get("measures"))
        for i, measure in enumerate(clean["measures"]):
            if "filter" in measure:
                self._compile_check(entity, measure["filter"], f"measures[{i}].filter")
        columns = [c["key"] for c in _columns(entity, clean)]
        sort = definition.get("sort") or []
        if isinstance(sort, str):
            sort = [s for s in sort.split(",") if s]
        if not isinstance(sort, list) or not all(isinstance(s, str) for s in sort):
            raise _fail("sort", "sort is a list of column names, '-' first for descending")
        for i, item in enumerate(sort):
            if item.lstrip("-") not in columns:
                raise _fail(f"sort[{i}]", f"unknown column {item.lstrip('-')!r}; columns: {', '.join(columns)}")
        clean["sort"] = sort
        limit = definition.get("limit", 1000)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise _fail("limit", f"limit is a whole number from 1 to {MAX_LIMIT}")
        clean["limit"] = limit
        chart = definition.get("chart") or "bar"
        if chart not in CHARTS:
            raise _fail("chart", f"chart is one of {', '.join(CHARTS)}")
        clean["chart"] = chart
        return clean

    def _compile_check(self, entity: EntityType, filter_: dict, where: str) -> None:
        try:
            self.deployment.records.filter_compiler(entity.name).node(filter_)
        except ValidationError as exc:
            raise ValidationError([FieldError(f"{where}{e.field[len('filter'):]}" if e.field.startswith("filter")
                                              else f"{where}.{e.field}", e.code, e.message) for e in exc.errors]) from None

    async def _saved(self) -> dict[str, dict[str, Any]]:
        rows = await self.db.fetch('SELECT "name", "definition", "created_at", "updated_at" FROM crm_report ORDER BY "name"')
        return {r[0]: {**msgspec.json.decode(r[1]), "source": "saved", "created_at": r[2], "updated_at": r[3]}
                for r in rows}

    async def list(self, actor: Actor | None = None) -> list[dict[str, Any]]:
        """Every report the actor may run (built-in first, then saved), without their figures."""
        items = [{**b.definition, "source": b.source} for b in self.builtins().values()]
        items += list((await self._saved()).values())
        if actor is not None and not actor.system:
            items = [d for d in items if actor.scope(d["entity"], "read") is not Scope.NONE]
        return items

    async def get(self, name: str, actor: Actor | None = None) -> dict[str, Any]:
        builtin = self.builtins().get(name)
        if builtin is not None:
            found = {**builtin.definition, "source": builtin.source}
        else:
            found = (await self._saved()).get(name)
            if found is None:
                raise NotFound("report", name)
        if actor is not None and actor.scope(found["entity"], "read") is Scope.NONE:
            raise Forbidden(f"your role may not read {found['entity']} records")
        return found

    async def save(self, definition: Any, actor: Actor) -> dict[str, Any]:
        """Add or replace a saved report (needs ``manage_schema``)."""
        if not actor.has(PERMISSION):
            raise Forbidden(f"saving reports needs the {PERMISSION} permission")
        clean = self.validate(definition)
        if clean["name"] in self.builtins():
            raise _fail("name", f"{clean['name']!r} is a built-in report; choose another name", "taken")
        now = _now_iso()
        data = msgspec.json.encode(clean).decode()
        async with self.db.transaction():
            exists = await self.db.fetchval('SELECT 1 FROM crm_report WHERE "name" = ?', [clean["name"]])
            if exists:
                await self.db.execute('UPDATE crm_report SET "definition" = ?, "updated_at" = ? WHERE "name" = ?',
                                      [data, now, clean["name"]])
            else:
                await self.db.execute('INSERT INTO crm_report ("name", "definition", "created_at", "updated_at", '
                                      '"created_by") VALUES (?, ?, ?, ?, ?)',
                                      [clean["name"], data, now, now, actor.user_id])
        return await self.get(clean["name"])

    async def remove(self, name: str, actor: Actor) -> None:
        if not actor.has(PERMISSION):
            raise Forbidden(f"removing reports needs the {PERMISSION} permission")
        if name in self.builtins():
            raise _fail("name", f"{name!r} is a built-in report; it cannot be removed", "builtin")
        if not await self.db.fetchval('SELECT 1 FROM crm_report WHERE "name" = ?', [name]):
            raise NotFound("report", name)
        await self.db.execute('DELETE FROM crm_report WHERE "name" = ?', [name])

    # -- running -----------------------------------------------------------------------------

    async def run(self, report: str | dict[str, Any], actor: Actor | None = None, *,
                  filter: dict | None = None) -> dict[str, Any]:
        """Run a report (its name, or a definition) as ``actor``: ``{name, label, entity,
        chart, columns: [{key, label, kind, type}], rows: [{key: value}], labels: {key: {value:
        title}}, truncated}``. ``filter`` narrows it further (ANDed with its own)."""
        from .auth import SYSTEM

        actor = actor or SYSTEM
        if filter is not None and not isinstance(filter, dict):
            raise _fail("filter", "filter is an object in the records' filter language")
        builtin = None
        if isinstance(report, str):
            builtin = self.builtins().get(report)
            if builtin is None:
                # Checked again: a field it names may have been removed since it was saved.
                definition = self.validate({k: v for k, v in (await self.get(report)).items()
                                            if k not in ("source", "created_at", "updated_at")})
            else:
                definition = dict(builtin.definition)
            if builtin is not None and builtin.make is not None:
                definition = builtin.make(self.deployment.clock.now())
        else:
            definition = self.validate(report)
        if builtin is not None and builtin.run is not None:
            return await builtin.run(self, actor, definition, filter)
        return await self._run(definition, actor, filter)

    def _reader(self, entity_name: str, actor: Actor) -> tuple[EntityType, dict[str, Field], tuple[str, list[Any]] | None]:
        return self.deployment.records.as_actor(actor).readable(entity_name)

    async def _run(self, definition: dict[str, Any], actor: Actor, extra: dict | None) -> dict[str, Any]:
        entity, fields, scope = self._reader(definition["entity"], actor)
        hidden = actor.hidden_fields(entity.name)
        used = [g["field"] for g in definition["group_by"]] + [m["field"] for m in definition["measures"] if "field" in m]
        for name in used:
            if name in hidden:
                raise Forbidden(f"this report uses {entity.name}.{name}, which your role may not see")
        run = _Run(self, entity, actor)
        compiler = run.compiler
        columns = _columns(entity, definition)
        selects: list[str] = []
        group_count = 0
        for group in definition["group_by"]:
            field = SYSTEM_FIELDS.get(group["field"]) or fields[group["field"]]
            selects.append(await run.bucket(field, group["bucket"]) if "bucket" in group else f'"{field.name}"')
            group_count += 1
        for column in columns:
            if column["kind"] == "currency":
                selects.append(f'"{column["field"]}__currency"')
                group_count += 1
        def compile_measure(i: int, measure: dict[str, Any]) -> tuple[list[str], bool]:
            """The measure's aggregate(s): [value] or, for sum and avg, [sum, count]; and
            whether compiling added parameters (then the SQL is not shared with another)."""
            field = (SYSTEM_FIELDS.get(measure["field"]) or fields[measure["field"]]) if "field" in measure else None
            before = len(compiler.params)
            condition = None
            if "filter" in measure:
                try:
                    condition = compiler.node(measure["filter"], f"measures[{i}].filter")
                except ValidationError as exc:
                    raise _forbidden_or(exc, hidden) from None
            op = measure["op"]
            if op == "count":
                inner = "1" if field is None else f'CASE WHEN "{field.name}" IS NOT NULL THEN 1 ELSE 0 END'
                expr = f"SUM(CASE WHEN {condition} THEN {inner} ELSE 0 END)" if condition else (
                    "COUNT(*)" if field is None else f'COUNT("{field.name}")')
                return [expr], len(compiler.params) > before
            value = run.number(field, "sum" if op in ("sum", "avg") else op)
            if condition:
                value = f"CASE WHEN {condition} THEN {value} END"
            if op in ("sum", "avg"):
                compiler.params.extend(compiler.params[before:])  # the condition is in both
                return [f"SUM({value})", f"COUNT({value})"], len(compiler.params) > before
            return [f"{op.upper()}({value})"], len(compiler.params) > before

        # Measures' aggregates, each computed once even when two measures need it (sum and avg).
        slots: list[list[int]] = []
        for i, measure in enumerate(definition["measures"]):
            exprs, bound = compile_measure(i, measure)
            places = []
            for expr in exprs:
                if not bound and expr in selects[group_count:]:
                    places.append(selects.index(expr, group_count))
                else:
                    selects.append(expr)
                    places.append(len(selects) - 1)
            slots.append(places)
        where = ['"deleted_at" IS NULL']
        if scope is not None:
            where.append(scope[0])
            compiler.params.extend(scope[1])
        for key, node in (("filter", definition.get("filter")), ("filter", extra)):
            if node:
                try:
                    where.append(compiler.node(node, key))
                except ValidationError as exc:
                    raise _forbidden_or(exc, hidden) from None
        positions = {c["key"]: i + 1 for i, c in enumerate(c for c in columns if c["kind"] != "measure")}
        measures = {m["name"]: (i, m) for i, m in enumerate(definition["measures"])}
        order = []
        for item in definition["sort"]:
            key = item.lstrip("-")
            direction = "DESC" if item.startswith("-") else "ASC"
            if key in measures:
                i, measure = measures[key]
                if measure["op"] == "avg":  # its quotient, compiled again: its parameters follow WHERE's
                    total, count = compile_measure(i, measure)[0]
                    order.append(f"({total}) * 1.0 / NULLIF({count}, 0) {direction}")
                else:
                    order.append(f"{slots[i][0] + 1} {direction}")
            else:
                order.append(f"{positions[key]} {direction}")
        order += [f"{i} ASC" for i in range(1, group_count + 1) if f"{i} ASC" not in order and f"{i} DESC" not in order]
        sql = f'SELECT {", ".join(selects)} FROM "{entity.table}" WHERE {" AND ".join(where)}'
        if group_count:
            sql += f" GROUP BY {', '.join(str(i) for i in range(1, group_count + 1))}"
        if order:
            sql += f" ORDER BY {', '.join(order)}"
        limit = int(definition["limit"])
        sql += f" LIMIT {limit + 1}"
        raw = await self.db.fetch(sql, compiler.params)
        rows = [self._row(fields, definition, columns, slots, r) for r in raw[:limit]]
        result = {
            "name": definition["name"], "label": definition["label"], "entity": entity.name,
            "chart": definition["chart"], "columns": columns, "rows": rows, "truncated": len(raw) > limit,
        }
        result["labels"] = await self._labels(entity, fields, columns, rows, actor)
        return result

    def _row(self, fields: dict[str, Field], definition: dict[str, Any], columns: list[dict[str, Any]],
             slots: list[list[int]], raw: tuple) -> dict[str, Any]:
        row: dict[str, Any] = {}
        index = 0
        for column in columns:
            if column["kind"] == "measure":
                continue
            value = raw[index]
            index += 1
            if column["kind"] == "group" and column.get("bucket") is None:
                value = _group_value(SYSTEM_FIELDS.get(column["field"]) or fields[column["field"]], value)
            elif isinstance(value, dt.date):
                value = value.isoformat()
            row[column["key"]] = value
        for measure, places in zip(definition["measures"], slots):
            field = (SYSTEM_FIELDS.get(measure["field"]) or fields[measure["field"]]) if "field" in measure else None
            op = measure["op"]
            if op == "count":
                row[measure["name"]] = int(raw[places[0]] or 0)
            elif op in ("sum", "avg"):
                currency = row.get("currency", row.get(f"{field.name}_currency"))  # one money field, or several
                total, count = self._total(field, raw[places[0]], currency), raw[places[1]]
                if op == "sum":
                    if total is None:  # nothing to add up
                        total = (0 if field.type is FieldType.INTEGER else self._total(field, 0, currency)
                                 if field.type is FieldType.MONEY else Decimal("0.00"))
                    row[measure["name"]] = total
                else:
                    row[measure["name"]] = None if not count or total is None else _avg(Decimal(total), int(count))
            else:
                row[measure["name"]] = _plain(field, raw[places[0]])
        return row

    def _total(self, field: Field, value: Any, currency: str | None = None) -> Any:
        """A sum as the database gave it: money to its currency's minor unit (JPY 0, KWD 3)."""
        if value is None:
            return None
        if field.type is FieldType.INTEGER:
            return int(value)
        total = Decimal(int(value)) / _SCALE if self.db.dialect == "sqlite" else Decimal(value)
        if field.type is FieldType.MONEY:
            return total.quantize(Decimal(1).scaleb(-currency_precision(currency) if currency else -2))
        return total.quantize(Decimal("0.0001")) if self.db.dialect == "sqlite" else total

    async def _labels(self, entity: EntityType, fields: dict[str, Field], columns: list[dict[str, Any]],
                      rows: list[dict[str, Any]], actor: Actor) -> dict[str, dict[str, str]]:
        """Titles of the records a relation group names (owners, companies...) that the actor may read."""
        from .records.query import ListQuery

        labels: dict[str, dict[str, str]] = {}
        records = self.deployment.records.as_actor(actor)
        for column in columns:
            if column["kind"] != "group" or column.get("bucket"):
                continue
            name = column["field"]
            field = SYSTEM_FIELDS.get(name) or fields[name]
            target = "user" if name in _USER_FIELDS else field.target if field.type is FieldType.RELATION else None
            ids = sorted({r[column["key"]] for r in rows if isinstance(r[column["key"]], int)})[:500]
            if target is None or not ids:
                continue
            try:
                target_entity = records.entity(target)
                title = target_entity.title_field or "id"
                page = await records.list(target, ListQuery(filter={"field": "id", "op": "in", "value": ids}, limit=500))
            except (Forbidden, NotFound, ValidationError):
                continue
            labels[column["key"]] = {str(item["id"]): str(item.get(title) or item["id"]) for item in page.items}
        return labels


def _forbidden_or(exc: ValidationError, hidden: frozenset[str]) -> Exception:
    for error in exc.errors:
        name = error.field.rsplit(".", 1)[-1]
        if name in hidden:
            return Forbidden(f"this report filters on {name}, which your role may not see")
    return exc


def _avg(total: Decimal, count: int) -> Decimal:
    return (total / count).quantize(Decimal("0.01"))


def _plain(field: Field, value: Any) -> Any:
    if value is None:
        return None
    if field.type is FieldType.INTEGER:
        return int(value)
    if field.type in (FieldType.DECIMAL, FieldType.MONEY):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _group_value(field: Field, value: Any) -> Any:
    if value is None:
        return None
    if field.type is FieldType.BOOLEAN:
        return bool(value)
    if isinstance(value, Decimal):
        return value
    return value


def _columns(entity: EntityType, definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's columns: groups, currencies of money measures, measures."""
    def label_of(name: str) -> str:
        field = entity.field(name)
        return (field.label if field is not None and field.label else name.replace("_id", "").replace("_", " ")).capitalize()

    columns: list[dict[str, Any]] = []
    for group in definition["group_by"]:
        bucket = group.get("bucket")
        key = f"{group['field']}_{bucket}" if bucket else group["field"]
        field = SYSTEM_FIELDS.get(group["field"]) or entity.field(group["field"])
        columns.append({"key": key, "label": label_of(group["field"]) + (f" ({bucket})" if bucket else ""),
                        "kind": "group", "field": group["field"], "bucket": bucket,
                        "type": "date" if bucket else field.type.value})
    money = []
    for measure in definition["measures"]:
        field = entity.field(measure.get("field") or "")
        if field is not None and field.type is FieldType.MONEY and measure["op"] != "count" and field.name not in money:
            money.append(field.name)
    for name in money:
        key = "currency" if len(money) == 1 else f"{name}_currency"
        columns.append({"key": key, "label": "Currency" if len(money) == 1 else f"{label_of(name)} currency",
                        "kind": "currency", "field": name, "bucket": None, "type": "text"})
    for measure in definition["measures"]:
        name = measure.get("field")
        label = measure.get("label") or (measure["op"].capitalize() + (f" of {label_of(name).lower()}" if name else ""))
        field = (SYSTEM_FIELDS.get(name) or entity.field(name)) if name else None
        kind = "integer" if measure["op"] == "count" or (field and field.type is FieldType.INTEGER and measure["op"] != "avg") \
            else (field.type.value if field else "integer")
        columns.append({"key": measure["name"], "label": label, "kind": "measure", "field": name, "bucket": None, "type": kind})
    return columns


# -- the core's built-in reports ---------------------------------------------------------------


async def _funnel(service: ReportService, actor: Actor, definition: dict[str, Any], extra: dict | None) -> dict[str, Any]:
    """The sales pipeline as a funnel, from the stage history of the deals within the reader's
    scope and the filter (e.g. created in a period): how many reached each open or won stage or
    one after it (a deal won straight from prospecting passed the stages between), as a share
    of those that entered the pipeline (``conversion``) and of the stage before (``step``);
    lost stages count the deals that entered them."""
    dep = service.deployment
    pipeline = dep.pipelines.get("sales") or next(iter(dep.pipelines.values()), None)
    entity, fields, where, params = _scoped_where(service, definition["entity"], actor, extra)
    rows = []
    if pipeline is not None:
        inside = f'SELECT "id" FROM "{entity.table}" WHERE {where}'
        ahead = [s for s in pipeline.stages if s.kind != "lost"]
        rank = " ".join(f"WHEN '{s.name}' THEN {i}" for i, s in enumerate(ahead) if "'" not in s.name)
        base = ('FROM crm_stage_history WHERE "entity" = ? AND "pipeline" = ? '
                f'AND "record_id" IN ({inside})')
        furthest = dict(await dep.db.fetch(
            f'SELECT "top", COUNT(*) FROM (SELECT "record_id", MAX(CASE "to_stage" {rank} ELSE -1 END) AS "top" '
            f'{base} GROUP BY "record_id") AS reached GROUP BY "top"', [entity.name, pipeline.name, *params])) if rank else {}
        lost = dict(await dep.db.fetch(
            f'SELECT "to_stage", COUNT(DISTINCT "record_id") {base} GROUP BY "to_stage"',
            [entity.name, pipeline.name, *params]))
        entered = sum(int(n) for n in furthest.values())
        previous = None
        for stage in pipeline.stages:
            if stage.kind == "lost":
                count, step = int(lost.get(stage.name, 0)), None
            else:
                index = ahead.index(stage)
                count = sum(int(n) for top, n in furthest.items() if top is not None and int(top) >= index)
                step = None if not previous else (Decimal(100 * count) / previous).quantize(Decimal("0.1"))
                previous = count
            rows.append({"stage": stage.name, "reached": count, "step": step,
                         "conversion": None if not entered else (Decimal(100 * count) / entered).quantize(Decimal("0.1"))})
    return _result(definition, [
        {"key": "stage", "label": "Stage", "kind": "group", "field": "stage", "bucket": None, "type": "text"},
        {"key": "reached", "label": "Reached", "kind": "measure", "field": None, "bucket": None, "type": "integer"},
        {"key": "conversion", "label": "Conversion %", "kind": "measure", "field": None, "bucket": None, "type": "decimal"},
        {"key": "step", "label": "From the stage before %", "kind": "measure", "field": None, "bucket": None, "type": "decimal"},
    ], rows)


async def _time_in_stage(service: ReportService, actor: Actor, definition: dict[str, Any], extra: dict | None) -> dict[str, Any]:
    """Per stage of the sales pipeline: how many stays ended (moved on) and their average length
    in days, from the stage history of the deals within the reader's scope and the filter."""
    dep = service.deployment
    pipeline = dep.pipelines.get("sales") or next(iter(dep.pipelines.values()), None)
    entity, fields, where, params = _scoped_where(service, definition["entity"], actor, extra)
    rows = []
    if pipeline is not None:
        if dep.db.dialect == "sqlite":
            seconds = '(julianday("next_at") - julianday("at")) * 86400.0'
        else:
            seconds = 'EXTRACT(EPOCH FROM (CAST("next_at" AS timestamptz) - CAST("at" AS timestamptz)))'
        found = {r[0]: r[1:] for r in await dep.db.fetch(
            f'SELECT "to_stage", COUNT(*), AVG({seconds}) FROM ('
            'SELECT "to_stage", "at", LEAD("at") OVER (PARTITION BY "record_id" ORDER BY "at", "id") AS "next_at" '
            'FROM crm_stage_history WHERE "entity" = ? AND "pipeline" = ? '
            f'AND "record_id" IN (SELECT "id" FROM "{entity.table}" WHERE {where})) AS stays '
            'WHERE "next_at" IS NOT NULL GROUP BY "to_stage"', [entity.name, pipeline.name, *params])}
        for stage in pipeline.stages:
            stays, average = found.get(stage.name, (0, None))
            rows.append({"stage": stage.name, "stays": int(stays),
                         "average_days": None if average is None else (Decimal(str(float(average))) / 86400).quantize(Decimal("0.01"))})
    return _result(definition, [
        {"key": "stage", "label": "Stage", "kind": "group", "field": "stage", "bucket": None, "type": "text"},
        {"key": "average_days", "label": "Average days", "kind": "measure", "field": None, "bucket": None, "type": "decimal"},
        {"key": "stays", "label": "Stays", "kind": "measure", "field": None, "bucket": None, "type": "integer"},
    ], rows)


async def _revenue_by_won_month(service: ReportService, actor: Actor, definition: dict[str, Any],
                                extra: dict | None) -> dict[str, Any]:
    """Won deals' amounts by owner and month of the (last) move to a won stage, per currency."""
    dep = service.deployment
    entity, fields, where, params = _scoped_where(service, definition["entity"], actor, extra)
    won = sorted({s.name for p in dep.pipelines.values() if p.entity == entity.name for s in p.stages if s.kind == "won"})
    money = fields.get("amount") is not None and fields["amount"].type is FieldType.MONEY
    columns = [
        {"key": "owner_id", "label": "Owner", "kind": "group", "field": "owner_id", "bucket": None, "type": "integer"},
        {"key": "won_month", "label": "Won (month)", "kind": "group", "field": None, "bucket": "month", "type": "date"},
    ]
    if money:
        columns.append({"key": "currency", "label": "Currency", "kind": "currency", "field": "amount", "bucket": None, "type": "text"})
        columns.append({"key": "sum_amount", "label": "Sum of amount", "kind": "measure", "field": "amount", "bucket": None, "type": "money"})
    columns.append({"key": "count", "label": "Count", "kind": "measure", "field": None, "bucket": None, "type": "integer"})
    if not won:
        return _result(definition, columns, [])
    run = _Run(service, entity, actor)
    month = await run.time_bucket('h."won_at"', "month", datetime=True, table="crm_stage_history", text=True,
                                  bounds='"at"')
    amount = ['"amount__currency"', f"SUM({run.number(fields['amount'], 'sum')})"] if money else []
    marks = ", ".join("?" for _ in won)
    sql = (f'SELECT "owner_id", {month}, {", ".join(amount + ["COUNT(*)"])} FROM "{entity.table}" '
           f'JOIN (SELECT "record_id", MAX("at") AS "won_at" FROM crm_stage_history WHERE "entity" = ? AND "to_stage" IN ({marks}) '
           f'GROUP BY "record_id") AS h ON h."record_id" = "{entity.table}"."id" '
           f'WHERE "stage" IN ({marks}) AND {where} GROUP BY 1, 2{", 3" if money else ""} ORDER BY 1, 2{", 3" if money else ""} '
           f'LIMIT {int(definition["limit"]) + 1}')
    raw = await dep.db.fetch(sql, [entity.name, *won, *won, *params])
    rows = []
    for r in raw[:definition["limit"]]:
        row = {"owner_id": r[0], "won_month": r[1].isoformat() if isinstance(r[1], dt.date) else r[1]}
        if money:
            total = service._total(fields["amount"], r[3] or 0, r[2])
            row.update(currency=r[2], sum_amount=total, count=int(r[4]))
        else:
            row["count"] = int(r[2])
        rows.append(row)
    result = _result(definition, columns, rows)
    result["truncated"] = len(raw) > definition["limit"]
    result["labels"] = await service._labels(entity, fields, columns, rows, actor)
    return result


def _scoped_where(service: ReportService, entity_name: str, actor: Actor,
                  extra: dict | None) -> tuple[EntityType, dict[str, Field], str, list[Any]]:
    entity, fields, scope = service._reader(entity_name, actor)
    if "stage" in actor.hidden_fields(entity.name):
        raise Forbidden(f"your role may not see the stage of {entity.label_plural.lower()}")
    run = _Run(service, entity, actor)
    where = ['"deleted_at" IS NULL']
    if scope is not None:
        where.append(scope[0])
        run.compiler.params.extend(scope[1])
    if extra:
        try:
            where.append(run.compiler.node(extra))
        except ValidationError as exc:
            raise _forbidden_or(exc, actor.hidden_fields(entity.name)) from None
    return entity, fields, " AND ".join(where), run.compiler.params


def _result(definition: dict[str, Any], columns: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": definition["name"], "label": definition["label"], "entity": definition["entity"],
            "chart": definition["chart"], "columns": columns, "rows": rows, "truncated": False, "labels": {}}


def _activities(now: dt.datetime) -> dict[str, Any]:
    return {
        "name": "activities_per_employee", "label": "Activities per employee",
        "description": "Per assignee: calls, tasks done and open activities past their due time.",
        "entity": "activity", "filter": None, "group_by": [{"field": "assignee"}],
        "measures": [
            {"op": "count", "name": "calls", "label": "Calls", "filter": {"field": "kind", "op": "eq", "value": "call"}},
            {"op": "count", "name": "tasks_done", "label": "Tasks done", "filter": {"and": [
                {"field": "kind", "op": "eq", "value": "task"}, {"field": "done", "op": "eq", "value": True}]}},
            {"op": "count", "name": "overdue", "label": "Overdue", "filter": {"and": [
                {"field": "done", "op": "eq", "value": False},
                {"field": "due_at", "op": "lt", "value": now.astimezone(UTC).isoformat()}]}},
        ],
        "sort": [], "limit": 1000, "chart": "bar",
    }


def core_reports() -> list[Builtin]:
    """The core's built-in reports (on the core's deal and activity entities)."""
    base = {"filter": None, "group_by": [], "sort": [], "limit": 1000, "description": ""}
    return [
        Builtin({**base, "name": "sales_funnel", "label": "Sales funnel", "entity": "deal", "chart": "funnel",
                 "description": "How many deals reached each stage of the sales pipeline, and the conversion "
                                "from the deals that entered it. Narrow the period with a filter on created_at.",
                 "measures": [{"op": "count", "name": "reached"}]}, "core", run=_funnel),
        Builtin({**base, "name": "won_lost", "label": "Won and lost deals", "entity": "deal", "chart": "bar",
                 "description": "Won and lost deals with the reasons deals were lost.",
                 "filter": {"field": "stage", "op": "in", "value": ["won", "lost"]},
                 "group_by": [{"field": "stage"}, {"field": "lost_reason"}],
                 "measures": [{"op": "count", "name": "count"}, {"op": "sum", "field": "amount", "name": "sum_amount"}]},
                "core"),
        Builtin({**base, "name": "revenue_by_owner", "label": "Revenue by owner and month", "entity": "deal",
                 "chart": "bar", "description": "Won deals' amounts by owner and month of expected close.",
                 "filter": {"field": "stage", "op": "eq", "value": "won"},
                 "group_by": [{"field": "owner_id"}, {"field": "expected_close", "bucket": "month"}],
                 "measures": [{"op": "sum", "field": "amount", "name": "sum_amount"}, {"op": "count", "name": "count"}]},
                "core"),
        Builtin({**base, "name": "revenue_by_owner_won_month", "label": "Revenue by owner and month won",
                 "entity": "deal", "chart": "bar",
                 "description": "Won deals' amounts by owner and month of their move to a won stage.",
                 "measures": [{"op": "sum", "field": "amount", "name": "sum_amount"}, {"op": "count", "name": "count"}]},
                "core", run=_revenue_by_won_month),
        Builtin(_activities(dt.datetime.now(UTC)), "core", make=_activities),
        Builtin({**base, "name": "time_in_stage", "label": "Time in stage", "entity": "deal", "chart": "bar",
                 "description": "Average days deals stayed in each stage of the sales pipeline before moving on.",
                 "measures": [{"op": "count", "name": "stays"}]}, "core", run=_time_in_stage),
    ]


# -- output: tables, CSV, XLSX, charts ---------------------------------------------------------


def cell_text(result: dict[str, Any], column: dict[str, Any], value: Any) -> str:
    """A cell as people read it: a related record's title, a bucket as 2026-03 / 2026-Q1..."""
    if value is None:
        return ""
    labels = result.get("labels", {}).get(column["key"], {})
    if str(value) in labels:
        return labels[str(value)]
    bucket = column.get("bucket")
    if bucket and isinstance(value, str) and len(value) >= 10:
        year, month = value[:4], int(value[5:7])
        if bucket == "month":
            return value[:7]
        if bucket == "year":
            return year
        if bucket == "quarter":
            return f"{year}-Q{(month - 1) // 3 + 1}"
    return str(value)


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = [c["label"] for c in result["columns"]]
    return headers, [[cell_text(result, c, row.get(c["key"])) for c in result["columns"]] for row in result["rows"]]


def _inert(text: str) -> str:
    """Text a spreadsheet opening the CSV will not take for a formula (``'`` before = + - @)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(result: dict[str, Any]) -> str:
    """The result as CSV: a header of column keys, then the rows (groups as people read them)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c["key"] for c in result["columns"]])
    for row in result["rows"]:
        writer.writerow([_inert(cell_text(result, c, row.get(c["key"]))) if c["kind"] != "measure"
                         else ("" if row.get(c["key"]) is None else str(row.get(c["key"]))) for c in result["columns"]])
    return out.getvalue()


def to_xlsx(result: dict[str, Any]) -> bytes:
    """The result as an Excel workbook: a header of column labels, then the rows (numbers as numbers)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = re.sub(r"[\[\]:*?/\\]", "-", result.get("label") or result["name"])[:31] or "Report"
    sheet.append([c["label"] for c in result["columns"]])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in result["rows"]:
        values = []
        for column in result["columns"]:
            value = row.get(column["key"])
            if column["kind"] == "measure":
                values.append(float(value) if isinstance(value, Decimal) else value)
            else:
                values.append(cell_text(result, column, value) if value is not None else None)
        sheet.append(values)
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # text people typed, never a formula
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


_COLOURS = ("#2f6fb3", "#e07b39", "#3a9a5b", "#c64a4a", "#8a63b8", "#7a7a7a", "#c9a227", "#2a9d9d")


def _series(result: dict[str, Any]) -> tuple[str, list[tuple[str, float]]]:
    """The first measure by row, each row named by its group cells: (measure label, [(name, value)])."""
    columns = result["columns"]
    measure = next((c for c in columns if c["kind"] == "measure"), None)
    if measure is None:
        return "", []
    keys = [c for c in columns if c["kind"] != "measure"]
    points = []
    for row in result["rows"][:60]:
        name = " / ".join(cell_text(result, c, row.get(c["key"])) or "—" for c in keys) or measure["label"]
        value = row.get(measure["key"])
        points.append((name, float(value) if value is not None else 0.0))
    return measure["label"], points


def _grouped(result: dict[str, Any]) -> tuple[list[str], list[tuple[str, dict[str, float]]]] | None:
    """With two or more key columns: the last group column along the axis and one series per
    value of the others (owner / currency...), for grouped bars and several lines; None when
    that gives one series only."""
    columns = result["columns"]
    measure = next((c for c in columns if c["kind"] == "measure"), None)
    keys = [c for c in columns if c["kind"] != "measure"]
    groups = [c for c in keys if c["kind"] == "group"]
    if measure is None or len(keys) < 2 or not groups:
        return None
    axis = groups[-1]
    others = [c for c in keys if c is not axis]
    xs: dict[str, Any] = {}
    series: dict[str, dict[str, float]] = {}
    for row in result["rows"][:400]:
        x = cell_text(result, axis, row.get(axis["key"])) or "—"
        xs.setdefault(x, row.get(axis["key"]))
        name = " / ".join(cell_text(result, c, row.get(c["key"])) or "—" for c in others)
        value = row.get(measure["key"])
        series.setdefault(name, {})[x] = float(value) if value is not None else 0.0
    if len(series) < 2 or len(series) > len(_COLOURS):
        return None
    ordered = sorted(xs, key=lambda x: (xs[x] is None, str(xs[x]) if not isinstance(xs[x], (int, float)) else "", xs[x] if isinstance(xs[x], (int, float)) else 0))
    return ordered[:40], list(series.items())


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}".rstrip("0").rstrip(".")


def chart_svg(result: dict[str, Any], *, title: str | None = None) -> str:
    """A chart of the result's first measure as SVG (our own: bar, line, pie, funnel), with a
    title and a description for screen readers and a <title> on every mark; "" for none."""
    kind = result.get("chart", "bar")
    measure, points = _series(result)
    if kind == "none" or not points:
        return ""
    title = title or result.get("label") or result["name"]
    ident = re.sub(r"[^a-z0-9_]", "_", result["name"].lower())
    desc = "; ".join(f"{n}: {_number(v)}" for n, v in points[:20])
    width, height = 720, 360
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="report-chart chart-{kind}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-labelledby="chart-{ident}-title chart-{ident}-desc" data-chart="{kind}">'
            f'<title id="chart-{ident}-title">{escape(title)}: {escape(measure)}</title>'
            f'<desc id="chart-{ident}-desc">{escape(desc)}</desc>')
    parts = [head]
    top = max((v for _, v in points), default=0) or 1.0
    if kind in ("bar", "line"):
        left, bottom, right, upper = 70, height - 70, width - 20, 20
        plot_h, plot_w = bottom - upper, right - left
        grouped = _grouped(result)
        if grouped is not None:
            top = max((v for _, values in grouped[1] for v in values.values()), default=0) or 1.0
        parts.append(f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>')
        parts.append(f'<line class="axis" x1="{left}" y1="{upper}" x2="{left}" y2="{bottom}" stroke="#888"/>')
        for i in range(5):
            value = top * i / 4
            y = bottom - plot_h * i / 4
            parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(_number(value))}</text>')
        if grouped is not None:
            xs, series = grouped
            step = plot_w / len(xs)
            width_each = step * 0.8 / len(series)
            for k, (name, values) in enumerate(series):
                colour = _COLOURS[k % len(_COLOURS)]
                coords = []
                for i, x_name in enumerate(xs):
                    if x_name not in values:
                        continue
                    value = values[x_name]
                    h = plot_h * max(value, 0) / top
                    label = f"{name}, {x_name}: {_number(value)}"
                    if kind == "bar":
                        x = left + step * i + step * 0.1 + width_each * k
                        parts.append(f'<rect class="bar" x="{x:.1f}" y="{bottom - h:.1f}" width="{width_each:.1f}" '
                                     f'height="{h:.1f}" fill="{colour}"><title>{escape(label)}</title></rect>')
                    else:
                        coords.append((left + step * i + step / 2, bottom - h, label))
                if coords:
                    path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
                    parts.append(f'<polyline class="line" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
                    for x, y, label in coords:
                        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{escape(label)}</title></circle>')
                ky = upper + 14 * k
                parts.append(f'<rect class="key" x="{right - 150}" y="{ky - 9}" width="10" height="10" fill="{colour}"/>')
                parts.append(f'<text class="key-label" x="{right - 135}" y="{ky}" font-size="11">{escape(name[:24])}</text>')
            if len(xs) <= 24:
                for i, x_name in enumerate(xs):
                    cx = left + step * i + step / 2
                    parts.append(f'<text class="category" x="{cx:.1f}" y="{bottom + 14}" font-size="11" text-anchor="end" '
                                 f'transform="rotate(-30 {cx:.1f} {bottom + 14})">{escape(x_name[:24])}</text>')
            parts.append("</svg>")
            return "".join(parts)
        step = plot_w / len(points)
        coords = []
        for i, (name, value) in enumerate(points):
            x = left + step * i
            h = plot_h * max(value, 0) / top
            label = f"{name}: {_number(value)}"
            if kind == "bar":
                parts.append(f'<rect class="bar" x="{x + step * 0.15:.1f}" y="{bottom - h:.1f}" width="{step * 0.7:.1f}" '
                             f'height="{h:.1f}" fill="{_COLOURS[0]}"><title>{escape(label)}</title></rect>')
            else:
                coords.append((x + step / 2, bottom - h, label))
            if len(points) <= 24:
                cx = x + step / 2
                parts.append(f'<text class="category" x="{cx:.1f}" y="{bottom + 14}" font-size="11" text-anchor="end" '
                             f'transform="rotate(-30 {cx:.1f} {bottom + 14})">{escape(name[:24])}</text>')
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
            parts.append(f'<polyline class="line" points="{path}" fill="none" stroke="{_COLOURS[0]}" stroke-width="2"/>')
            for x, y, label in coords:
                parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{_COLOURS[0]}"><title>{escape(label)}</title></circle>')
    elif kind == "pie":
        total = sum(max(v, 0) for _, v in points) or 1.0
        cx, cy, r = 180, height / 2, 140
        angle = -math.pi / 2
        for i, (name, value) in enumerate(points):
            share = max(value, 0) / total
            colour = _COLOURS[i % len(_COLOURS)]
            label = f"{name}: {_number(value)} ({share * 100:.1f}%)"
            if share >= 0.9999:
                parts.append(f'<circle class="slice" cx="{cx}" cy="{cy}" r="{r}" fill="{colour}"><title>{escape(label)}</title></circle>')
            elif share > 0:
                end = angle + share * 2 * math.pi
                x1, y1 = cx + r * math.cos(angle), cy + r * math.sin(angle)
                x2, y2 = cx + r * math.cos(end), cy + r * math.sin(end)
                large = 1 if share > 0.5 else 0
                parts.append(f'<path class="slice" d="M{cx},{cy} L{x1:.2f},{y1:.2f} A{r},{r} 0 {large} 1 {x2:.2f},{y2:.2f} Z" '
                             f'fill="{colour}"><title>{escape(label)}</title></path>')
                angle = end
            if i < 14:
                y = 30 + i * 22
                parts.append(f'<rect class="key" x="370" y="{y - 11}" width="14" height="14" fill="{colour}"/>')
                parts.append(f'<text class="key-label" x="392" y="{y}" font-size="12">{escape(label[:50])}</text>')
    elif kind == "funnel":
        rows = points[:12]
        band = (height - 20) / len(rows)
        centre = width / 2 + 60
        for i, (name, value) in enumerate(rows):
            w = (width - 260) * max(value, 0) / top
            y = 10 + band * i
            label = f"{name}: {_number(value)}"
            parts.append(f'<rect class="bar stage" x="{centre - w / 2:.1f}" y="{y:.1f}" width="{max(w, 1):.1f}" '
                         f'height="{band * 0.8:.1f}" fill="{_COLOURS[i % len(_COLOURS)]}"><title>{escape(label)}</title></rect>')
            parts.append(f'<text class="category" x="10" y="{y + band * 0.5:.1f}" font-size="12">{escape(label[:36])}</text>')
    parts.append("</svg>")
    return "".join(parts)
