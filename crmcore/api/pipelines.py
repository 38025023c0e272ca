"""HTTP routes of pipelines: definitions (read by anyone signed in, managed with the
``manage_schema`` permission), a pipeline's summary within the reader's scope, and a record's
stage history with the time spent per stage.

Stage moves themselves are ordinary record updates (``PATCH /api/deal/{id}`` with ``stage``),
so they are checked, audited and announced like every write; see :mod:`crmcore.pipelines`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put

from ..contributions import Pipeline
from ..records.errors import NotFound
from ._http import _body, _deployment, _json
from .auth import _actor

__all__ = ["ROUTES", "pipeline_paths", "PIPELINE_SCHEMAS"]


def _service(request: Request):
    return _deployment(request).pipeline_service


def _out(pipeline: Pipeline) -> dict[str, Any]:
    data = msgspec.to_builtins(pipeline)
    data["source"] = "custom" if pipeline.plugin == "custom" else ("customised" if pipeline.customised else "plugin")
    return data


def _name(request: Request) -> str:
    name = request.path_params["name"]
    if name not in _deployment(request).pipelines:
        raise NotFound("pipeline", name.encode("unicode_escape").decode()[:60])
    return name


@get("/api/pipelines", include_in_schema=False)
async def list_pipelines(request: Request) -> Response:
    """Every pipeline in force (``?entity=deal``: of one entity type)."""
    entity = request.query_params.get("entity") or None
    return _json([_out(p) for p in _service(request).list(entity)])


@get("/api/pipelines/{name:str}", include_in_schema=False)
async def get_pipeline(request: Request) -> Response:
    return _json(_out(_service(request).get(_name(request))))


@post("/api/pipelines", include_in_schema=False, status_code=201)
async def create_pipeline(request: Request) -> Response:
    actor = _actor(request)
    service = _service(request)
    service._check_manager(actor)
    return _json(_out(await service.create(await _body(request), actor=actor)), 201)


@put("/api/pipelines/{name:str}", include_in_schema=False)
async def update_pipeline(request: Request) -> Response:
    actor = _actor(request)
    service = _service(request)
    service._check_manager(actor)
    name = _name(request)
    return _json(_out(await service.update(name, await _body(request), actor=actor)))


@delete("/api/pipelines/{name:str}", include_in_schema=False, status_code=200)
async def delete_pipeline(request: Request) -> Response:
    """Delete a stored pipeline, or a plugin-declared one's customisation (the declaration,
    in force again, is the answer)."""
    actor = _actor(request)
    service = _service(request)
    service._check_manager(actor)
    restored = await service.delete(_name(request), actor=actor)
    return _json({"deleted": request.path_params["name"], "restored": _out(restored) if restored else None})


@get("/api/pipelines/{name:str}/summary", include_in_schema=False)
async def pipeline_summary(request: Request) -> Response:
    durations = (request.query_params.get("durations") or "").lower() in ("1", "true", "yes", "on")
    return _json(await _service(request).summary(_name(request), actor=_actor(request), durations=durations))


@get("/api/{entity:str}/{record_id:int}/stages", include_in_schema=False)
async def record_stages(request: Request) -> Response:
    params = request.path_params
    return _json(await _service(request).stage_history(params["entity"], params["record_id"], actor=_actor(request)))


ROUTES: list = [list_pipelines, get_pipeline, create_pipeline, update_pipeline, delete_pipeline, pipeline_summary,
                record_stages]


# -- the OpenAPI description (merged by crmcore.api.openapi) --------------------------------------

_STAGE = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "label": {"type": "string", "maxLength": 200},
        "probability": {"type": "integer", "minimum": 0, "maximum": 100, "description": "percent"},
        "kind": {"type": "string", "enum": ["open", "won", "lost"], "default": "open"},
    },
}
_MONEY_LIST = {"anyOf": [{"type": "array", "items": {"$ref": "#/components/schemas/Money"}}, {"type": "null"}],
               "description": "per currency; null when the role hides the amount"}

PIPELINE_SCHEMAS: dict[str, Any] = {
    "PipelineStage": _STAGE,
    "Pipeline": {
        "type": "object", "required": ["name", "entity", "label", "stages", "plugin", "customised", "source"],
        "properties": {
            "name": {"type": "string"}, "entity": {"type": "string"}, "label": {"type": "string"},
            "stages": {"type": "array", "items": {"$ref": "#/components/schemas/PipelineStage"}},
            "plugin": {"type": "string", "description": "the declaring plugin; custom: stored at run time"},
            "customised": {"type": "boolean", "description": "a plugin-declared pipeline an admin changed"},
            "source": {"type": "string", "enum": ["plugin", "customised", "custom"]},
        },
    },
    "PipelineCreate": {
        "type": "object", "required": ["name", "stages"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            "entity": {"type": "string", "default": "deal"}, "label": {"type": "string", "maxLength": 200},
            "stages": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/PipelineStage"},
                       "description": "in order; at least one open stage"},
        },
    },
    "PipelineUpdate": {
        "type": "object", "additionalProperties": False,
        "description": "keys left out keep their value; stages replace the whole list (add, reorder, relabel, remove); "
                       "plugin, customised and source (as a GET answers) are ignored",
        "properties": {
            "name": {"type": "string", "description": "rename (a stored pipeline no record is in)"},
            "entity": {"type": "string"}, "label": {"type": "string", "maxLength": 200},
            "stages": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/PipelineStage"}},
            "plugin": {"type": "string"}, "customised": {"type": "boolean"}, "source": {"type": "string"},
        },
    },
    "PipelineSummary": {
        "type": "object", "required": ["pipeline", "entity", "stages", "count"],
        "properties": {
            "pipeline": {"type": "string"}, "entity": {"type": "string"}, "label": {"type": "string"},
            "count": {"type": "integer"},
            "entered": {"type": "integer", "description": "records with a stage history in the pipeline"},
            "other_stages": {"type": "integer", "description": "records in stages the pipeline no longer has"},
            "amount": _MONEY_LIST,
            "expected_amount": {**_MONEY_LIST, "description": "open stages' amounts weighted by probability"},
            "stages": {"type": "array", "items": {"type": "object", "required": ["name", "kind", "probability", "count"], "properties": {
                "name": {"type": "string"}, "label": {"type": "string"},
                "kind": {"type": "string", "enum": ["open", "won", "lost"]},
                "probability": {"type": "integer"}, "count": {"type": "integer"},
                "reached": {"type": "integer", "description": "records (now in the pipeline) that ever entered the stage"},
                "conversion": {"type": ["number", "null"], "description": "reached, in percent of entered"},
                "amount": _MONEY_LIST, "weighted_amount": _MONEY_LIST,
                "stays": {"type": "integer", "description": "with durations: stays in the stage that ended"},
                "average_seconds": {"type": ["number", "null"], "description": "with durations: their average length"}}}},
        },
    },
    "StageHistory": {
        "type": "object", "required": ["entity", "record_id", "stage", "history", "durations"],
        "properties": {
            "entity": {"type": "string"}, "record_id": {"type": "integer"},
            "pipeline": {"type": ["string", "null"]}, "stage": {"type": ["string", "null"]},
            "since": {"type": ["string", "null"], "format": "date-time"},
            "history": {"type": "array", "items": {"type": "object", "required": ["at", "to_stage"], "properties": {
                "id": {"type": "integer"}, "pipeline": {"type": ["string", "null"]},
                "from_stage": {"type": ["string", "null"]}, "to_stage": {"type": ["string", "null"]},
                "user_id": {"type": ["integer", "null"]}, "at": {"type": "string", "format": "date-time"},
                "left_at": {"type": ["string", "null"], "format": "date-time"},
                "seconds": {"type": ["number", "null"], "description": "null: the record is closed (won/lost)"}}}},
            "durations": {"type": "array", "items": {"type": "object", "required": ["stage", "seconds", "visits"], "properties": {
                "pipeline": {"type": ["string", "null"]}, "stage": {"type": ["string", "null"]},
                "seconds": {"type": ["number", "null"]}, "visits": {"type": "integer"}}}},
        },
    },
}


def pipeline_paths(entities: list[str]) -> dict[str, Any]:
    """Paths of the pipeline routes; ``entities``: the entity types that have pipelines."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    body = lambda name: {"required": True, "content": {"application/json": {"schema": ref(name)}}}  # noqa: E731
    ok = lambda schema, what="OK": {"description": what, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    problem = lambda what: {"description": what, "content": {"application/problem+json": {"schema": ref("Problem")}}}  # noqa: E731
    tag = ["pipelines"]
    bad = {"422": problem("Invalid input: errors name each field (a stage in use, a pipeline without an open stage...)")}
    admin = {"403": problem("Needs the manage_schema permission")}
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    missing = {"404": problem("No such pipeline")}
    paths: dict[str, Any] = {
        "/api/pipelines": {
            "get": {"operationId": "pipelines_list", "tags": tag, "summary": "Pipelines in force (plugin-declared, customised, stored)",
                    "parameters": [{"name": "entity", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": ok({"type": "array", "items": ref("Pipeline")})}},
            "post": {"operationId": "pipelines_create", "tags": tag, "summary": "Store a new pipeline",
                     "requestBody": body("PipelineCreate"),
                     "responses": {"201": ok(ref("Pipeline"), "Created"), **admin, **bad}},
        },
        "/api/pipelines/{name}": {
            "parameters": [name_param],
            "get": {"operationId": "pipelines_get", "tags": tag, "summary": "A pipeline",
                    "responses": {"200": ok(ref("Pipeline")), **missing}},
            "put": {"operationId": "pipelines_update", "tags": tag,
                    "summary": "Change a pipeline (a plugin-declared one is customised)",
                    "requestBody": body("PipelineUpdate"),
                    "responses": {"200": ok(ref("Pipeline")), **admin, **missing, **bad}},
            "delete": {"operationId": "pipelines_delete", "tags": tag,
                       "summary": "Delete a stored pipeline no record is in, or a customisation (the declaration returns)",
                       "responses": {"200": ok({"type": "object", "required": ["deleted", "restored"], "properties": {
                           "deleted": {"type": "string"}, "restored": {"anyOf": [ref("Pipeline"), {"type": "null"}]}}}),
                           **admin, **missing, **bad}},
        },
        "/api/pipelines/{name}/summary": {
            "parameters": [name_param],
            "get": {"operationId": "pipelines_summary", "tags": tag,
                    "summary": "Records, amounts and conversion per stage (average time per stage with durations=true), within what you may read",
                    "parameters": [{"name": "durations", "in": "query", "schema": {"type": "boolean"},
                                    "description": "also the average time a stay in each stage lasted"}],
                    "responses": {"200": ok(ref("PipelineSummary")), **missing}},
        },
    }
    for entity in entities:
        paths[f"/api/{entity}/{{record_id}}/stages"] = {
            "parameters": [{"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"operationId": f"stages_{entity}", "tags": tag,
                    "summary": "Stage history (who moved it, when, from, to) and time spent per stage",
                    "responses": {"200": ok(ref("StageHistory")), "404": problem("No such record (or not yours to read)")}},
        }
    return paths
