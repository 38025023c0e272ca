"""Helpers pages share to show records: the titles of related records, the fields a user sees."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..entities import EntityType, Field, FieldType
from ..records.errors import Forbidden, ValidationError
from ..records.query import ListQuery
from .render import record_title

if TYPE_CHECKING:
    from ..auth.permissions import Actor
    from ..deployment import Deployment

__all__ = ["visible_fields", "relation_titles", "can"]


def visible_fields(entity: EntityType, actor: Actor) -> list[Field]:
    """The entity's fields the actor may read, in declaration order."""
    hidden = actor.hidden_fields(entity.name)
    return [f for f in entity.visible_fields if f.name not in hidden]


def can(actor: Actor, entity: str, action: str) -> bool:
    """:meth:`Actor.can`, as the pages' templates call it."""
    return actor.can(entity, action)


async def relation_titles(deployment: Deployment, actor: Actor, entity: EntityType,
                          records: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """(target entity, id) -> title, for every relation value of ``records`` the actor may read
    (one query per target entity)."""
    wanted: dict[str, set[int]] = {}
    for field in visible_fields(entity, actor):
        if field.type is FieldType.RELATION and field.target:
            ids = {r.get(field.name) for r in records if isinstance(r.get(field.name), int)}
            if ids:
                wanted.setdefault(field.target, set()).update(ids)
    titles: dict[tuple[str, int], str] = {}
    service = deployment.records.as_actor(actor)
    for target, ids in wanted.items():
        target_entity = deployment.registry.get(target)
        if target_entity is None:
            continue
        id_list = sorted(ids)
        for start in range(0, len(id_list), 500):
            try:
                page = await service.list(target, ListQuery(
                    filter={"field": "id", "op": "in", "value": id_list[start:start + 500]}, limit=500))
            except (Forbidden, ValidationError):
                break
            for item in page.items:
                titles[(target, item["id"])] = record_title(target_entity, item)
    return titles
