"""Import of records: CSV, XLSX and vCard in (export: :mod:`crmcore.exporting`).

An import reads a file as a stream of rows (CSV in any encoding Python knows: UTF-8 with or
without a BOM is found by itself, others are named; XLSX through openpyxl's read-only mode;
vCard for contacts), maps its columns to fields (guessed from the headers, overridable, saved as
a named mapping in ``crm_import_mapping``), validates every row the way the records layer does,
finds duplicates (in the database and earlier in the file: by normalised e-mail and phone, or a
chosen key field) and then creates, updates or skips them. Rows that fail are rejected with a
per-row report (row number, column, value, reason); the others are written in batches of
:data:`BATCH` through ``records.bulk_create`` / ``bulk_update`` as the importing actor, each
batch in one transaction: all of it or nothing. A dry run does all of that but writes nothing.

Imports started from the API or the web page are jobs (kind :data:`JOB_KIND`): the upload is
kept under the deployment's ``imports/`` folder, the run's counters and progress in
``crm_import``, the error report beside the upload.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .entities import EntityType, Field, FieldType
from .exporting import cell_text
from .fieldvalues import FieldValueError, Money, Phone, value_parser
from .records.errors import FieldError, Forbidden, NotFound, ValidationError

if TYPE_CHECKING:
    from .auth.permissions import Actor
    from .deployment import Deployment

__all__ = [
    "IMPORT_TABLES", "ImportService", "ImportResult", "RowError", "JOB_KIND", "BATCH",
    "guess_mapping", "normalize_header",
]

#: System tables (placeholders as in storage.schema.SYSTEM_TABLES).
IMPORT_TABLES: list[str] = [
    # A reusable column mapping: {"column header": "field name" or null (ignored)}.
    """CREATE TABLE IF NOT EXISTS crm_import_mapping (
        "id" {serial}, "name" TEXT NOT NULL UNIQUE, "entity" TEXT NOT NULL, "columns" TEXT NOT NULL,
        "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL, "created_by" BIGINT)""",
    # One import run (a job): its options, progress and outcome.
    """CREATE TABLE IF NOT EXISTS crm_import (
        "id" {serial}, "entity" TEXT NOT NULL, "filename" TEXT NOT NULL, "options" TEXT NOT NULL,
        "status" TEXT NOT NULL, "dry_run" {bool} NOT NULL DEFAULT {false},
        "total" INTEGER NOT NULL DEFAULT 0, "processed" INTEGER NOT NULL DEFAULT 0,
        "created" INTEGER NOT NULL DEFAULT 0, "updated" INTEGER NOT NULL DEFAULT 0,
        "skipped" INTEGER NOT NULL DEFAULT 0, "rejected" INTEGER NOT NULL DEFAULT 0,
        "error" TEXT, "user_id" BIGINT, "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL)""",
]

#: The job kind that runs an uploaded import.
JOB_KIND = "import.run"
#: Rows validated and written per transaction.
BATCH = 5000
#: Import statuses: uploaded (waiting for its options), pending (queued), running, done, failed.
STATUSES = ("uploaded", "pending", "running", "done", "failed")
ON_DUPLICATE = ("create", "update", "skip")
#: Errors an import result keeps in memory (the report file gets every one).
KEEP_ERRORS = 1000
#: Uploads and error reports of imports are removed this long after their last change.
KEEP_UPLOADS = dt.timedelta(days=7)
#: Progress is stored (and the callback called) at most every this many rows.
_PROGRESS_EVERY = BATCH

#: Header words (normalised: lower case, no accents, letters and digits only) that name a field.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "email": ("email", "mail", "emailaddress", "mailaddress", "eposta", "courriel", "correo"),
    "phone": ("phone", "tel", "telephone", "phonenumber", "telefon", "telefono", "workphone", "businessphone",
              "officephone", "telno", "number"),
    "mobile": ("mobile", "cell", "cellphone", "mobilephone", "gsm", "handy", "cep", "ceptelefonu", "mobilenumber"),
    "first_name": ("firstname", "first", "givenname", "forename", "prenom", "vorname", "ad", "nombre"),
    "last_name": ("lastname", "last", "surname", "familyname", "nom", "nachname", "soyad", "soyadi", "apellido"),
    "job_title": ("jobtitle", "title", "position", "role", "jobrole"),
    "company": ("company", "companyid", "organisation", "organization", "org", "firma", "sirket"),
    "notes": ("notes", "note", "comment", "comments", "remarks"),
    "tags": ("tags", "labels", "categories"),
    "owner_id": ("owner", "ownerid"),
    "id": ("id", "recordid"),
    "website": ("website", "web", "url", "homepage", "site"),
}


