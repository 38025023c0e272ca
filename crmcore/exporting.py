"""Export of records: any entity type, or all of them, to CSV, XLSX, JSON or (contacts) vCard.

One exporter serves the API (``GET /api/exports/{entity}`` and the web list's download link),
the CLI (``crm export``, ``crm vcard export``) and Python (``deployment.exports``). It reads
through the records layer as the exporting actor (its ``export`` scope, hidden fields left
out), follows a whole :class:`ListQuery` (filter, search, sort, fields) and goes page by page,
so a million rows never sit in memory. CSV and JSON come out as the pages are read; XLSX is a
zip and is written whole first.

The columns are ``id``, ``owner_id`` and the visible fields, one column each, in the layout
the importer reads back (:func:`cell_text`): a phone in E.164, money as ``"1250.00 EUR"``,
several choices or tags as ``"a, b"``, times in ISO 8601.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import tempfile
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from .fieldvalues import Money, Phone
from .records.errors import FieldError, ValidationError
from .records.query import ListQuery

if TYPE_CHECKING:
    from .auth.permissions import Actor
    from .deployment import Deployment

__all__ = ["ExportService", "FORMATS", "MEDIA_TYPES", "cell_text"]

#: Export formats and their media types (vCard: contacts only).
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               "json": "application/json", "vcf": "text/vcard; charset=utf-8"}
FORMATS = tuple(MEDIA_TYPES)
#: Records read per page (the most a list gives).
PAGE = 500


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError([FieldError(field, "invalid", message)])


class ExportService:
    """``deployment.exports``."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    async def iter_records(self, entity_name: str, *, actor: Actor, query: ListQuery | None = None,
                           page: int = PAGE) -> AsyncIterator[dict[str, Any]]:
        """Every record matching ``query`` (its filter and search; all of them by default) that
        the actor may export, in the query's order (by id when it gives none)."""
        records = self.deployment.records.as_actor(actor)
        query = msgspec.structs.replace(query or ListQuery(), limit=page, count=False, deleted=False)
        if not query.sort:
            query.sort = ["id"]
        while True:
            result = await records.list(entity_name, query, action="export")
            for item in result.items:
                yield item
            if not result.next_cursor:
                return
            query = msgspec.structs.replace(query, cursor=result.next_cursor)

    def columns(self, entity_name: str, *, actor: Actor, fields: list[str] | None = None) -> list[str]:
        """``id``, ``owner_id`` and the fields the actor sees (of ``fields``, in its order, when given)."""
        entity = self.deployment.records.entity(entity_name)
        hidden = actor.hidden_fields(entity.name)
        visible = ["owner_id", *[f.name for f in entity.visible_fields if f.name not in hidden]]
        if fields is None:
            return ["id", *visible]
        unknown = [f for f in fields if f != "id" and f not in visible]
        if unknown:
            raise _invalid("fields", f"{entity.name} has no field {unknown[0]!r} to export; "
                                     f"its fields are: {', '.join(visible)}")
        return ["id", *dict.fromkeys(f for f in fields if f != "id")]

    async def stream(self, entity_name: str, *, fmt: str = "csv", actor: Actor, query: ListQuery | None = None,
                     counter: list[int] | None = None) -> AsyncIterator[bytes]:
        """The export's bytes, a page of records at a time. A wrong format, entity, filter or
        permission raises before the first byte (it is read with the first page).
        ``counter[0]`` counts the records written."""
        if fmt not in MEDIA_TYPES:
            raise _invalid("format", f"export formats: {', '.join(FORMATS)}; not {fmt!r}")
        if fmt == "vcf" and entity_name != "contact":
            raise _invalid("format", "vCard (vcf) is for contacts")
        query = query or ListQuery()
        columns = self.columns(entity_name, actor=actor, fields=query.fields)
        if query.fields is not None:
            query = msgspec.structs.replace(query, fields=[c for c in columns if c != "id"])
        counter = counter if counter is not None else [0]
        records = self.iter_records(entity_name, actor=actor, query=query)
        first = await anext(records, None)  # errors surface here, before anything is sent
        if fmt == "xlsx":
            with tempfile.TemporaryFile() as spool:
                await _xlsx_book(spool, entity_name, columns, _chain(first, records), counter)
                spool.seek(0)
                while chunk := spool.read(1 << 16):
                    yield chunk
            return
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            async for record in _chain(first, records):
                writer.writerow([cell_text(record.get(c)) for c in columns])
                counter[0] += 1
                if counter[0] % PAGE == 0:
                    yield buffer.getvalue().encode("utf-8")
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue().encode("utf-8")
        elif fmt == "json":
            chunk = [b"["]
            async for record in _chain(first, records):
                chunk.append((b",\n" if counter[0] else b"\n") +
                             msgspec.json.encode({c: _jsonable(record.get(c)) for c in columns}))
                counter[0] += 1
                if counter[0] % PAGE == 0:
                    yield b"".join(chunk)
                    chunk = []
            chunk.append(b"\n]\n" if counter[0] else b"]\n")
            yield b"".join(chunk)
        else:
            from .vcard import contact_to_vcard

            cards = []
            async for record in _chain(first, records):
                cards.append(contact_to_vcard(record))
                counter[0] += 1
                if counter[0] % PAGE == 0:
                    yield "".join(cards).encode("utf-8")
                    cards = []
            yield "".join(cards).encode("utf-8")

    async def export(self, entity_name: str, out: IO[bytes], *, fmt: str = "csv", actor: Actor,
                     filter: dict | None = None, query: ListQuery | None = None) -> int:
        """Write the records (matching ``query`` and ``filter``) to ``out``; how many."""
        if filter is not None:
            query = msgspec.structs.replace(
                query or ListQuery(), filter=filter if query is None or query.filter is None
                else {"and": [query.filter, filter]})
        counter = [0]
        async for chunk in self.stream(entity_name, fmt=fmt, actor=actor, query=query, counter=counter):
            out.write(chunk)
        return counter[0]

    def exportable(self, actor: Actor) -> list[str]:
        """The entity types the actor may export."""
        from .auth.permissions import Scope

        return [e.name for e in self.deployment.registry.entities.values()
                if actor.system or actor.scope(e.name, "export") is not Scope.NONE]

    async def export_all(self, folder: Path, *, fmt: str = "csv", actor: Actor) -> dict[str, int]:
        """Every entity type the actor may export into ``folder/<entity>.<fmt>``; counts."""
        if fmt == "vcf":
            raise _invalid("format", "vCard (vcf) is for contacts; export everything as csv, xlsx or json")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        counts = {}
        for name in self.exportable(actor):
            with open(folder / f"{name}.{fmt}", "wb") as f:
                counts[name] = await self.export(name, f, fmt=fmt, actor=actor)
        return counts


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is None:
        return
    yield first
    async for item in rest:
        yield item


async def _xlsx_book(out: IO[bytes], entity_name: str, columns: list[str], records: AsyncIterator[dict[str, Any]],
                     counter: list[int]) -> None:
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet(entity_name[:31])
    sheet.append(columns)
    async for record in records:
        sheet.append([_xlsx(record.get(c)) for c in columns])
        counter[0] += 1
    book.save(out)


def cell_text(value: Any) -> str:
    """A value as a CSV cell that imports back to the same value."""
    if value is None:
        return ""
    if isinstance(value, Phone):
        return value.e164
    if isinstance(value, Money):
        return f"{value.amount} {value.currency}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Phone):
        return value.e164
    if isinstance(value, Money):
        return {"amount": str(value.amount), "currency": value.currency}
    if isinstance(value, Decimal):
        return str(value)
    return value


def _xlsx(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (dt.date, Decimal)):
        return value
    return cell_text(value)
