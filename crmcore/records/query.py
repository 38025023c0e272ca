"""The read language shared by the API, web UI, CLI, reports and automation conditions.

A filter is data::

    {"and": [{"field": "city", "op": "eq", "value": "Izmir"},
             {"or": [{"field": "score", "op": "gte", "value": 50},
                     {"field": "tags", "op": "contains", "value": "vip"}]}]}

A condition on related records asks whether some exist::

    {"has": {"entity": "activity", "via": "contact",
             "filter": {"field": "kind", "op": "in", "value": ["call", "email"]}}}
    {"not": {"has": {"entity": "activity", "via": "contact"}}}      # contacts with no activity
    {"has": {"entity": "deal", "via": "company",
             "filter": {"has": {"entity": "activity", "via": "deal"}}}}

``entity`` is the related entity type; ``via`` one of its relation fields whose target is the
entity being filtered (``activity.contact`` -> ``contact``), or ``"related"`` when it has the
generic pair ``related_entity`` (text) and ``related_id`` (integer), as the core's activity
has for records of plugin entities. ``filter`` (optional) is in this same language, on the
related entity's fields. Only live related records within the reader's *read* scope count, and
the reader's hidden fields of the related entity are unknown fields there, as at the top. It
compiles to a correlated ``EXISTS (SELECT 1 FROM <related table> ...)``, at most
:data:`MAX_HAS_DEPTH` nested.

It compiles to parameterised SQL (never string-built values), with keyset (cursor) paging and
full-text search per dialect.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from ..entities import EntityType, Field, FieldType
from ..fieldvalues import FieldValueError, parse_value
from .codec import db_time, scalar_to_db
from .errors import FieldError, Forbidden, NotFound, ValidationError

__all__ = ["ListQuery", "CompiledQuery", "FilterCompiler", "Related", "SYSTEM_FIELDS", "compile_list",
           "parse_filter_params", "OPERATORS"]

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "is_null", "between")
MAX_LIMIT = 500
#: How deep ``has`` conditions may nest (a ``has`` in the filter of a ``has``...).
MAX_HAS_DEPTH = 3
_HAS_KEYS = ("entity", "via", "filter")

#: What a ``has`` condition learns of a related entity type, by its name: the type, the fields the
#: reader may filter on (hidden ones left out) and the SQL limiting its rows to the reader's read
#: scope (bare column names; None: every row). Raises NotFound for an unknown type and
#: Forbidden when the reader may not read it.
Related = Callable[[str], tuple[EntityType, dict[str, Field], tuple[str, list[Any]] | None]]
_WORD = re.compile(r"\w+", re.UNICODE)

#: The columns every entity table has, as fields a filter, a sort or a report may name.
SYSTEM_FIELDS = {
    "id": Field(name="id", type=FieldType.INTEGER),
    "version": Field(name="version", type=FieldType.INTEGER),
    "owner_id": Field(name="owner_id", type=FieldType.INTEGER),
    "team_id": Field(name="team_id", type=FieldType.INTEGER),
    "created_by": Field(name="created_by", type=FieldType.INTEGER),
    "updated_by": Field(name="updated_by", type=FieldType.INTEGER),
    "created_at": Field(name="created_at", type=FieldType.DATETIME),
    "updated_at": Field(name="updated_at", type=FieldType.DATETIME),
}
#: System columns that are never NULL.
NOT_NULL = {"id", "version", "created_at", "updated_at"}
_COMPARABLE = {"lt", "lte", "gt", "gte", "between"}
_SQL_OP = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


class ListQuery(msgspec.Struct, kw_only=True):
    filter: dict | None = None
    sort: list[str] = []
    limit: int = 50
    cursor: str | None = None
    search: str | None = None
    count: bool = False
    fields: list[str] | None = None
    deleted: bool = False  # list the trash instead of live records


class CompiledQuery(msgspec.Struct):
    sql: str
    params: list[Any]
    count_sql: str | None
    count_params: list[Any]
    sort_columns: list[tuple[str, bool]]  # (column, descending)
    limit: int


def _fail(field: str, message: str, code: str = "invalid") -> ValidationError:
    return ValidationError([FieldError(field=field, code=code, message=message)])


class FilterCompiler:
    """The filter language (``{"field", "op", "value"}``, ``and``/``or``/``not``, ``has``) as an
    SQL condition over one entity table, its values bound as parameters in :attr:`params` in the
    order the SQL names them. Get one from ``RecordsService.filter_compiler`` (it knows what
    the actor may see) rather than building it."""

    def __init__(
        self, entity: EntityType, dialect: str, region: str, currency: str, fields: dict[str, Field],
        related: Related | None = None, *, params: list[Any] | None = None, depth: int = 0,
        outer: str | None = None,
    ):
        self.entity = entity
        self.dialect = dialect
        self.region = region
        self.currency = currency
        self.fields = fields
        self.related = related
        #: Shared with nested compilers, so parameters stay in the order the SQL names them.
        self.params: list[Any] = [] if params is None else params
        self.depth = depth
        #: How the SQL names this level's table: the table itself at the top, an alias below.
        self.outer = outer or f'"{entity.table}"'

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def field(self, name: str, where: str) -> tuple[Field, str]:
        base, _, part = name.partition("__")
        field = SYSTEM_FIELDS.get(base) or self.fields.get(base)
        if field is None or (part and not (
            (field.type is FieldType.MONEY and part == "currency")
            or (field.type is FieldType.PHONE and part == "raw")
        )):
            known = ", ".join(sorted(set(self.fields) | set(SYSTEM_FIELDS)))
            raise _fail(f"{where}.{name}", f"unknown field {name!r}; known fields: {known}", "unknown_field")
        if part:
            return Field(name=name, type=FieldType.TEXT), f'"{name}"'
        return field, f'"{field.name}"'

    def value(self, field: Field, raw: Any, where: str) -> Any:
        try:
            value = parse_value(field, raw, region=self.region, currency=self.currency)
        except FieldValueError as exc:
            raise _fail(f"{where}.{field.name}", exc.message) from None
        if field.type is FieldType.MONEY:
            value = value.amount if value is not None else None
        elif field.type is FieldType.PHONE:
            value = value.e164 if value is not None else None
        elif field.type in (FieldType.TAGS, FieldType.MULTI_CHOICE):
            raise _fail(f"{where}.{field.name}", "list fields take 'contains', 'in' or 'is_null'")
        return self.db_value(field, value)

    def db_value(self, field: Field, value: Any) -> Any:
        if value is None:
            return None
        if self.dialect == "sqlite" and field.type in (FieldType.DECIMAL, FieldType.MONEY):
            return float(value)
        if field.type is FieldType.DATETIME and field.name in SYSTEM_FIELDS:
            return db_time(value, self.dialect)
        return scalar_to_db(field.type, self.dialect)(value)

    def column_expr(self, field: Field, column: str) -> str:
        if self.dialect == "sqlite" and field.type in (FieldType.DECIMAL, FieldType.MONEY) and "__" not in field.name:
            return f"CAST({column} AS REAL)"
        return column

    def node(self, node: Any, where: str = "filter") -> str:
        if not isinstance(node, dict):
            raise _fail(where, "a filter is an object: {field, op, value} or {and: [...]}, {or: [...]}, "
                               "{not: {...}}, {has: {entity, via, filter}}")
        if "and" in node or "or" in node:
            key = "and" if "and" in node else "or"
            items = node[key]
            if not isinstance(items, list) or not items or len(node) != 1:
                raise _fail(where, f"'{key}' takes a non-empty list of filters and nothing beside it")
            parts = [self.node(item, f"{where}.{key}[{i}]") for i, item in enumerate(items)]
            return "(" + f" {key.upper()} ".join(parts) + ")"
        if "not" in node:
            # The complement of the condition: a row whose value is NULL (where the inner
            # condition is unknown) is "not" it too, as ``ne`` already treats NULL.
            return f"NOT COALESCE(({self.node(node['not'], where + '.not')}), FALSE)"
        if "has" in node:
            if len(node) != 1:
                raise _fail(where, "'has' takes {entity, via, filter} and nothing beside it")
            return self.has(node["has"], f"{where}.has")
        name, op = node.get("field"), node.get("op", "eq")
        if not isinstance(name, str):
            raise _fail(where, "a condition needs 'field' (a field name), 'op' and 'value'")
        if op not in OPERATORS:
            raise _fail(f"{where}.{name}", f"unknown operator {op!r}; accepted: {', '.join(OPERATORS)}")
        field, column = self.field(name, where)
        value = node.get("value")
        return self.condition(field, column, op, value, where)

    def has(self, spec: Any, where: str) -> str:
        """``EXISTS`` related records: live, within the reader's read scope, matching ``filter``."""
        if not isinstance(spec, dict):
            raise _fail(where, "'has' takes an object: {entity, via, filter}")
        for key in spec:
            if key not in _HAS_KEYS:
                raise _fail(f"{where}.{key}", f"unknown key {key!r}; 'has' takes entity, via and filter")
        if self.depth >= MAX_HAS_DEPTH:
            raise _fail(where, f"related conditions ('has') nest at most {MAX_HAS_DEPTH} deep")
        name = spec.get("entity")
        if not isinstance(name, str) or not name:
            raise _fail(f"{where}.entity", "'has' needs 'entity': the name of the related entity type")
        if self.related is None:
            raise _fail(where, "related conditions ('has') are not available here")
        try:
            entity, fields, scope = self.related(name)
        except NotFound:
            raise _fail(f"{where}.entity", f"unknown entity type {name!r}", "unknown_entity") from None
        except Forbidden as exc:
            raise _fail(f"{where}.entity", f"{exc}, so they cannot be filtered on", "forbidden") from None
        via = spec.get("via")
        accepted = [f.name for f in fields.values()
                    if f.type is FieldType.RELATION and f.target == self.entity.name]
        types = {n: f.type for n, f in fields.items()}
        generic = "related" not in accepted and (  # a relation field named "related" comes first
            types.get("related_entity") is FieldType.TEXT and types.get("related_id") is FieldType.INTEGER)
        if generic:
            accepted.append("related")
        if via is None or via not in accepted:
            listed = ", ".join(accepted) if accepted else f"none, no field of {entity.name!r} relates to it"
            wrong = "'has' needs 'via'" if via is None else f"{via!r} is not"
            raise _fail(f"{where}.via", f"{wrong} a field of {entity.name!r} relating it to "
                                        f"{self.entity.name!r}; accepted: {listed}")
        alias = f"_r{self.depth + 1}"
        parts = [f'{alias}."deleted_at" IS NULL']
        if generic and via == "related":
            parts.append(f'{alias}."related_entity" = {self.param(self.entity.name)}')
            parts.append(f'{alias}."related_id" = {self.outer}."id"')
        else:
            parts.append(f'{alias}."{via}" = {self.outer}."id"')
        if scope is not None:  # bare column names: they name the innermost table, the related one
            parts.append(scope[0])
            self.params.extend(scope[1])
        sub = spec.get("filter")
        if sub is not None:
            inner = FilterCompiler(entity, self.dialect, self.region, self.currency, fields, self.related,
                              params=self.params, depth=self.depth + 1, outer=alias)
            parts.append(inner.node(sub, f"{where}.filter"))
        return f'EXISTS (SELECT 1 FROM "{entity.table}" AS {alias} WHERE {" AND ".join(parts)})'

    def condition(self, field: Field, column: str, op: str, value: Any, where: str) -> str:
        listy = field.type in (FieldType.TAGS, FieldType.MULTI_CHOICE)
        if op == "is_null":
            flag = value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")
            return f"{column} IS NULL" if flag else f"{column} IS NOT NULL"
        if op in ("contains", "startswith"):
            if not isinstance(value, str) or not value:
                raise _fail(f"{where}.{field.name}", f"'{op}' takes a non-empty string")
            if listy:
                if op == "startswith":
                    raise _fail(f"{where}.{field.name}", "list fields take 'contains', 'in' or 'is_null'")
                return self.list_contains(column, value)
            if field.type not in (FieldType.TEXT, FieldType.LONG_TEXT, FieldType.EMAIL, FieldType.URL,
                                  FieldType.PHONE, FieldType.CHOICE):
                raise _fail(f"{where}.{field.name}", f"'{op}' applies to text fields only")
            if field.type is FieldType.PHONE:
                value = value.lstrip("+") if op == "contains" else value
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%" if op == "contains" else f"{escaped}%"
            like = "LIKE" if self.dialect == "sqlite" else "ILIKE"
            return f"{column} {like} {self.param(pattern)} ESCAPE '\\'"
        if op == "in":
            if isinstance(value, str):
                value = [v for v in value.split(",") if v != ""]
            if not isinstance(value, list) or not value or len(value) > 1000:
                raise _fail(f"{where}.{field.name}", "'in' takes a list of 1 to 1000 values")
            if listy:
                return "(" + " OR ".join(self.list_contains(column, v) for v in value) + ")"
            values = [self.value(field, v, where) for v in value]
            expr = self.column_expr(field, column)
            return f"{expr} IN ({', '.join(self.param(v) for v in values)})"
        if listy:
            raise _fail(f"{where}.{field.name}", "list fields take 'contains', 'in' or 'is_null'")
        if op == "between":
            if isinstance(value, str):
                value = value.split(",")
            if not isinstance(value, list) or len(value) != 2:
                raise _fail(f"{where}.{field.name}", "'between' takes two values: [low, high]")
            low, high = (self.value(field, v, where) for v in value)
            expr = self.column_expr(field, column)
            return f"{expr} BETWEEN {self.param(low)} AND {self.param(high)}"
        if field.type is FieldType.BOOLEAN and op in _COMPARABLE:
            raise _fail(f"{where}.{field.name}", "a boolean takes 'eq', 'ne' or 'is_null'")
        parsed = self.value(field, value, where)
        if parsed is None:
            if op in ("eq", "ne"):
                return f"{column} IS NULL" if op == "eq" else f"{column} IS NOT NULL"
            raise _fail(f"{where}.{field.name}", f"'{op}' needs a value")
        expr = self.column_expr(field, column)
        if op == "ne":
            return f"({expr} <> {self.param(parsed)} OR {column} IS NULL)"
        return f"{expr} {_SQL_OP[op]} {self.param(parsed)}"

    def list_contains(self, column: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(column.strip('"'), "expected a string")
        if self.dialect == "sqlite":
            return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.value = {self.param(value)})"
        return f"{column} @> {self.param([value])}::jsonb"


