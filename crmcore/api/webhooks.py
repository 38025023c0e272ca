"""HTTP routes of outgoing webhooks and the job queue.

Every route needs the ``manage_integrations`` permission (admins have it). Subscriptions:
``/api/webhooks`` (CRUD; the signing secret is in the answers of create, of ``GET`` one and of a
``rotate_secret`` patch); their delivery log: ``/api/webhooks/deliveries`` and
``/api/webhooks/{id}/deliveries``, one delivery with its attempts, ``.../redeliver``. Jobs:
``/api/jobs`` (by status, e.g. the dead ones), one job, ``.../retry``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from ..jobs import JOB_STATUSES, Job
from ..records.errors import FieldError, ValidationError
from ..webhooks import DELIVERY_STATUSES
from ._http import _body, _convert, _deployment, _int_param, _json
from .auth import _actor, _require

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths"]

PERMISSION = "manage_integrations"
_Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
_Event = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Description = Annotated[str, msgspec.Meta(max_length=1000)]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Where deliveries are POSTed (http or https).
    url: _Url
    #: Events wanted: ``contact.created``, ``deal.updated``, ``contact.deleted``, ``deal.*``, ``*.created``, ``*``.
    events: Annotated[list[_Event], msgspec.Meta(min_length=1, max_length=100)]
    #: Only these entity types (empty: every one).
    entities: list[_Event] = []
    description: _Description = ""
    active: bool = True


class WebhookPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: _Url | msgspec.UnsetType = msgspec.UNSET
    events: Annotated[list[_Event], msgspec.Meta(min_length=1, max_length=100)] | msgspec.UnsetType = msgspec.UNSET
    entities: list[_Event] | msgspec.UnsetType = msgspec.UNSET
    description: _Description | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    #: Make a new signing secret (in the answer); the old one stops working at once.
    rotate_secret: bool = False


class Webhook(msgspec.Struct, kw_only=True):
    id: int
    url: str
    events: list[str]
    entities: list[str]
    description: str
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    created_by: int | None


class WebhookWithSecret(Webhook, kw_only=True):
    #: The Standard Webhooks signing secret (``whsec_...``): verify deliveries with it.
    secret: str


class WebhookDelivery(msgspec.Struct, kw_only=True):
    id: int
    webhook_id: int
    #: The ``webhook-id`` header: the same on every attempt of this message.
    msg_id: str
    event: str
    entity: str
    record_id: int | None
    status: str
    attempts: int
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None
    response_status: int | None
    last_error: str | None


class WebhookAttempt(msgspec.Struct, kw_only=True):
    attempt: int
    at: dt.datetime
    status_code: int | None
    #: The start of the receiver's answer.
    response: str | None
    duration_ms: int | None
    error: str | None


class WebhookDeliveryDetail(WebhookDelivery, kw_only=True):
    #: The body sent: ``{"type", "timestamp", "data": {"entity", "action", "id", "record", "changes", "user_id"}}``.
    payload: dict[str, Any]
    attempt_log: list[WebhookAttempt]


SCHEMA_TYPES = [WebhookCreate, WebhookPatch, Webhook, WebhookWithSecret, WebhookDelivery, WebhookAttempt,
                WebhookDeliveryDetail, Job]


def _allowed(request: Request):
    actor = _actor(request)
    _require(actor, PERMISSION)
    return actor


def _limit(request: Request, default: int = 50) -> int:
    limit = _int_param("limit", request.query_params.get("limit"), default)
    if not 1 <= limit <= 1000:
        raise ValidationError([FieldError("limit", "invalid", "limit must be between 1 and 1000")])
    return limit


def _status(request: Request, allowed: tuple[str, ...]) -> str | None:
    status = request.query_params.get("status") or None
    if status is not None and status not in allowed:
        raise ValidationError([FieldError("status", "invalid", f"status is one of {', '.join(allowed)}")])
    return status


# -- subscriptions ------------------------------------------------------------------------------


@get("/api/webhooks", include_in_schema=False)
async def list_webhooks(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).webhooks.list())


@post("/api/webhooks", include_in_schema=False, status_code=201)
async def create_webhook(request: Request) -> Response:
    actor = _allowed(request)
    data = _convert(await _body(request), WebhookCreate)
    hook = await _deployment(request).webhooks.create(
        data.url, data.events, entities=data.entities, description=data.description, active=data.active,
        user_id=actor.user_id)
    response = _json(hook, 201)
    response.headers["cache-control"] = "no-store"
    return response


@get("/api/webhooks/{webhook_id:int}", include_in_schema=False)
async def get_webhook(request: Request) -> Response:
    _allowed(request)
    response = _json(await _deployment(request).webhooks.get(request.path_params["webhook_id"], secret=True))
    response.headers["cache-control"] = "no-store"
    return response


@patch("/api/webhooks/{webhook_id:int}", include_in_schema=False)
async def update_webhook(request: Request) -> Response:
    _allowed(request)
    data = _convert(await _body(request), WebhookPatch)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET and k != "rotate_secret"}
    hook = await _deployment(request).webhooks.update(request.path_params["webhook_id"], rotate_secret=data.rotate_secret,
                                                      **changes)
    response = _json(hook)
    response.headers["cache-control"] = "no-store"
    return response


@delete("/api/webhooks/{webhook_id:int}", include_in_schema=False, status_code=204)
async def delete_webhook(request: Request) -> None:
    _allowed(request)
    await _deployment(request).webhooks.delete(request.path_params["webhook_id"])


# -- deliveries ---------------------------------------------------------------------------------


async def _deliveries(request: Request, webhook_id: int | None) -> Response:
    _allowed(request)
    webhooks = _deployment(request).webhooks
    if webhook_id is not None:
        await webhooks.get(webhook_id)  # 404 for an unknown subscription
    return _json(await webhooks.deliveries(
        webhook_id=webhook_id, status=_status(request, DELIVERY_STATUSES),
        before_id=_int_param("before", request.query_params.get("before")), limit=_limit(request)))


@get("/api/webhooks/deliveries", include_in_schema=False)
async def list_deliveries(request: Request) -> Response:
    return await _deliveries(request, None)


@get("/api/webhooks/{webhook_id:int}/deliveries", include_in_schema=False)
async def webhook_deliveries(request: Request) -> Response:
    return await _deliveries(request, request.path_params["webhook_id"])


@get("/api/webhooks/deliveries/{delivery_id:int}", include_in_schema=False)
async def get_delivery(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).webhooks.delivery(request.path_params["delivery_id"]))


@post("/api/webhooks/deliveries/{delivery_id:int}/redeliver", include_in_schema=False, status_code=202)
async def redeliver(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).webhooks.redeliver(request.path_params["delivery_id"]), 202)


# -- jobs ---------------------------------------------------------------------------------------


@get("/api/jobs", include_in_schema=False)
async def list_jobs(request: Request) -> Response:
    _allowed(request)
    params = request.query_params
    return _json(await _deployment(request).jobs.list(
        status=_status(request, JOB_STATUSES), kind=params.get("kind") or None,
        before_id=_int_param("before", params.get("before")), limit=_limit(request)))


@get("/api/jobs/{job_id:int}", include_in_schema=False)
async def get_job(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).jobs.get(request.path_params["job_id"]))


@post("/api/jobs/{job_id:int}/retry", include_in_schema=False, status_code=202)
async def retry_job(request: Request) -> Response:
    _allowed(request)
    return _json(await _deployment(request).jobs.retry(request.path_params["job_id"]), 202)


ROUTES = [
    list_webhooks, create_webhook, get_webhook, update_webhook, delete_webhook, list_deliveries, webhook_deliveries,
    get_delivery, redeliver, list_jobs, get_job, retry_job,
]


# -- OpenAPI ------------------------------------------------------------------------------------


def openapi_paths(problem: Any) -> dict[str, Any]:
    """The OpenAPI path items of these routes; ``problem(description)`` makes a problem response."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    ok = lambda schema, what="OK": {"description": what, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    many = lambda name: {"type": "array", "items": ref(name)}  # noqa: E731
    body = lambda name: {"required": True, "content": {"application/json": {"schema": ref(name)}}}  # noqa: E731
    tag = ["webhooks"]
    needs = {"403": problem(f"Needs the {PERMISSION} permission")}
    bad = {"422": problem("Invalid input: errors name each field")}
    gone = lambda what: {"404": problem(f"No such {what}")}  # noqa: E731
    path_id = lambda name: [{"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}]  # noqa: E731
    paging = [
        {"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "older than this id"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
    ]
    delivery_status = {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(DELIVERY_STATUSES)}}
    return {
        "/api/webhooks": {
            "get": {"operationId": "webhooks_list", "tags": tag, "summary": "Webhook subscriptions (without secrets)",
                    "responses": {"200": ok(many("Webhook")), **needs}},
            "post": {"operationId": "webhooks_create", "tags": tag,
                     "summary": "Subscribe a URL to events; the answer holds the signing secret",
                     "requestBody": body("WebhookCreate"),
                     "responses": {"201": ok(ref("WebhookWithSecret"), "Created"), **needs, **bad}}},
        "/api/webhooks/{webhook_id}": {
            "parameters": path_id("webhook_id"),
            "get": {"operationId": "webhooks_get", "tags": tag, "summary": "A subscription with its signing secret",
                    "responses": {"200": ok(ref("WebhookWithSecret")), **needs, **gone("webhook")}},
            "patch": {"operationId": "webhooks_update", "tags": tag,
                      "summary": "Change a subscription (URL, events, entities, active) or rotate its secret",
                      "requestBody": body("WebhookPatch"),
                      "responses": {"200": ok(ref("WebhookWithSecret")), **needs, **gone("webhook"), **bad}},
            "delete": {"operationId": "webhooks_delete", "tags": tag,
                       "summary": "Remove a subscription: its queued deliveries are cancelled, its log kept",
                       "responses": {"204": {"description": "Removed"}, **needs, **gone("webhook")}}},
        "/api/webhooks/{webhook_id}/deliveries": {
            "parameters": path_id("webhook_id"),
            "get": {"operationId": "webhooks_subscription_deliveries", "tags": tag,
                    "summary": "A subscription's deliveries, newest first",
                    "parameters": [delivery_status, *paging],
                    "responses": {"200": ok(many("WebhookDelivery")), **needs, **gone("webhook"), **bad}}},
        "/api/webhooks/deliveries": {
            "get": {"operationId": "webhooks_deliveries", "tags": tag, "summary": "Every delivery, newest first",
                    "parameters": [delivery_status, *paging],
                    "responses": {"200": ok(many("WebhookDelivery")), **needs, **bad}}},
        "/api/webhooks/deliveries/{delivery_id}": {
            "parameters": path_id("delivery_id"),
            "get": {"operationId": "webhooks_delivery", "tags": tag,
                    "summary": "One delivery: its body and every attempt (status code, answer, duration, error)",
                    "responses": {"200": ok(ref("WebhookDeliveryDetail")), **needs, **gone("delivery")}}},
        "/api/webhooks/deliveries/{delivery_id}/redeliver": {
            "parameters": path_id("delivery_id"),
            "post": {"operationId": "webhooks_redeliver", "tags": tag,
                     "summary": "Send a delivery again now (same body and webhook-id)",
                     "responses": {"202": ok(ref("WebhookDeliveryDetail"), "Queued"), **needs, **gone("delivery"), **bad}}},
        "/api/jobs": {
            "get": {"operationId": "jobs_list", "tags": ["jobs"], "summary": "Jobs, newest first (e.g. the dead ones)",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(JOB_STATUSES)}},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}}, *paging],
                    "responses": {"200": ok(many("Job")), **needs, **bad}}},
        "/api/jobs/{job_id}": {
            "parameters": path_id("job_id"),
            "get": {"operationId": "jobs_get", "tags": ["jobs"], "summary": "A job",
                    "responses": {"200": ok(ref("Job")), **needs, **gone("job")}}},
        "/api/jobs/{job_id}/retry": {
            "parameters": path_id("job_id"),
            "post": {"operationId": "jobs_retry", "tags": ["jobs"],
                     "summary": "Run a dead, cancelled or done job again now",
                     "responses": {"202": ok(ref("Job"), "Queued"), **needs, **gone("job"), **bad}}},
    }
