"""Saved list views (segments) and the list columns each user chose.

A **saved view** is a named state of an entity's list: its filter (the filter language of
:mod:`crmcore.records.query`), full-text search, sort and columns, stored as JSON in
``crm_saved_view``. Any user who may read the entity saves their own; sharing one with everyone
who may read the entity needs the ``manage_schema`` permission (a consultant's segments). A view
is saved only when its filter, search and sort are valid for the user saving it: they are tried
on the records service, as that user, before the view is stored. A shared view whose filter
names a field another role hides is refused to that role when opened, as any list is.

A user's **columns** of a list are a preference (``crm_user_pref``, key ``columns:<entity>``):
field names in order; only fields the user may read are kept, then and whenever they are read.

Both belong to a signed-in user (an actor with a ``user_id``); the system actor has neither.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec

from ..entities import EntityType, Field, FieldType
from ..records.errors import FieldError, Forbidden, NotFound, ValidationError
from ..records.query import ListQuery

if TYPE_CHECKING:
    from ..auth.permissions import Actor
    from ..deployment import Deployment

__all__ = ["SavedView", "ViewDefinition", "ListViews", "SYSTEM_COLUMNS", "list_fields", "default_columns"]

MAX_NAME = 100
MAX_COLUMNS = 60
#: How many views one user may keep per entity type (their own; shared ones count for whoever saved them).
MAX_VIEWS = 100

#: Record columns every entity type has, offered in lists beside its fields.
SYSTEM_COLUMNS: dict[str, Field] = {
    "owner_id": Field(name="owner_id", type=FieldType.RELATION, target="user", label="Owner"),
    "created_at": Field(name="created_at", type=FieldType.DATETIME, label="Created"),
    "updated_at": Field(name="updated_at", type=FieldType.DATETIME, label="Updated"),
}


class ViewDefinition(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a saved view restores: the list's filter, search, sort and columns."""

    filter: dict | None = None
    q: str | None = None
    sort: list[str] = []
    columns: list[str] = []


class SavedView(msgspec.Struct, kw_only=True):
    id: int
    user_id: int
    entity: str
    name: str
    shared: bool
    definition: ViewDefinition
    created_at: str
    updated_at: str


def list_fields(deployment: Deployment, entity: EntityType, actor: Actor) -> dict[str, Field]:
    """Name -> field of every column the actor may see in the entity's list: its readable
    fields, then the system columns (the owner only where users may be read)."""
    hidden = actor.hidden_fields(entity.name)
    fields = {f.name: f for f in entity.visible_fields if f.name not in hidden}
    for name, field in SYSTEM_COLUMNS.items():
        if name == "owner_id" and not actor.can("user", "read"):
            continue
        fields.setdefault(name, field)
    return fields


def default_columns(entity: EntityType, fields: dict[str, Field]) -> list[str]:
    """The columns a list starts with: the fields marked ``in_list`` (the title field first when
    none is), else the first few readable fields."""
    chosen = [f.name for f in entity.visible_fields if f.in_list and f.name in fields]
    title = entity.title
    if title in fields and title not in chosen:
        chosen.insert(0, title)
    if not chosen:
        chosen = [n for n in fields if n not in SYSTEM_COLUMNS][:5]
    return chosen


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _invalid(field: str, message: str, code: str = "invalid") -> ValidationError:
    return ValidationError([FieldError(field, code, message)])


