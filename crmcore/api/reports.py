"""HTTP routes of reports.

``GET /api/reports``: the reports the caller may run (built-in, plugins', saved);
``POST /api/reports``: save (add or replace) a definition (``manage_schema``);
``GET``/``DELETE /api/reports/{name}``: one definition / remove a saved one (``manage_schema``);
``POST /api/reports/run``: run a definition (the body) without saving it;
``GET``/``POST /api/reports/{name}/run``: its figures, as the caller reads them (their read
scope, never a hidden field), narrowed by an extra ``filter`` (JSON in the query string, or the
body's ``filter``); ``?format=csv`` or ``xlsx`` downloads them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post

from ..records.errors import FieldError, ValidationError
from ..reports import CHARTS, PERMISSION, json_default, to_csv, to_xlsx
from ._http import _body, _deployment, _json
from .auth import _actor

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths"]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ReportDefinition(msgspec.Struct, kw_only=True):
    #: Lowercase letters, digits and _ (plugins' reports: ``plugin.name``).
    name: str
    entity: str
    label: str = ""
    description: str = ""
    #: The records' filter language.
    filter: dict[str, Any] | None = None
    #: Up to two: a field name, or ``{"field": ..., "bucket": "day|week|month|quarter|year"}`` for dates.
    group_by: list[Any] = []
    #: ``{"op": "count|sum|avg|min|max", "field": ..., "filter": ..., "name": ..., "label": ...}``.
    measures: list[dict[str, Any]] = []
    #: Column names, ``-`` first for descending.
    sort: list[str] = []
    limit: int = 1000
    chart: str = "bar"
    #: ``core``, a plugin's name or ``saved`` (answers only).
    source: str | None = None


class ReportColumn(msgspec.Struct, kw_only=True):
    key: str
    label: str
    #: group, currency or measure.
    kind: str
    field: str | None = None
    bucket: str | None = None
    type: str = "text"


class ReportResult(msgspec.Struct, kw_only=True):
    name: str
    label: str
    entity: str
    chart: str
    columns: list[ReportColumn]
    #: One object per group, keyed by column key (decimals as strings).
    rows: list[dict[str, Any]]
    #: Titles of related records named by group columns: ``{column: {id: title}}``.
    labels: dict[str, dict[str, str]]
    #: More groups than the report's limit.
    truncated: bool


SCHEMA_TYPES = [ReportDefinition, ReportColumn, ReportResult]


def _encode(data: Any) -> bytes:
    return msgspec.json.encode(data, enc_hook=json_default)


@get("/api/reports", include_in_schema=False)
async def list_reports(request: Request) -> Response:
    return _json(await _deployment(request).reports.list(_actor(request)))


@post("/api/reports", include_in_schema=False, status_code=201)
async def save_report(request: Request) -> Response:
    actor = _actor(request)
    return _json(await _deployment(request).reports.save(await _body(request), actor), 201)


@get("/api/reports/{name:str}", include_in_schema=False)
async def get_report(request: Request) -> Response:
    return _json(await _deployment(request).reports.get(request.path_params["name"], _actor(request)))


@delete("/api/reports/{name:str}", include_in_schema=False, status_code=204)
async def remove_report(request: Request) -> None:
    await _deployment(request).reports.remove(request.path_params["name"], _actor(request))


async def _run(request: Request, extra: Any) -> Response:
    deployment = _deployment(request)
    result = await deployment.reports.run(request.path_params["name"], _actor(request), filter=extra)
    return export(result, request.query_params.get("format") or "json")


def export(result: dict[str, Any], form: str) -> Response:
    """A result as JSON, or a CSV / XLSX download."""
    name = result["name"].replace(".", "_")
    if form == "csv":
        return Response(content=to_csv(result).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}.csv"'})
    if form == "xlsx":
        return Response(content=to_xlsx(result), media_type=XLSX,
                        headers={"content-disposition": f'attachment; filename="{name}.xlsx"'})
    if form != "json":
        raise ValidationError([FieldError("format", "invalid", "format is json, csv or xlsx")])
    return Response(content=_encode(result), media_type="application/json")


@get("/api/reports/{name:str}/run", include_in_schema=False)
async def run_report(request: Request) -> Response:
    raw = request.query_params.get("filter")
    extra = None
    if raw:
        try:
            extra = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ValidationError([FieldError("filter", "invalid_json", "filter is JSON in the filter language")]) from None
    return await _run(request, extra)


@post("/api/reports/{name:str}/run", include_in_schema=False, status_code=200)
async def run_report_post(request: Request) -> Response:
    raw = await request.body()
    body = msgspec.json.decode(raw) if raw.strip() else {}
    if not isinstance(body, dict) or set(body) - {"filter"}:
        raise ValidationError([FieldError("body", "invalid", 'the body is {"filter": {...}} (optional)')])
    return await _run(request, body.get("filter"))


@post("/api/reports/run", include_in_schema=False, status_code=200)
async def run_definition(request: Request) -> Response:
    """Run a definition without saving it (to try one out): the body is the definition."""
    result = await _deployment(request).reports.run(await _body(request), _actor(request))
    return export(result, request.query_params.get("format") or "json")


ROUTES = [list_reports, save_report, get_report, remove_report, run_report, run_report_post, run_definition]


def openapi_paths(problem: Any) -> dict[str, Any]:
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    ok = lambda schema, what="OK": {"description": what, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    tag = ["reports"]
    bad = {"422": problem("Invalid definition or filter: errors name each key")}
    gone = {"404": problem("No such report")}
    forbidden = {"403": problem("Your role may not read the report's entity or one of its fields")}
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    run_params = [
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv", "xlsx"], "default": "json"}},
    ]
    run_answers = {
        "200": {"description": "The figures", "content": {
            "application/json": {"schema": ref("ReportResult")},
            "text/csv": {"schema": {"type": "string"}},
            XLSX: {"schema": {"type": "string", "format": "binary"}}}},
        **forbidden, **gone, **bad,
    }
    return {
        "/api/reports": {
            "get": {"operationId": "reports_list", "tags": tag, "summary": "The reports you may run",
                    "responses": {"200": ok({"type": "array", "items": ref("ReportDefinition")})}},
            "post": {"operationId": "reports_save", "tags": tag,
                     "summary": f"Save (add or replace) a report definition; needs {PERMISSION}",
                     "description": f"Charts: {', '.join(CHARTS)}.",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("ReportDefinition")}}},
                     "responses": {"201": ok(ref("ReportDefinition"), "Saved"),
                                   "403": problem(f"Needs the {PERMISSION} permission"), **bad}}},
        "/api/reports/run": {
            "post": {"operationId": "reports_try", "tags": tag,
                     "summary": "Run a definition without saving it, as you read the records",
                     "parameters": run_params,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("ReportDefinition")}}},
                     "responses": run_answers}},
        "/api/reports/{name}": {
            "parameters": name,
            "get": {"operationId": "reports_get", "tags": tag, "summary": "A report's definition",
                    "responses": {"200": ok(ref("ReportDefinition")), **forbidden, **gone}},
            "delete": {"operationId": "reports_remove", "tags": tag, "summary": f"Remove a saved report; needs {PERMISSION}",
                       "responses": {"204": {"description": "Removed"}, "403": problem(f"Needs the {PERMISSION} permission"),
                                     **gone, **bad}}},
        "/api/reports/{name}/run": {
            "parameters": name,
            "get": {"operationId": "reports_run", "tags": tag,
                    "summary": "Run a report as you read the records (your scope, never a hidden field)",
                    "parameters": [*run_params, {"name": "filter", "in": "query", "schema": {"type": "string"},
                                                 "description": "an extra filter, JSON in the filter language"}],
                    "responses": run_answers},
            "post": {"operationId": "reports_run_filtered", "tags": tag,
                     "summary": "Run a report narrowed by an extra filter",
                     "parameters": run_params,
                     "requestBody": {"content": {"application/json": {"schema": {
                         "type": "object", "properties": {"filter": {"type": "object"}}}}}},
                     "responses": run_answers}},
    }