#: Letters FTS5's tokenizer keeps apart from their plain look-alikes (they are letters of their
#: own, not accented ones): a search tries both, as PostgreSQL's unaccent folds them together.
_LOOK_ALIKES = {"i": "ı", "ı": "i", "l": "ł", "ł": "l", "o": "ø", "ø": "o", "d": "đ", "đ": "d"}
_MAX_VARIANTS = 16


def _fts_prefix(word: str) -> str:
    """An FTS5 prefix query for a word: ``"yilm"*``, or its look-alike spellings ORed
    (``("yilm"* OR "yılm"*)``) so that ``yilmaz`` finds ``Yılmaz``."""
    variants = [""]
    for letter in word.lower():
        other = _LOOK_ALIKES.get(letter)
        variants = [v + letter for v in variants] + ([v + other for v in variants] if other else [])
        if len(variants) > _MAX_VARIANTS:
            return f'"{word}"*'
    if len(variants) == 1:
        return f'"{variants[0]}"*'
    return "(" + " OR ".join(f'"{v}"*' for v in variants) + ")"


def search_condition(
    entity: EntityType, dialect: str, text: str, hidden: frozenset[str] = frozenset(),
) -> tuple[str, Any] | None:
    """The WHERE condition of a full-text search; words match as prefixes, all must match.

    ``hidden``: fields the reader may not see, whose words must not make a record match.
    """
    from ..storage.schema import pg_search_vector, search_expression

    words = _WORD.findall(text)[:16]
    if not words:
        return None
    searchable = [f for f in entity.fields if f.is_searchable]
    visible = [f for f in searchable if f.name not in hidden]
    if not visible:
        return "? IS NULL", 0  # nothing to search in: nothing matches
    if dialect == "sqlite":
        match = " AND ".join(_fts_prefix(w) for w in words)
        if len(visible) < len(searchable):
            columns = " ".join(f'"{c}"' for f in visible for c in f.columns())
            match = f"{{{columns}}} : ({match})"
        return f'"id" IN (SELECT rowid FROM "{entity.table}__search" WHERE "{entity.table}__search" MATCH ?)', match
    query = " & ".join(f"{w}:*" for w in words)
    condition = "\"_search\" @@ to_tsquery('simple', crm_fold(?))"
    if len(visible) < len(searchable):
        # The indexed vector finds candidates; the visible fields' own vector decides.
        only = search_expression(msgspec.structs.replace(entity, fields=visible))
        return f"({condition} AND {pg_search_vector(only)} @@ to_tsquery('simple', crm_fold(?)))", (query, query)
    return condition, query


