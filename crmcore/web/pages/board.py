"""The kanban board of a pipeline: ``/board/{pipeline}``.

One column per stage of the pipeline with its count and the sum of its amounts per currency
(:meth:`crmcore.pipelines.PipelineService.summary`, so they cover every record the user may read,
not only the cards loaded), and the cards of the records in that stage, newest change first,
:data:`PAGE_SIZE` at a time: a column's "Load more" fetches its next page from the JSON API
(``/api/{entity}?filter=...&cursor=...``) with the column's filter, which the page hands the
script, so a stage of thousands of records stays fast.

**Filters** (query parameters, applied to every column): ``owner=mine`` (the user's own
records), ``q`` (full-text search) and ``filter`` (the JSON filter language, as the API takes
it). With a filter the counts are those of the matching records, and the sums are added up from
them (up to :data:`SUM_LIMIT` records per column; beyond that the sum is not shown).

**Moving a card** is an update of its ``stage`` through the records service as the user
(permissions, audit, stage history and automation all apply): the script sends
``PATCH /api/{entity}/{id}`` with the stage and the version the page read (a stale card gets
409), and asks for a ``lost_reason`` first when the stage is a lost one. Without the script, a
card's "Move to" form posts to ``POST /board/{pipeline}/move``. After a move the script reads the
columns' new totals from ``GET /board/{pipeline}/totals`` (same filters), formatted for the user.
Cards are movable only when the user's role may edit the record and its stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Redirect

from ...api._http import _deployment, _json
from ...entities import EntityType, FieldType
from ...fieldvalues import Money
from ...records.errors import Conflict, Forbidden, NotFound, ValidationError
from ...records.query import ListQuery
from ..fields import can
from ..render import gettext_for, page, record_title, user_format

if TYPE_CHECKING:
    from ...auth.permissions import Actor
    from ...contributions import Pipeline
    from ...deployment import Deployment

__all__ = ["ROUTES", "PAGE_SIZE", "SUM_LIMIT"]

#: Cards per column page (the first one rendered, the next ones fetched by "Load more").
PAGE_SIZE = 25
#: With a filter, a column's sum adds up at most this many records (else it is not shown).
SUM_LIMIT = 5000
#: Cards in a column: the most recently changed first (a card just moved comes on top).
SORT = ["-updated_at"]


@dataclass
class Board:
    """What one request asks of a pipeline's board, as the user may read it."""

    pipeline: Pipeline
    entity: EntityType
    owner: str = ""  # "" (everyone's) | "mine"
    search: str = ""
    filter: dict | None = None
    filter_text: str = ""  # the filter parameter as given (kept in the page's links and forms)
    bad_filter: bool = False  # the filter parameter was not a JSON object (left out)
    error: str = ""  # the server's message about the filter or a move

    @property
    def filtered(self) -> bool:
        return bool(self.owner or self.search or self.filter)

    def params(self, **extra: str) -> str:
        """The filters as a query string (for links back to this board)."""
        values = {"owner": self.owner, "q": self.search, "filter": self.filter_text, **extra}
        return urlencode({k: v for k, v in values.items() if v})


def _board(request: Request, name: str, params: Any = None) -> Board:
    dep = _deployment(request)
    actor: Actor = request.scope["user"]
    pipeline = dep.pipeline_service.get(name)
    entity = dep.registry.get(pipeline.entity)
    if entity is None or entity.field("stage") is None:
        raise NotFound("pipeline", name)
    if not can(actor, entity.name, "read"):
        raise Forbidden(f"your role may not read {entity.label_plural.lower()}")
    params = request.query_params if params is None else params
    board = Board(pipeline=pipeline, entity=entity)
    if (params.get("owner") or "") == "mine" and actor.user_id:
        board.owner = "mine"
    board.search = (params.get("q") or "").strip()[:200]
    raw = (params.get("filter") or "").strip()
    if raw:
        try:
            parsed = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and parsed:
            board.filter, board.filter_text = parsed, raw
        else:
            board.bad_filter = True
    return board


def _base_conditions(dep: Deployment, actor: Actor, board: Board) -> list[dict[str, Any]]:
    """The conditions every column shares: the pipeline, the owner, the user's filter."""
    conditions: list[dict[str, Any]] = []
    entity, pipeline = board.entity, board.pipeline
    if entity.field("pipeline") is not None and "pipeline" not in actor.hidden_fields(entity.name):
        mine = {"field": "pipeline", "op": "eq", "value": pipeline.name}
        if dep.pipeline_service.default_for(entity.name) is pipeline:
            conditions.append({"or": [mine, {"field": "pipeline", "op": "is_null", "value": True}]})
        else:
            conditions.append(mine)
    if board.owner == "mine":
        conditions.append({"field": "owner_id", "op": "eq", "value": actor.user_id})
    if board.filter:
        conditions.append(board.filter)
    return conditions


