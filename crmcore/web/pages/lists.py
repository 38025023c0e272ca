"""The list of every entity type (``/{entity}``): columns, filters, segments, sort, search,
cursor paging, bulk actions and export, all as the signed-in user.

The list's whole state is in its URL, so a filtered list is a link:

- ``filter``: the API's filter language as JSON (the filter builder writes ``{"and": [...]}``);
- ``q``: full-text search; ``sort``: ``-amount,name`` as the API; ``limit``: rows per page;
- ``cursor``: the page (keyset paging, never OFFSET), ``back``: the cursors of the pages before
  it (``0`` the first one), which is how "previous" works without counting;
- ``count=1``: count the matching records (only on demand: a count may scan);
- ``columns``: the columns, ``a,b,c`` (else the user's saved choice, else the fields marked
  ``in_list``); ``view``: a saved view (segment) whose filter, search, sort and columns apply
  where the URL gives none.

The filter builder is a GET form of numbered conditions (``c0.field``, ``c0.op``, ``c0.value``,
``c0.value2``); the page turns it into the filter language and redirects to the list's URL, so
it works without scripts, and values are read in the user's time zone. ``static/list.js`` makes
it comfortable (operators and inputs per field type, adding and removing conditions), moves
columns in the column editor, and runs the bulk actions through the JSON API (``PATCH
/api/{entity}/bulk``, ``DELETE /api/{entity}/{id}``), showing the server's errors per row.

Form posts: ``/{entity}/columns`` (the user's columns), ``/{entity}/views`` (save a view),
``/{entity}/views/{id}/delete``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Redirect

from ...api._http import _deployment
from ...api.auth import safe_next
from ...entities import EntityType, Field, FieldType
from ...records.errors import Forbidden, ValidationError
from ...records.query import ListQuery
from ..fields import can, relation_titles
from ..render import gettext_for, page, user_format
from ..views import SYSTEM_COLUMNS, ListViews, ViewDefinition, default_columns, list_fields

__all__ = ["ROUTES", "ListState", "builder_filter", "filter_rows", "KINDS", "OPERATORS"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
LIMITS = (25, 50, 100, 200)
#: How many earlier pages "previous" remembers.
MAX_BACK = 30
MAX_CONDITIONS = 20
FIRST_PAGE = "0"
#: The most users offered in the owner selects (assign, filter by owner).
MAX_USERS = 500

#: The filter builder's kind of input per field type.
KINDS = {
    FieldType.TEXT: "text", FieldType.LONG_TEXT: "text", FieldType.EMAIL: "text", FieldType.URL: "text",
    FieldType.PHONE: "text", FieldType.INTEGER: "number", FieldType.DECIMAL: "number", FieldType.MONEY: "number",
    FieldType.DATE: "date", FieldType.DATETIME: "datetime", FieldType.BOOLEAN: "bool", FieldType.CHOICE: "choice",
    FieldType.MULTI_CHOICE: "multi", FieldType.TAGS: "tags", FieldType.RELATION: "relation",
}
#: The operators the builder offers per kind (``not_null`` is ``is_null`` false).
OPERATORS = {
    "text": ["contains", "eq", "ne", "startswith", "in", "is_null", "not_null"],
    "number": ["eq", "ne", "lt", "lte", "gt", "gte", "between", "is_null", "not_null"],
    "date": ["eq", "lt", "lte", "gt", "gte", "between", "is_null", "not_null"],
    "datetime": ["lt", "lte", "gt", "gte", "between", "is_null", "not_null"],
    "bool": ["eq", "ne", "is_null", "not_null"],
    "choice": ["eq", "ne", "in", "is_null", "not_null"],
    "multi": ["contains", "in", "is_null", "not_null"],
    "tags": ["contains", "in", "is_null", "not_null"],
    "user": ["eq", "ne", "in", "is_null", "not_null"],
    "relation": ["eq", "ne", "in", "is_null", "not_null"],
}
_UNSORTABLE = {FieldType.TAGS, FieldType.MULTI_CHOICE, FieldType.LONG_TEXT}


def kind_of(field: Field) -> str:
    if field.type is FieldType.RELATION and field.target == "user":
        return "user"
    return KINDS[field.type]


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# -- the list's state (its URL) --------------------------------------------------------------


class ListState:
    """What the list shows, read from (and written back into) its URL."""

    def __init__(self, entity: str):
        self.entity = entity
        self.filter: dict | None = None
        self.filter_error: str | None = None
        self.q = ""
        self.sort: list[str] = []
        self.limit = DEFAULT_LIMIT
        self.cursor: str | None = None
        self.back: list[str] = []
        self.count = False
        self.columns: list[str] | None = None  # from the URL
        self.view: int | None = None
        #: What the URL itself gives (a saved view fills in the rest).
        self.given: set[str] = set()

    @classmethod
    def parse(cls, entity: str, params: Any) -> ListState:
        state = cls(entity)
        raw = (params.get("filter") or "").strip()
        if "filter" in params:
            state.given.add("filter")
        if raw:
            try:
                parsed = msgspec.json.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                parsed = None
                state.filter_error = "filter must be JSON, e.g. {\"field\": \"city\", \"op\": \"eq\", \"value\": \"Izmir\"}"
            if parsed is not None and not isinstance(parsed, dict):
                state.filter_error = "a filter is an object: {field, op, value} or {and: [...]}"
            elif isinstance(parsed, dict):
                state.filter = parsed or None
        if "q" in params:
            state.given.add("q")
            state.q = (params.get("q") or "").strip()[:200]
        if "sort" in params:
            state.given.add("sort")
            state.sort = [s.strip() for s in (params.get("sort") or "").split(",") if s.strip()][:4]
        limit = params.get("limit") or ""
        if limit.isdigit():
            state.limit = max(1, min(MAX_LIMIT, int(limit)))
        state.cursor = params.get("cursor") or None
        back = params.get("back") or ""
        state.back = [b for b in back.split(".") if b][-MAX_BACK:]
        state.count = params.get("count") in ("1", "true", "yes")
        if "columns" in params:
            state.given.add("columns")
            state.columns = [c for c in (params.get("columns") or "").split(",") if c]
        view = params.get("view") or ""
        state.view = int(view) if view.isdigit() and len(view) < 18 else None
        return state

    def apply(self, definition: ViewDefinition) -> None:
        """A saved view's filter, search, sort and columns, where the URL gives none."""
        if "filter" not in self.given:
            self.filter = definition.filter or None
        if "q" not in self.given:
            self.q = definition.q or ""
        if "sort" not in self.given:
            self.sort = list(definition.sort)
        if "columns" not in self.given and definition.columns:
            self.columns = list(definition.columns)

    @property
    def filter_json(self) -> str:
        return _json(self.filter) if self.filter else ""

    def definition(self, columns: list[str]) -> ViewDefinition:
        return ViewDefinition(filter=self.filter, q=self.q or None, sort=self.sort, columns=columns)

    def params(self, *, page: bool = False, **changes: Any) -> dict[str, str]:
        """The URL parameters of this state with ``changes``; the page (cursor, back, count)
        only when ``page``."""
        values: dict[str, Any] = {
            "view": self.view, "filter": self.filter, "q": self.q, "sort": self.sort, "limit": self.limit,
            "columns": self.columns,
        }
        if page:
            values.update(cursor=self.cursor, back=self.back, count=self.count)
        values.update(changes)
        out: dict[str, str] = {}
        for key in ("view", "filter", "q", "sort", "columns", "limit", "cursor", "back", "count"):
            value = values.get(key)
            if key in ("filter", "q", "sort", "columns"):
                if value:
                    out[key] = _json(value) if key == "filter" else ",".join(value) if key in ("sort", "columns") else value
                elif self.view and (key in self.given or key in changes):
                    out[key] = ""  # an empty one still overrides the saved view's
            elif key == "back":
                if value:
                    out[key] = ".".join(value)
            elif key == "limit":
                if value and value != DEFAULT_LIMIT:
                    out[key] = str(value)
            elif key == "count":
                if value:
                    out[key] = "1"
            elif value not in (None, ""):
                out[key] = str(value)
        return out

    def url(self, *, page: bool = False, **changes: Any) -> str:
        params = self.params(page=page, **changes)
        return f"/{self.entity}" + ("?" + urlencode(params) if params else "")

    def sort_url(self, name: str) -> str:
        """The header's link: ascending, descending when it is already ascending."""
        current = self.sort[0] if self.sort else None
        return self.url(sort=[f"-{name}"] if current == name else [name])

    def sorted_by(self, name: str) -> str | None:
        """``ascending`` / ``descending`` when the list is sorted by ``name`` first."""
        current = self.sort[0] if self.sort else None
        if current == name:
            return "ascending"
        if current == f"-{name}":
            return "descending"
        return None

    def next_url(self, next_cursor: str) -> str:
        back = [*self.back, self.cursor or FIRST_PAGE][-MAX_BACK:]
        return self.url(cursor=next_cursor, back=back)

    def previous_url(self) -> str | None:
        if not self.cursor:
            return None
        if not self.back:  # further back than remembered: the first page
            return self.url()
        previous = self.back[-1]
        return self.url(cursor=None if previous == FIRST_PAGE else previous, back=self.back[:-1])

    def hidden_inputs(self, *keep: str) -> list[tuple[str, str]]:
        """(name, value) of this state's parameters named in ``keep``, for a GET form."""
        return [(k, v) for k, v in self.params().items() if k in keep]