def parse_sort(entity_fields: dict[str, Field], sort: list[str]) -> list[tuple[str, bool]]:
    result: list[tuple[str, bool]] = []
    for item in sort:
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        name = item.lstrip("-+")
        field = SYSTEM_FIELDS.get(name) or entity_fields.get(name)
        if field is None:
            known = ", ".join(sorted(set(entity_fields) | set(SYSTEM_FIELDS)))
            raise _fail(f"sort.{name}", f"unknown field {name!r}; known fields: {known}", "unknown_field")
        if field.type in (FieldType.TAGS, FieldType.MULTI_CHOICE, FieldType.LONG_TEXT):
            raise _fail(f"sort.{name}", f"a {field.type.value} field cannot be sorted on")
        if name == "id":  # the tie-breaker ends every sort: it only takes its direction
            result = [r for r in result if r[0] != "id"] + [("id", desc)]
            break
        result.append((name, desc))
    return [r for r in result if r[0] != "id"][:4] + [r for r in result if r[0] == "id"]


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        values = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except Exception:
        values = None
    if not isinstance(values, list) or len(values) != width:
        raise _fail("cursor", "the cursor is not valid for this query; use the next_cursor of the previous page")
    return values


def compile_list(
    entity: EntityType, query: ListQuery, *, dialect: str, select_list: str, fields: dict[str, Field],
    region: str = "US", currency: str = "EUR", scope: tuple[str, list[Any]] | None = None,
    hidden: frozenset[str] = frozenset(), related: Related | None = None,
) -> CompiledQuery:
    """SQL for one page of a list: WHERE from filter + search + scope, keyset ORDER BY.

    ``related`` answers the filter's ``has`` conditions (see :data:`Related`); without it they
    are refused.
    """
    if not 1 <= query.limit <= MAX_LIMIT:
        raise _fail("limit", f"limit must be between 1 and {MAX_LIMIT}")
    compiler = FilterCompiler(entity, dialect, region, currency, fields, related)
    where = ['"deleted_at" IS NOT NULL' if query.deleted else '"deleted_at" IS NULL']
    if scope is not None:
        where.append(scope[0])
        compiler.params.extend(scope[1])
    if query.filter:
        where.append(compiler.node(query.filter))
    if query.search and len(query.search) > 200:
        raise _fail("q", "a search is at most 200 characters")
    if query.search:
        found = search_condition(entity, dialect, query.search, hidden)
        if found is not None:
            where.append(found[0])
            compiler.params.extend(found[1] if isinstance(found[1], tuple) else [found[1]])
    count_where = " AND ".join(where)
    count_params = list(compiler.params)

    sort = parse_sort(fields, query.sort)
    keys = [(compiler.column_expr(SYSTEM_FIELDS.get(n) or fields[n], f'"{n}"'), n, d) for n, d in sort]
    id_desc = bool(sort) and sort[-1][0] == "id" and sort[-1][1]
    if sort and sort[-1][0] == "id":
        keys.pop()
    keys.append(('"id"', "id", id_desc))
    if query.cursor:
        last = decode_cursor(query.cursor, len(keys))
        if dialect == "postgres":
            last = [_cursor_value(SYSTEM_FIELDS.get(n) or fields[n], v) for (_, n, _), v in zip(keys, last)]
        ors = []
        for i, (expr, name, desc) in enumerate(keys):
            # NULL sorts as the largest value: last ascending, first descending (PostgreSQL's
            # default, made explicit on SQLite), so indexes serve both.
            value = last[i]
            if value is None and not desc:
                continue  # nothing sorts after NULL ascending (decided before binding parameters)
            ands = []
            for (prev_expr, _, _), prev in zip(keys[:i], last[:i]):
                ands.append(f"{prev_expr} IS NULL" if prev is None else f"{prev_expr} = {compiler.param(prev)}")
            if desc:
                after = f"{expr} IS NOT NULL" if value is None else f"{expr} < {compiler.param(value)}"
            elif name in NOT_NULL:  # a plain range lets the index start at the cursor
                after = f"{expr} > {compiler.param(value)}"
            else:
                after = f"({expr} > {compiler.param(value)} OR {expr} IS NULL)"
            ors.append("(" + " AND ".join(ands + [after]) + ")")
        where.append("(" + " OR ".join(ors) + ")" if ors else "1 = 0")
    # NULLS placement only where NULLs can occur: on SQLite a NULLS clause on "id" turns an
    # index walk that stops after one page into a sort of every match.
    order = ", ".join(
        f"{expr} {'DESC' if desc else 'ASC'}" if name in NOT_NULL
        else f"{expr} {'DESC NULLS FIRST' if desc else 'ASC NULLS LAST'}"
        for expr, name, desc in keys
    )
    sort_select = "".join(f", {expr}" for expr, name, _ in keys[:-1])
    sql = (
        f'SELECT {select_list}{sort_select} FROM "{entity.table}" WHERE {" AND ".join(where)} '
        f"ORDER BY {order} LIMIT {int(query.limit) + 1}"
    )
    count_sql = None
    if query.count and len(where) == 1 and not query.cursor and not query.deleted:
        # Unfiltered: all rows minus the trash, the first counted on the smallest index and the
        # second on the partial trash index, instead of a scan testing every row.
        count_sql = (
            f'SELECT (SELECT COUNT(*) FROM "{entity.table}") - '
            f'(SELECT COUNT(*) FROM "{entity.table}" WHERE "deleted_at" IS NOT NULL)'
        )
    elif query.count:
        count_sql = f'SELECT COUNT(*) FROM "{entity.table}" WHERE {count_where}'
    return CompiledQuery(sql, compiler.params, count_sql, count_params, [(n, d) for _, n, d in keys], query.limit)