def _column_filter(stage: str, base: list[dict[str, Any]]) -> dict[str, Any]:
    return {"and": [{"field": "stage", "op": "eq", "value": stage}, *base]}


def _card_fields(entity: EntityType, actor: Actor) -> list[str]:
    """The fields a card shows (those the user may read), loaded instead of whole records."""
    hidden = actor.hidden_fields(entity.name)
    wanted = [entity.title_field, "first_name", "last_name", "stage", "amount", "expected_close"]
    names: list[str] = []
    for name in wanted:
        if name and name not in names and name not in hidden and entity.field(name) is not None:
            names.append(name)
    return names


def _money_field(entity: EntityType, actor: Actor) -> bool:
    field = entity.field("amount")
    return field is not None and field.type is FieldType.MONEY and "amount" not in actor.hidden_fields(entity.name)


async def _totals(dep: Deployment, actor: Actor, board: Board, base: list[dict[str, Any]],
                  counted: dict[str, int] | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Stage -> ``{count, amounts: [Money] | None}`` of the records the board shows, and how many
    records are in stages that are not the pipeline's (counted only without filters).

    Unfiltered: the pipeline's summary (every record the user may read). Filtered: the
    matching records' count (``counted`` when the columns' queries already counted them) and the
    sum of their amounts, when there are at most :data:`SUM_LIMIT` of them."""
    money = _money_field(board.entity, actor)
    if not board.filtered:
        summary = await dep.pipeline_service.summary(board.pipeline.name, actor=actor)
        return {s["name"]: {"count": s["count"], "amounts": [
            Money(Decimal(a["amount"]), a["currency"]) for a in s["amount"] or []] if money else None}
            for s in summary["stages"]}, summary["other_stages"]
    records = dep.records.as_actor(actor)
    totals: dict[str, dict[str, Any]] = {}
    for stage in board.pipeline.stages:
        where = _column_filter(stage.name, base)
        count = (counted or {}).get(stage.name)
        if count is None:
            count = (await records.list(board.entity.name, ListQuery(
                filter=where, search=board.search or None, limit=1, count=True, fields=["stage"]))).total or 0
        amounts: list[Money] | None = None
        if money and count <= SUM_LIMIT:
            sums: dict[str, Decimal] = {}
            cursor = None
            while True:
                found = await records.list(board.entity.name, ListQuery(
                    filter=where, search=board.search or None, limit=500, cursor=cursor, fields=["amount"]))
                for item in found.items:
                    value = item.get("amount")
                    if isinstance(value, Money):
                        sums[value.currency] = sums.get(value.currency, Decimal(0)) + value.amount
                cursor = found.next_cursor
                if not cursor:
                    break
            amounts = [Money(v, c) for c, v in sorted(sums.items())]
        totals[stage.name] = {"count": count, "amounts": amounts}
    return totals, 0


async def _owner_names(dep: Deployment, actor: Actor, owner_ids: set[int]) -> dict[int, str]:
    """User id -> name, for the owners the user may read."""
    if not owner_ids or not can(actor, "user", "read"):
        return {}
    user_entity = dep.registry.get("user")
    names: dict[int, str] = {}
    ids = sorted(owner_ids)
    records = dep.records.as_actor(actor)
    for start in range(0, len(ids), 500):
        try:
            found = await records.list("user", ListQuery(
                filter={"field": "id", "op": "in", "value": ids[start:start + 500]}, limit=500))
        except (Forbidden, ValidationError):
            return names
        for item in found.items:
            names[item["id"]] = record_title(user_entity, item) if user_entity else str(item.get("name") or item["id"])
    return names


def _may_move(dep: Deployment, actor: Actor, entity: EntityType) -> bool:
    """Whether the user's role lets them change the stage of some records (each card then asks
    whether that record is within their edit scope)."""
    if not can(actor, entity.name, "edit"):
        return False
    return actor.field_access(entity.name, "stage") == "edit"


async def _columns(dep: Deployment, actor: Actor, board: Board) -> tuple[list[dict[str, Any]], dict[int, str], int]:
    """The columns with their first page of cards, the owners' names and how many records are
    in stages that are not the pipeline's."""
    base = _base_conditions(dep, actor, board)
    records = dep.records.as_actor(actor)
    fields = _card_fields(board.entity, actor)
    pages = {}
    for stage in board.pipeline.stages:
        pages[stage.name] = await records.list(board.entity.name, ListQuery(
            filter=_column_filter(stage.name, base), search=board.search or None, sort=SORT, limit=PAGE_SIZE,
            fields=fields, count=board.filtered))
    counted = {name: p.total for name, p in pages.items() if p.total is not None}
    totals, other = await _totals(dep, actor, board, base, counted)
    edit_scope = actor.scope(board.entity.name, "edit")
    movable = _may_move(dep, actor, board.entity)
    owners = await _owner_names(dep, actor, {i["owner_id"] for p in pages.values() for i in p.items if i.get("owner_id")})
    columns = []
    for stage in board.pipeline.stages:
        found = pages[stage.name]
        cards = [{"record": item, "title": record_title(board.entity, item),
                  "movable": movable and actor.reaches(edit_scope, item)} for item in found.items]
        columns.append({
            "stage": stage, "cards": cards, "next_cursor": found.next_cursor,
            "count": totals.get(stage.name, {}).get("count", 0), "amounts": totals.get(stage.name, {}).get("amounts"),
            "filter": msgspec.json.encode(_column_filter(stage.name, base)).decode(),
        })
    return columns, owners, other