# -- the filter builder ------------------------------------------------------------------------


def _local(fmt: Any, text: str) -> str:
    """A ``datetime-local`` value, read in the user's time zone, as ISO 8601 with its offset."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=fmt.zone)
    return value.isoformat()


def _wall(fmt: Any, value: Any) -> str:
    """An ISO date-time as a ``datetime-local`` value in the user's time zone."""
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(fmt.zone).strftime("%Y-%m-%dT%H:%M")


def _typed(kind: str, text: str, fmt: Any) -> Any:
    text = text.strip()
    if kind == "bool":
        return text.lower() in ("true", "1", "yes", "on")
    if kind in ("user", "relation") and text.isdigit():
        return int(text)
    if kind == "datetime" and text:
        try:
            return _local(fmt, text)
        except ValueError:
            return text  # the records service says what is wrong with it
    return text


def builder_filter(params: Any, fields: dict[str, Field], fmt: Any) -> dict | None:
    """The builder's numbered conditions (``c0.field``, ``c0.op``, ``c0.value``...) as the
    filter language, ``{"and": [...]}``; None when none is complete."""
    indexes = sorted({int(key[1:].split(".")[0]) for key in params.keys()
                      if key.startswith("c") and key.endswith(".field") and key[1:].split(".")[0].isdigit()})
    conditions: list[dict[str, Any]] = []
    for index in indexes[:MAX_CONDITIONS]:
        name = (params.get(f"c{index}.field") or "").strip()
        op = (params.get(f"c{index}.op") or "").strip()
        field = fields.get(name)
        if field is None or not op:
            continue
        kind = kind_of(field)
        values = [v for v in params.getall(f"c{index}.value") if v.strip()] if f"c{index}.value" in params else []
        if op in ("is_null", "not_null"):
            conditions.append({"field": name, "op": "is_null", "value": op == "is_null"})
        elif op == "between":
            low, high = (values[0] if values else ""), (params.get(f"c{index}.value2") or "").strip()
            if low.strip() and high:
                conditions.append({"field": name, "op": "between",
                                   "value": [_typed(kind, low, fmt), _typed(kind, high, fmt)]})
        elif op == "in":
            items = values if len(values) > 1 else [p for v in values for p in v.split(",") if p.strip()]
            if items:
                conditions.append({"field": name, "op": "in", "value": [_typed(kind, v, fmt) for v in items]})
        elif values:
            conditions.append({"field": name, "op": op, "value": _typed(kind, values[0], fmt)})
    return {"and": conditions} if conditions else None


