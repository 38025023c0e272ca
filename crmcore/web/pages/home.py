"""The dashboard, notifications, global search, and the user's language.

- ``/`` (for a browser): my tasks due today and overdue, unread notifications, the pipelines'
  summaries, and the plugins' ``dashboard.widget`` items.
- ``/notifications``: the user's notifications, newest first; mark all read.
- ``/search?q=``: every entity type the user may read, searched at once (the records service's
  full-text search, under the user's permissions).
- ``POST /me/locale``: the user's UI language (their user record's ``locale``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect

from ...api._http import _deployment
from ...api.auth import safe_next
from ...records.errors import Forbidden, ValidationError
from ...records.query import ListQuery
from ..render import LOCALES, page

__all__ = ["ROUTES", "dashboard"]

SEARCH_PER_TYPE = 8


async def dashboard(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    records = dep.records.as_actor(actor)
    now = dep.clock.now()
    tasks: list[dict[str, Any]] = []
    if actor.user_id and actor.can("activity", "read"):
        base = [{"field": "assignee", "op": "eq", "value": actor.user_id}, {"field": "done", "op": "eq", "value": False}]
        end_of_day = now + dt.timedelta(days=1)
        page_ = await records.list("activity", ListQuery(
            filter={"and": [*base, {"field": "due_at", "op": "lt", "value": end_of_day.isoformat()}]},
            sort=["due_at"], limit=50))
        tasks = page_.items
    notes = (await dep.notifications.list(actor, unread=True, limit=8))["items"] if actor.user_id else []
    summaries = []
    for pipeline in dep.pipelines.values():
        try:
            summaries.append(await dep.pipeline_service.summary(pipeline.name, actor=actor))
        except Forbidden:
            continue
    widgets = sorted((i for i in dep.ui_items if i.slot == "dashboard.widget"), key=lambda i: (i.order, i.label))
    return await page(request, "dashboard.html", tasks=tasks, notes=notes, summaries=summaries, widgets=widgets,
                      now=now, records=records, plugin_items=widgets)


@get("/notifications", include_in_schema=False)
async def notifications_page(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    before = request.query_params.get("before")
    listed = await dep.notifications.list(actor, limit=50, before_id=int(before) if before and before.isdigit() else None)
    return await page(request, "notifications.html", notifications=listed["items"], next_cursor=listed["next_cursor"])


@post("/notifications/read-all", include_in_schema=False, status_code=303)
async def notifications_read_all(request: Request) -> Redirect:
    await _deployment(request).notifications.mark_all_read(request.scope["user"])
    return Redirect("/notifications", status_code=303)


@get("/search", include_in_schema=False)
async def search_page(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    q = (request.query_params.get("q") or "").strip()[:200]
    results = []
    if q:
        records = dep.records.as_actor(actor)
        for entity in dep.registry:
            if actor.scope(entity.name, "read").value == "none":
                continue
            try:
                found = await records.list(entity.name, ListQuery(search=q, limit=SEARCH_PER_TYPE))
            except (Forbidden, ValidationError):
                continue
            if found.items:
                results.append({"entity": entity, "items": found.items, "more": found.next_cursor is not None})
    return await page(request, "search.html", results=results)


@post("/me/locale", include_in_schema=False, status_code=303)
async def set_locale(request: Request) -> Redirect:
    form = await request.form()
    locale = form.get("locale")
    actor = request.scope["user"]
    if locale in LOCALES and actor.user_id:
        # A personal preference: every user sets their own, whatever their role may edit (the
        # system writes it, only this field of only their record).
        await _deployment(request).records.update("user", actor.user_id, {"locale": locale})
    return Redirect(safe_next(form.get("next")), status_code=303)


ROUTES = [notifications_page, notifications_read_all, search_page, set_locale]