def normalize_header(text: str) -> str:
    """A header as compared: accents dropped, case folded, only letters and digits kept
    (``"E-Mail "`` -> ``email``, ``"Prénom"`` -> ``prenom``)."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.casefold())


def _importable(entity: EntityType) -> dict[str, Field]:
    return {f.name: f for f in entity.visible_fields}


def guess_mapping(entity: EntityType, headers: list[str]) -> dict[str, str | None]:
    """Column header -> field name (None: not imported), guessed from field names, labels and
    :data:`SYNONYMS`; each field is taken by the first column that names it."""
    fields = _importable(entity)
    names: dict[str, str] = {}
    for field in fields.values():
        names.setdefault(normalize_header(field.name), field.name)
        if field.label:
            names.setdefault(normalize_header(field.label), field.name)
    for target in ("owner_id", "id"):
        names.setdefault(normalize_header(target), target)
    for target, words in SYNONYMS.items():
        if target in fields or target in ("owner_id", "id"):
            for word in words:
                names.setdefault(word, target)
    mapping: dict[str, str | None] = {}
    taken: set[str] = set()
    for header in headers:
        target = names.get(normalize_header(header))
        if target is not None and target in taken:
            target = None
        mapping[header] = target
        if target:
            taken.add(target)
    return mapping


class RowError(msgspec.Struct):
    """Why one row was rejected: its number as a spreadsheet shows it (the header is row 1)."""

    row: int
    column: str
    value: str
    reason: str


class ImportResult(msgspec.Struct, kw_only=True):
    entity: str
    dry_run: bool
    total: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0
    mapping: dict[str, str | None] = {}
    #: The first :data:`KEEP_ERRORS` errors, by row; the report file has them all.
    errors: list[RowError] = []
    #: How many errors there were in all.
    error_count: int = 0
    #: Where the per-row error report was written (None: no errors, or no file asked for).
    errors_file: str | None = None

    def summary(self) -> str:
        verb = "would be " if self.dry_run else ""
        return (f"{self.total} rows: {self.created} {verb}created, {self.updated} {verb}updated, "
                f"{self.skipped} {verb}skipped, {self.rejected} rejected")


class _Bad(Exception):
    """A whole-file problem (encoding, unreadable file): nothing is imported."""


def _invalid(field: str, message: str, code: str = "invalid") -> ValidationError:
    return ValidationError([FieldError(field, code, message)])


# -- reading files -----------------------------------------------------------------------------

def _file_format(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt in ("csv", "txt", "tsv"):
        return "csv"
    if fmt in ("xlsx", "xlsm"):
        return "xlsx"
    if fmt in ("vcf", "vcard"):
        return "vcf"
    raise _invalid("file", f"cannot import {path.name!r}: give a .csv, .xlsx or .vcf file (or name its format)")


def _csv_encoding(path: Path, encoding: str | None) -> tuple[str, int]:
    """The file's encoding, checked over the whole file before anything is imported, and its
    number of lines. UTF-8 (with or without a BOM) and UTF-16 with a BOM are found; any other
    must be named. A byte that does not decode is an error naming its row and offset."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(codecs.BOM_UTF8):
        enc = "utf-8-sig"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        enc = "utf-16"
    else:
        enc = encoding or "utf-8"
    try:
        codecs.lookup(enc)
    except LookupError:
        raise _invalid("encoding", f"unknown encoding {enc!r}; e.g. utf-8, cp1252, latin-1, iso-8859-9") from None
    decoder = codecs.getincrementaldecoder(enc)(errors="strict")
    offset = lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                where = offset - len(pending) + exc.start
                row = lines + data[:exc.start].count(b"\n") + 1
                hint = ("; give the file's encoding with --encoding (e.g. cp1252, latin-1, iso-8859-9)"
                        if encoding is None else "")
                raise _invalid("encoding", (
                    f"row {row}, byte {where}: 0x{data[exc.start]:02x} is not valid {enc} text{hint}"
                ), "bad_encoding") from None
            offset += len(chunk)
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _invalid("encoding", f"the file ends inside a {enc} character (byte {offset})", "bad_encoding") from None
    return enc, lines


