"""Web UI pages: reports.

- ``/reports``: the reports the user may run (built-in, plugins', saved).
- ``/reports/{name}``: its figures as the user reads them (their scope, never a hidden field):
  a chart drawn on the server as SVG (bar, line, pie, funnel; no script needed) and the table,
  with CSV and XLSX downloads (``/reports/{name}/export?format=csv|xlsx``).
- ``POST /reports/{name}/remove``: remove a saved report (``manage_schema``).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect
from markupsafe import Markup

from ...api._http import _deployment
from ...api.reports import export
from ...reports import PERMISSION, cell_text, chart_svg
from ..render import page, user_format

__all__ = ["ROUTES"]


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
    result = await dep.reports.run(name, actor)
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
                      can_remove=actor.has(PERMISSION) and definition.get("source") == "saved")


@get("/reports/{name:str}/export", include_in_schema=False)
async def report_export(request: Request) -> Response:
    dep = _deployment(request)
    result = await dep.reports.run(request.path_params["name"], request.scope["user"])
    form = request.query_params.get("format") or "csv"
    return export(result, form if form in ("csv", "xlsx") else "csv")


@post("/reports/{name:str}/remove", include_in_schema=False, status_code=303)
async def report_remove(request: Request) -> Redirect:
    await _deployment(request).reports.remove(request.path_params["name"], request.scope["user"])
    return Redirect("/reports", status_code=303)


ROUTES: list[Any] = [reports_page, report_page, report_export, report_remove]
