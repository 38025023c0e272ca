"""HTTP routes of imports and exports.

Imports: ``POST /api/imports`` uploads a file (multipart: ``file``, ``entity``) and answers with
a preview (headers, guessed mapping, first rows); ``POST /api/imports/{id}/run`` runs it, or a
dry run of it, as a job with the chosen options; ``GET /api/imports/{id}`` is its status and
progress; ``GET /api/imports/{id}/errors`` the per-row error report (CSV). Saved mappings:
``/api/import-mappings``. Exports: ``GET /api/exports/{entity}?format=csv|xlsx|json|vcf`` with a list's
parameters (``filter``, ``field=value``, ``q``, ``sort``, ``fields``).
Imports obey the importing user's role (create, and edit for updates); exports its export scope.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.response import Stream

from ..records.errors import FieldError, ValidationError
from ..exporting import MEDIA_TYPES
from ._http import _body, _deployment, _json, _list_query
from .auth import _actor

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths"]



class ImportRun(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A saved mapping's name, or {column header: field name or null}; default: guessed from the headers.
    mapping: str | dict[str, str | None] | None = None
    #: Find duplicates by these (``email``, ``phone``); default: both where the entity has them.
    dedup: list[str] | None = None
    #: Find duplicates by this field (or ``id``) instead.
    key: str | None = None
    on_duplicate: str = "skip"
    #: The CSV file's encoding when it is not UTF-8.
    encoding: str | None = None
    dry_run: bool = False
    #: Save the mapping (when given as an object) under this name.
    save_mapping: str | None = None


class MappingSave(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    entity: str
    columns: dict[str, str | None]


def _convert(data: Any, type_: type) -> Any:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise ValidationError([FieldError("body", "invalid", str(exc))]) from None


async def _save_upload(upload: Any) -> Path:
    handle, name = tempfile.mkstemp(prefix="crm-upload-")
    with os.fdopen(handle, "wb") as f:
        while chunk := await upload.read(1 << 20):
            f.write(chunk)
    return Path(name)


#: The largest upload (the rest of the API takes 10 MB); it is streamed to disk, not held in memory.
MAX_UPLOAD = 1024 * 1024 * 1024


@post("/api/imports", include_in_schema=False, status_code=201, request_max_body_size=MAX_UPLOAD)
async def upload_import(request: Request) -> Response:
    actor = _actor(request)
    if not request.content_type[0].startswith("multipart/form-data"):
        raise ValidationError([FieldError("file", "required", "send the file as multipart/form-data with 'file' and 'entity'")])
    form = await request.form()
    upload = form.get("file")
    if upload is None or not hasattr(upload, "read"):
        raise ValidationError([FieldError("file", "required", "no file in the upload")])
    entity = form.get("entity") or "contact"
    path = await _save_upload(upload)
    try:
        info = await _deployment(request).imports.upload(path, upload.filename or "upload.csv", str(entity), actor=actor)
    finally:
        if path.exists():
            path.unlink()
    return _json(info, 201)


@get("/api/imports", include_in_schema=False)
async def list_imports(request: Request) -> Response:
    return _json(await _deployment(request).imports.list_imports(actor=_actor(request)))


@get("/api/imports/{import_id:int}", include_in_schema=False)
async def get_import(request: Request) -> Response:
    imports = _deployment(request).imports
    import_id = request.path_params["import_id"]
    if request.query_params.get("preview"):
        return _json(await imports.describe(import_id, actor=_actor(request),
                                            encoding=request.query_params.get("encoding") or None,
                                            mapping=request.query_params.get("mapping") or None))
    return _json(await imports.status(import_id, actor=_actor(request)))


@post("/api/imports/{import_id:int}/run", include_in_schema=False, status_code=202)
async def run_import(request: Request) -> Response:
    body = _convert(await _body(request), ImportRun)
    options = {k: v for k, v in msgspec.structs.asdict(body).items()
               if k not in ("dry_run", "save_mapping") and v is not None}
    info = await _deployment(request).imports.queue(
        request.path_params["import_id"], actor=_actor(request), options=options, dry_run=body.dry_run,
        save_mapping=body.save_mapping)
    return _json(info, 202)


@get("/api/imports/{import_id:int}/errors", include_in_schema=False)
async def import_errors(request: Request) -> Response:
    imports = _deployment(request).imports
    import_id = request.path_params["import_id"]
    await imports.status(import_id, actor=_actor(request))
    path = imports.errors_path(import_id)
    if not path.is_file():
        from ..records.errors import NotFound
        raise NotFound("error report of import", import_id)
    return Response(content=path.read_bytes(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="import-{import_id}-errors.csv"'})


@get("/api/import-mappings", include_in_schema=False)
async def list_mappings(request: Request) -> Response:
    _actor(request)
    return _json(await _deployment(request).imports.mappings(request.query_params.get("entity") or None))


@post("/api/import-mappings", include_in_schema=False, status_code=201)
async def save_mapping(request: Request) -> Response:
    body = _convert(await _body(request), MappingSave)
    return _json(await _deployment(request).imports.save_mapping(body.name, body.entity, body.columns,
                                                                  actor=_actor(request)), 201)


@delete("/api/import-mappings/{name:str}", include_in_schema=False, status_code=204)
async def delete_mapping(request: Request) -> None:
    actor = _actor(request)
    from ..records.errors import Forbidden
    if not actor.has("manage_schema"):
        raise Forbidden("removing a saved mapping needs the manage_schema permission")
    await _deployment(request).imports.delete_mapping(request.path_params["name"])


@get("/api/exports/{entity:str}", include_in_schema=False)
async def export_entity(request: Request) -> Stream:
    """Every record matching the list's parameters (filter, field=value, q, sort, fields), streamed."""
    entity = request.path_params["entity"]
    fmt = request.query_params.get("format") or "csv"
    chunks = _deployment(request).exports.stream(entity, fmt=fmt, actor=_actor(request), query=_list_query(request))
    first = await anext(chunks)  # a bad format, filter or permission is answered before streaming

    async def body():
        yield first
        async for chunk in chunks:
            yield chunk

    return Stream(body(), media_type=MEDIA_TYPES[fmt],
                  headers={"content-disposition": f'attachment; filename="{entity}.{fmt}"'})