def _read_csv(path: Path, encoding: str | None) -> tuple[list[str], Iterator[list[Any]], int]:
    enc, lines = _csv_encoding(path, encoding)
    f = open(path, encoding=enc, newline="")
    sample = f.read(65536)
    f.seek(0)
    try:
        dialect: Any = csv.Sniffer().sniff(sample.split("\n", 1)[0] if sample else ",", delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(f, delimiter=delimiter)
    headers = next(reader, None)
    if not headers:
        f.close()
        raise _invalid("file", "the file is empty: the first row must name the columns")

    def rows() -> Iterator[list[Any]]:
        with f:
            yield from reader
    return [h.strip() for h in headers], rows(), max(lines - 1, 0)


def _read_xlsx(path: Path) -> tuple[list[str], Iterator[list[Any]], int]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        raise _invalid("file", f"{path.name!r} is not a readable XLSX workbook: {exc}") from None
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    headers = next(rows, None)
    if not headers or all(h is None for h in headers):
        book.close()
        raise _invalid("file", "the sheet is empty: the first row must name the columns")
    total = max((sheet.max_row or 1) - 1, 0)

    def body() -> Iterator[list[Any]]:
        try:
            for row in rows:
                yield list(row)
        finally:
            book.close()
    return ["" if h is None else str(h).strip() for h in headers], body(), total


def _read_vcf(path: Path, encoding: str | None) -> tuple[list[str], Iterator[list[Any]], int]:
    from .vcard import VCARD_COLUMNS, read_vcards

    enc, _ = _csv_encoding(path, encoding)
    text = path.read_text(encoding=enc)
    cards = read_vcards(text)
    return list(VCARD_COLUMNS), iter([[card.get(c, "") for c in VCARD_COLUMNS] for card in cards]), len(cards)


# -- the service ---------------------------------------------------------------------------------

def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def _cell(value: Any, field: Field) -> str:
    """A cell as text (XLSX cells come typed)."""
    if value is None:
        return ""
    if isinstance(value, str):  # long text is kept as it is (blank: empty)
        return value if field.type is FieldType.LONG_TEXT and value.strip() else value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        if field.type is FieldType.DATE:
            return value.date().isoformat()
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


_MONEY_TEXT = re.compile(r"^\s*([-+]?[\d.,]+)\s*([A-Za-z]{3})\s*$|^\s*([A-Za-z]{3})\s*([-+]?[\d.,]+)\s*$")


class _ByTitle(str):
    """A relation cell naming its record rather than giving its id ("Acme Windows", an owner's
    e-mail): replaced by the id when exactly one record has that title."""


class _Plan:
    """How the columns of one file become field values."""

    def __init__(self, entity: EntityType, headers: list[str], mapping: dict[str, str | None],
                 region: str, currency: str):
        fields = _importable(entity)
        self.entity = entity
        self.region, self.currency = region, currency
        self.columns: list[tuple[int, str, Field, Any]] = []
        self.id_column: int | None = None
        unknown = [f for f in mapping.values() if f and f not in fields and f not in ("id", "owner_id")]
        if unknown:
            raise _invalid("mapping", f"unknown field {unknown[0]!r}; {entity.name} fields are: {', '.join(fields)}",
                           "unknown_field")
        missing = [h for h in mapping if h not in headers]
        if missing:
            raise _invalid("mapping", f"the file has no column {missing[0]!r}; its columns are: {', '.join(headers)}")
        targets = [f for f in mapping.values() if f]
        twice = {f for f in targets if targets.count(f) > 1}
        if twice:
            raise _invalid("mapping", f"two columns are mapped to {sorted(twice)[0]!r}")
        owner = Field(name="owner_id", type=FieldType.RELATION, target="user")
        for index, header in enumerate(headers):
            name = mapping.get(header)
            if not name:
                continue
            if name == "id":
                self.id_column = index
                continue
            field = owner if name == "owner_id" else fields[name]
            self.columns.append((index, header, field, value_parser(field)))
        self.required = [f for f in entity.fields if f.required and f.default is None and not f.hidden]
        self.header_of = {field.name: header for _, header, field, _ in self.columns}

    def values(self, cells: list[Any], row: int) -> tuple[dict[str, Any], list[RowError]]:
        data: dict[str, Any] = {}
        errors: list[RowError] = []
        width = len(cells)
        for index, header, field, parse in self.columns:
            raw = _cell(cells[index], field) if index < width else ""
            if raw == "":
                continue
            value: Any = raw
            if field.type is FieldType.RELATION and not raw.strip().isdigit():
                data[field.name] = _ByTitle(raw.strip())  # resolved a batch at a time (_check_relations)
                continue
            if field.type is FieldType.MONEY:
                match = _MONEY_TEXT.match(raw)
                if match:
                    amount, code = (match.group(1), match.group(2)) if match.group(1) else (match.group(4), match.group(3))
                    value = {"amount": amount, "currency": code}
            try:
                data[field.name] = parse(field, value, self.region, self.currency)
            except FieldValueError as exc:
                errors.append(RowError(row, header, raw, exc.message))
        return data, errors

    def record_id(self, cells: list[Any]) -> int | None:
        if self.id_column is None or self.id_column >= len(cells):
            return None
        raw = _cell(cells[self.id_column], Field(name="id", type=FieldType.INTEGER))
        return int(raw) if raw.isdigit() else None

    def missing_required(self, data: dict[str, Any], row: int) -> list[RowError]:
        return [RowError(row, self.header_of.get(f.name, f.name), "", f"{f.name} is required")
                for f in self.required if data.get(f.name) in (None, "", [])]


#: Up to this many live records, an import reads their dedup keys once at its start.
PRELOAD_UP_TO = 2_000_000
_TEXT_TYPES = (FieldType.TEXT, FieldType.LONG_TEXT, FieldType.URL, FieldType.CHOICE)


def _flat(key: tuple[str, Any]) -> str:
    """A key as one string. The maps an import keeps for its whole run (keys seen, keys of the
    records already there) hold only strings and ints, which the garbage collector never walks:
    with tuple keys it walked a million-entry map at every full collection, a third of a large
    import's time."""
    kind, value = key
    return f"{kind}\x1f{value if isinstance(value, str) else repr(value)}"


class _Dedup:
    """Keys of rows and records: e-mails (lower case) and phones (E.164) of every field of those
    types, or one key field."""

    def __init__(self, entity: EntityType, dedup: list[str], key: str | None):
        self.entity = entity
        self.fields: list[Field] = []
        if key:
            if key == "id":
                self.fields = []
            else:
                field = entity.field(key)
                if field is None or field.hidden:
                    raise _invalid("key", f"{entity.name} has no field {key!r}", "unknown_field")
                self.fields = [field]
        else:
            for kind in dedup:
                if kind not in ("email", "phone"):
                    raise _invalid("dedup", f"dedup by email and/or phone (or give a key field), not {kind!r}")
                wanted = FieldType.EMAIL if kind == "email" else FieldType.PHONE
                self.fields += [f for f in entity.fields if f.type is wanted and not f.hidden]
        self.key_is_id = key == "id"
        #: flat key -> record id of every live record, when read at the start (see preload).
        self.known: dict[str, int] | None = None
        #: lower-cased e-mail -> the spellings seen (the column's index serves exact matches).
        self.spellings: dict[str, set[str]] = {}

    @property
    def active(self) -> bool:
        return bool(self.fields) or self.key_is_id

    @staticmethod
    def _key(field: Field, value: Any) -> tuple[str, Any] | None:
        if value is None or value == "":
            return None
        if isinstance(value, Phone):
            return ("phone", value.e164)
        if field.type is FieldType.EMAIL:
            return ("email", str(value).lower())  # spellings kept by keys()
        if isinstance(value, Money):
            value = (str(value.amount), value.currency)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str):
            value = value.casefold()
        return (field.name, value)

    def keys(self, data: dict[str, Any]) -> list[tuple[str, Any]]:
        found = []
        for field in self.fields:
            key = self._key(field, data.get(field.name))
            if key is not None and key[0] == "email":
                self.spellings.setdefault(key[1], set()).add(str(data[field.name]))
            if key is not None:
                found.append(key)
        return found

    async def preload(self, db: Any) -> None:
        """Read the keys of every live record once, when there are at most :data:`PRELOAD_UP_TO`
        of them: a large import then asks the database nothing per batch (records this import
        makes are found by its own list of keys; records others make while it runs are not)."""
        self.known = None
        if self.key_is_id or not self.fields:
            return
        table = self.entity.table
        count = await db.fetchval(f'SELECT count(*) FROM "{table}" WHERE "deleted_at" IS NULL', [])
        if count > PRELOAD_UP_TO:
            return
        known: dict[str, int] = {}
        columns = ", ".join(f'"{f.name}"' for f in self.fields)
        rows = await db.fetch(f'SELECT "id", {columns} FROM "{table}" WHERE "deleted_at" IS NULL ORDER BY "id"', [])
        for row in rows:
            for field, value in zip(self.fields, row[1:]):
                if value is None or value == "":
                    continue
                if field.type is FieldType.PHONE:
                    key: Any = ("phone", value)
                elif field.type is FieldType.EMAIL:
                    key = ("email", str(value).lower())
                elif isinstance(value, str):
                    key = (field.name, value.casefold())
                else:
                    continue  # other key types are looked up per batch
                known.setdefault(_flat(key), row[0])
        if all(f.type in (FieldType.PHONE, FieldType.EMAIL) or f.type in _TEXT_TYPES for f in self.fields):
            self.known = known

    async def existing(self, db: Any, keys: set[tuple[str, Any]], ids: set[int]) -> dict[Any, int]:
        """key -> the oldest live record having it (as the system sees them)."""
        if self.known is not None:
            known = self.known
            return {k: known[flat] for k in keys if (flat := _flat(k)) in known}
        table = self.entity.table
        found: dict[Any, int] = {}
        if self.key_is_id and ids:
            id_list = sorted(ids)
            for start in range(0, len(id_list), 900):
                part = id_list[start:start + 900]
                rows = await db.fetch(f'SELECT "id" FROM "{table}" WHERE "deleted_at" IS NULL AND "id" IN '
                                      f'({", ".join("?" for _ in part)})', part)
                found.update((("id", r[0]), r[0]) for r in rows)
            return found
        by_kind: dict[str, list[Any]] = {}
        for kind, value in keys:
            by_kind.setdefault(kind, []).append(value)
        for field in self.fields:
            kind = "phone" if field.type is FieldType.PHONE else "email" if field.type is FieldType.EMAIL else field.name
            values = by_kind.get(kind)
            if not values or isinstance(values[0], tuple):
                continue
            column = f'lower("{field.name}")' if kind == field.name and isinstance(values[0], str) else f'"{field.name}"'
            if kind == "email":  # exact spellings and lower case: the field's index answers
                values = sorted({s for v in values for s in (v, *self.spellings.get(v, ()))})
            for start in range(0, len(values), 900):
                part = values[start:start + 900]
                rows = await db.fetch(
                    f'SELECT "id", {column} FROM "{table}" WHERE "deleted_at" IS NULL AND {column} IN '
                    f'({", ".join("?" for _ in part)}) ORDER BY "id"', part)
                for rid, value in rows:
                    key = (kind, value.lower() if kind == "email" and isinstance(value, str) else value)
                    if key not in found or rid < found[key]:
                        found[key] = rid
        return found