async def _render(request: Request, board: Board, status: int = 200) -> Response:
    dep = _deployment(request)
    actor: Actor = request.scope["user"]
    try:
        columns, owners, other = await _columns(dep, actor, board)
    except ValidationError as exc:  # the user's filter or search: shown, and the board without it
        board.error = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or str(exc)
        board.filter, board.filter_text, board.search = None, "", ""
        columns, owners, other = await _columns(dep, actor, board)
        status = 422 if status == 200 else status
    entity = board.entity
    edit_scope = actor.scope(entity.name, "edit")
    data = {
        "entity": entity.name, "pipeline": board.pipeline.name, "page_size": PAGE_SIZE, "sort": ",".join(SORT),
        "fields": ",".join(_card_fields(entity, actor)), "search": board.search,
        "totals_url": f"/board/{board.pipeline.name}/totals" + (f"?{board.params()}" if board.params() else ""),
        "movable": _may_move(dep, actor, entity), "edit_scope": edit_scope.value, "user_id": actor.user_id,
        "team_ids": list(actor.team_ids), "users": {str(k): v for k, v in owners.items()},
        "stages": [{"name": s.name, "label": s.label, "kind": s.kind} for s in board.pipeline.stages],
        "lost_reason": entity.field("lost_reason") is not None,
        "title_field": entity.title_field or "", "label": entity.label,
    }
    return await page(request, "board.html", status=status, board=board, pipeline=board.pipeline, entity=entity,
                      columns=columns, owners=owners, board_data=data, other_stages=other,
                      movable=data["movable"], shows_amount=_money_field(entity, actor),
                      shows_close="expected_close" in _card_fields(entity, actor))


@get("/board/{pipeline:str}", include_in_schema=False)
async def board_page(request: Request) -> Response:
    return await _render(request, _board(request, request.path_params["pipeline"]))


@get("/board/{pipeline:str}/totals", include_in_schema=False)
async def board_totals(request: Request) -> Response:
    """The columns' counts and sums with the board's filters, formatted for the user (JSON)."""
    dep = _deployment(request)
    actor: Actor = request.scope["user"]
    board = _board(request, request.path_params["pipeline"])
    totals, _ = await _totals(dep, actor, board, _base_conditions(dep, actor, board))
    user = await dep.records.get("user", actor.user_id) if actor.user_id else {}
    fmt = user_format(dep, user)
    return _json({"stages": [{
        "name": stage.name, "count": totals[stage.name]["count"], "count_text": fmt.number(totals[stage.name]["count"]),
        "amounts": None if totals[stage.name]["amounts"] is None else [fmt.money(m) for m in totals[stage.name]["amounts"]],
    } for stage in board.pipeline.stages]})


@post("/board/{pipeline:str}/move", include_in_schema=False, status_code=303)
async def board_move(request: Request) -> Response:
    """A card's "Move to" form without the script: the same update, then back to the board."""
    dep = _deployment(request)
    actor: Actor = request.scope["user"]
    form = await request.form()
    board = _board(request, request.path_params["pipeline"], params=form)
    _ = gettext_for(user_format(dep, await dep.records.get("user", actor.user_id) if actor.user_id else {}).locale)
    raw_id, raw_version = str(form.get("id") or ""), str(form.get("version") or "")
    if not raw_id.isdigit() or not raw_version.isdigit():
        board.error = _("Choose a card and a stage to move it to.")
        return await _render(request, board, 422)
    values: dict[str, Any] = {"stage": str(form.get("stage") or "")}
    reason = str(form.get("lost_reason") or "").strip()
    if reason:
        values["lost_reason"] = reason
    try:
        await dep.records.as_actor(actor).update(board.entity.name, int(raw_id), values, version=int(raw_version))
    except ValidationError as exc:
        board.error = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or str(exc)
        return await _render(request, board, 422)
    except Conflict as exc:
        board.error = _("Someone else changed this record meanwhile; the board shows it as it is now.") + f" ({exc})"
        return await _render(request, board, 409)
    except Forbidden as exc:
        board.error = str(exc) or _("Your role does not allow this.")
        return await _render(request, board, 403)
    query = board.params()
    return Redirect(f"/board/{board.pipeline.name}" + (f"?{query}" if query else ""), status_code=303)


ROUTES: list[Any] = [board_page, board_totals, board_move]