class ListViews:
    """Saved views and list columns of one deployment: ``ListViews(deployment)``; every method
    acts as ``actor`` and checks that it may read the entity type."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    @property
    def db(self):
        return self.deployment.db

    def _entity(self, actor: Actor, name: str) -> EntityType:
        entity = self.deployment.records.entity(name)  # NotFound for an unknown type
        if not actor.system and actor.scope(entity.name, "read").value == "none":
            raise Forbidden(f"your role may not read {entity.label_plural.lower()}")
        return entity

    @staticmethod
    def _user(actor: Actor) -> int:
        if actor.user_id is None:
            raise Forbidden("saved views and list columns belong to a signed-in user")
        return actor.user_id

    # -- columns ---------------------------------------------------------------------------

    def clean_columns(self, actor: Actor, entity: EntityType, columns: Any, *, strict: bool = False) -> list[str]:
        """``columns`` without duplicates and names the actor may not see (``strict``: those
        refused with a ValidationError naming the first)."""
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise _invalid("columns", "columns are a list of field names")
        fields = list_fields(self.deployment, entity, actor)
        kept: list[str] = []
        for name in columns:
            if name not in fields:
                if strict:
                    raise _invalid("columns", f"unknown field {name!r}; known fields: {', '.join(fields)}",
                                   "unknown_field")
                continue
            if name not in kept:
                kept.append(name)
        if strict and len(kept) > MAX_COLUMNS:
            raise _invalid("columns", f"at most {MAX_COLUMNS} columns")
        return kept[:MAX_COLUMNS]

    async def columns(self, actor: Actor, entity_name: str) -> list[str] | None:
        """The columns the actor chose for the entity's list (readable ones only), or None when
        they chose none (or none of them is readable any more)."""
        entity = self._entity(actor, entity_name)
        if actor.user_id is None:
            return None
        raw = await self.db.fetchval('SELECT "value" FROM crm_user_pref WHERE "user_id" = ? AND "key" = ?',
                                     (actor.user_id, f"columns:{entity.name}"))
        if raw is None:
            return None
        try:
            stored = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return None
        kept = self.clean_columns(actor, entity, stored) if isinstance(stored, list) else []
        return kept or None

    async def set_columns(self, actor: Actor, entity_name: str, columns: list[str]) -> list[str]:
        """Keep the actor's columns of the entity's list, in order (at least one)."""
        entity = self._entity(actor, entity_name)
        user_id = self._user(actor)
        kept = self.clean_columns(actor, entity, columns, strict=True)
        if not kept:
            raise _invalid("columns", "choose at least one column", "required")
        await self.db.execute(
            'INSERT INTO crm_user_pref ("user_id", "key", "value", "updated_at") VALUES (?, ?, ?, ?) '
            'ON CONFLICT ("user_id", "key") DO UPDATE SET "value" = excluded."value", "updated_at" = excluded."updated_at"',
            (user_id, f"columns:{entity.name}", msgspec.json.encode(kept).decode(), _now()))
        return kept

    async def reset_columns(self, actor: Actor, entity_name: str) -> None:
        """Back to the entity's default columns."""
        entity = self._entity(actor, entity_name)
        await self.db.execute('DELETE FROM crm_user_pref WHERE "user_id" = ? AND "key" = ?',
                              (self._user(actor), f"columns:{entity.name}"))

    # -- saved views -----------------------------------------------------------------------

    _COLUMNS = '"id", "user_id", "entity", "name", "shared", "definition", "created_at", "updated_at"'

    @staticmethod
    def _row(row: tuple) -> SavedView:
        try:
            definition = msgspec.json.decode(row[5], type=ViewDefinition)
        except (msgspec.DecodeError, msgspec.ValidationError):
            definition = ViewDefinition()
        return SavedView(id=row[0], user_id=row[1], entity=row[2], name=row[3], shared=bool(row[4]),
                         definition=definition, created_at=row[6], updated_at=row[7])

    async def views(self, actor: Actor, entity_name: str) -> list[SavedView]:
        """The actor's own views of the entity and those shared, by name."""
        entity = self._entity(actor, entity_name)
        rows = await self.db.fetch(
            f'SELECT {self._COLUMNS} FROM crm_saved_view WHERE "entity" = ? AND ("user_id" = ? OR "shared" = ?) '
            'ORDER BY "name", "id"', (entity.name, actor.user_id or 0, True))
        return [self._row(r) for r in rows]

    async def view(self, actor: Actor, entity_name: str, view_id: int) -> SavedView:
        """One view the actor may open (their own or a shared one); NotFound otherwise."""
        entity = self._entity(actor, entity_name)
        row = await self.db.fetchrow(
            f'SELECT {self._COLUMNS} FROM crm_saved_view WHERE "id" = ? AND "entity" = ? '
            'AND ("user_id" = ? OR "shared" = ?)', (view_id, entity.name, actor.user_id or 0, True))
        if row is None:
            raise NotFound("saved view", view_id)
        return self._row(row)

    async def check(self, actor: Actor, entity_name: str, definition: ViewDefinition) -> ViewDefinition:
        """The definition cleaned (columns the actor may see, at most 200 characters of search),
        its filter, search and sort tried on the records service as the actor."""
        entity = self._entity(actor, entity_name)
        q = (definition.q or "").strip() or None
        if definition.filter is not None and not isinstance(definition.filter, dict):
            raise _invalid("filter", "a filter is an object of the filter language")
        sort = [s.strip() for s in definition.sort if isinstance(s, str) and s.strip()]
        columns = self.clean_columns(actor, entity, definition.columns, strict=True)
        await self.deployment.records.as_actor(actor).list(
            entity.name, ListQuery(filter=definition.filter or None, search=q, sort=sort, limit=1))
        return ViewDefinition(filter=definition.filter or None, q=q, sort=sort, columns=columns)

    async def save(self, actor: Actor, entity_name: str, name: str, definition: ViewDefinition, *,
                   shared: bool = False) -> SavedView:
        """Save the actor's view ``name`` of the entity (replacing their own view of that name).
        ``shared`` needs ``manage_schema``."""
        entity = self._entity(actor, entity_name)
        user_id = self._user(actor)
        if not isinstance(name, str) or not name.strip():
            raise _invalid("name", "a saved view needs a name", "required")
        name = " ".join(name.split())
        if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise _invalid("name", f"a view's name is one line of at most {MAX_NAME} characters")
        if shared and not actor.has("manage_schema"):
            raise Forbidden("sharing a saved view needs the manage_schema permission",
                            [FieldError("shared", "forbidden", "only users who manage the schema share views")])
        definition = await self.check(actor, entity.name, definition)
        encoded = msgspec.json.encode(definition).decode()
        now = _now()
        async with self.db.transaction():
            existing = await self.db.fetchval(
                'SELECT "id" FROM crm_saved_view WHERE "entity" = ? AND "user_id" = ? AND "name" = ?',
                (entity.name, user_id, name))
            if existing is not None:
                await self.db.execute(
                    'UPDATE crm_saved_view SET "definition" = ?, "shared" = ?, "updated_at" = ? WHERE "id" = ?',
                    (encoded, bool(shared), now, existing))
                view_id = existing
            else:
                count = await self.db.fetchval(
                    'SELECT COUNT(*) FROM crm_saved_view WHERE "entity" = ? AND "user_id" = ?', (entity.name, user_id))
                if count >= MAX_VIEWS:
                    raise _invalid("name", f"you have {MAX_VIEWS} saved views of {entity.label_plural.lower()}; "
                                           "delete some first", "too_many")
                view_id = await self.db.fetchval(
                    'INSERT INTO crm_saved_view ("user_id", "entity", "name", "shared", "definition", "created_at", '
                    '"updated_at") VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING "id"',
                    (user_id, entity.name, name, bool(shared), encoded, now, now))
        return await self.view(actor, entity.name, view_id)

    async def delete(self, actor: Actor, entity_name: str, view_id: int) -> None:
        """Delete one of the actor's own views (a shared one also by a user with ``manage_schema``)."""
        view = await self.view(actor, entity_name, view_id)
        if view.user_id != actor.user_id and not (view.shared and actor.has("manage_schema")):
            raise Forbidden("only its owner deletes a saved view")
        await self.db.execute('DELETE FROM crm_saved_view WHERE "id" = ?', (view.id,))