class ImportService:
    """``deployment.imports``: mappings and imports (direct or as jobs)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

        @deployment.jobs.handler(JOB_KIND, max_attempts=1)
        async def run_job(dep: Deployment, payload: Any) -> None:
            await dep.imports._run_job(payload["import_id"])

    @property
    def db(self):
        return self.deployment.db

    @property
    def folder(self) -> Path:
        """Where uploads and error reports are kept."""
        return Path(self.deployment.path) / "imports"

    # -- permissions ---------------------------------------------------------------------------

    def _check(self, actor: Actor, entity: EntityType, on_duplicate: str, dry_run: bool) -> None:
        from .auth.permissions import Scope

        if actor.system:
            return
        if actor.scope(entity.name, "create") is Scope.NONE:
            raise Forbidden(f"your role may not create {entity.label_plural.lower()}, so it may not import them")
        if on_duplicate == "update" and actor.scope(entity.name, "edit") is Scope.NONE:
            raise Forbidden(f"your role may not change {entity.label_plural.lower()}: import with skip or create")

    # -- mappings ------------------------------------------------------------------------------

    async def save_mapping(self, name: str, entity_name: str, columns: dict[str, str | None],
                           *, actor: Actor) -> dict[str, Any]:
        """Save (or replace) the named mapping of column headers to fields of ``entity_name``."""
        entity = self.deployment.records.entity(entity_name)
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise _invalid("name", "a mapping needs a name of 1-100 characters")
        if not isinstance(columns, dict) or not columns:
            raise _invalid("columns", "a mapping maps column headers to field names")
        fields = _importable(entity)
        for header, target in columns.items():
            if target and target not in fields and target not in ("id", "owner_id"):
                raise _invalid("columns", f"column {header!r}: {entity.name} has no field {target!r}", "unknown_field")
        now = _ts(self.deployment.clock.now())
        body = json.dumps(columns)
        async with self.db.transaction():
            existing = await self.db.fetchval('SELECT "id" FROM crm_import_mapping WHERE "name" = ?', [name])
            if existing:
                await self.db.execute('UPDATE crm_import_mapping SET "entity" = ?, "columns" = ?, "updated_at" = ? '
                                      'WHERE "id" = ?', [entity.name, body, now, existing])
            else:
                await self.db.execute('INSERT INTO crm_import_mapping ("name", "entity", "columns", "created_at", '
                                      '"updated_at", "created_by") VALUES (?, ?, ?, ?, ?, ?)',
                                      [name, entity.name, body, now, now, actor.user_id])
        return await self.get_mapping(name)

    async def mappings(self, entity: str | None = None) -> list[dict[str, Any]]:
        sql = 'SELECT "name", "entity", "columns", "updated_at" FROM crm_import_mapping'
        rows = await (self.db.fetch(sql + ' WHERE "entity" = ? ORDER BY "name"', [entity]) if entity
                      else self.db.fetch(sql + ' ORDER BY "name"', []))
        return [{"name": r[0], "entity": r[1], "columns": json.loads(r[2]), "updated_at": r[3]} for r in rows]

    async def get_mapping(self, name: str) -> dict[str, Any]:
        row = await self.db.fetchrow('SELECT "name", "entity", "columns", "updated_at" FROM crm_import_mapping '
                                     'WHERE "name" = ?', [name])
        if row is None:
            raise NotFound("mapping", name)
        return {"name": row[0], "entity": row[1], "columns": json.loads(row[2]), "updated_at": row[3]}

    async def delete_mapping(self, name: str) -> None:
        await self.get_mapping(name)
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_import_mapping WHERE "name" = ?', [name])

    # -- previews --------------------------------------------------------------------------------

    def open_rows(self, path: Path, *, fmt: str | None = None, encoding: str | None = None
                  ) -> tuple[list[str], Iterator[list[Any]], int]:
        """(headers, rows, estimated row count) of a file, streamed."""
        path = Path(path)
        if not path.is_file():
            raise _invalid("file", f"no file {str(path)!r}")
        kind = _file_format(path, fmt)
        if kind == "csv":
            return _read_csv(path, encoding)
        if kind == "xlsx":
            return _read_xlsx(path)
        return _read_vcf(path, encoding)

    async def preview(self, path: Path, entity_name: str, *, fmt: str | None = None, encoding: str | None = None,
                      mapping: str | None = None, sample: int = 5) -> dict[str, Any]:
        """Headers, the guessed (or named) mapping and the first rows of a file."""
        entity = self.deployment.records.entity(entity_name)
        headers, rows, total = self.open_rows(path, fmt=fmt, encoding=encoding)
        first = []
        for cells in rows:
            first.append(["" if c is None else str(c) for c in cells])
            if len(first) >= sample:
                break
        close = getattr(rows, "close", None)
        if close:
            close()
        columns = (await self.get_mapping(mapping))["columns"] if mapping else guess_mapping(entity, headers)
        return {"headers": headers, "mapping": columns, "rows": first, "total": total,
                "fields": [{"name": f.name, "label": f.label or f.name} for f in entity.visible_fields]}

    # -- importing -------------------------------------------------------------------------------

    async def import_file(
        self, path: Path | str, entity_name: str, *, actor: Actor, fmt: str | None = None,
        encoding: str | None = None, mapping: str | dict[str, str | None] | None = None,
        overrides: dict[str, str | None] | None = None, dedup: list[str] | None = None,
        key: str | None = None, on_duplicate: str = "skip", dry_run: bool = False,
        errors_file: Path | str | None = None, progress: Callable[[int, int], Any] | None = None,
    ) -> ImportResult:
        """Import a file (see the module's docstring). ``mapping``: a saved mapping's name or a
        dict (default: guessed from the headers); ``overrides`` change single columns of it.
        ``dedup``: ``["email", "phone"]`` by default (what the entity has), ``[]`` for none;
        ``key``: a field (or ``id``) to match records by instead. ``progress(done, total)`` is
        called as rows go by. A whole-file problem (a bad encoding, an unreadable file, a wrong
        mapping) raises ValidationError before anything is written."""
        entity = self.deployment.records.entity(entity_name)
        if on_duplicate not in ON_DUPLICATE:
            raise _invalid("on_duplicate", f"on duplicate: {', '.join(ON_DUPLICATE)}; not {on_duplicate!r}")
        self._check(actor, entity, on_duplicate, dry_run)
        headers, rows, total = self.open_rows(Path(path), fmt=fmt, encoding=encoding)
        try:
            if isinstance(mapping, str):
                saved = await self.get_mapping(mapping)
                if saved["entity"] != entity.name:
                    raise _invalid("mapping", f"mapping {mapping!r} is for {saved['entity']}, not {entity.name}")
                columns = {h: t for h, t in saved["columns"].items() if h in headers}
            elif isinstance(mapping, dict):
                columns = dict(mapping)
            else:
                columns = guess_mapping(entity, headers)
            for header, target in (overrides or {}).items():
                columns[header] = target or None
            if not any(columns.values()):
                raise _invalid("mapping", f"no column maps to a field of {entity.name}; columns: {', '.join(headers)}")
            settings = self.deployment.settings
            plan = _Plan(entity, headers, columns, settings.region, settings.currency)
            if dedup is None:
                dedup = [] if key else [k for k, t in (("email", FieldType.EMAIL), ("phone", FieldType.PHONE))
                                        if any(f.type is t for f in entity.fields)]
            if key == "id" and plan.id_column is None:
                raise _invalid("key", "matching by id needs a column mapped to id")
            if key and key != "id" and key not in plan.header_of:
                raise _invalid("key", f"no column is mapped to the key field {key!r}")
            matcher = _Dedup(entity, dedup if on_duplicate != "create" else [], key if on_duplicate != "create" else None)
            result = ImportResult(entity=entity.name, dry_run=dry_run, mapping=columns)
            if matcher.active:
                await matcher.preload(self.db)
            with _ErrorReport(Path(errors_file) if errors_file is not None else None) as report:
                await self._run(entity, plan, matcher, rows, total, result, report, actor=actor,
                                on_duplicate=on_duplicate, dry_run=dry_run, progress=progress)
        finally:
            close = getattr(rows, "close", None)
            if close:
                close()
        return result

    async def _run(self, entity: EntityType, plan: _Plan, matcher: _Dedup, rows: Iterator[list[Any]], total: int,
                   result: ImportResult, report: _ErrorReport, *, actor: Actor, on_duplicate: str, dry_run: bool,
                   progress: Callable[[int, int], Any] | None) -> None:
        """Every batch in turn. While a batch runs, ``result.errors`` collects its errors; they
        go to the report after it (memory holds a batch's errors, not a whole file's)."""
        records = self.deployment.records.as_actor(actor)
        # flat key -> the record made or updated by an earlier batch (0: would be, in a dry run).
        seen: dict[str, int] = {}
        done = 0
        for batch in _batches(rows):
            await self._batch(entity, plan, matcher, batch, seen, result, records=records,
                              on_duplicate=on_duplicate, dry_run=dry_run)
            report.add(result.errors)
            result.errors = []
            done += len(batch)
            if progress:
                await _maybe_await(progress(done, max(total, done)))
        result.total = done
        result.errors, result.error_count = report.kept, report.count
        result.errors_file = str(report.path) if report.count and report.path else None

    async def _batch(self, entity: EntityType, plan: _Plan, matcher: _Dedup, batch: list[tuple[int, list[Any]]],
                     seen: dict[str, int], result: ImportResult, *, records: Any, on_duplicate: str,
                     dry_run: bool) -> None:
        parsed: list[tuple[int, dict[str, Any], list[Any], list[str], int | None]] = []
        for row, cells in batch:
            data, errors = plan.values(cells, row)
            if errors:
                result.errors += errors
                result.rejected += 1
                continue
            keys = matcher.keys(data)
            rid = plan.record_id(cells) if matcher.key_is_id else None
            if rid is not None:
                keys = [("id", rid)]
            parsed.append((row, data, keys, [_flat(k) for k in keys], rid))
        relation_errors = await self._check_relations(entity, plan, parsed)
        existing: dict[Any, int] = {}
        if matcher.active:
            wanted = {k for _, _, keys, flats, _ in parsed for k, f in zip(keys, flats) if f not in seen}
            ids = {rid for *_, rid in parsed if rid is not None}
            existing = await matcher.existing(self.db, wanted, ids)
            matcher.spellings.clear()
        creates: list[tuple[int, dict[str, Any], list[str]]] = []
        updates: dict[int, tuple[int, dict[str, Any]]] = {}  # record id -> (row, values)
        pending: dict[str, dict[str, Any]] = {}  # flat key -> the row of this batch to be created with it
        for row, data, keys, flats, rid in parsed:
            bad = relation_errors.get(row)
            if bad:
                result.errors += bad
                result.rejected += 1
                continue
            earlier_row = next((pending[f] for f in flats if f in pending), None)
            earlier_id = next((seen[f] for f in flats if f in seen), None)
            record_id = next((existing[k] for k in keys if k in existing), None)
            if matcher.key_is_id and rid is not None and record_id is None:
                result.errors.append(RowError(row, "id", str(rid), f"no {entity.name} with id {rid}"))
                result.rejected += 1
                continue
            if earlier_row is not None or earlier_id is not None or record_id is not None:
                if on_duplicate == "skip":
                    result.skipped += 1
                    continue
                if earlier_row is not None:  # a row of this batch: merge into it
                    earlier_row.update(data)
                    result.updated += 1
                    continue
                target_id = earlier_id if earlier_id is not None else record_id
                if target_id in updates:
                    updates[target_id][1].update(data)
                else:
                    updates[target_id] = (row, data)
                for f in flats:
                    seen.setdefault(f, target_id)
                result.updated += 1
                continue
            missing = plan.missing_required(data, row)
            if missing:
                result.errors += missing
                result.rejected += 1
                continue
            creates.append((row, data, flats))
            for f in flats:
                pending.setdefault(f, data)
            result.created += 1
        if dry_run:
            for _, _, flats in creates:  # later batches see these as made
                for f in flats:
                    seen.setdefault(f, 0)
            return
        await self._write(entity, records, creates, updates, seen, result, plan.header_of)

    async def _write(self, entity: EntityType, records: Any, creates: list[tuple[int, dict[str, Any], list[str]]],
                     updates: dict[int, tuple[int, dict[str, Any]]], seen: dict[str, int],
                     result: ImportResult, header_of: dict[str, str]) -> None:
        """One batch in one transaction. Rows the records layer refuses by number are rejected and
        the rest written again; a refusal naming no row (a unique value taken) splits the batch
        in halves, each written alone, down to the row at fault. Every row is written whole or
        not at all."""

        def reject(row: int, data: dict[str, Any], errors: list[FieldError]) -> None:
            for e in errors:
                result.errors.append(RowError(row, header_of.get(e.field, e.field), cell_text(data.get(e.field)), e.message))
            result.rejected += 1

        while True:
            update_items = list(updates.items())
            stage = "create"
            try:
                async with self.db.transaction():
                    ids = await records.bulk_create(entity.name, [data for _, data, _ in creates]) if creates else []
                    stage = "update"
                    if update_items:
                        await records.bulk_update(entity.name, [{"id": rid, **data} for rid, (_, data) in update_items])
            except (ValidationError, Forbidden) as exc:
                rows_bad: dict[int, list[FieldError]] = {}
                other: list[FieldError] = []
                for error in exc.errors or []:
                    match = re.match(r"rows\[(\d+)\](?:\.(.*))?$", error.field)
                    if match:
                        rows_bad.setdefault(int(match.group(1)), []).append(
                            FieldError(match.group(2) or "", error.code, error.message))
                    else:
                        other.append(error)
                if isinstance(exc, Forbidden) and not rows_bad:
                    raise
                if other or not rows_bad:
                    count = len(creates) + len(update_items)
                    if count == 1:  # the row at fault
                        if creates:
                            reject(creates[0][0], creates[0][1], other or exc.errors)
                            result.created -= 1
                        else:
                            rid, (row, data) = update_items[0]
                            reject(row, data, other or exc.errors)
                            result.updated -= 1
                        return
                    if creates and update_items:
                        parts = [(creates, []), ([], update_items)]
                    elif len(creates) > 1:
                        parts = [(creates[:len(creates) // 2], []), (creates[len(creates) // 2:], [])]
                    else:
                        half = len(update_items) // 2
                        parts = [([], update_items[:half]), ([], update_items[half:])]
                    for part_creates, part_updates in parts:
                        await self._write(entity, records, list(part_creates), dict(part_updates), seen, result,
                                          header_of)
                    return
                if stage == "create":
                    for index in sorted(rows_bad, reverse=True):
                        row, data, _ = creates.pop(index)
                        reject(row, data, rows_bad[index])
                        result.created -= 1
                else:
                    for index in sorted(rows_bad, reverse=True):
                        rid, (row, data) = update_items[index]
                        del updates[rid]
                        reject(row, data, rows_bad[index])
                        result.updated -= 1
                continue
            for (_, _, flats), rid in zip(creates, ids):
                for f in flats:
                    seen.setdefault(f, rid)
            return

    async def _titles(self, field: Field, titles: set[str]) -> dict[str, list[int]]:
        """Title -> ids of the live records of ``field``'s target having it (users: e-mail or
        name; contacts: "first last" too)."""
        target = self.deployment.registry.get(field.target)
        if target is None:
            return {}
        columns = ["email", "name"] if target.name == "user" else [target.title_field] if target.title_field else []
        found: dict[str, list[int]] = {}
        wanted = sorted(titles)
        for column in columns:
            for start in range(0, len(wanted), 900):
                part = wanted[start:start + 900]
                for record_id, title in await self.db.fetch(
                        f'SELECT "id", "{column}" FROM "{target.table}" WHERE "{column}" IN ({", ".join("?" for _ in part)}) '
                        'AND "deleted_at" IS NULL', part):
                    found.setdefault(title, []).append(record_id)
        if target.name == "contact":
            people = [t for t in wanted if " " in t and t not in found]
            for start in range(0, len(people), 900):
                part = people[start:start + 900]
                for record_id, title in await self.db.fetch(
                        f'SELECT "id", "first_name" || \' \' || "last_name" FROM "{target.table}" '
                        f'WHERE "first_name" || \' \' || "last_name" IN ({", ".join("?" for _ in part)}) '
                        'AND "deleted_at" IS NULL', part):
                    found.setdefault(title, []).append(record_id)
        if target.name == "user":  # e-mail addresses in any letter case
            lowered = {t.lower(): t for t in wanted if "@" in t and t not in found}
            if lowered:
                for record_id, email in await self.db.fetch(f'SELECT "id", "email" FROM "{target.table}" WHERE "deleted_at" IS NULL'):
                    if email and email.lower() in lowered:
                        found.setdefault(lowered[email.lower()], []).append(record_id)
        return found

    async def _check_relations(self, entity: EntityType, plan: _Plan, parsed: list[Any]) -> dict[int, list[RowError]]:
        """Rows naming records that do not exist, per row (the records layer names only the field);
        a record named by its title becomes its id when exactly one record has that title."""
        bad: dict[int, list[RowError]] = {}
        for _, header, field, _ in plan.columns:
            if field.type is not FieldType.RELATION:
                continue
            titles = {data[field.name] for _, data, *_ in parsed if isinstance(data.get(field.name), _ByTitle)}
            if titles:
                found = await self._titles(field, titles)
                for row, data, *_ in parsed:
                    value = data.get(field.name)
                    if not isinstance(value, _ByTitle):
                        continue
                    ids = sorted(set(found.get(value, [])))
                    if len(ids) == 1:
                        data[field.name] = ids[0]
                        continue
                    data.pop(field.name)
                    reason = (f"no {field.target} named {str(value)!r}; give its id or its exact name" if not ids else
                              f"{len(ids)} {field.target} records are named {str(value)!r}; give the id of one")
                    bad.setdefault(row, []).append(RowError(row, header, str(value), reason))
            ids = {data[field.name] for _, data, *_ in parsed if data.get(field.name) is not None}
            if not ids:
                continue
            target = self.deployment.registry.get(field.target)
            table = target.table if target is not None else "crm_user"
            id_list = sorted(ids)
            found: set[int] = set()
            for start in range(0, len(id_list), 900):
                part = id_list[start:start + 900]
                found.update(r[0] for r in await self.db.fetch(
                    f'SELECT "id" FROM "{table}" WHERE "id" IN ({", ".join("?" for _ in part)}) AND "deleted_at" IS NULL',
                    part))
            for row, data, *_ in parsed:
                value = data.get(field.name)
                if value is not None and value not in found:
                    bad.setdefault(row, []).append(RowError(row, header, str(value), f"no {field.target} with id {value}"))
        return bad

    # -- imports as jobs ---------------------------------------------------------------------------

    async def upload(self, path: Path, filename: str, entity_name: str, *, actor: Actor) -> dict[str, Any]:
        """Keep an uploaded file (moved into :attr:`folder`) as an import waiting to be run; its
        status with a preview (headers, guessed mapping, first rows) or the reason there is none."""
        entity = self.deployment.records.entity(entity_name)
        self._check(actor, entity, "skip", True)
        filename = Path(filename or "upload.csv").name
        _file_format(Path(filename), None)
        await self.purge()
        now = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            import_id = await self.db.fetchval(
                'INSERT INTO crm_import ("entity", "filename", "options", "status", "dry_run", "user_id", '
                '"created_at", "updated_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING "id"',
                [entity.name, filename, "{}", "uploaded", False, actor.user_id, now, now])
        folder = self.folder / str(import_id)
        folder.mkdir(parents=True, exist_ok=True)
        Path(path).replace(folder / f"upload{Path(filename).suffix.lower()}")
        return await self.describe(import_id, actor=actor)

    async def describe(self, import_id: int, *, actor: Actor, encoding: str | None = None,
                       mapping: str | None = None) -> dict[str, Any]:
        """An import's status and a preview of its file."""
        info = await self.status(import_id, actor=actor)
        path = self._upload(import_id)
        try:
            if path is None:
                raise _invalid("file", _GONE)
            info["preview"] = await self.preview(path, info["entity"], encoding=encoding or info["options"].get("encoding"),
                                                 mapping=mapping)
            info["preview_error"] = None
        except ValidationError as exc:
            info["preview"] = None
            info["preview_error"] = "; ".join(e.message for e in exc.errors)
        return info

    async def queue(self, import_id: int, *, actor: Actor, options: dict[str, Any], dry_run: bool = False,
                    save_mapping: str | None = None) -> dict[str, Any]:
        """Run an uploaded import (or a dry run of it) as a job with ``options`` (``mapping``:
        a saved mapping's name or {column: field}; ``dedup``, ``key``, ``on_duplicate``, ``encoding``)."""
        info = await self.status(import_id, actor=actor)
        if info["status"] in ("pending", "running"):
            raise _invalid("status", "this import is running already", "conflict")
        if info["status"] == "done" and not info["dry_run"]:
            raise _invalid("status", "this import is done; upload the file again to import it again", "conflict")
        entity = self.deployment.records.entity(info["entity"])
        known = {"mapping", "dedup", "key", "on_duplicate", "encoding"}
        unknown = set(options) - known
        if unknown:
            raise _invalid(sorted(unknown)[0], f"unknown option; options are: {', '.join(sorted(known))}")
        on_duplicate = options.get("on_duplicate") or "skip"
        if on_duplicate not in ON_DUPLICATE:
            raise _invalid("on_duplicate", f"on duplicate: {', '.join(ON_DUPLICATE)}; not {on_duplicate!r}")
        self._check(actor, entity, on_duplicate, dry_run)
        mapping = options.get("mapping")
        if isinstance(mapping, str):
            await self.get_mapping(mapping)
        elif mapping is not None and not isinstance(mapping, dict):
            raise _invalid("mapping", "a saved mapping's name or {column: field}")
        if save_mapping and isinstance(mapping, dict):
            await self.save_mapping(save_mapping, entity.name, mapping, actor=actor)
        errors = self.errors_path(import_id)
        if errors.is_file():
            errors.unlink()
        async with self.db.transaction():
            await self._set(import_id, status="pending", dry_run=dry_run, options=json.dumps(options), error=None,
                            total=0, processed=0, created=0, updated=0, skipped=0, rejected=0)
            await self.deployment.jobs.enqueue(JOB_KIND, {"import_id": import_id})
        return await self.status(import_id, actor=actor)

    def _upload(self, import_id: int) -> Path | None:
        folder = self.folder / str(import_id)
        found = sorted(folder.glob("upload.*")) if folder.is_dir() else []
        return found[0] if found else None

    def errors_path(self, import_id: int) -> Path:
        return self.folder / str(import_id) / "errors.csv"

    async def status(self, import_id: int, *, actor: Actor | None = None) -> dict[str, Any]:
        row = await self.db.fetchrow(
            'SELECT "id", "entity", "filename", "options", "status", "dry_run", "total", "processed", "created", '
            '"updated", "skipped", "rejected", "error", "user_id", "created_at", "updated_at" FROM crm_import '
            'WHERE "id" = ?', [import_id])
        if row is None or (actor is not None and not actor.system and row[13] != actor.user_id
                           and not actor.has("manage_integrations")):
            raise NotFound("import", import_id)
        keys = ["id", "entity", "filename", "options", "status", "dry_run", "total", "processed", "created",
                "updated", "skipped", "rejected", "error", "user_id", "created_at", "updated_at"]
        info = dict(zip(keys, row))
        info["options"] = json.loads(info["options"])
        info["dry_run"] = bool(info["dry_run"])
        info["has_errors"] = self.errors_path(import_id).is_file()
        return info

    async def _set(self, import_id: int, **values: Any) -> None:
        values["updated_at"] = _ts(self.deployment.clock.now())
        async with self.db.transaction():
            await self.db.execute(
                f'UPDATE crm_import SET {", ".join(f"{chr(34)}{k}{chr(34)} = ?" for k in values)} WHERE "id" = ?',
                [*values.values(), import_id])

    async def _run_job(self, import_id: int) -> None:
        info = await self.status(import_id)
        if info["status"] not in ("pending", "running"):
            return
        path = self._upload(import_id)
        if path is None:
            await self._set(import_id, status="failed", error=_GONE)
            return
        from .auth import SYSTEM, Unauthenticated

        try:
            actor = SYSTEM if info["user_id"] is None else await self.deployment.auth.actor_for_user(
                info["user_id"], via="import")
        except Unauthenticated:
            await self._set(import_id, status="failed", error="the user who started it can no longer sign in")
            return
        await self._set(import_id, status="running", processed=0)
        options = info["options"]

        async def progress(done: int, total: int) -> None:
            await self._set(import_id, processed=done, total=total)

        try:
            result = await self.import_file(
                path, info["entity"], actor=actor, encoding=options.get("encoding"),
                mapping=options.get("mapping"), dedup=options.get("dedup"),
                key=options.get("key"), on_duplicate=options.get("on_duplicate", "skip"), dry_run=info["dry_run"],
                errors_file=self.errors_path(import_id), progress=progress,
            )
        except (ValidationError, Forbidden, NotFound, Unauthenticated) as exc:
            message = "; ".join(e.message for e in exc.errors) if isinstance(exc, ValidationError) else str(exc)
            await self._set(import_id, status="failed", error=message)
            return
        await self._set(import_id, status="done", total=result.total, processed=result.total,
                        created=result.created, updated=result.updated, skipped=result.skipped,
                        rejected=result.rejected)
        if not info["dry_run"]:
            path.unlink(missing_ok=True)  # imported: only its error report is still wanted

    async def purge(self, *, older_than: dt.timedelta = KEEP_UPLOADS) -> int:
        """Remove the files (upload, error report) of imports not running whose last change is
        older than ``older_than``; how many imports lost theirs. Uploading calls it, so files
        never pile up on a deployment that imports."""
        cutoff = _ts(self.deployment.clock.now() - older_than)
        rows = await self.db.fetch('SELECT "id" FROM crm_import WHERE "updated_at" < ? AND "status" NOT IN '
                                   "('pending', 'running')", [cutoff])
        removed = 0
        for (import_id,) in rows:
            folder = self.folder / str(import_id)
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    async def list_imports(self, *, actor: Actor, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.db.fetch('SELECT "id", "user_id" FROM crm_import ORDER BY "id" DESC LIMIT ?', [limit])
        return [await self.status(r[0]) for r in rows
                if actor.system or r[1] == actor.user_id or actor.has("manage_integrations")]


_GONE = f"the uploaded file is gone (uploads are kept {KEEP_UPLOADS.days} days, until imported); upload it again"


class _ErrorReport:
    """The per-row error report: every error written to ``path`` (a CSV: row, column, value,
    reason; made at the first error) as each batch ends, the first :data:`KEEP_ERRORS` kept."""

    def __init__(self, path: Path | None):
        self.path = path
        self.kept: list[RowError] = []
        self.count = 0
        self._file: Any = None
        self._writer: Any = None

    def __enter__(self) -> _ErrorReport:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()

    def add(self, errors: list[RowError]) -> None:
        if not errors:
            return
        errors.sort(key=lambda e: e.row)  # batches come in row order; within one, by row too
        self.count += len(errors)
        self.kept += errors[:KEEP_ERRORS - len(self.kept)]
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["row", "column", "value", "reason"])
        self._writer.writerows([e.row, e.column, e.value, e.reason] for e in errors)


def _batches(rows: Iterator[list[Any]]) -> Iterator[list[tuple[int, list[Any]]]]:
    """Non-blank rows with their numbers as a spreadsheet shows them (the header is row 1), in
    batches of :data:`BATCH`."""
    batch: list[tuple[int, list[Any]]] = []
    for row_number, cells in enumerate(rows, 2):
        if any(c not in (None, "") for c in cells):
            batch.append((row_number, cells))
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value
