"""Tables built from the entity model, and the schema sync that keeps the database in step.

Piccolo table classes are made at run time (``create_table_class``) from each entity type and
generate the dialect's DDL. Sync only ever *adds* (tables, columns, indexes, search indexes) and
records every change in ``crm_schema_history``. A change that could lose data (a column whose
declared type changed, a column no longer declared) is reported as pending and is applied only by
an explicit migration, which first copies the data to a backup table.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from typing import Any

import msgspec
from piccolo.columns import JSONB, BigInt, Boolean, Integer, Numeric, Text, Timestamptz
from piccolo.columns.base import Column
from piccolo.table import Table, create_table_class

from ..entities import EntityType, Field, FieldType
from .database import Database

__all__ = ["SchemaManager", "PendingChange", "table_class", "search_columns", "search_expression", "pg_search_vector"]

warnings.filterwarnings("ignore", message="We recommend giving your table a different name")
# Piccolo's engines announce the database version at INFO each time one is made: noise here.
logging.getLogger("piccolo").setLevel(logging.WARNING)

SYSTEM_TABLES = [
    """CREATE TABLE IF NOT EXISTS crm_meta ("key" TEXT PRIMARY KEY, "value" TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS crm_schema_history (
        "id" {serial}, "applied_at" TEXT NOT NULL, "kind" TEXT NOT NULL,
        "target" TEXT NOT NULL, "statement" TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS crm_schema_column (
        "tablename" TEXT NOT NULL, "columnname" TEXT NOT NULL, "field_type" TEXT NOT NULL,
        "plugin" TEXT NOT NULL DEFAULT '', PRIMARY KEY ("tablename", "columnname"))""",
    """CREATE TABLE IF NOT EXISTS crm_custom_field (
        "entity" TEXT NOT NULL, "name" TEXT NOT NULL, "definition" TEXT NOT NULL,
        "removed" {bool} NOT NULL DEFAULT {false}, "created_at" TEXT NOT NULL,
        PRIMARY KEY ("entity", "name"))""",
    # One entry per change of a record. A bulk create's entry covers the records from
    # record_id to last_record_id (its changes: {"ids": [...], "values": [...]}).
    """CREATE TABLE IF NOT EXISTS crm_audit (
        "id" {serial}, "entity" TEXT NOT NULL, "record_id" BIGINT NOT NULL, "last_record_id" BIGINT,
        "action" TEXT NOT NULL, "user_id" BIGINT, "at" TEXT NOT NULL, "changes" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_audit_record ON crm_audit ("entity", "record_id", "id")""",
]


class _ExactDecimal(Numeric):
    """Decimals stored exactly: NUMERIC on PostgreSQL, canonical text on SQLite (whose NUMERIC
    affinity would turn them into floats)."""

    @property
    def column_type(self):
        return "TEXT" if self._meta.engine_type == "sqlite" else "NUMERIC"


class _TextTime(Timestamptz):
    @property
    def column_type(self):
        return "TEXT" if self._meta.engine_type == "sqlite" else "TIMESTAMPTZ"


class _TextDate(Timestamptz):
    @property
    def column_type(self):
        return "TEXT" if self._meta.engine_type == "sqlite" else "DATE"


class _JsonList(JSONB):
    @property
    def column_type(self):
        return "TEXT" if self._meta.engine_type == "sqlite" else "JSONB"


def _nullable(cls: type[Column], **kwargs: Any) -> Column:
    return cls(null=True, default=None, **kwargs)


_COLUMN = {
    FieldType.TEXT: Text, FieldType.LONG_TEXT: Text, FieldType.EMAIL: Text, FieldType.URL: Text,
    FieldType.CHOICE: Text, FieldType.PHONE: Text, FieldType.INTEGER: BigInt,
    FieldType.RELATION: BigInt, FieldType.DECIMAL: _ExactDecimal, FieldType.MONEY: _ExactDecimal,
    FieldType.BOOLEAN: Boolean, FieldType.DATE: _TextDate, FieldType.DATETIME: _TextTime,
    FieldType.MULTI_CHOICE: _JsonList, FieldType.TAGS: _JsonList,
}


def field_columns(field: Field) -> dict[str, Column]:
    """Piccolo columns for one field (two for money and phone)."""
    main = _nullable(_COLUMN[field.type])
    if field.type is FieldType.MONEY:
        return {field.name: main, f"{field.name}__currency": _nullable(Text)}
    if field.type is FieldType.PHONE:
        return {field.name: main, f"{field.name}__raw": _nullable(Text)}
    return {field.name: main}


def _system_columns() -> dict[str, Column]:
    return {
        "version": Integer(default=1, null=False),
        "created_at": _TextTime(null=False),
        "updated_at": _TextTime(null=False),
        "deleted_at": _nullable(_TextTime),
        "owner_id": _nullable(BigInt),
        "team_id": _nullable(BigInt),
        "created_by": _nullable(BigInt),
        "updated_by": _nullable(BigInt),
    }


def table_class(entity: EntityType, engine: Any) -> type[Table]:
    """A Piccolo table class for an entity type, bound to ``engine`` (for its dialect)."""
    from piccolo.columns import BigSerial

    members: dict[str, Column] = {"id": BigSerial(primary_key=True)}
    members.update(_system_columns())
    for field in entity.fields:
        members.update(field_columns(field))
    return create_table_class(
        class_name="".join(part.capitalize() for part in entity.name.split("_")) + "Table",
        class_kwargs={"tablename": entity.table, "db": engine},
        class_members=members,
    )


def search_columns(entity: EntityType) -> list[str]:
    """The table columns the full-text index covers."""
    return [column for field in entity.fields if field.is_searchable for column in field.columns()]


def search_expression(entity: EntityType, quote=lambda c: f'"{c}"') -> str | None:
    """SQL that concatenates the searchable columns of a row into one text (PostgreSQL's vector)."""
    parts = [f"COALESCE(CAST({quote(column)} AS TEXT), '')" for column in search_columns(entity)]
    return " || ' ' || ".join(parts) if parts else None


def fts_table_ddl(entity: EntityType) -> str | None:
    """SQLite's full-text index of an entity: an FTS5 table over the searchable columns.

    External content (``content=<table>``): the words are indexed, the text is not stored a
    second time. ``detail=column`` keeps which rows hold a word in which column, not where in
    it: enough for prefix searches limited to the columns a role may see (a hidden field must
    not make a record match), at about a sixth of the cost of full positions. Because the index does not keep the text, a row's old words
    are removed by giving FTS5 its old values before the row changes (see RecordsService).
    """
    columns = search_columns(entity)
    if not columns:
        return None
    t = entity.table
    return (
        f'CREATE VIRTUAL TABLE "{t}__search" USING fts5({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)}, '
        f"content='{t}', content_rowid='id', detail=column, columnsize=0, "
        "tokenize='unicode61 remove_diacritics 2')"
    )


def pg_search_vector(expression: str) -> str:
    """The tsvector of a search text on PostgreSQL. Its parser keeps ``ayse@example.com``,
    ``example.com/x`` and ``+905321234567`` whole, so they are split the way SQLite's FTS5
    tokenizer splits them: a search for a word of an address (``example``) or a number's digits
    finds the record on both databases."""
    return f"to_tsvector('simple', crm_fold(translate({expression}, '@.+/:', '     ')))"


def search_signature(entity: EntityType, dialect: str) -> str:
    # PostgreSQL "3;": its vector splits addresses and numbers (2) and drops diacritics (3).
    # SQLite "5;": one FTS5 column per searchable column, external content, detail=column (5).
    return ("3;" if dialect == "postgres" else "5;") + ",".join(search_columns(entity))


def wanted_indexes(entity: EntityType, dialect: str) -> dict[str, str]:
    """Index name -> DDL for the indexes an entity's table should have.

    Lists page by (sort column, id). A SQLite index already ends with the rowid, so ``id`` is
    only spelled out for PostgreSQL; on SQLite it would store every id twice.
    """
    t = entity.table
    by_id = ', "id"' if dialect == "postgres" else ""
    indexes = {
        # Partial: only trashed rows, so live writes pay nothing for it.
        f"{t}__trash": f'CREATE INDEX IF NOT EXISTS "{t}__trash" ON "{t}" ("id") WHERE "deleted_at" IS NOT NULL',
        f"{t}__owner": f'CREATE INDEX IF NOT EXISTS "{t}__owner" ON "{t}" ("owner_id"{by_id}) WHERE "deleted_at" IS NULL',
        # Team-scoped lists (a sales manager's): "owner_id" = ? OR "team_id" IN (...).
        f"{t}__team": f'CREATE INDEX IF NOT EXISTS "{t}__team" ON "{t}" ("team_id"{by_id}) WHERE "deleted_at" IS NULL',
    }
    for field in entity.fields:
        column = field.name
        name = f"{t}__{column}"
        if field.unique:
            indexes[name + "__uq"] = (
                f'CREATE UNIQUE INDEX IF NOT EXISTS "{name}__uq" ON "{t}" ("{column}") '
                'WHERE "deleted_at" IS NULL'
            )
        elif field.indexed or field.type is FieldType.RELATION:
            # Partial, like every list's WHERE: counts need not visit rows to skip the trash.
            indexes[name] = (
                f'CREATE INDEX IF NOT EXISTS "{name}" ON "{t}" ("{column}"{by_id}) WHERE "deleted_at" IS NULL'
            )
    return indexes


class PendingChange(msgspec.Struct):
    """A schema change sync will not make on its own because it could lose data."""

    kind: str  # "type_change" | "drop_column"
    table: str
    column: str
    detail: str


class SchemaManager:
    def __init__(self, db: Database, engine: Any):
        self.db = db
        self.engine = engine

    # -- helpers -----------------------------------------------------------------------------

    def _fmt(self, sql: str) -> str:
        pg = self.db.dialect == "postgres"
        return sql.format(
            serial="BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY",
            # Ids that logs keep naming after their row is gone: SQLite must not hand them out again.
            serial_kept="BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT",
            bool="BOOLEAN" if pg else "INTEGER",
            false="FALSE" if pg else "0",
            true="TRUE" if pg else "1",
        )

    async def _record(self, kind: str, target: str, statement: str) -> None:
        await self.db.execute(
            'INSERT INTO crm_schema_history ("applied_at", "kind", "target", "statement") VALUES (?, ?, ?, ?)',
            (dt.datetime.now(dt.timezone.utc).isoformat(), kind, target, statement),
        )

    async def _apply(self, kind: str, target: str, statement: str) -> None:
        await self.db.execute(statement)
        await self._record(kind, target, statement)

    async def tables(self) -> set[str]:
        if self.db.dialect == "sqlite":
            rows = await self.db.fetch("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        else:
            rows = await self.db.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        return {r[0] for r in rows}

    async def columns(self, table: str) -> set[str]:
        if self.db.dialect == "sqlite":
            rows = await self.db.fetch("SELECT name FROM pragma_table_info(?)", (table,))
        else:
            rows = await self.db.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ?",
                (table,),
            )
        return {r[0] for r in rows}

    async def indexes(self) -> set[str]:
        if self.db.dialect == "sqlite":
            rows = await self.db.fetch("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            rows = await self.db.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        return {r[0] for r in rows}

    async def meta(self, key: str) -> str | None:
        return await self.db.fetchval('SELECT "value" FROM crm_meta WHERE "key" = ?', (key,))

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.execute(
            'INSERT INTO crm_meta ("key", "value") VALUES (?, ?) '
            'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"',
            (key, value),
        )

    # -- sync --------------------------------------------------------------------------------

    async def ensure_system_tables(self) -> None:
        from ..auth.tables import AUTH_TABLES
        from ..automation import AUTOMATION_TABLES
        from ..documents import DOCUMENT_TABLES
        from ..importing import IMPORT_TABLES
        from ..jobs import JOB_TABLES
        from ..pipelines import PIPELINE_TABLES
        from ..reports import REPORT_TABLES
        from ..timeline import TIMELINE_TABLES
        from ..web.tables import WEB_TABLES
        from ..webhooks import WEBHOOK_TABLES

        for statement in [*SYSTEM_TABLES, *AUTH_TABLES, *PIPELINE_TABLES, *JOB_TABLES, *WEBHOOK_TABLES,
                          *TIMELINE_TABLES, *AUTOMATION_TABLES, *WEB_TABLES, *REPORT_TABLES, *DOCUMENT_TABLES,
                          *IMPORT_TABLES]:
            await self.db.execute(self._fmt(statement))
        if "last_record_id" not in await self.columns("crm_audit"):  # made before bulk entries
            await self.db.execute('ALTER TABLE crm_audit ADD COLUMN "last_record_id" BIGINT')
        if self.db.dialect == "postgres":
            await self._ensure_fold()

    async def _ensure_fold(self) -> None:
        """``crm_fold(text)``: search text without diacritics (``Şahin`` is found by ``sahin``),
        as SQLite's FTS5 tokenizer does. Uses the ``unaccent`` extension (trusted, so a database
        owner may install it); without it, text is left as it is."""
        try:
            await self.db.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
            body = "SELECT unaccent('unaccent'::regdictionary, t)"
        except Exception:
            body = "SELECT t"
        await self.db.execute(
            f"CREATE OR REPLACE FUNCTION crm_fold(t text) RETURNS text AS $$ {body} $$ "
            "LANGUAGE sql IMMUTABLE PARALLEL SAFE"
        )

    async def sync(self, entities: list[EntityType], active_plugins: set[str] | None = None) -> list[PendingChange]:
        """Create what is missing; return the destructive changes left for an explicit migration.

        A column whose plugin is not active (disabled, uninstalled) is never proposed for a drop:
        disabling a plugin keeps its data, also in columns it added to other entities.
        """
        pending: list[PendingChange] = []
        existing_tables = await self.tables()
        existing_indexes = await self.indexes()
        recorded = {
            (t, c): (ft, plugin) for t, c, ft, plugin in await self.db.fetch(
                'SELECT "tablename", "columnname", "field_type", "plugin" FROM crm_schema_column'
            )
        }
        for entity in entities:
            table = table_class(entity, self.engine)
            if entity.table not in existing_tables:
                for statement in table.create_table(if_not_exists=True).ddl:
                    await self._apply("create_table", entity.table, statement)
            have = await self.columns(entity.table)
            declared = {}
            for field in entity.fields:
                for column, col in field_columns(field).items():
                    declared[column] = field.type.value
                    if column not in have:
                        ddl = table.alter().add_column(column, col).ddl
                        for statement in ddl if isinstance(ddl, list) else [ddl]:
                            await self._apply("add_column", f"{entity.table}.{column}", statement)
                    was, _ = recorded.get((entity.table, column), (None, None))
                    if was is None:
                        await self.db.execute(
                            'INSERT INTO crm_schema_column ("tablename", "columnname", "field_type", "plugin") '
                            "VALUES (?, ?, ?, ?)",
                            (entity.table, column, field.type.value, field.plugin),
                        )
                    elif was != field.type.value and not _compatible(was, field.type.value):
                        pending.append(PendingChange(
                            "type_change", entity.table, column,
                            f"declared {field.type.value}, stored as {was}",
                        ))
            for (t, column), (was, plugin) in recorded.items():
                if active_plugins is not None and plugin not in active_plugins:
                    continue
                if t == entity.table and column not in declared and column in have:
                    pending.append(PendingChange("drop_column", t, column, f"no longer declared (was {was})"))
            for name, statement in wanted_indexes(entity, self.db.dialect).items():
                if name not in existing_indexes:
                    await self._apply("create_index", name, statement)
            await self.sync_search(entity, existing_tables)
        return pending

    async def sync_search(self, entity: EntityType, existing_tables: set[str] | None = None) -> None:
        """Create the full-text index and rebuild it when the set of searchable columns changed."""
        t = entity.table
        signature = search_signature(entity, self.db.dialect)
        key = f"search:{t}"
        if self.db.dialect == "sqlite":
            if existing_tables is None:
                existing_tables = await self.tables()
            missing = f"{t}__search" not in existing_tables and search_columns(entity)
        else:
            missing = "_search" not in await self.columns(t)
            if missing:
                await self._apply("create_search", t, f'ALTER TABLE "{t}" ADD COLUMN "_search" tsvector')
                await self._apply(
                    "create_search", t,
                    f'CREATE INDEX IF NOT EXISTS "{t}__search" ON "{t}" USING gin ("_search")',
                )
        if missing or await self.meta(key) != signature:
            await self.rebuild_search(entity)
            await self.set_meta(key, signature)

    async def rebuild_search(self, entity: EntityType) -> None:
        """Index every row again: after the searchable columns changed, or their values were
        changed outside the records service (a column's type conversion)."""
        t = entity.table
        if self.db.dialect == "sqlite":
            # The FTS5 table's columns are the searchable columns, so it is made anew.
            ddl = fts_table_ddl(entity)
            async with self.db.transaction():
                await self.db.execute(f'DROP TABLE IF EXISTS "{t}__search"')
                if ddl:
                    await self.db.execute(ddl)
                    await self.db.execute(f"INSERT INTO \"{t}__search\" (\"{t}__search\") VALUES ('rebuild')")
                await self._record("rebuild_search", t, ddl or f'DROP TABLE IF EXISTS "{t}__search"')
        else:
            expression = search_expression(entity) or "''"
            await self.db.execute(f'UPDATE "{t}" SET "_search" = {pg_search_vector(expression)}')
            await self._record("rebuild_search", t, expression)

    # -- explicit, destructive changes -------------------------------------------------------

    async def backup_column(self, table: str, column: str) -> str:
        """Copy a column's values to a new backup table; returns its name."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")
        backup = f"crm_backup_{table}__{column}_{stamp}"[:63]
        await self._apply(
            "backup", backup,
            f'CREATE TABLE "{backup}" AS SELECT "id", "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL',
        )
        return backup

    async def drop_column(self, table: str, column: str) -> str:
        backup = await self.backup_column(table, column)
        for name in await self.indexes():
            if name in (f"{table}__{column}", f"{table}__{column}__uq"):
                await self._apply("drop_index", name, f'DROP INDEX IF EXISTS "{name}"')
        await self._apply("drop_column", f"{table}.{column}", f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        await self.db.execute(
            'DELETE FROM crm_schema_column WHERE "tablename" = ? AND "columnname" = ?', (table, column)
        )
        return backup

    async def history(self, limit: int = 100) -> list[tuple]:
        return await self.db.fetch(
            'SELECT "id", "applied_at", "kind", "target", "statement" FROM crm_schema_history '
            'ORDER BY "id" DESC LIMIT ?',
            (limit,),
        )


_TEXTUAL = {"text", "long_text", "email", "url", "choice", "phone"}


def _compatible(old: str, new: str) -> bool:
    """Type changes that keep the stored representation (text -> long text...)."""
    return (old in _TEXTUAL and new in _TEXTUAL) or {old, new} <= {"multi_choice", "tags"}