ROUTES: list[Any] = [upload_import, list_imports, get_import, run_import, import_errors, list_mappings, save_mapping,
                     delete_mapping, export_entity]
SCHEMA_TYPES: list[Any] = [ImportRun, MappingSave]


def openapi_paths(problem: Any) -> dict[str, Any]:
    ok = lambda what="OK", media="application/json": {"description": what, "content": {media: {}}}  # noqa: E731
    body = lambda name: {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}  # noqa: E731
    tag = ["import and export"]
    bad = {"422": problem("Invalid input: errors name each field")}
    denied = {"403": problem("Your role may not do this")}
    gone = {"404": problem("No such import")}
    path_id = [{"name": "import_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    return {
        "/api/imports": {
            "get": {"operationId": "imports_list", "tags": tag, "summary": "Your imports, newest first",
                    "responses": {"200": ok()}},
            "post": {"operationId": "imports_upload", "tags": tag,
                     "summary": "Upload a CSV, XLSX or vCard file (multipart: file, entity); a preview and guessed mapping",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["file"], "properties": {
                             "file": {"type": "string", "format": "binary"}, "entity": {"type": "string"}}}}}},
                     "responses": {"201": ok("Uploaded"), **bad, **denied}}},
        "/api/imports/{import_id}": {
            "parameters": path_id,
            "get": {"operationId": "imports_get", "tags": tag,
                    "summary": "An import's status and progress (preview=1: with a preview, for encoding/mapping)",
                    "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                   for n in ("preview", "encoding", "mapping")],
                    "responses": {"200": ok(), **gone}}},
        "/api/imports/{import_id}/run": {
            "parameters": path_id,
            "post": {"operationId": "imports_run", "tags": tag,
                     "summary": "Run the import, or a dry run of it, as a job with these options",
                     "requestBody": body("ImportRun"), "responses": {"202": ok("Queued"), **bad, **denied, **gone}}},
        "/api/imports/{import_id}/errors": {
            "parameters": path_id,
            "get": {"operationId": "imports_errors", "tags": tag,
                    "summary": "The per-row error report: row, column, value, reason (CSV)",
                    "responses": {"200": ok(media="text/csv"), **gone}}},
        "/api/import-mappings": {
            "get": {"operationId": "import_mappings_list", "tags": tag, "summary": "Saved column mappings",
                    "parameters": [{"name": "entity", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": ok()}},
            "post": {"operationId": "import_mappings_save", "tags": tag, "summary": "Save (or replace) a mapping",
                     "requestBody": body("MappingSave"), "responses": {"201": ok("Saved"), **bad}}},
        "/api/import-mappings/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {"operationId": "import_mappings_delete", "tags": tag, "summary": "Remove a saved mapping",
                       "responses": {"204": {"description": "Removed"}, **denied, "404": problem("No such mapping")}}},
        "/api/exports/{entity}": {
            "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": "exports_entity", "tags": tag,
                    "summary": "Every record matching the list's parameters as CSV, XLSX, JSON or (contacts) vCard",
                    "parameters": [
                        {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(MEDIA_TYPES)}},
                        {"name": "filter", "in": "query", "schema": {"type": "string"},
                         "description": "the filter language as JSON"},
                        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "full-text search"},
                        {"name": "sort", "in": "query", "schema": {"type": "string"},
                         "description": "fields, comma-separated; -field for descending (default: id)"},
                        {"name": "fields", "in": "query", "schema": {"type": "string"},
                         "description": "the columns, comma-separated (default: every field you see)"}],
                    "responses": {"200": ok(media="application/octet-stream"), **bad, **denied}}},
    }
