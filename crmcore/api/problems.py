"""Errors as ``application/problem+json`` (RFC 9457), naming the field and what is accepted.

No input, however malformed, produces a stack trace: unexpected errors are logged and answered
with a plain 500 problem.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from ..auth.errors import RateLimited, Unauthenticated
from ..entities import RegistryError
from ..plugins import PluginError
from ..records.errors import Conflict, FieldError, Forbidden, NotFound, ValidationError

__all__ = ["problem", "exception_handlers", "ProblemError"]

log = logging.getLogger("crmcore.api")
MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, errors: list[FieldError] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors, self.extra = status, title, detail, errors, extra


def problem(status: int, title: str, detail: str, errors: list[FieldError] | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    body.update(extra)
    return Response(content=msgspec.json.encode(body), status_code=status, media_type=MEDIA_TYPE)


def _validation(request: Request, exc: ValidationError) -> Response:
    return problem(422, "Invalid input", str(exc), exc.errors)


def _not_found(request: Request, exc: NotFound) -> Response:
    return problem(404, "Not found", str(exc))


def _conflict(request: Request, exc: Conflict) -> Response:
    return problem(409, "Edit conflict", str(exc), current=exc.current, changed_fields=exc.changed)


def _forbidden(request: Request, exc: Forbidden) -> Response:
    return problem(403, "Forbidden", str(exc), exc.errors or None)


def _unauthenticated(request: Request, exc: Unauthenticated) -> Response:
    response = problem(401, "Unauthorized", str(exc))
    response.headers["www-authenticate"] = 'Bearer realm="crmcore"'
    return response


def _rate_limited(request: Request, exc: RateLimited) -> Response:
    response = problem(429, "Too many requests", str(exc), retry_after=exc.retry_after)
    response.headers["retry-after"] = str(exc.retry_after)
    return response


def _registry(request: Request, exc: RegistryError | PluginError) -> Response:
    return problem(422, "Refused", str(exc))


def _problem(request: Request, exc: ProblemError) -> Response:
    return problem(exc.status, exc.title, exc.detail, exc.errors, **exc.extra)


def _http(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        errors = [
            FieldError(str(e.get("key") or e.get("source") or "request"), "invalid", str(e.get("message", "")))
            for e in (exc.extra or []) if isinstance(e, dict)
        ] if isinstance(exc.extra, list) else None
        return problem(400, "Bad request", exc.detail, errors)
    return problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), str(exc.detail))


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error", "the server failed to handle this request; it has been logged")


_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           409: "Conflict", 413: "Payload too large", 415: "Unsupported media type", 429: "Too many requests"}

exception_handlers = {
    ValidationError: _validation,
    NotFound: _not_found,
    Conflict: _conflict,
    Forbidden: _forbidden,
    Unauthenticated: _unauthenticated,
    RateLimited: _rate_limited,
    RegistryError: _registry,
    PluginError: _registry,
    ProblemError: _problem,
    HTTPException: _http,
    Exception: _unexpected,
}
