"""The records service: the one write path, and the reads every front end shares.

Every create, update, delete and restore, from the API, the CLI, imports, automation or a plugin,
comes through here: values are validated per field type, ``crm_before_save`` hooks run, the rows,
their audit entries, the webhook deliveries and the automation jobs they cause are written in one
transaction, and after commit ``crm_after_commit`` receives the event. Bulk writes take the same
path once per batch, not once per row.
"""

from __future__ import annotations

import datetime as dt
import functools
import copy
import inspect
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..auth.permissions import SYSTEM, Actor, Scope
from ..entities import EntityType, Field, FieldType
from ..fieldvalues import FieldValueError, parse_value, value_parser
from ..storage.database import IntegrityError
from ..storage.schema import pg_search_vector, search_columns, search_expression
from .codec import EntityCodec, db_time, identity
from .errors import Conflict, FieldError, Forbidden, NotFound, ValidationError
from .query import FilterCompiler, ListQuery, compile_list, row_sort_values, encode_cursor

if TYPE_CHECKING:
    from ..deployment import Deployment

__all__ = ["RecordsService", "Change", "RecordEvent", "Page"]

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
#: Every record's owner: set like a relation to a user, stored in a system column.
OWNER_FIELD = Field(name="owner_id", type=FieldType.RELATION, target="user", label="Owner")
_OWNER_PARSER = (OWNER_FIELD, value_parser(OWNER_FIELD), True)
TEAM_FIELD = Field(name="team_id", type=FieldType.RELATION, target="team", label="Team")
_TEAM_PARSER = (TEAM_FIELD, value_parser(TEAM_FIELD), True)
#: System columns input may set (within the actor's scopes).
_SYSTEM_INPUT = ("owner_id", "team_id")
READ_ONLY = {"id", "version", "created_at", "updated_at", "deleted_at", "created_by", "updated_by"}
_to_builtins = msgspec.to_builtins
#: Rows bulk_create validates and writes at a time.
BULK_CHUNK = 5_000
#: Records per audit entry of a bulk create.
AUDIT_SLICE = 1_000
#: Bad rows a bulk create names before it stops looking.
MAX_ROW_ERRORS = 1_000
#: SQLite: a bulk create this large, and larger than its table was, builds plain indexes at the end.
DEFER_INDEXES_FROM = 50_000


class Change(msgspec.Struct, kw_only=True):
    """What ``crm_before_save`` sees: one write about to happen (or one batch of them)."""

    entity: str
    action: str  # create | update | delete | restore
    #: Validated values about to be written (one record); hooks may change them.
    values: dict[str, Any] = {}
    #: The record as it is now (update, delete, restore).
    before: dict[str, Any] | None = None
    user_id: int | None = None
    #: For bulk writes: the values of every row, in order.
    batch: list[dict[str, Any]] | None = None
    #: For bulk updates: each row's record as it is now, in the order of ``batch``.
    befores: list[dict[str, Any]] | None = None
    callbacks: list[Any] = []

    def after_write(self, callback: Any) -> None:
        """Have ``callback(record_ids)`` (may be async) called inside the write's transaction
        once the rows and audit entries are written: ``record_ids`` are in the order of
        ``values`` / ``batch`` (a create's new ids). E.g. to write a row of one's own that
        names the record, committed or rolled back with it."""
        self.callbacks.append(callback)


class RecordEvent(msgspec.Struct, kw_only=True):
    """What ``crm_after_commit`` receives after a committed write."""

    entity: str
    action: str
    record_ids: list[int]
    #: The records as committed (for delete: as they were).
    records: list[dict[str, Any]]
    #: Per record: field -> [old, new].
    changes: list[dict[str, list[Any]]]
    user_id: int | None = None

    @property
    def record_id(self) -> int:
        return self.record_ids[0]

    @property
    def record(self) -> dict[str, Any]:
        return self.records[0]


class Page(msgspec.Struct):
    items: list[dict[str, Any]]
    next_cursor: str | None = None
    total: int | None = None


