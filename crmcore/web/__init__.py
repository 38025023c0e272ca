"""The web UI: server-rendered jinja2 pages on the same litestar app as the API.

Pages read and write through the records service as the signed-in user, exactly as the API
does, so permissions hold the same way: a field the user's role may not read is never rendered,
an action it may not take is not offered. Scripts (our own, in ``static/``) enhance pages by
calling the JSON API with the session's CSRF token; every page works as plain HTML first.

Parts: :mod:`.render` (templates, translations, formatting per user, the page frame),
:mod:`.assets` (static files, the plugins' by convention) and the pages in :mod:`.pages`.
"""

from __future__ import annotations

from typing import Any, Callable

from litestar import Request, Response

from ..auth.errors import Unauthenticated
from ..records.errors import Conflict, Forbidden, NotFound
from .assets import ROUTES as ASSET_ROUTES
from .pages.board import ROUTES as BOARD_ROUTES
from .pages.configuration import ROUTES as CONFIGURATION_ROUTES
from .pages.home import ROUTES as HOME_ROUTES, dashboard
from .pages.importing import ROUTES as IMPORT_PAGE_ROUTES
from .pages.lists import ROUTES as LIST_ROUTES
from .pages.records import ROUTES as RECORD_ROUTES
from .pages.reports import ROUTES as REPORT_PAGE_ROUTES
from .pages.settings import ROUTES as SETTINGS_ROUTES
from .render import error_page, gettext_for, user_format

__all__ = ["ROUTES", "dashboard", "html_errors"]

ROUTES: list[Any] = [*ASSET_ROUTES, *HOME_ROUTES, *SETTINGS_ROUTES, *CONFIGURATION_ROUTES, *BOARD_ROUTES, *REPORT_PAGE_ROUTES,
                     *IMPORT_PAGE_ROUTES, *RECORD_ROUTES, *LIST_ROUTES]


def _is_page(request: Request) -> bool:
    """A browser's page (not the API, not a script's fetch)."""
    path = request.url.path
    return (not path.startswith(("/api/", "/schema", "/static/", "/forms/"))
            and "text/html" in request.headers.get("accept", "") and request.scope.get("user") is not None)


def html_errors(handlers: dict[type, Callable[[Request, Exception], Response]]) -> dict[type, Callable]:
    """The API's exception handlers, answering a browser's page request with an error page."""
    pages = {
        NotFound: (404, "Not found", "This page or record does not exist, or you may not see it."),
        Forbidden: (403, "Not allowed", "Your role does not allow this."),
        Conflict: (409, "Changed meanwhile", "Someone else changed this record meanwhile. Reload to see their changes."),
    }

    def wrap(kind: type, handler: Callable) -> Callable:
        def handle(request: Request, exc: Exception) -> Response:
            if isinstance(exc, Unauthenticated) or not _is_page(request):
                return handler(request, exc)
            status, title, message = next(
                (v for k, v in pages.items() if isinstance(exc, k)),
                (getattr(exc, "status_code", 500), "Something went wrong", "The error was logged; please try again."))
            if status >= 500:
                response = handler(request, exc)  # logs it
                status = response.status_code
            _ = gettext_for(user_format(request.app.state.deployment, None).locale)
            detail = str(exc) if isinstance(exc, Forbidden) and str(exc) else _(message)
            return error_page(request, status, _(title), detail)
        return handle

    return {kind: wrap(kind, handler) for kind, handler in handlers.items()}
