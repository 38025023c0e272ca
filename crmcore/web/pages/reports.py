"""Web UI pages: reports.

- ``/reports``: the reports the user may run (built-in, plugins', saved).
- ``/reports/{name}``: its figures as the user reads them (their scope, never a hidden field):
  a chart drawn on the server as SVG (bar, line, pie, funnel; no script needed) and the table,
  with CSV and XLSX downloads (``/reports/{name}/export?format=csv|xlsx``).
- ``POST /reports/{name}/remove``: remove a saved report (``manage_schema``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Request, Response, get, post
from litestar.response import Redirect
from markupsafe import Markup

from ...api._http import _deployment
from ...api.reports import export
from ...reports import PERMISSION, cell_text, chart_svg
from ...entities import FieldType
from ...records.errors import ValidationError
from ..render import error_page, gettext_for, page, user_format

__all__ = ["ROUTES"]


def _period(request: Request, dep: Any, definition: dict[str, Any], actor: Any) -> dict[str, Any]:
    """The page's period: ``?field=expected_close&from=2026-01-01&to=2026-03-31`` on one of the
    report entity's date fields the user may see (dates in the deployment's time zone), as an
    extra filter; the fields offered, and what was chosen."""
    entity = dep.registry.get(definition["entity"])
    hidden = actor.hidden_fields(entity.name) if entity is not None else frozenset()
    fields = [("created_at", "Created"), ("updated_at", "Updated")] + [
        (f.name, f.label or f.name.replace("_", " ").capitalize()) for f in (entity.visible_fields if entity else [])
        if f.type in (FieldType.DATE, FieldType.DATETIME) and f.name not in hidden]
    params = request.query_params
    chosen = params.get("field") or ""
    found: dict[str, Any] = {"fields": fields, "field": chosen, "from": "", "to": "", "filter": None}
    if chosen not in dict(fields):
        return found
    zone = ZoneInfo(dep.settings.timezone or "UTC")
    conditions = []
    is_date = entity.field(chosen) is not None and entity.field(chosen).type is FieldType.DATE
    for key, op in (("from", "gte"), ("to", "lt")):
        try:
            day = dt.date.fromisoformat(params.get(key) or "")
        except ValueError:
            continue
        found[key] = day.isoformat()
        if op == "lt":
            day += dt.timedelta(days=1)
        value = day.isoformat() if is_date else dt.datetime.combine(day, dt.time(), zone).isoformat()
        conditions.append({"field": chosen, "op": op, "value": value})
    if conditions:
        found["filter"] = conditions[0] if len(conditions) == 1 else {"and": conditions}
    return found


@get("/reports", include_in_schema=False)
async def reports_page(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    reports = await dep.reports.list(actor)
    return await page(request, "reports/list.html", reports=reports, can_manage=actor.has(PERMISSION))


@get("/reports/{name:str}", include_in_schema=False)
async def report_page(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    name = request.path_params["name"]
    definition = await dep.reports.get(name, actor)
    period = _period(request, dep, definition, actor)
    try:
        result = await dep.reports.run(name, actor, filter=period["filter"])
    except ValidationError as exc:  # e.g. a field it names was removed since it was saved
        _ = gettext_for(user_format(dep, None).locale)
        return error_page(request, 422, _("This report cannot run"), "; ".join(f"{e.field}: {e.message}" for e in exc.errors))
    user = await dep.records.get("user", actor.user_id) if actor.user_id else None
    fmt = user_format(dep, user)
    rows = []
    for row in result["rows"]:
        cells = []
        for column in result["columns"]:
            value = row.get(column["key"])
            if column["kind"] == "measure":
                cells.append({"text": fmt.number(value) if value is not None else "", "numeric": True})
            else:
                cells.append({"text": cell_text(result, column, value), "numeric": False})
        rows.append(cells)
    chart = Markup(chart_svg(result))  # noqa: S704 - built from escaped parts by chart_svg
    return await page(request, "reports/report.html", report=definition, result=result, rows=rows, chart=chart,
                      period=period,
                      can_remove=actor.has(PERMISSION) and definition.get("source") == "saved")


@get("/reports/{name:str}/export", include_in_schema=False)
async def report_export(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    definition = await dep.reports.get(request.path_params["name"], actor)
    period = _period(request, dep, definition, actor)
    result = await dep.reports.run(request.path_params["name"], actor, filter=period["filter"])
    form = request.query_params.get("format") or "csv"
    return export(result, form if form in ("csv", "xlsx") else "csv")


@post("/reports/{name:str}/remove", include_in_schema=False, status_code=303)
async def report_remove(request: Request) -> Redirect:
    await _deployment(request).reports.remove(request.path_params["name"], request.scope["user"])
    return Redirect("/reports", status_code=303)


ROUTES: list[Any] = [reports_page, report_page, report_export, report_remove]
