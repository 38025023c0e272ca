"""HTTP routes of document templates and generated documents.

Templates: ``/api/document-templates`` (list: anyone signed in; add: ``manage_schema``),
``/api/document-templates/{name}`` (get; patch and delete: ``manage_schema``; plugins' templates
are read-only), ``/api/document-templates/{name}/render`` (make a document for a record the
actor may read: stored, attached to the record, its description answered).

Documents: ``/api/documents?entity=&record_id=`` (a record's documents, newest first) and
``/api/documents/{id}`` (the file, with its content type and a ``Content-Disposition``
filename; delete: who may edit the record). What templates see and how they render:
:mod:`crmcore.documents`. A template error is a 422 naming ``body`` with ``line N: ...``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from ..documents import FORMATS
from ..records.errors import FieldError, ValidationError
from ._http import _body, _deployment, _int_param, _json
from .auth import _actor

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths"]


class DocumentTemplateInput(msgspec.Struct, kw_only=True):
    """A template as sent (a patch sends only what changes; the name never changes)."""

    #: Lower-case letters, digits, ``_`` and ``-``; unique.
    name: str
    #: The entity type whose records it is filled with.
    entity: str
    label: str = ""
    #: ``html`` or ``pdf``: what a render makes unless it asks for the other.
    format: str = "pdf"
    #: Jinja2 HTML: ``{{ record.name }}``, ``{{ record.amount | money }}``, ``{{ related.contact.last_name }}``,
    #: ``{% for deal in related("deal") %}``, ``{{ settings.name }}``...
    body: str


class DocumentTemplate(DocumentTemplateInput, kw_only=True):
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    created_by: int | None
    #: The plugin shipping it (its templates are read-only), or null for a stored one.
    plugin: str | None
    read_only: bool


class DocumentTemplateInfo(msgspec.Struct, kw_only=True):
    """A template as listed (without its body)."""

    name: str
    entity: str
    label: str
    format: str
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    created_by: int | None
    plugin: str | None
    read_only: bool


class RenderRequest(msgspec.Struct, kw_only=True):
    entity: str
    record_id: int
    #: ``html`` or ``pdf``; the template's own format when left out.
    format: str | None = None
    #: A PDF/A-3b file (archival).
    pdf_a: bool = False


class Document(msgspec.Struct, kw_only=True):
    id: int
    template: str
    entity: str
    record_id: int
    format: str
    filename: str
    media_type: str
    #: Bytes.
    size: int
    created_by: int | None
    created_at: dt.datetime


SCHEMA_TYPES = [DocumentTemplateInput, DocumentTemplate, DocumentTemplateInfo, RenderRequest, Document]

#: A downloaded HTML document is a file, not a page of this site: nothing in it runs here.
_DOWNLOAD_HEADERS = {
    "x-content-type-options": "nosniff", "cache-control": "private, no-store",
    "content-security-policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox",
}


def _object(data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", "invalid", f"expected an object with {', '.join(sorted(allowed))}")])
    return data


@get("/api/document-templates", include_in_schema=False)
async def list_templates(request: Request) -> Response:
    _actor(request)
    return _json(await _deployment(request).documents.templates(entity=request.query_params.get("entity") or None))


@post("/api/document-templates", include_in_schema=False, status_code=201)
async def create_template(request: Request) -> Response:
    actor = _actor(request)
    return _json(await _deployment(request).documents.create_template(await _body(request), actor=actor), 201)


@get("/api/document-templates/{name:str}", include_in_schema=False)
async def get_template(request: Request) -> Response:
    _actor(request)
    return _json(await _deployment(request).documents.template(request.path_params["name"]))


@patch("/api/document-templates/{name:str}", include_in_schema=False)
async def update_template(request: Request) -> Response:
    actor = _actor(request)
    return _json(await _deployment(request).documents.update_template(
        request.path_params["name"], await _body(request), actor=actor))


@delete("/api/document-templates/{name:str}", include_in_schema=False, status_code=204)
async def delete_template(request: Request) -> None:
    actor = _actor(request)
    await _deployment(request).documents.delete_template(request.path_params["name"], actor=actor)


@post("/api/document-templates/{name:str}/render", include_in_schema=False, status_code=201)
async def render_template(request: Request) -> Response:
    actor = _actor(request)
    allowed = {"entity", "record_id", "format", "pdf_a"}
    data = _object(await _body(request), allowed)
    wrong = sorted(set(data) - allowed)
    if wrong:
        raise ValidationError([FieldError(wrong[0], "unknown_field", f"a render takes {', '.join(sorted(allowed))}")])
    if data.get("format") is not None and data["format"] not in FORMATS:
        raise ValidationError([FieldError("format", "invalid", f"format is one of {', '.join(FORMATS)}")])
    document = await _deployment(request).documents.generate(
        request.path_params["name"], data.get("entity"), data.get("record_id"), actor=actor,
        format=data.get("format"), pdf_a=data.get("pdf_a", False))
    return _json(document, 201)


@get("/api/documents", include_in_schema=False)
async def list_documents(request: Request) -> Response:
    actor = _actor(request)
    params = request.query_params
    entity = params.get("entity")
    record_id = _int_param("record_id", params.get("record_id"))
    if not entity or record_id is None:
        raise ValidationError([FieldError("entity" if not entity else "record_id", "required",
                                          "the record whose documents to list: ?entity=deal&record_id=12")])
    return _json(await _deployment(request).documents.documents(entity, record_id, actor=actor))


@get("/api/documents/{document_id:int}", include_in_schema=False)
async def download_document(request: Request) -> Response:
    actor = _actor(request)
    document, content = await _deployment(request).documents.content(request.path_params["document_id"], actor=actor)
    return Response(content=content, media_type=document["media_type"], headers={
        **_DOWNLOAD_HEADERS, "content-disposition": f'attachment; filename="{document["filename"]}"'})


@delete("/api/documents/{document_id:int}", include_in_schema=False, status_code=204)
async def delete_document(request: Request) -> None:
    actor = _actor(request)
    await _deployment(request).documents.delete_document(request.path_params["document_id"], actor=actor)


ROUTES = [list_templates, create_template, get_template, update_template, delete_template, render_template,
          list_documents, download_document, delete_document]


def openapi_paths(problem: Any) -> dict[str, Any]:
    """The OpenAPI path items of these routes; ``problem(description)`` makes a problem response."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    ok = lambda schema, what="OK": {"description": what, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    many = lambda name: {"type": "array", "items": ref(name)}  # noqa: E731
    body = lambda name: {"required": True, "content": {"application/json": {"schema": ref(name)}}}  # noqa: E731
    tag = ["documents"]
    needs = {"403": problem("Needs the manage_schema permission")}
    bad = {"422": problem("Invalid template: errors name each field; a template error names body with 'line N: ...'")}
    gone = {"404": problem("No such template")}
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    document_id = [{"name": "document_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    return {
        "/api/document-templates": {
            "get": {"operationId": "document_templates_list", "tags": tag,
                    "summary": "Document templates (stored and the plugins'), without their bodies",
                    "parameters": [{"name": "entity", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": ok(many("DocumentTemplateInfo"))}},
            "post": {"operationId": "document_templates_create", "tags": tag, "summary": "Add a template",
                     "requestBody": body("DocumentTemplateInput"),
                     "responses": {"201": ok(ref("DocumentTemplate"), "Created"), **needs, **bad}}},
        "/api/document-templates/{name}": {
            "parameters": name,
            "get": {"operationId": "document_templates_get", "tags": tag, "summary": "A template with its body",
                    "responses": {"200": ok(ref("DocumentTemplate")), **gone}},
            "patch": {"operationId": "document_templates_update", "tags": tag,
                      "summary": "Change a stored template (plugins' templates are read-only)",
                      "requestBody": body("DocumentTemplateInput"),
                      "responses": {"200": ok(ref("DocumentTemplate")), **needs, **gone, **bad}},
            "delete": {"operationId": "document_templates_delete", "tags": tag,
                       "summary": "Remove a stored template (documents made with it stay)",
                       "responses": {"204": {"description": "Removed"}, **needs, **gone}}},
        "/api/document-templates/{name}/render": {
            "parameters": name,
            "post": {"operationId": "document_templates_render", "tags": tag,
                     "summary": "Make a document (HTML or PDF) for a record you may read; stored and attached to it",
                     "requestBody": body("RenderRequest"),
                     "responses": {"201": ok(ref("Document"), "Created"),
                                   "404": problem("No such template, or no such record you may read"), **bad}}},
        "/api/documents": {
            "get": {"operationId": "documents_list", "tags": tag, "summary": "A record's documents, newest first",
                    "parameters": [{"name": "entity", "in": "query", "required": True, "schema": {"type": "string"}},
                                   {"name": "record_id", "in": "query", "required": True,
                                    "schema": {"type": "integer"}}],
                    "responses": {"200": ok(many("Document")), "404": problem("No such record you may read"), **bad}}},
        "/api/documents/{document_id}": {
            "parameters": document_id,
            "get": {"operationId": "documents_download", "tags": tag, "summary": "The document's file",
                    "responses": {"200": {"description": "The file (Content-Disposition names it)", "content": {
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                        "text/html": {"schema": {"type": "string"}}}},
                        "404": problem("No such document, or its record is not yours to read")}},
            "delete": {"operationId": "documents_delete", "tags": tag, "summary": "Remove a document",
                       "responses": {"204": {"description": "Removed"},
                                     "403": problem("Needs edit access to the record"),
                                     "404": problem("No such document")}}},
    }