def filter_rows(filter_: dict | None, fields: dict[str, Field], fmt: Any) -> list[dict[str, Any]] | None:
    """The filter as the builder's rows (field, op, values, value2), or None when the builder
    cannot show it (an ``or``, ``not``, ``has``, a field or operator it does not offer)."""
    if not filter_:
        return []
    items = filter_["and"] if set(filter_) == {"and"} and isinstance(filter_["and"], list) else [filter_]
    rows = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("field"), str) or set(item) - {"field", "op", "value"}:
            return None
        field = fields.get(item["field"])
        if field is None:
            return None
        kind = kind_of(field)
        op, value = item.get("op", "eq"), item.get("value")
        if op == "is_null":
            flag = value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")
            op, value = ("is_null" if flag else "not_null"), None
        if op not in OPERATORS[kind]:
            return None
        if op == "in" and isinstance(value, str):
            value = value.split(",")
        if op == "between" and isinstance(value, str):
            value = value.split(",")
        values = value if isinstance(value, list) else [] if value is None else [value]
        shown = [_wall(fmt, v) if kind == "datetime" else ("true" if v is True else "false" if v is False else str(v))
                 for v in values]
        row = {"field": field.name, "kind": kind, "op": op, "values": shown, "value2": ""}
        if op == "between":
            row["values"], row["value2"] = shown[:1], (shown[1] if len(shown) > 1 else "")
        rows.append(row)
    return rows


