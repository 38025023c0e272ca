"""HTTP routes of record timelines, notifications and web forms.

- ``GET /api/{entity}/{id}/timeline?limit=&cursor=``: the record's timeline (activities, field
  changes, plugin items), newest first; 404 when the record is not readable.
- ``GET /api/notifications?unread=true&limit=&cursor=``: your notifications;
  ``POST /api/notifications/{id}/read``, ``POST /api/notifications/read-all``.
- ``/api/forms`` (``manage_schema``): list, create (``POST``), read, replace (``PUT``), delete
  web forms; ``GET /api/forms/{name}/submissions``: the submission log.
- ``POST /forms/{name}`` (public): a web form's submission.

Their OpenAPI description is in :mod:`crmcore.api.openapi` (``timeline_paths``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.response import Redirect

from ..records.errors import FieldError, ValidationError
from ..timeline import TimelineItem, TimelinePage
from ..webforms import FormUnavailable, WebForm
from ._http import MAX_BODY, _body, _convert, _deployment, _int_param, _json
from .auth import PUBLIC, _actor, _client_ip, _require
from .problems import ProblemError

__all__ = ["ROUTES", "SCHEMA_TYPES", "PUBLIC_OPERATIONS", "openapi_paths"]


def _limit(request: Request, default: int = 50, maximum: int = 200) -> int:
    limit = _int_param("limit", request.query_params.get("limit"), default)
    if not 1 <= limit <= maximum:
        raise ValidationError([FieldError("limit", "invalid", f"limit must be between 1 and {maximum}")])
    return limit


# -- timeline ---------------------------------------------------------------------------------


@get("/api/{entity:str}/{record_id:int}/timeline", include_in_schema=False)
async def record_timeline(request: Request) -> Response:
    page = await _deployment(request).timeline.timeline(
        request.path_params["entity"], request.path_params["record_id"], actor=_actor(request),
        limit=_limit(request), cursor=request.query_params.get("cursor") or None)
    return _json(page)


# -- notifications ----------------------------------------------------------------------------


@get("/api/notifications", include_in_schema=False)
async def list_notifications(request: Request) -> Response:
    unread = (request.query_params.get("unread") or "").lower() in ("1", "true", "yes", "on")
    return _json(await _deployment(request).notifications.list(
        _actor(request), unread=unread, limit=_limit(request),
        before_id=_int_param("cursor", request.query_params.get("cursor"))))


@post("/api/notifications/read-all", include_in_schema=False, status_code=200)
async def read_all_notifications(request: Request) -> Response:
    return _json({"marked": await _deployment(request).notifications.mark_all_read(_actor(request))})


@post("/api/notifications/{notification_id:int}/read", include_in_schema=False, status_code=200)
async def read_notification(request: Request) -> Response:
    return _json(await _deployment(request).notifications.mark_read(
        _actor(request), request.path_params["notification_id"]))


# -- web forms: configuration -----------------------------------------------------------------


def _manager(request: Request) -> None:
    _require(_actor(request), "manage_schema")


@get("/api/forms", include_in_schema=False)
async def list_forms(request: Request) -> Response:
    _manager(request)
    return _json(await _deployment(request).forms.list())


@post("/api/forms", include_in_schema=False, status_code=201)
async def create_form(request: Request) -> Response:
    _manager(request)
    form = _convert(await _body(request), WebForm)
    forms = _deployment(request).forms
    if form.name in {f.name for f in await forms.list()}:
        raise ValidationError([FieldError("name", "unique", f"a form named {form.name!r} exists; PUT /api/forms/{form.name} replaces it")])
    return _json(await forms.save(form), 201)


@get("/api/forms/{name:str}", include_in_schema=False)
async def get_form(request: Request) -> Response:
    _manager(request)
    return _json(await _deployment(request).forms.get(request.path_params["name"]))


@put("/api/forms/{name:str}", include_in_schema=False)
async def put_form(request: Request) -> Response:
    _manager(request)
    data = await _body(request)
    name = request.path_params["name"]
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", "invalid", "expected a JSON object describing the form")])
    if data.setdefault("name", name) != name:
        raise ValidationError([FieldError("name", "invalid", f"the body names form {data['name']!r}, the path {name!r}")])
    return _json(await _deployment(request).forms.save(_convert(data, WebForm)))


@delete("/api/forms/{name:str}", include_in_schema=False, status_code=204)
async def delete_form(request: Request) -> None:
    _manager(request)
    await _deployment(request).forms.remove(request.path_params["name"])


@get("/api/forms/{name:str}/submissions", include_in_schema=False)
async def form_submissions(request: Request) -> Response:
    _manager(request)
    forms = _deployment(request).forms
    name = request.path_params["name"]
    await forms.get(name)
    return _json(await forms.submissions(name, limit=_limit(request, 100, 1000),
                                         before_id=_int_param("cursor", request.query_params.get("cursor"))))


# -- web forms: the public endpoint -----------------------------------------------------------


async def _submitted(request: Request) -> tuple[dict[str, Any], bool]:
    """The submitted fields and whether they came as a browser form."""
    content_type = request.content_type[0]
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise ProblemError(413, "Payload too large", f"the body may be at most {MAX_BODY} bytes")
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}, True
    if content_type == "application/json":
        data = await _body(request)
        if not isinstance(data, dict) or not all(isinstance(v, (str, int, float, bool, type(None))) for v in data.values()):
            raise ValidationError([FieldError("body", "invalid", "expected a JSON object of field values (text, numbers)")])
        return data, False
    raise ProblemError(415, "Unsupported media type",
                       "send the form as application/x-www-form-urlencoded, multipart/form-data or application/json")


@post("/forms/{name:str}", opt=PUBLIC, include_in_schema=False, status_code=200)
async def submit_form(request: Request) -> Response:
    dep = _deployment(request)
    form = await dep.forms.get(request.path_params["name"])
    data, browser = await _submitted(request)
    try:
        await dep.forms.submit(form.name, data, ip=_client_ip(request))
    except FormUnavailable as exc:
        raise ProblemError(503, "Form unavailable", str(exc)) from None
    if browser and form.redirect_url:
        return Redirect(form.redirect_url, status_code=303)
    return _json({"ok": True, "message": form.success_message})


ROUTES: list = [
    record_timeline, list_notifications, read_all_notifications, read_notification, list_forms, create_form,
    get_form, put_form, delete_form, form_submissions, submit_form,
]

# -- OpenAPI ------------------------------------------------------------------------------------


class Notification(msgspec.Struct, kw_only=True):
    id: int
    user_id: int
    kind: str
    title: str
    body: str | None
    link: str | None
    entity: str | None
    record_id: int | None
    created_at: dt.datetime
    read_at: dt.datetime | None
    read: bool


class NotificationPage(msgspec.Struct, kw_only=True):
    items: list[Notification]
    #: Pass as ``cursor`` for the next page; null on the last.
    next_cursor: str | None
    #: How many of your notifications are unread.
    unread: int


class FormSubmission(msgspec.Struct, kw_only=True):
    id: int
    form: str
    at: dt.datetime
    ip: str | None
    outcome: str
    entity: str | None
    record_id: int | None
    errors: list[FieldError]


class FormAccepted(msgspec.Struct, kw_only=True):
    ok: bool
    message: str


SCHEMA_TYPES: list = [TimelinePage, TimelineItem, Notification, NotificationPage, WebForm, FormSubmission, FormAccepted]
#: Operations anyone may call (the web forms' endpoint).
PUBLIC_OPERATIONS = {("/forms/{name}", "post")}


def openapi_paths(problem: Callable[[str], dict[str, Any]], entities: list[str]) -> dict[str, Any]:
    """The OpenAPI paths of these routes (``problem(description)`` makes a problem response)."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    ok = lambda schema, what="OK": {"description": what, "content": {"application/json": {"schema": schema}}}  # noqa: E731
    bad = {"422": problem("Invalid input: errors name each field")}
    needs = {"403": problem("Needs the manage_schema permission")}
    limit = lambda default, maximum: {"name": "limit", "in": "query", "schema": {  # noqa: E731
        "type": "integer", "minimum": 1, "maximum": maximum, "default": default}}
    cursor = {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "the previous page's next_cursor"}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}}
    form_body = {"required": True, "content": {"application/json": {"schema": ref("WebForm")}}}
    paths: dict[str, Any] = {}
    for entity in entities:
        paths[f"/api/{entity}/{{record_id}}/timeline"] = {
            "parameters": [{"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"operationId": f"timeline_{entity}", "tags": [entity],
                    "summary": "The record's timeline, newest first: its activities, field changes and plugins' items",
                    "parameters": [limit(50, 200), cursor],
                    "responses": {"200": ok(ref("TimelinePage")), "404": problem("No such record (or not yours to read)"), **bad}}}
    paths.update({
        "/api/notifications": {"get": {
            "operationId": "notifications", "tags": ["notifications"], "summary": "Your notifications, newest first",
            "parameters": [{"name": "unread", "in": "query", "schema": {"type": "boolean"}, "description": "only unread ones"},
                           limit(50, 200), cursor],
            "responses": {"200": ok(ref("NotificationPage")), **bad}}},
        "/api/notifications/read-all": {"post": {
            "operationId": "notifications_read_all", "tags": ["notifications"], "summary": "Mark all your notifications read",
            "responses": {"200": ok({"type": "object", "properties": {"marked": {"type": "integer"}}})}}},
        "/api/notifications/{notification_id}/read": {
            "parameters": [{"name": "notification_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "post": {"operationId": "notification_read", "tags": ["notifications"], "summary": "Mark one of your notifications read",
                     "responses": {"200": ok(ref("Notification")), "404": problem("No such notification of yours")}}},
        "/api/forms": {
            "get": {"operationId": "forms", "tags": ["web forms"], "summary": "Web forms",
                    "responses": {"200": ok({"type": "array", "items": ref("WebForm")}), **needs}},
            "post": {"operationId": "create_form", "tags": ["web forms"], "summary": "Add a web form",
                     "requestBody": form_body, "responses": {"201": ok(ref("WebForm"), "Created"), **needs, **bad}}},
        "/api/forms/{name}": {
            "parameters": [name],
            "get": {"operationId": "form", "tags": ["web forms"], "summary": "A web form",
                    "responses": {"200": ok(ref("WebForm")), **needs, "404": problem("No such form")}},
            "put": {"operationId": "save_form", "tags": ["web forms"], "summary": "Create or replace a web form",
                    "requestBody": form_body, "responses": {"200": ok(ref("WebForm")), **needs, **bad}},
            "delete": {"operationId": "delete_form", "tags": ["web forms"], "summary": "Remove a web form (its log stays)",
                       "responses": {"204": {"description": "Removed"}, **needs, "404": problem("No such form")}}},
        "/api/forms/{name}/submissions": {
            "parameters": [name],
            "get": {"operationId": "form_submissions", "tags": ["web forms"],
                    "summary": "The form's submissions, newest first: created, duplicate, spam, invalid, rate_limited",
                    "parameters": [limit(100, 1000), {"name": "cursor", "in": "query", "schema": {"type": "integer"},
                                                      "description": "submissions older than this id"}],
                    "responses": {"200": ok({"type": "array", "items": ref("FormSubmission")}), **needs,
                                  "404": problem("No such form"), **bad}}},
        "/forms/{name}": {
            "parameters": [name],
            "post": {"operationId": "submit_form", "tags": ["web forms"],
                     "summary": "Submit a web form (public): creates a record, or notes a duplicate on the existing one",
                     "requestBody": {"required": True, "content": {
                         "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {"type": "string"}}},
                         "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {"type": "string"}}},
                         "application/json": {"schema": {"type": "object", "additionalProperties": {
                             "type": ["string", "number", "boolean", "null"]}}}}},
                     "responses": {
                         "200": ok(ref("FormAccepted"), "Accepted (the same answer for a new, a duplicate or a spam submission)"),
                         "303": {"description": "A browser's form post, to the form's redirect_url"},
                         "404": problem("No such form"), "503": problem("The form is misconfigured (logged)"), "415": problem("Not a form post nor JSON"), **bad,
                         "429": {**problem("Too many submissions from this address; see Retry-After"),
                                 "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}}}}},
    })
    return paths