def _fresh_schema(method):
    """Names unknown here may be fields another process just added: re-read the schema once
    and retry before refusing them (notifications of schema changes arrive asynchronously)."""

    @functools.wraps(method)
    async def wrapper(self: RecordsService, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except ValidationError as exc:
            if not any(e.code == "unknown_field" for e in exc.errors):
                raise
            if not await self.deployment.refresh(force=True):
                raise
        return await method(self, *args, **kwargs)

    return wrapper


def _chunked(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if isinstance(rows, dict):  # one record where a list of them belongs
        raise ValidationError([FieldError("rows", "invalid", "expected a list of records")])
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class _DeferredIndexes:
    """A SQLite bulk load's plain indexes: dropped once the load outgrows the table it goes into,
    built again before the load commits. Both happen inside the load's transaction, so other
    connections never see the table without them; unique indexes stay, to refuse duplicates."""

    def __init__(self, service: RecordsService, entity: EntityType):
        self.service, self.entity = service, entity
        self.dropped: list[str] = []
        self.done = service.db.dialect != "sqlite"
        self.rows_before: int | None = None

    async def before_insert(self, written: int, incoming: int) -> None:
        if self.done or written + incoming < DEFER_INDEXES_FROM:
            return
        db, table = self.service.db, self.entity.table
        if self.rows_before is None:  # at most this many rows were there before the load
            self.rows_before = (await db.fetchval(f'SELECT max("id") FROM "{table}"') or 0) - written
        if written + incoming <= self.rows_before:
            return  # the load is smaller than the table: keeping its indexes up is cheaper
        self.done = True
        for name, sql in await db.fetch(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL "
            "AND sql NOT LIKE 'CREATE UNIQUE%'", (table,),
        ):
            await db.execute(f'DROP INDEX "{name}"')
            self.dropped.append(sql)

    async def rebuild(self) -> None:
        for sql in self.dropped:
            await self.service.db.execute(sql, long=True)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _snapshot(values: dict[str, Any], list_fields: list[str]) -> dict[str, Any]:
    """Values as given, to tell whether hooks changed them: a shallow copy, plus copies of the
    list values (tags...) a hook could change in place."""
    snapshot = values.copy()
    for name in list_fields:
        if isinstance(snapshot.get(name), list):
            snapshot[name] = list(snapshot[name])
    return snapshot


class _InitialValues(Sequence):
    """A bulk create event's ``changes`` (``{field: [None, value]}`` per record), made when read:
    most listeners look at a bulk load's entity and go, and a million dicts cost seconds."""

    def __init__(self, rows: list[dict[str, Any]]):
        self._rows = rows

    @staticmethod
    def _changes(values: dict[str, Any]) -> dict[str, list[Any]]:
        return {k: [None, _jsonable(v)] for k, v in values.items() if v is not None}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._changes(values) for values in self._rows[index]]
        return self._changes(self._rows[index])

    def __eq__(self, other: object) -> bool:
        return list(self) == other


def _jsonable(value: Any) -> Any:
    return _to_builtins(value)


class RecordsService:
    """Reads and writes of records, made as one :class:`Actor` whose role they obey.

    ``deployment.records`` acts as :data:`SYSTEM` (trusted code: the CLI, migrations, loaders);
    a request's code uses ``deployment.records.as_actor(actor)``.
    """

    def __init__(self, deployment: Deployment, actor: Actor = SYSTEM):
        self.deployment = deployment
        self.actor = actor
        self._codecs: dict[tuple[str, int], EntityCodec] = {}
        self._sql: dict[tuple[str, str], str] = {}

    def as_actor(self, actor: Actor) -> RecordsService:
        """The same service (caches shared) making every read and write as ``actor``."""
        view = copy.copy(self)
        view.actor = actor
        return view

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def db(self):
        return self.deployment.db

    def entity(self, name: str) -> EntityType:
        entity = self.deployment.registry.get(name)
        if entity is None:
            raise NotFound("entity type", name)
        return entity

    def codec(self, entity: EntityType) -> EntityCodec:
        key = (entity.name, self.deployment.schema_version)
        codec = self._codecs.get(key)
        if codec is None:
            codec = self._codecs[key] = EntityCodec(entity, self.db.dialect)
        return codec

    def invalidate(self) -> None:
        self._codecs.clear()
        self._sql.clear()

    # -- permissions: every read and write asks these ------------------------------------------

    def _scope(self, entity: EntityType, action: str) -> Scope:
        scope = self.actor.scope(entity.name, action)
        if scope is Scope.NONE:
            raise Forbidden(f"your role may not {action} {entity.label_plural.lower()}")
        return scope

    def _hidden(self, entity: EntityType) -> frozenset[str]:
        return self.actor.hidden_fields(entity.name)

    def readable(self, name: str, action: str = "read") -> tuple[EntityType, dict[str, Field], tuple[str, list[Any]] | None]:
        """What this actor may use of the entity type ``name`` for ``action``: the type, the
        fields it sees (hidden ones left out) and its scope as an SQL condition over bare column
        names with its parameters (None: every row). NotFound / Forbidden when the type is
        unknown / not allowed. Code writing its own SQL over a table (reports) starts here and
        with :meth:`filter_compiler`; a filter's ``has`` conditions ask it of related types."""
        entity = self.entity(name)
        scope = self._scope(entity, action)
        hidden = self._hidden(entity)
        return (entity, {f.name: f for f in entity.visible_fields if f.name not in hidden},
                None if self.actor.system else self.actor.scope_sql(scope))

    def filter_compiler(self, name: str, *, params: list[Any] | None = None) -> FilterCompiler:
        """A compiler of the filter language over the entity type ``name``'s table as this actor
        reads it: only the fields it sees, ``has`` conditions within its read scope. Its
        ``node(filter)`` gives the SQL condition; the values go to ``params`` (a new list by
        default). The actor's own scope is not in the condition: add ``readable(name)[2]``."""
        entity, fields, _ = self.readable(name)
        settings = self.deployment.settings
        return FilterCompiler(entity, self.db.dialect, settings.region, settings.currency, fields, self.readable,
                              params=params)

    def _reader(self, entity: EntityType) -> EntityCodec:
        """The codec of what this actor may see of an entity: its hidden fields left out."""
        hidden = self._hidden(entity)
        if not hidden:
            return self.codec(entity)
        key = (entity.name, self.deployment.schema_version, hidden)
        codec = self._codecs.get(key)
        if codec is None:
            codec = self._codecs[key] = EntityCodec(
                entity, self.db.dialect, [f for f in entity.visible_fields if f.name not in hidden])
        return codec

    def _strip(self, entity: EntityType, record: dict[str, Any]) -> dict[str, Any]:
        hidden = self._hidden(entity)
        return {k: v for k, v in record.items() if k not in hidden} if hidden else record

    async def _team_members(self) -> set[int]:
        """Users sharing a team with the actor (the actor included)."""
        members = {self.actor.user_id}
        if self.actor.team_ids:
            marks = ", ".join("?" for _ in self.actor.team_ids)
            members.update(r[0] for r in await self.db.fetch(
                f'SELECT "user_id" FROM crm_team_member WHERE "team_id" IN ({marks})', list(self.actor.team_ids)))
        return members

    async def _primary_teams(self, owners: set[int]) -> dict[int, int]:
        """Owner -> their first team: a new record's team, unless given."""
        teams: dict[int, int] = {}
        if not self.actor.system and self.actor.user_id in owners:  # the usual case: one's own record
            if self.actor.team_ids:
                teams[self.actor.user_id] = self.actor.team_ids[0]
            owners = owners - {self.actor.user_id}
        ids = sorted(o for o in owners if o is not None)
        for start in range(0, len(ids), 900):
            part = ids[start:start + 900]
            for user_id, team_id in await self.db.fetch(
                f'SELECT "user_id", "team_id" FROM crm_team_member WHERE "user_id" IN ({", ".join("?" for _ in part)}) '
                'ORDER BY "user_id", "position" DESC', part,
            ):
                teams[user_id] = team_id  # the lowest position is read last
        return teams

    async def _check_owners(
        self, entity: EntityType, rows: list[dict[str, Any]], action: str, prefix: str = "", offset: int = 0,
    ) -> None:
        """The owners and teams new values give must be within the actor's ``action`` scope."""
        if self.actor.system:
            return
        scope = self._scope(entity, action)
        owners = {values["owner_id"] or self.actor.user_id for values in rows if "owner_id" in values}
        if scope is Scope.ALL or not owners - {self.actor.user_id}:
            allowed = owners
        else:  # owners within the scope: the actor, and for a team scope their teams' members
            allowed = await self._team_members() if scope is Scope.TEAM else {self.actor.user_id}
        errors = []
        for index, values in enumerate(rows, offset):
            where = f"{prefix}[{index}]." if prefix else ""
            if "owner_id" in values and (values["owner_id"] or self.actor.user_id) not in allowed:
                errors.append(FieldError(f"{where}owner_id", "forbidden",
                                         f"your role may only {action} records owned by "
                                         + ("you" if scope is Scope.OWN else "you or your teams")))
            team = values.get("team_id")
            if team is not None and scope is not Scope.ALL and team not in self.actor.team_ids:
                errors.append(FieldError(f"{where}team_id", "forbidden", "you may only give one of your own teams"))
        if errors:
            raise Forbidden(f"your role may not {action} these {entity.label_plural.lower()} this way", errors)

    def _parse(self, entity: EntityType, data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError([FieldError("body", "invalid", "expected a JSON object of field values")])
        codec = self.codec(entity)
        parsers = codec.parsers
        settings = self.deployment.settings
        region, currency = settings.region, settings.currency
        errors: list[FieldError] = []
        denied: list[FieldError] = []
        values: dict[str, Any] = {}
        rules = None if self.actor.system else self.actor.role.fields.get(entity.name)
        # parse_value inlined: bulk creates run this loop for every value of every row.
        for name, raw in data.items():
            entry = parsers.get(name)
            if rules and name in rules:
                if rules[name] == "read":
                    denied.append(FieldError(name, "read_only", "your role may read this field, not change it"))
                    continue
                entry = None  # hidden: as unknown as a field that does not exist
            if entry is None:
                if name == "owner_id":
                    entry = _OWNER_PARSER
                elif name == "team_id":
                    entry = _TEAM_PARSER
                elif name in READ_ONLY:
                    errors.append(FieldError(name, "read_only", f"{name} is set by the system"))
                    continue
                else:
                    known = ", ".join(f.name for f in entity.visible_fields if not rules or rules.get(f.name) != "hidden")
                    errors.append(FieldError(name, "unknown_field", f"unknown field; {entity.name} fields are: {known}"))
                    continue
            field, parse, blank_is_empty = entry
            if raw is None or (blank_is_empty and raw == ""):
                values[name] = None
                continue
            try:
                values[name] = parse(field, raw, region, currency)
            except FieldValueError as exc:
                errors.append(FieldError(name, exc.code, exc.message))
        if creating:
            for field in codec.defaults:
                if field.name not in values:
                    values[field.name] = parse_value(field, field.default, region=region, currency=currency)
        for field in codec.required:
            if (creating or field.name in values) and values.get(field.name) in (None, [], ""):
                if not any(e.field == field.name for e in errors):
                    errors.append(FieldError(field.name, "required", "this field is required"))
        if denied:
            raise Forbidden("your role may not change " + ", ".join(e.field for e in denied), denied)
        if errors:
            raise ValidationError(errors)
        return values

    async def _check_relations(self, entity: EntityType, rows: list[dict[str, Any]]) -> None:
        errors = []
        for field in [*entity.fields, OWNER_FIELD]:
            if field.type is not FieldType.RELATION:
                continue
            ids = {row[field.name] for row in rows if row.get(field.name) is not None}
            if not ids:
                continue
            target = self.deployment.registry.get(field.target)
            found = set()
            id_list = sorted(ids)
            for start in range(0, len(id_list), 900):
                part = id_list[start:start + 900]
                marks = ", ".join("?" for _ in part)
                found.update(r[0] for r in await self.db.fetch(
                    f'SELECT "id" FROM "{target.table}" WHERE "id" IN ({marks}) AND "deleted_at" IS NULL', part
                ))
            missing = ids - found
            if missing:
                errors.append(FieldError(
                    field.name, "not_found", f"no {field.target} with id {', '.join(map(str, sorted(missing)[:10]))}"
                ))
        teams = {row["team_id"] for row in rows if row.get("team_id") is not None}
        if teams:
            marks = ", ".join("?" for _ in teams)
            found = {r[0] for r in await self.db.fetch(f'SELECT "id" FROM crm_team WHERE "id" IN ({marks})', sorted(teams))}
            if teams - found:
                errors.append(FieldError("team_id", "not_found", f"no team with id {', '.join(map(str, sorted(teams - found)))}"))
        if errors:
            raise ValidationError(errors)

    async def _after_write(self, change: Change, record_ids: list[int]) -> None:
        for callback in change.callbacks:
            result = callback(record_ids)
            if inspect.isawaitable(result):
                await result

    async def _hooks_before(self, change: Change) -> bool:
        """Run ``crm_before_save``; True when the hooks changed the values (to validate again).
        The core implements it too (stage moves): unchanged values are not parsed twice."""
        hook = self.deployment.pm.hook.crm_before_save
        if not hook.get_hookimpls():
            return False
        lists = self.codec(self.entity(change.entity)).list_fields
        given = ([_snapshot(v, lists) for v in change.batch] if change.batch is not None
                 else _snapshot(change.values, lists))
        results = [r for r in hook(change=change, deployment=self.deployment) if inspect.isawaitable(r)]
        try:
            for result in results:
                await result
        except BaseException:  # one refused the write: the others' coroutines will not run
            for result in results:
                if inspect.iscoroutine(result):
                    result.close()
            raise
        return (change.batch if change.batch is not None else change.values) != given

    async def _outbox(self, event: RecordEvent) -> None:
        """Inside the write's transaction: queue the event's webhook deliveries, so that they
        commit with the write (a crash right after the commit loses none)."""
        await self.deployment.webhooks.on_write(event)

    async def _emit(self, event: RecordEvent) -> None:
        """After commit: a failing listener is logged and never undoes the write."""
        for impl in reversed(self.deployment.pm.hook.crm_after_commit.get_hookimpls()):
            try:
                kwargs = {"event": event, "deployment": self.deployment}
                result = impl.function(**{a: kwargs[a] for a in impl.argnames})
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r failed handling %s %s", impl.plugin_name, event.entity, event.action)

    def _integrity(self, entity: EntityType, exc: IntegrityError) -> ValidationError:
        column = exc.column or ""
        field = column if entity.field(column) else next(
            (f.name for f in entity.fields if f.unique and f.name in str(exc)), column or "record"
        )
        return ValidationError([FieldError(
            field, "unique", f"another {entity.name} already has this {field}; values must be unique"
        )])

    @staticmethod
    def _id_ranges(ids: list[int]) -> list[tuple[str, list[int]]]:
        """WHERE clauses (with parameters) that select these ids: one range when they are
        contiguous, as a bulk create's are, else lists small enough for any parameter limit."""
        low, high = min(ids), max(ids)
        if high - low + 1 == len(ids):
            return [('"id" BETWEEN ? AND ?', [low, high])]
        return [(f'"id" IN ({", ".join("?" for _ in part)})', part)
                for part in (ids[i:i + 900] for i in range(0, len(ids), 900))]

    async def _unindex(self, entity: EntityType, ids: list[int]) -> None:
        """Take rows out of SQLite's search index *before* they change or go: the index keeps no
        text of its own, so FTS5 is given the values it indexed (see fts_table_ddl)."""
        columns = search_columns(entity)
        if self.db.dialect != "sqlite" or not columns or not ids:
            return
        t, listed = entity.table, ", ".join(f'"{c}"' for c in columns)
        for where, params in self._id_ranges(ids):
            await self.db.execute(
                f'INSERT INTO "{t}__search" ("{t}__search", rowid, {listed}) '
                f"SELECT 'delete', \"id\", {listed} FROM \"{t}\" WHERE {where}", params,
            )

    async def _index(self, entity: EntityType, ids: list[int]) -> None:
        """Put rows' current values in the search index (after _unindex for changed rows). A bulk
        create does it once at the end: FTS5 indexes a million rows in one statement about
        three times faster than in chunks."""
        columns = search_columns(entity)
        if not columns or not ids:
            return
        t = entity.table
        for where, params in self._id_ranges(ids):
            if self.db.dialect == "sqlite":
                listed = ", ".join(f'"{c}"' for c in columns)
                await self.db.execute(
                    f'INSERT INTO "{t}__search" (rowid, {listed}) SELECT "id", {listed} FROM "{t}" WHERE {where}',
                    params, long=len(ids) >= 10_000,
                )
            else:
                await self.db.execute(
                    f'UPDATE "{t}" SET "_search" = {pg_search_vector(search_expression(entity))} WHERE {where}',
                    params,
                )

    async def _audit(self, entity: EntityType, rows: list[tuple[int, str, dict | None]], user_id: int | None, at: dt.datetime) -> None:
        stamp = at.isoformat()
        await self.db.executemany(
            'INSERT INTO crm_audit ("entity", "record_id", "action", "user_id", "at", "changes") VALUES (?, ?, ?, ?, ?, ?)',
            [(entity.name, rid, action, user_id, stamp, msgspec.json.encode(ch).decode() if ch else None)
             for rid, action, ch in rows],
        )

    # -- writes ------------------------------------------------------------------------------

    @_fresh_schema
    async def create(self, entity_name: str, data: dict[str, Any]) -> dict[str, Any]:
        entity = self.entity(entity_name)
        record_id = await self._create(entity, data)
        return self._strip(entity, await self._fetch(entity, record_id, action=None))

    async def bulk_create(
        self, entity_name: str, rows: Iterable[dict[str, Any]]
    ) -> list[int]:
        """Create many records in one transaction: all or nothing; errors name the row by its
        position in ``rows`` (``rows[41].email``), every bad row, not only the first.

        ``rows`` may be any iterable, a generator reading a file for one: it is validated and
        written :data:`BULK_CHUNK` rows at a time, so a million rows never sit in memory at
        once. Hooks run once per chunk; ``crm_after_commit`` gets one event per chunk.

        On SQLite the search index is filled once at the end, and a load larger than the table
        it goes into builds the table's plain (non-unique) indexes once at the end rather than
        updating them row by row, the way bulk loaders do. Both happen inside the transaction:
        readers see the table as it was, indexes and all, until the load commits.
        """
        entity = self.entity(entity_name)
        user_id = self.actor.user_id
        if not self.actor.system:
            self._scope(entity, "create")
        chunks = _chunked(rows, BULK_CHUNK)
        first = next(chunks, None)
        if first is None:
            return []
        parsed, errors = self._parse_chunk(entity, first, 0)
        if any(e.code == "unknown_field" for e in errors) and await self.deployment.refresh(force=True):
            entity = self.entity(entity_name)  # another process may just have added the field
            parsed, errors = self._parse_chunk(entity, first, 0)
        done = len(first)
        ids: list[int] = []
        events: list[RecordEvent] = []
        async with self.db.transaction():
            deferred = _DeferredIndexes(self, entity)
            while parsed is not None:
                if errors:  # nothing more is written; the rest is only checked, to name every bad row
                    for chunk in chunks:
                        if len(errors) >= MAX_ROW_ERRORS:
                            break
                        errors += self._parse_chunk(entity, chunk, done)[1]
                        done += len(chunk)
                    raise ValidationError(errors[:MAX_ROW_ERRORS])
                start = done - len(parsed)
                await self._check_owners(entity, parsed, "create", "rows", start)
                change = Change(entity=entity.name, action="create", user_id=user_id, batch=parsed)
                if await self._hooks_before(change):  # what hooks set is validated like the input
                    parsed = self._trusted()._parse_rows(entity, change.batch, creating=False, offset=start)
                await deferred.before_insert(len(ids), len(parsed))
                written = await self._insert(entity, parsed, user_id=user_id, single=False, search=False)
                await self._after_write(change, written)
                ids += written
                events.append(RecordEvent(
                    entity=entity.name, action="create", record_ids=written,
                    records=[{"id": rid, **values} for rid, values in zip(written, parsed)],
                    changes=_InitialValues(parsed), user_id=user_id,
                ))
                await self._outbox(events[-1])
                chunk = next(chunks, None)
                parsed, errors = self._parse_chunk(entity, chunk, done) if chunk else (None, [])
                done += len(chunk) if chunk else 0
            if self.db.dialect == "sqlite":
                await self._index(entity, ids)
            await deferred.rebuild()
        for event in events:
            await self._emit(event)
        return ids

    def _parse_chunk(self, entity: EntityType, rows: list[Any], offset: int) -> tuple[list[dict[str, Any]], list[FieldError]]:
        try:
            return self._parse_rows(entity, rows, creating=True, offset=offset), []
        except ValidationError as exc:
            return [], exc.errors

    async def _create(self, entity: EntityType, data: dict[str, Any]) -> int:
        user_id = self.actor.user_id
        values = self._parse(entity, data, creating=True)
        await self._check_owners(entity, [values], "create")
        async with self.db.transaction():
            change = Change(entity=entity.name, action="create", user_id=user_id, values=values)
            if await self._hooks_before(change):  # what hooks set is validated like the input
                values = self._parse_again(entity, change.values)
            [record_id] = await self._insert(entity, [values], user_id=user_id, single=True)
            await self._after_write(change, [record_id])
            event = RecordEvent(
                entity=entity.name, action="create", record_ids=[record_id],
                records=[await self._fetch(entity, record_id, action=None)],
                changes=[{k: [None, _jsonable(v)] for k, v in values.items() if v is not None}], user_id=user_id,
            )
            await self._outbox(event)
        await self._emit(event)
        return record_id

    async def _insert(
        self, entity: EntityType, parsed: list[dict[str, Any]], *, user_id: int | None, single: bool,
        search: bool = True,
    ) -> list[int]:
        """Rows, search index (unless ``search`` is False: the caller indexes them later, inside the
        same transaction) and audit entries of validated new records (inside a transaction)."""
        codec = self.codec(entity)
        now = _now()
        stamp = db_time(now, self.db.dialect)
        # Only the columns this batch sets are bound (fewer parameters per row than all of them).
        # Rows are built column by column: a list per column, zipped into rows at C speed.
        given = set().union(*parsed)
        count = len(parsed)
        # A record's team is its owner's first team unless one is given.
        owners = [values.get("owner_id") or user_id for values in parsed]
        teams = await self._primary_teams(set(owners))
        team_ids = [values.get("team_id") or teams.get(owner) for values, owner in zip(parsed, owners)]
        columns = codec.insert_columns[:7]
        data: list[Iterable[Any]] = [
            itertools.repeat(1, count), itertools.repeat(stamp, count), itertools.repeat(stamp, count),
            itertools.repeat(user_id, count), itertools.repeat(user_id, count), owners, team_ids,
        ]
        for field in entity.fields:
            if field.name not in given:
                continue
            values_of = [values.get(field.name) for values in parsed]
            for index, convert in codec.insert_slots[field.name]:
                columns = columns + [codec.insert_columns[index]]
                data.append(values_of if convert is identity else [convert(v) for v in values_of])
        placeholders = ["?" for _ in columns]
        search_inline = self.db.dialect == "postgres"
        if search_inline:
            # The row's search vector goes in with the row: filling it by a second UPDATE would
            # write every new row and its indexes twice. Same words as search_expression().
            searchable = [data[i] for i, c in enumerate(columns) if c in codec.searchable_columns]
            data.append([" ".join("" if v is None else str(v) for v in texts) for texts in zip(*searchable)]
                        if searchable else itertools.repeat("", count))
            columns = columns + ["_search"]
            placeholders.append(pg_search_vector("?"))
        db_rows = list(zip(*data))
        sql = (
            f'INSERT INTO "{entity.table}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)}) '
            f'VALUES ({", ".join(placeholders)})'
        )
        await self._check_relations(entity, parsed)
        try:
            ids = await self.db.insert_returning_ids(sql, db_rows)
        except IntegrityError as exc:
            raise self._integrity(entity, exc) from None
        if search and not search_inline:
            await self._index(entity, ids)
        # A create's audit entry holds the initial values ({field: value}); history() shows
        # them as [None, value] like any change. A bulk create writes one entry per slice of
        # AUDIT_SLICE records (ids and values side by side): a row per record would cost a
        # bulk load a third of its time.
        if single:
            initial = {k: v for k, v in parsed[0].items() if v is not None}
            await self._audit(entity, [(ids[0], "create", initial)], user_id, now)
        else:
            await self.db.executemany(
                'INSERT INTO crm_audit ("entity", "record_id", "last_record_id", "action", "user_id", "at", "changes") '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(entity.name, min(part), max(part), "create", user_id, now.isoformat(),
                  msgspec.json.encode({"ids": part, "values": parsed[i:i + AUDIT_SLICE]}).decode())
                 for i in range(0, len(ids), AUDIT_SLICE) for part in [ids[i:i + AUDIT_SLICE]]],
            )
        return ids

    def _parse_rows(self, entity: EntityType, rows: list[Any], *, creating: bool, offset: int = 0) -> list[dict[str, Any]]:
        """Validate many rows; all errors at once, each named ``rows[i].field``."""
        parsed, errors, denied = [], [], []
        for index, data in enumerate(rows, offset):
            try:
                parsed.append(self._parse(entity, data, creating=creating))
            except ValidationError as exc:
                errors.extend(FieldError(f"rows[{index}].{e.field}", e.code, e.message) for e in exc.errors)
            except Forbidden as exc:
                denied.extend(FieldError(f"rows[{index}].{e.field}", e.code, e.message) for e in exc.errors)
        if denied:
            raise Forbidden("your role may not change " + ", ".join(sorted({e.field.split(".", 1)[1] for e in denied})), denied)
        if errors:
            raise ValidationError(errors)
        return parsed

    def _parse_again(self, entity: EntityType, values: dict[str, Any]) -> dict[str, Any]:
        """Hooks may have changed values; validate what they set the same way (as trusted code:
        the actor's field rules were applied to the input already, not to what hooks set, such
        as the probability a stage move sets)."""
        return self._trusted()._parse(entity, {k: v for k, v in values.items()}, creating=False) if values else values

    def _trusted(self) -> RecordsService:
        return self if self.actor.system else self.as_actor(SYSTEM)

    def _encode(self, entity: EntityType, values: dict[str, Any]) -> dict[str, Any]:
        """Column -> stored value of field values, the owner and team included."""
        encoded = self.codec(entity).encode({k: v for k, v in values.items() if k not in _SYSTEM_INPUT})
        for name in _SYSTEM_INPUT:
            if name in values:
                encoded[name] = values[name]
        return encoded

    async def _check_edit(
        self, entity: EntityType, befores: list[dict[str, Any]], changes: list[dict[str, Any]], prefix: str = "",
    ) -> None:
        """The actor may edit these records, and hand them over when owner or team change."""
        if self.actor.system:
            return
        edit = self._scope(entity, "edit")
        errors = []
        handed: list[dict[str, Any]] = []
        for index, (before, values) in enumerate(zip(befores, changes)):
            where = f"{prefix}[{index}]." if prefix else ""
            if not self.actor.reaches(edit, before):
                errors.append(FieldError(f"{where}id", "forbidden", f"your role may not edit this {entity.label.lower()}"))
                continue
            moves = any(name in values and values[name] != before.get(name) for name in _SYSTEM_INPUT)
            if moves:
                assign = self.actor.scope(entity.name, "assign")
                if not self.actor.reaches(assign, before):
                    errors.append(FieldError(f"{where}owner_id", "forbidden",
                                             f"your role may not hand this {entity.label.lower()} over"))
                    continue
                handed.append(values)
        if errors:
            raise Forbidden(f"your role may not change these {entity.label_plural.lower()} this way", errors)
        if handed:
            await self._check_owners(entity, handed, "assign", prefix)

    async def _follow_owner(self, befores: list[dict[str, Any]], changes: list[dict[str, Any]]) -> None:
        """A record handed to a new owner moves to the new owner's team, unless a team is given."""
        moving = [values for before, values in zip(befores, changes)
                  if "owner_id" in values and "team_id" not in values and values["owner_id"] != before.get("owner_id")]
        if moving:
            teams = await self._primary_teams({values["owner_id"] for values in moving})
            for values in moving:
                values["team_id"] = teams.get(values["owner_id"])

    @_fresh_schema
    async def update(
        self, entity_name: str, record_id: int, data: dict[str, Any], *, version: int | None = None,
    ) -> dict[str, Any]:
        entity = self.entity(entity_name)
        user_id = self.actor.user_id
        data = dict(data) if isinstance(data, dict) else data
        if isinstance(data, dict) and "version" in data:
            version = data.pop("version")
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValidationError([FieldError("version", "invalid", "version must be the integer you read")])
        values = self._parse(entity, data, creating=False)
        async with self.db.transaction():
            before = await self._fetch(entity, record_id)
            await self._check_edit(entity, [before], [values])
            if version is not None and before["version"] != version:
                raise Conflict(entity_name, record_id, version, self._strip(entity, before),
                               await self._changed_since(entity, record_id, version, before["version"]))
            change = Change(entity=entity.name, action="update", values=values, before=before, user_id=user_id)
            if await self._hooks_before(change):
                values = self._parse_again(entity, change.values)
            await self._follow_owner([before], [values])
            diff = {k: [_jsonable(before.get(k)), _jsonable(v)] for k, v in values.items() if before.get(k) != v}
            if not diff:
                return self._strip(entity, before)
            await self._check_relations(entity, [values])
            encoded = self._encode(entity, values)
            now = _now()
            assignments = ", ".join(f'"{c}" = ?' for c in encoded)
            params = [*encoded.values(), db_time(now, self.db.dialect), user_id, record_id, before["version"]]
            reindex = any(f.is_searchable for f in entity.fields if f.name in values)
            if reindex:  # a failed update below rolls this back with it
                await self._unindex(entity, [record_id])
            try:
                written = await self.db.fetchrow(
                    f'UPDATE "{entity.table}" SET {assignments}, "version" = "version" + 1, "updated_at" = ?, '
                    f'"updated_by" = ? WHERE "id" = ? AND "version" = ? AND "deleted_at" IS NULL RETURNING "version"',
                    params,
                )
            except IntegrityError as exc:
                raise self._integrity(entity, exc) from None
            if written is None:  # another transaction committed a change since we read it
                current = self._strip(entity, await self._fetch(entity, record_id, action=None))
                raise Conflict(entity_name, record_id, before["version"], current,
                               await self._changed_since(entity, record_id, before["version"], current["version"]))
            if reindex:
                await self._index(entity, [record_id])
            await self._audit(entity, [(record_id, "update", diff)], user_id, now)
            await self._after_write(change, [record_id])
            after = await self._fetch(entity, record_id, action=None)
            event = RecordEvent(entity=entity.name, action="update", record_ids=[record_id],
                                records=[after], changes=[diff], user_id=user_id)
            await self._outbox(event)
        await self._emit(event)
        return self._strip(entity, after)

    @_fresh_schema
    async def bulk_update(
        self, entity_name: str, updates: list[dict[str, Any]]
    ) -> list[int]:
        """Update many records in one transaction: each item is ``{"id": ..., "version"?: ..., field: value}``.

        All or nothing; errors name the row. Hooks run once for the batch, not per row.
        """
        entity = self.entity(entity_name)
        user_id = self.actor.user_id
        errors: list[FieldError] = []
        items: list[tuple[int, int | None, dict[str, Any]]] = []
        for index, data in enumerate(updates):
            if not isinstance(data, dict):
                errors.append(FieldError(f"rows[{index}]", "invalid", "expected an object with id and fields"))
                continue
            data = dict(data)
            rid, version = data.pop("id", None), data.pop("version", None)
            if isinstance(rid, bool) or not isinstance(rid, int) or not 0 < rid < 2**63:
                errors.append(FieldError(f"rows[{index}].id", "required", "each row needs the id of the record"))
                continue
            if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                errors.append(FieldError(f"rows[{index}].version", "invalid", "version must be an integer"))
                continue
            try:
                items.append((rid, version, self._parse(entity, data, creating=False)))
            except ValidationError as exc:
                errors.extend(FieldError(f"rows[{index}].{e.field}", e.code, e.message) for e in exc.errors)
            except Forbidden as exc:
                raise Forbidden(str(exc), [FieldError(f"rows[{index}].{e.field}", e.code, e.message)
                                           for e in exc.errors]) from None
        if errors:
            raise ValidationError(errors)
        if not items:
            return []
        if len({rid for rid, _, _ in items}) != len(items):
            raise ValidationError([FieldError("rows", "duplicate", "a record may appear once per bulk update")])
        codec = self.codec(entity)
        async with self.db.transaction():
            befores: dict[int, dict[str, Any]] = {}
            ids = [rid for rid, _, _ in items]
            scope = None if self.actor.system else self.actor.scope_sql(self._scope(entity, "read"))
            for start in range(0, len(ids), 900):
                part = ids[start:start + 900]
                rows = await self.db.fetch(
                    f'SELECT {codec.select_list} FROM "{entity.table}" WHERE "deleted_at" IS NULL '
                    f'AND "id" IN ({", ".join("?" for _ in part)})' + (f" AND {scope[0]}" if scope else ""),
                    part + (scope[1] if scope else []),
                )
                befores.update((row[0], codec.decode(row)) for row in rows)
            for index, (rid, version, _) in enumerate(items):
                before = befores.get(rid)
                if before is None:
                    errors.append(FieldError(f"rows[{index}].id", "not_found", f"no {entity.name} with id {rid}"))
                elif version is not None and before["version"] != version:
                    errors.append(FieldError(
                        f"rows[{index}].version", "conflict",
                        f"{entity.name} {rid} was changed by someone else (version {before['version']}, not {version})",
                    ))
            if errors:
                raise ValidationError(errors)
            await self._check_edit(entity, [befores[rid] for rid, _, _ in items], [v for _, _, v in items], "rows")
            change = Change(entity=entity.name, action="update", user_id=user_id,
                            batch=[values for _, _, values in items], befores=[befores[rid] for rid, _, _ in items])
            if await self._hooks_before(change):  # what hooks set is validated like the input
                reparsed = self._trusted()._parse_rows(entity, change.batch, creating=False)
                items = [(rid, version, values) for (rid, version, _), values in zip(items, reparsed)]
            await self._follow_owner([befores[rid] for rid, _, _ in items], [v for _, _, v in items])
            await self._check_relations(entity, [values for _, _, values in items])
            now = _now()
            stamp = db_time(now, self.db.dialect)
            groups: dict[tuple[str, ...], list[list[Any]]] = {}
            audit, diffs, changed_ids = [], [], []
            for rid, _, values in items:
                before = befores[rid]
                diff = {k: [_jsonable(before.get(k)), _jsonable(v)] for k, v in values.items() if before.get(k) != v}
                if not diff:
                    continue
                encoded = self._encode(entity, values)
                groups.setdefault(tuple(encoded), []).append([*encoded.values(), stamp, user_id, rid])
                audit.append((rid, "update", diff))
                diffs.append(diff)
                changed_ids.append(rid)
            await self._unindex(entity, changed_ids)
            for columns, params in groups.items():
                assignments = ", ".join(f'"{c}" = ?' for c in columns)
                try:
                    await self.db.executemany(
                        f'UPDATE "{entity.table}" SET {assignments}, "version" = "version" + 1, "updated_at" = ?, '
                        f'"updated_by" = ? WHERE "id" = ?',
                        params,
                    )
                except IntegrityError as exc:
                    raise self._integrity(entity, exc) from None
            await self._index(entity, changed_ids)
            await self._audit(entity, audit, user_id, now)
            await self._after_write(change, [rid for rid, _, _ in items])
            event = None
            if changed_ids:
                event = RecordEvent(
                    entity=entity.name, action="update", record_ids=changed_ids,
                    records=[{**befores[rid], **values} for rid, _, values in items if rid in set(changed_ids)],
                    changes=diffs, user_id=user_id,
                )
                await self._outbox(event)
        if event is not None:
            await self._emit(event)
        return changed_ids

    async def _changed_since(self, entity: EntityType, record_id: int, version: int, current: int) -> list[str]:
        """Field names changed since ``version``: every update, delete and restore adds one
        version, so the newest ``current - version`` of those audit entries are the ones missed."""
        missed = current - version
        if missed <= 0:
            return []
        rows = await self.db.fetch(
            'SELECT "changes" FROM crm_audit WHERE "entity" = ? AND "record_id" = ? '
            'AND "action" IN (?, ?, ?) ORDER BY "id" DESC LIMIT ?',
            (entity.name, record_id, "update", "delete", "restore", missed),
        )
        changed: list[str] = []
        for (changes,) in rows:
            for name in msgspec.json.decode(changes or "{}"):
                if name not in changed:
                    changed.append(name)
        return changed

    async def delete(self, entity_name: str, record_id: int, *, version: int | None = None) -> None:
        """Move a record to the trash (restorable); ``purge`` removes it for good."""
        await self._set_deleted(entity_name, record_id, deleted=True, version=version)

    async def restore(self, entity_name: str, record_id: int) -> dict[str, Any]:
        await self._set_deleted(entity_name, record_id, deleted=False, version=None)
        entity = self.entity(entity_name)
        return self._strip(entity, await self._fetch(entity, record_id, action=None))

    async def _set_deleted(self, entity_name: str, record_id: int, *, deleted: bool, version: int | None) -> None:
        entity = self.entity(entity_name)
        user_id = self.actor.user_id
        action = "delete" if deleted else "restore"
        async with self.db.transaction():
            before = await self._fetch(entity, record_id, trashed=not deleted)
            self._check_delete(entity, before)
            if version is not None and before["version"] != version:
                raise Conflict(entity_name, record_id, version, self._strip(entity, before),
                               await self._changed_since(entity, record_id, version, before["version"]))
            await self._hooks_before(Change(entity=entity.name, action=action, before=before, user_id=user_id))
            now = _now()
            try:
                written = await self.db.fetchrow(
                    f'UPDATE "{entity.table}" SET "deleted_at" = ?, "version" = "version" + 1, "updated_at" = ?, '
                    f'"updated_by" = ? WHERE "id" = ? AND "version" = ? RETURNING "version"',
                    (db_time(now, self.db.dialect) if deleted else None, db_time(now, self.db.dialect), user_id,
                     record_id, before["version"]),
                )
            except IntegrityError as exc:  # restoring a record whose unique value was taken meanwhile
                raise self._integrity(entity, exc) from None
            if written is None:
                raise Conflict(entity_name, record_id, before["version"], before, [])
            await self._audit(entity, [(record_id, action, None)], user_id, now)
            event = RecordEvent(entity=entity.name, action=action, record_ids=[record_id],
                                records=[before], changes=[{}], user_id=user_id)
            await self._outbox(event)
        await self._emit(event)

    def _check_delete(self, entity: EntityType, before: dict[str, Any]) -> None:
        if not self.actor.system and not self.actor.reaches(self._scope(entity, "delete"), before):
            raise Forbidden(f"your role may not delete this {entity.label.lower()}")

    async def purge(self, entity_name: str, record_id: int) -> None:
        """Remove a trashed record for good (its audit history stays)."""
        entity = self.entity(entity_name)
        user_id = self.actor.user_id
        async with self.db.transaction():
            self._check_delete(entity, await self._fetch(entity, record_id, trashed=True))
            await self._unindex(entity, [record_id])
            await self.db.execute(f'DELETE FROM "{entity.table}" WHERE "id" = ?', (record_id,))
            await self._audit(entity, [(record_id, "purge", None)], user_id, _now())

    # -- reads -------------------------------------------------------------------------------

    async def get(self, entity_name: str, record_id: int, *, trashed: bool = False) -> dict[str, Any]:
        """One record as the actor may see it; NotFound when it is outside their read scope."""
        entity = self.entity(entity_name)
        return self._strip(entity, await self._fetch(entity, record_id, trashed=trashed))

    async def _fetch(
        self, entity: EntityType, record_id: int, *, action: str | None = "read", trashed: bool = False,
    ) -> dict[str, Any]:
        """The whole record, hidden fields included (for hooks, events and diffs), when it is
        within the actor's ``action`` scope (None: unchecked, for what this call just wrote)."""
        codec = self.codec(entity)
        key = (entity.name, "get_trashed" if trashed else "get")
        sql = self._sql.get(key)
        if sql is None or not sql.startswith(f"SELECT {codec.select_list} "):
            deleted = '"deleted_at" IS NOT NULL' if trashed else '"deleted_at" IS NULL'
            sql = self._sql[key] = f'SELECT {codec.select_list} FROM "{entity.table}" WHERE "id" = ? AND {deleted}'
        if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 < record_id < 2**63:
            raise NotFound(entity.name, record_id)
        params: tuple | list = (record_id,)
        if action is not None and not self.actor.system:
            scope = self.actor.scope_sql(self._scope(entity, action))
            if scope is not None:
                sql, params = f"{sql} AND {scope[0]}", [record_id, *scope[1]]
        row = await self.db.fetchrow(sql, params)
        if row is None:
            raise NotFound(entity.name, record_id)
        return codec.decode(row)

    @_fresh_schema
    async def list(self, entity_name: str, query: ListQuery, *, action: str = "read") -> Page:
        """A page of records within the actor's ``action`` scope (``read``, or ``export`` for
        exports), filtered, sorted and searched on the fields the actor may see."""
        entity = self.entity(entity_name)
        codec = self._reader(entity)
        hidden = self._hidden(entity)
        scope = None if self.actor.system else self.actor.scope_sql(self._scope(entity, action))
        fields = {f.name: f for f in entity.visible_fields if f.name not in hidden}
        if query.fields:
            unknown = [n for n in query.fields if n not in fields]
            if unknown:
                raise ValidationError([FieldError(
                    "fields", "unknown_field", f"unknown field {unknown[0]!r}; known fields: {', '.join(fields)}"
                )])
            codec = EntityCodec(entity, self.db.dialect, [fields[n] for n in query.fields])
        settings = self.deployment.settings
        compiled = compile_list(
            entity, query, dialect=self.db.dialect, select_list=codec.select_list, fields=fields,
            region=settings.region, currency=settings.currency, scope=scope, hidden=hidden,
            related=self.readable,
        )
        rows = await self.db.fetch(compiled.sql, compiled.params)
        more = len(rows) > compiled.limit
        rows = rows[:compiled.limit]
        width = len(codec.columns)
        sort_count = len(compiled.sort_columns) - 1
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = encode_cursor(row_sort_values(last, width, sort_count, last[0]))
        total = None
        if compiled.count_sql:
            total = await self.db.fetchval(compiled.count_sql, compiled.count_params)
        return Page(items=[codec.decode(r) for r in rows], next_cursor=next_cursor, total=total)

    async def history(self, entity_name: str, record_id: int, *, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        """A record's audit entries, newest first: ``{id, action, user_id, at, changes}`` with
        changes as ``{field: [old, new]}``; page with ``before_id`` (the last entry's id)."""
        entity = self.entity(entity_name)
        if not self.actor.system:  # the record, live or trashed, must be within the read scope
            scope = self.actor.scope_sql(self._scope(entity, "read"))
            where, bound = (f" AND {scope[0]}", scope[1]) if scope else ("", [])
            if isinstance(record_id, bool) or not isinstance(record_id, int) or not await self.db.fetchval(
                f'SELECT 1 FROM "{entity.table}" WHERE "id" = ?{where}', [record_id, *bound],
            ):
                raise NotFound(entity.name, record_id)
        hidden = self._hidden(entity)
        params: list[Any] = [entity.name, record_id]
        extra = ""
        if before_id is not None:
            extra = ' AND "id" < ?'
            params.append(before_id)
        rows = await self.db.fetch(
            'SELECT "id", "action", "user_id", "at", "changes" FROM crm_audit '
            f'WHERE "entity" = ? AND "record_id" = ? AND "last_record_id" IS NULL{extra} ORDER BY "id" DESC LIMIT ?',
            [*params, limit],
        )
        entries = []
        for entry_id, action, user, at, changes in rows:
            changes = msgspec.json.decode(changes) if changes else {}
            if action == "create":
                changes = {name: [None, value] for name, value in changes.items()}
            entries.append({"id": entry_id, "action": action, "user_id": user, "at": at, "changes": changes})
        if len(rows) < limit and not any(e["action"] == "create" for e in entries):
            # Created by a bulk create: its entry covers a range of records.
            for entry_id, user, at, changes in await self.db.fetch(
                'SELECT "id", "user_id", "at", "changes" FROM crm_audit WHERE "entity" = ? AND "record_id" <= ? '
                f'AND "last_record_id" >= ?{extra} ORDER BY "record_id" DESC LIMIT 50',
                [entity.name, record_id, record_id, *params[2:]],
            ):
                batch = msgspec.json.decode(changes)
                if record_id in batch["ids"]:
                    initial = batch["values"][batch["ids"].index(record_id)]
                    entries.append({"id": entry_id, "action": "create", "user_id": user, "at": at,
                                    "changes": {name: [None, value] for name, value in initial.items()
                                                if value is not None}})
                    break
        if not entries:
            exists = await self.db.fetchval(f'SELECT 1 FROM "{entity.table}" WHERE "id" = ?', (record_id,))
            if not exists:
                raise NotFound(entity.name, record_id)
        if hidden:
            for entry in entries:
                entry["changes"] = {k: v for k, v in entry["changes"].items() if k not in hidden}
        return entries