# -- the page ----------------------------------------------------------------------------------


def _readable_entity(request: Request, name: str) -> EntityType:
    dep = _deployment(request)
    entity = dep.records.entity(name)  # NotFound: the error page
    if not can(request.scope["user"], entity.name, "read"):
        raise Forbidden("")
    return entity


async def _users(dep: Any, actor: Any) -> list[dict[str, Any]]:
    """Active users the actor may read, by name (for the owner selects)."""
    if not can(actor, "user", "read"):
        return []
    records = dep.records.as_actor(actor)
    try:
        found = await records.list("user", ListQuery(filter={"field": "active", "op": "eq", "value": True},
                                                     sort=["name"], limit=MAX_USERS))
    except (ValidationError, Forbidden):
        return []
    return [{"id": u["id"], "name": u.get("name") or u.get("email") or f"#{u['id']}"} for u in found.items]


@get("/{entity:str}", include_in_schema=False)
async def list_page(request: Request) -> Response:
    dep = _deployment(request)
    actor = request.scope["user"]
    entity = _readable_entity(request, request.path_params["entity"])
    user = await dep.records.get("user", actor.user_id) if actor.user_id else {}
    fmt = user_format(dep, user)
    _ = gettext_for(fmt.locale)
    params = request.query_params
    fields = list_fields(dep, entity, actor)
    state = ListState.parse(entity.name, params)

    if any(key.startswith("c") and key.endswith(".field") for key in params.keys()):
        # The filter builder's form: the filter language in the URL.
        state.filter, state.given = builder_filter(params, fields, fmt), state.given | {"filter"}
        return Redirect(state.url(), status_code=303)

    views = ListViews(dep)
    saved = await views.views(actor, entity.name)
    current = None
    if state.view is not None:
        current = next((v for v in saved if v.id == state.view), None)
        if current is None:
            state.view = None
        else:
            state.apply(current.definition)

    # Columns: the URL's (or the view's), else the user's, else the defaults; readable ones only.
    chosen = state.columns
    if chosen is not None:
        chosen = views.clean_columns(actor, entity, chosen)
    if not chosen:
        chosen = await views.columns(actor, entity.name) or default_columns(entity, fields)
    columns = [fields[n] for n in chosen if n in fields]

    error = state.filter_error
    items: list[dict[str, Any]] = []
    next_cursor = None
    total = None
    if error is None:
        try:
            listed = await dep.records.as_actor(actor).list(entity.name, ListQuery(
                filter=state.filter, sort=state.sort, limit=state.limit, cursor=state.cursor,
                search=state.q or None, count=state.count))
        except ValidationError as exc:
            error = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
        else:
            items, next_cursor, total = listed.items, listed.next_cursor, listed.total
    if total is None and not state.cursor and not next_cursor and error is None:
        total = len(items)  # the whole list is on this page: counted for free

    titles = await relation_titles(dep, actor, entity, items)
    users = await _users(dep, actor)
    user_names = {u["id"]: u["name"] for u in users}
    if "owner_id" in chosen:
        owners = {r["owner_id"] for r in items if r.get("owner_id") is not None}
        titles.update({("user", o): user_names[o] for o in owners if o in user_names})
        missing = sorted(o for o in owners if o not in user_names)  # inactive users, or past MAX_USERS
        if missing:
            found = await dep.records.as_actor(actor).list("user", ListQuery(
                filter={"field": "id", "op": "in", "value": missing}, limit=len(missing)))
            titles.update({("user", u["id"]): u.get("name") or u.get("email") or f"#{u['id']}" for u in found.items})

    may = {action: can(actor, entity.name, action) for action in ("create", "edit", "delete", "export", "assign")}
    may["assign"] = may["assign"] and bool(users)
    editable = [f for f in fields.values() if f.name not in SYSTEM_COLUMNS
                and actor.field_access(entity.name, f.name) == "edit"] if may["edit"] else []
    bulk = may["edit"] or may["delete"] or may["assign"]

    rows = filter_rows(state.filter, fields, fmt)
    title_column = entity.title if entity.title in chosen else (chosen[0] if chosen else None)
    meta = {
        "entity": entity.name, "zone": str(fmt.zone), "currency": dep.settings.currency,
        "fields": [{"name": f.name, "label": _(f.label), "type": f.type.value, "kind": kind_of(f),
                    "choices": f.choices} for f in fields.values()],
        "operators": OPERATORS, "users": users,
        "editable": [f.name for f in editable],
    }
    export_params = {k: v for k, v in state.params().items() if k in ("filter", "q", "sort")}
    export_params["fields"] = ",".join(f.name for f in columns)
    return await page(
        request, "list.html", entity=entity, fields=fields, columns=columns, chosen=chosen, items=items,
        titles=titles, st=state, total=total, next_cursor=next_cursor, error=error, saved_views=saved,
        current_view=current, may=may, bulk=bulk, editable=editable, users=users, rows=rows,
        builder_fields=list(fields.values()), meta=meta, operators=OPERATORS,
        title_column=title_column, limits=LIMITS, unsortable=_UNSORTABLE,
        export_url=f"/api/exports/{entity.name}?" + urlencode(export_params),
        view_modified=current is not None and state.definition(chosen) != _normal(current.definition, chosen),
        can_share=actor.has("manage_schema"), actor_id=actor.user_id,
        editor_columns=[*columns, *(f for n, f in fields.items() if n not in chosen)],
    )


