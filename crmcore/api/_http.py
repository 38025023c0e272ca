"""Small helpers every API module shares: JSON responses, request bodies, parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection

from ..records.errors import FieldError, ValidationError
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