def parse_filter_params(params: dict[str, str]) -> dict | None:
    """``?city=Izmir&score__gte=50&amount__currency=EUR`` -> the filter language (ANDed)."""
    conditions = []
    for key, value in params.items():
        name, sep, op = key.rpartition("__")
        if not sep or op in ("currency", "raw"):  # no operator: equality (on a money/phone part)
            name, op = key, "eq"
        elif op not in OPERATORS:
            raise _fail(f"filter.{name}", f"unknown operator {op!r}; accepted: {', '.join(OPERATORS)}")
        conditions.append({"field": name, "op": op, "value": value})
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else {"and": conditions}


def _cursor_value(field: Field, value: Any) -> Any:
    """A cursor value back in the type PostgreSQL compares the column with."""
    if value is None:
        return None
    try:
        if field.type is FieldType.DATETIME:
            return datetime.datetime.fromisoformat(value)
        if field.type is FieldType.DATE:
            return datetime.date.fromisoformat(value)
        if field.type in (FieldType.DECIMAL, FieldType.MONEY):
            return Decimal(str(value))
        if field.type in (FieldType.INTEGER, FieldType.RELATION) and not isinstance(value, int):
            raise ValueError
    except (ValueError, TypeError, ArithmeticError):
        raise _fail("cursor", "the cursor is not valid for this query") from None
    return value


def row_sort_values(row: tuple, width: int, sort_count: int, record_id: int) -> list[Any]:
    """The cursor of a row: its trailing sort columns plus its id."""
    values = list(row[width:width + sort_count]) if sort_count else []
    out = []
    for v in values:
        if isinstance(v, Decimal):
            v = str(v)
        elif hasattr(v, "isoformat"):
            v = v.isoformat()
        out.append(v)
    return out + [record_id]
