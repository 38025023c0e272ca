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

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.response import Redirect

from ..records.errors import FieldError, ValidationError
from ..webforms import WebForm
from ._http import MAX_BODY, _body, _convert, _deployment, _int_param, _json
from .auth import PUBLIC, _actor, _client_ip, _require
from .problems import ProblemError

__all__ = ["ROUTES", "SCHEMA_TYPES"]


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
    await dep.forms.submit(form.name, data, ip=_client_ip(request))
    if browser and form.redirect_url:
        return Redirect(form.redirect_url, status_code=303)
    return _json({"ok": True, "message": form.success_message})


ROUTES: list = [
    record_timeline, list_notifications, read_all_notifications, read_notification, list_forms, create_form,
    get_form, put_form, delete_form, form_submissions, submit_form,
]

SCHEMA_TYPES: list = [WebForm]