def _normal(definition: ViewDefinition, chosen: list[str]) -> ViewDefinition:
    return ViewDefinition(filter=definition.filter or None, q=definition.q or None, sort=list(definition.sort),
                          columns=list(definition.columns) or chosen)


# -- form posts ------------------------------------------------------------------------------------


def _with_columns(next_url: str, entity: str, columns: list[str] | None) -> str:
    """``next_url`` (a list of ``entity``) showing ``columns`` where it named columns or a view
    (whose columns would win over the saved choice), else without a ``columns`` parameter."""
    parts = urlsplit(next_url)
    if parts.path != f"/{entity}":
        return next_url
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "columns"]
    if columns and (any(k == "view" for k, _ in query) or "columns=" in parts.query):
        query.append(("columns", ",".join(columns)))
    return parts.path + ("?" + urlencode(query) if query else "")


@post("/{entity:str}/columns", include_in_schema=False, status_code=303)
async def save_columns(request: Request) -> Redirect:
    """The user's columns: the checked ``column`` fields in the form's order; ``move``
    (``up:name`` / ``down:name``) moves one first (the editor without scripts); ``reset``."""
    entity = _readable_entity(request, request.path_params["entity"])
    actor = request.scope["user"]
    form = await request.form()
    views = ListViews(_deployment(request))
    next_url = safe_next(form.get("next"))
    if not next_url.startswith(f"/{entity.name}"):
        next_url = f"/{entity.name}"
    if form.get("reset"):
        await views.reset_columns(actor, entity.name)
        return Redirect(_with_columns(next_url, entity.name, None), status_code=303)
    order = list(form.getall("order")) if "order" in form else []
    checked = set(form.getall("column")) if "column" in form else set()
    move = form.get("move") or ""
    if move:
        direction, _, name = move.partition(":")
        if name in order:
            at = order.index(name)
            to = at - 1 if direction == "up" else at + 1
            if 0 <= to < len(order):
                order[at], order[to] = order[to], order[at]
    columns = [n for n in order if n in checked]
    columns += [n for n in (form.getall("column") if checked else []) if n not in columns]
    try:
        saved = await views.set_columns(actor, entity.name, columns)
    except ValidationError:
        saved = None  # nothing chosen: the list keeps what it had
    target = _with_columns(next_url, entity.name, saved)
    if move:
        target += "#columns"
    return Redirect(target, status_code=303)


