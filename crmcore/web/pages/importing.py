"""Web UI pages: importing.

``/import``: upload a CSV, XLSX or vCard file for an entity type, check and change the column
mapping the server guessed, pick how duplicates are handled, see a dry run's summary, start the
import and watch its progress. The page's script drives the JSON API (``/api/imports``): the
upload, the runs (jobs) and the polling of their progress; the error report is a download.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from ...api._http import _deployment
from ..render import page

__all__ = ["ROUTES"]


@get("/import", include_in_schema=False)
async def import_page(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    entities = [e for e in dep.registry.entities.values()
                if e.name != "user" and actor.can(e.name, "create")]
    wanted = request.query_params.get("entity") or "contact"
    recent = await dep.imports.list_imports(actor=actor, limit=10)
    mappings = await dep.imports.mappings()
    return await page(request, "importing/import.html", entities=entities, wanted=wanted, recent=recent,
                      mappings=mappings)


ROUTES: list[Any] = [import_page]
