"""Conversion between a record's Python values and its table columns, per dialect.

Built once per entity type and dialect, so reading a row is a loop over precomputed converters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from operator import itemgetter
from typing import Any

import msgspec

from ..entities import EntityType, Field, FieldType
from ..fieldvalues import Money, Phone, value_parser

__all__ = ["EntityCodec", "db_time", "SYSTEM_READ"]

UTC = dt.timezone.utc
#: System columns every record shows.
SYSTEM_READ = (
    "id", "version", "created_at", "updated_at", "owner_id", "team_id", "created_by", "updated_by", "deleted_at",
)

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def _sqlite_time_out(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value is not None else None


def _time_reader(row: tuple, i: int) -> dt.datetime | None:
    return _sqlite_time_out(row[i])


def db_time(value: dt.datetime, dialect: str) -> Any:
    """A UTC datetime as the dialect stores it (fixed-width ISO text on SQLite, so it sorts)."""
    value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds") if dialect == "sqlite" else value


def identity(value: Any) -> Any:
    return value


def scalar_to_db(ftype: FieldType, dialect: str) -> Callable[[Any], Any]:
    """Converter for the main column of a field type (also used for filter parameters)."""
    if dialect == "sqlite":
        if ftype in (FieldType.DECIMAL, FieldType.MONEY):
            return lambda v: None if v is None else str(v)
        if ftype is FieldType.BOOLEAN:
            return lambda v: None if v is None else int(v)
        if ftype is FieldType.DATE:
            return lambda v: None if v is None else v.isoformat()
        if ftype is FieldType.DATETIME:
            return lambda v: None if v is None else db_time(v, "sqlite")
        if ftype in (FieldType.TAGS, FieldType.MULTI_CHOICE):
            return lambda v: None if v is None else _json_encode(v).decode()
    return identity


def _scalar_from_db(ftype: FieldType, dialect: str) -> Callable[[Any], Any]:
    if dialect == "sqlite":
        if ftype in (FieldType.DECIMAL,):
            return lambda v: None if v is None else Decimal(v)
        if ftype is FieldType.BOOLEAN:
            return lambda v: None if v is None else bool(v)
        if ftype is FieldType.DATE:
            return lambda v: None if v is None else dt.date.fromisoformat(v)
        if ftype is FieldType.DATETIME:
            return _sqlite_time_out
        if ftype in (FieldType.TAGS, FieldType.MULTI_CHOICE):
            return lambda v: None if v is None else _json_decode(v)
    elif ftype is FieldType.DATETIME:
        return lambda v: None if v is None else v.astimezone(UTC)
    return identity


class EntityCodec:
    """Columns and converters of one entity type in one dialect."""

    def __init__(self, entity: EntityType, dialect: str, fields: list[Field] | None = None):
        self.entity = entity
        self.dialect = dialect
        fields = entity.visible_fields if fields is None else fields
        self.fields = fields
        self.columns: list[str] = list(SYSTEM_READ)
        # Decoding a row: columns stored as they are shown are copied in one step; only the
        # others (times on SQLite, money, phones, lists...) go through a converter.
        plain: list[tuple[str, int]] = []
        self._special: list[tuple[str, Callable[[tuple, int], Any], int]] = []
        for position, name in enumerate(SYSTEM_READ):
            if dialect == "sqlite" and name in ("created_at", "updated_at", "deleted_at"):
                self._special.append((name, _time_reader, position))
            else:
                plain.append((name, position))
        for field in fields:
            position = len(self.columns)
            self.columns.extend(field.columns())
            reader = self._reader(field)
            if reader is None:
                plain.append((field.name, position))
            else:
                self._special.append((field.name, reader, position))
        self._plain_names = [name for name, _ in plain]
        self._plain_get = itemgetter(*(position for _, position in plain))
        self.select_list = ", ".join(f'"{c}"' for c in self.columns)
        self.writers: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
            f.name: self._writer(f) for f in entity.fields
        }
        #: The columns whose text goes into the full-text index.
        self.searchable_columns = {c for f in entity.fields if f.is_searchable for c in f.columns()}
        #: Every field by name, hidden ones included; what is required or has a default.
        self.by_name = {f.name: f for f in entity.fields}
        #: Field name -> (field, its value parser, whether "" means empty) for the fields input may set.
        self.parsers = {f.name: (f, value_parser(f), f.type is not FieldType.BOOLEAN)
                        for f in entity.fields if not f.hidden}
        self.required = [f for f in entity.fields if f.required and not f.hidden]
        #: Fields whose values are lists (a hook may change them in place).
        self.list_fields = [f.name for f in entity.fields if f.type in (FieldType.TAGS, FieldType.MULTI_CHOICE)]
        self.defaults = [f for f in entity.fields if f.default is not None and not f.hidden]
        # INSERT: system columns first, then each field's columns; a row starts as all NULL
        # and only the values given are converted into their slots.
        self.insert_columns = ["version", "created_at", "updated_at", "created_by", "updated_by", "owner_id", "team_id"]
        self.insert_slots: dict[str, list[tuple[int, Callable[[Any], Any]]]] = {}
        for field in entity.fields:
            slots = self.insert_slots[field.name] = []
            for column, convert in self.writers[field.name]:
                slots.append((len(self.insert_columns), convert))
                self.insert_columns.append(column)


    def _reader(self, field: Field) -> Callable[[tuple, int], Any] | None:
        """How to read a field from a row, or None when its column holds the value as shown."""
        if field.type is FieldType.MONEY:
            def money(row: tuple, i: int) -> Money | None:
                amount = row[i]
                return None if amount is None else Money(Decimal(amount) if isinstance(amount, str) else amount, row[i + 1])
            return money
        if field.type is FieldType.PHONE:
            return lambda row, i: None if row[i] is None else Phone(row[i], row[i + 1])
        convert = _scalar_from_db(field.type, self.dialect)
        if convert is identity:
            return None
        return lambda row, i: convert(row[i])

    def _writer(self, field: Field) -> list[tuple[str, Callable[[Any], Any]]]:
        main = scalar_to_db(field.type, self.dialect)
        if field.type is FieldType.MONEY:
            return [
                (field.name, lambda v: None if v is None else main(v.amount)),
                (f"{field.name}__currency", lambda v: None if v is None else v.currency),
            ]
        if field.type is FieldType.PHONE:
            return [
                (field.name, lambda v: None if v is None else v.e164),
                (f"{field.name}__raw", lambda v: None if v is None else v.raw),
            ]
        return [(field.name, main)]

    def decode(self, row: tuple) -> dict[str, Any]:
        record = dict(zip(self._plain_names, self._plain_get(row)))
        for name, read, position in self._special:
            record[name] = read(row, position)
        return record

    def encode(self, values: dict[str, Any]) -> dict[str, Any]:
        """Column -> stored value for the given field values."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            for column, convert in self.writers[name]:
                out[column] = convert(value)
        return out