@post("/{entity:str}/views", include_in_schema=False, status_code=303)
async def save_view(request: Request) -> Response:
    """Save the list's state (the form's ``filter``, ``q``, ``sort``, ``columns``) as a view."""
    entity = _readable_entity(request, request.path_params["entity"])
    actor = request.scope["user"]
    dep = _deployment(request)
    form = await request.form()
    raw = (form.get("filter") or "").strip()
    try:
        filter_ = msgspec.json.decode(raw) if raw else None
    except (msgspec.DecodeError, RecursionError):
        filter_ = "invalid"
    definition = ViewDefinition(
        filter=filter_ if isinstance(filter_, dict) else None, q=(form.get("q") or "").strip() or None,
        sort=[s for s in (form.get("sort") or "").split(",") if s.strip()],
        columns=[c for c in (form.get("columns") or "").split(",") if c])
    user = await dep.records.get("user", actor.user_id) if actor.user_id else {}
    _ = gettext_for(user_format(dep, user).locale)
    try:
        if filter_ is not None and not isinstance(filter_, dict):
            raise ValidationError([])
        view = await ListViews(dep).save(actor, entity.name, form.get("name") or "", definition,
                                         shared=form.get("shared") in ("1", "on", "true"))
    except ValidationError as exc:
        message = "; ".join(e.message for e in exc.errors) or _("The filter is not valid.")
        return await page(request, "list/message.html", status=422, entity=entity, heading=_("The view was not saved"),
                          message=message, back=safe_next(form.get("next")))
    except Forbidden as exc:
        return await page(request, "list/message.html", status=403, entity=entity, heading=_("The view was not saved"),
                          message=_("Sharing a view needs the permission to manage the schema.")
                          if form.get("shared") else str(exc), back=safe_next(form.get("next")))
    return Redirect(f"/{entity.name}?view={view.id}", status_code=303)


@post("/{entity:str}/views/{view_id:int}/delete", include_in_schema=False, status_code=303)
async def delete_view(request: Request) -> Redirect:
    entity = _readable_entity(request, request.path_params["entity"])
    await ListViews(_deployment(request)).delete(request.scope["user"], entity.name, request.path_params["view_id"])
    return Redirect(f"/{entity.name}", status_code=303)


ROUTES: list[Any] = [list_page, save_columns, save_view, delete_view]
