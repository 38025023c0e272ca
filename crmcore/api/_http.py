"""Small helpers every API module shares: JSON responses, request bodies, parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection

from ..records.errors import FieldError, ValidationError
from ..records.query import ListQuery, parse_filter_params
from .problems import ProblemError

if TYPE_CHECKING:
    from ..deployment import Deployment

JSON = "application/json"
MAX_BODY = 10 * 1024 * 1024
_encode = msgspec.json.encode


def _json(data: Any, status: int = 200) -> Response:
    return Response(content=_encode(data), status_code=status, media_type=JSON)


def _deployment(request: Request | ASGIConnection) -> Deployment:
    return request.app.state.deployment


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "Payload too large", f"the body may be at most {MAX_BODY} bytes")
    if not raw:
        raise ValidationError([FieldError("body", "required", "a JSON body is required")])
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValidationError([FieldError("body", "invalid_json", f"the body is not valid JSON: {exc}")]) from None
    except RecursionError:
        raise ValidationError([FieldError("body", "invalid_json", "the body is nested too deeply")]) from None


def _int_param(name: str, value: str | None, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValidationError([FieldError(name, "invalid", f"{name} must be a whole number")]) from None


def _convert(data: Any, type_: type) -> Any:
    """``data`` (decoded JSON) as ``type_``; a ValidationError naming the field otherwise."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = message.rsplit("at `$", 1)
        field = "body"
        if len(where) == 2:
            path = where[1].rstrip("`").lstrip(".")
            field = path.split("[")[0].split(".")[0] or "body"
        elif "unknown field" in message or "missing required field" in message:
            field = message.split("`")[1] if "`" in message else "body"
        raise ValidationError([FieldError(field, "invalid", message)]) from None


#: Query parameters of a list that are not field filters (``format``: an export's).
_RESERVED_PARAMS = {"filter", "sort", "limit", "cursor", "q", "count", "fields", "format"}


def _bool_param(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on", "")


def _list_query(request: Request, *, deleted: bool = False) -> ListQuery:
    params = request.query_params
    filters: list[dict] = []
    raw_filter = params.get("filter")
    if raw_filter:
        try:
            parsed = msgspec.json.decode(raw_filter)
        except (msgspec.DecodeError, RecursionError):
            raise ValidationError([FieldError(
                "filter", "invalid_json", 'filter must be JSON, e.g. {"field": "city", "op": "eq", "value": "Izmir"}'
            )]) from None
        filters.append(parsed)
    simple = {k: v for k, v in params.items() if k not in _RESERVED_PARAMS}
    if simple:
        filters.append(parse_filter_params(simple))
    filter_node = filters[0] if len(filters) == 1 else ({"and": filters} if filters else None)
    fields = params.get("fields")
    return ListQuery(
        filter=filter_node,
        sort=[s for s in (params.get("sort") or "").split(",") if s],
        limit=_int_param("limit", params.get("limit"), 50),
        cursor=params.get("cursor") or None,
        search=params.get("q") or None,
        count="count" in params and _bool_param(params.get("count")),
        fields=[f for f in fields.split(",") if f] if fields else None,
        deleted=deleted,
    )
