"""The entity model: entity types and their typed fields, described as data.

Core entities and plugin entities are declared the same way (msgspec Structs registered through
the ``crm_register_entities`` hook); custom fields are the same ``Field`` added at run time.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import msgspec

__all__ = ["FieldType", "Field", "EntityType", "Registry", "RegistryError", "SYSTEM_COLUMNS"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class FieldType(str, enum.Enum):
    TEXT = "text"
    LONG_TEXT = "long_text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    MONEY = "money"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    CHOICE = "choice"
    MULTI_CHOICE = "multi_choice"
    EMAIL = "email"
    PHONE = "phone"
    URL = "url"
    RELATION = "relation"
    TAGS = "tags"


#: Field types whose text goes into the full-text search index unless ``searchable=False``.
SEARCHABLE_BY_DEFAULT = {
    FieldType.TEXT, FieldType.LONG_TEXT, FieldType.EMAIL, FieldType.PHONE, FieldType.TAGS,
}

#: Columns every entity table has; never declared as fields.
SYSTEM_COLUMNS = (
    "id", "version", "created_at", "updated_at", "deleted_at", "owner_id", "created_by", "updated_by",
)


class Field(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One typed field of an entity type.

    ``money`` is stored as two columns (``name`` holds the amount, ``name__currency`` the ISO code);
    ``phone`` as ``name`` (E.164) beside ``name__raw`` (what the user typed).
    """

    name: str
    type: FieldType
    label: str = ""
    help_text: str = ""
    required: bool = False
    unique: bool = False
    default: Any = None
    indexed: bool = False
    choices: list[str] = []
    #: Shown as a column in lists by default.
    in_list: bool = False
    #: Hidden fields keep their data but are left out of the API, lists and forms.
    hidden: bool = False
    #: For ``relation``: the entity type it points to.
    target: str | None = None
    #: For ``text``: the longest value accepted.
    max_length: int | None = None
    #: Included in full-text search (defaults by type).
    searchable: bool | None = None
    #: Added at run time by a consultant rather than declared by code.
    custom: bool = False
    #: Set by the registry: the plugin that declared it ("custom" for custom fields).
    plugin: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.name.replace("_", " ").capitalize()

    @property
    def is_searchable(self) -> bool:
        if self.searchable is None:
            return self.type in SEARCHABLE_BY_DEFAULT
        return self.searchable

    def columns(self) -> tuple[str, ...]:
        """The table columns that hold this field's value."""
        if self.type is FieldType.MONEY:
            return (self.name, f"{self.name}__currency")
        if self.type is FieldType.PHONE:
            return (self.name, f"{self.name}__raw")
        return (self.name,)


class EntityType(msgspec.Struct, kw_only=True):
    """An entity type: its name, label, fields and the plugin that owns it."""

    name: str
    label: str = ""
    label_plural: str = ""
    fields: list[Field] = []
    #: The field shown as the record's title (defaults to the first text field).
    title_field: str | None = None
    #: Set by the registry: the plugin that declared it.
    plugin: str = ""
    #: Set by the registry: the table that holds its records.
    table: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.name.replace("_", " ").capitalize()
        if not self.label_plural:
            self.label_plural = self.label + "s"

    def field(self, name: str) -> Field | None:
        for field in self.fields:
            if field.name == name:
                return field
        return None

    @property
    def visible_fields(self) -> list[Field]:
        return [f for f in self.fields if not f.hidden]

    @property
    def title(self) -> str | None:
        if self.title_field:
            return self.title_field
        for field in self.fields:
            if field.type in (FieldType.TEXT, FieldType.EMAIL):
                return field.name
        return None


class RegistryError(Exception):
    """A plugin declared something the registry refuses (duplicate or malformed name...)."""


class Registry:
    """All entity types of a deployment, keyed by their (namespaced) name."""

    def __init__(self) -> None:
        self.entities: dict[str, EntityType] = {}
        self._tables: dict[str, str] = {}

    def qualified(self, plugin: str, name: str) -> str:
        """Plugin-owned names carry the plugin's name so two plugins never collide."""
        if plugin == "core" or name.startswith(f"{plugin}_"):
            return name
        return f"{plugin}_{name}"

    def add_entity(self, entity: EntityType, *, plugin: str) -> EntityType:
        name = self.qualified(plugin, entity.name)
        if not NAME_RE.match(name):
            raise RegistryError(
                f"plugin {plugin!r}: entity name {entity.name!r} is invalid; use lowercase letters, "
                "digits and underscores, starting with a letter (at most 48 characters)"
            )
        if name in self.entities:
            raise RegistryError(
                f"plugin {plugin!r}: entity {name!r} is already declared by plugin "
                f"{self.entities[name].plugin!r}"
            )
        table = entity.table or (f"crm_{name}" if plugin == "core" else name)
        if table in self._tables:
            raise RegistryError(
                f"plugin {plugin!r}: table {table!r} is already used by entity {self._tables[table]!r}"
            )
        entity = msgspec.structs.replace(entity, name=name, plugin=plugin, table=table, fields=[])
        self.entities[name] = entity
        self._tables[table] = name
        return entity

    def add_field(self, entity_name: str, field: Field, *, plugin: str) -> Field:
        entity = self.entities.get(entity_name)
        if entity is None:
            raise RegistryError(
                f"plugin {plugin!r}: cannot add field {field.name!r} to unknown entity "
                f"{entity_name!r}; known entities: {', '.join(sorted(self.entities))}"
            )
        check_field(entity, field)
        if field.type is FieldType.RELATION and not field.target:
            raise RegistryError(f"field {field.name!r}: a relation needs a target entity")
        field = msgspec.structs.replace(field, plugin=plugin)
        entity.fields.append(field)
        return field

    def check_relations(self) -> None:
        for entity in self.entities.values():
            for field in entity.fields:
                if field.type is FieldType.RELATION and field.target not in self.entities:
                    raise RegistryError(
                        f"entity {entity.name!r}, field {field.name!r}: relation target "
                        f"{field.target!r} is not a known entity"
                    )

    def get(self, name: str) -> EntityType | None:
        return self.entities.get(name)

    def __iter__(self):
        return iter(self.entities.values())


def check_field(entity: EntityType, field: Field) -> None:
    """Refuse a malformed or clashing field name, with a message that says what is accepted."""
    if not NAME_RE.match(field.name) or "__" in field.name:
        raise RegistryError(
            f"field name {field.name!r} is invalid; use lowercase letters, digits and single "
            "underscores, starting with a letter (at most 48 characters)"
        )
    if field.name in SYSTEM_COLUMNS:
        raise RegistryError(f"field name {field.name!r} is reserved for a system column")
    if entity.field(field.name) is not None:
        raise RegistryError(f"entity {entity.name!r} already has a field {field.name!r}")
    if field.type in (FieldType.CHOICE, FieldType.MULTI_CHOICE) and not field.choices:
        raise RegistryError(f"field {field.name!r}: a {field.type.value} field needs choices")
