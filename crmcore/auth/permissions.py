"""Roles, scopes and the actor every read and write is made as.

A role says, per entity type and action, which records its users reach (*none*, *own*: records
they own, *team*: records of their teams or their own, *all*), which fields are hidden or
read-only to them, and which named permissions (``manage_users``, a plugin's own ...) it grants.
The records service asks the :class:`Actor` of each call; nothing else decides.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = [
    "ACTIONS", "ADMIN", "BUILTIN_ROLES", "CORE_PERMISSIONS", "FIELD_ACCESS", "Actor", "Permission", "Role",
    "SYSTEM", "Scope", "check_role",
]

#: What a scope is asked for. ``assign`` hands a record to another owner.
ACTIONS = ("read", "create", "edit", "delete", "export", "assign")
#: Field rules: absent means the field can be read and edited.
FIELD_ACCESS = ("hidden", "read")


class Scope(str, enum.Enum):
    NONE = "none"
    OWN = "own"
    TEAM = "team"
    ALL = "all"


class Permission(msgspec.Struct, kw_only=True, frozen=True):
    """A named permission beyond record access, e.g. ``telephony.call``. A plugin declares its
    own through ``crm_register_permissions``; ``roles`` are the built-in roles granted it."""

    name: str
    label: str = ""
    description: str = ""
    roles: tuple[str, ...] = ("admin",)


#: The core's named permissions; ``*`` in a role's grants means all of them and every plugin's.
CORE_PERMISSIONS = {
    p.name: p for p in [
        Permission(name="manage_users", label="Manage users", description="add, disable and change users, their roles, teams and passwords"),
        Permission(name="manage_roles", label="Manage roles", description="create and change roles and teams"),
        Permission(name="manage_schema", label="Manage schema", description="custom fields, plugins and schema migrations"),
        Permission(name="manage_tokens", label="Manage tokens", description="see and revoke other users' API tokens"),
        Permission(name="view_audit_log", label="View the security log", description="logins, failures, permission changes, token use"),
        Permission(name="manage_integrations", label="Manage integrations",
                   description="webhook subscriptions and their deliveries, the job queue"),
        Permission(name="manage_automation", label="Manage automation",
                   description="automation rules and their firing log"),
    ]
}


class Role(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A role as stored and as the API shows it.

    ``entities`` maps an entity type's name, or ``*`` for every other one (plugin entities
    included), to ``{action: scope}``; an action not given there is ``none``. ``fields`` maps an entity
    type to ``{field: "hidden" | "read"}``.
    """

    name: str
    label: str = ""
    description: str = ""
    entities: dict[str, dict[str, Scope]] = {}
    fields: dict[str, dict[str, str]] = {}
    grants: list[str] = []
    builtin: bool = False

    def scope(self, entity: str, action: str) -> Scope:
        rules = self.entities.get(entity)
        if rules is None:
            rules = self.entities.get("*", {})
        return rules.get(action, Scope.NONE)


def check_role(data: Any) -> Role:
    """A role from API or CLI input; a ValueError naming the part that is wrong."""
    from ..records.errors import FieldError, ValidationError

    try:
        role = msgspec.convert(data, Role)
    except msgspec.ValidationError as exc:
        where = str(exc).rsplit("at `$.", 1)
        field = where[1].rstrip("`").split("[")[0].split(".")[0] if len(where) == 2 else "body"
        raise ValidationError([FieldError(field, "invalid", f"{exc}; scopes are none, own, team, all")]) from None
    errors = []
    if not role.name or not role.name.replace("_", "").isalnum() or not role.name.isascii() or not role.name.islower():
        errors.append(FieldError("name", "invalid", "a role name is lower-case letters, digits and _"))
    for name, limit in (("label", 100), ("description", 1000)):
        text = getattr(role, name)
        if len(text) > limit or any(ord(c) < 32 or ord(c) == 127 for c in text):
            errors.append(FieldError(name, "invalid", f"the {name} is one line of at most {limit} characters"))
    for entity, rules in role.entities.items():
        for action in rules:
            if action not in ACTIONS:
                errors.append(FieldError(f"entities.{entity}.{action}", "invalid",
                                         f"unknown action; actions are {', '.join(ACTIONS)}"))
    for entity, rules in role.fields.items():
        for field, access in rules.items():
            if access not in FIELD_ACCESS:
                errors.append(FieldError(f"fields.{entity}.{field}", "invalid", "field access is hidden or read"))
    if errors:
        raise ValidationError(errors)
    return role


def _all(scope: Scope, **overrides: Scope) -> dict[str, Scope]:
    return {action: overrides.get(action, scope) for action in ACTIONS}


_S = Scope
#: What every non-admin role may do with user records: see colleagues, edit their own profile
#: (a user record is owned by its user), but not their own e-mail (the login) or active flag.
_USERS = {"user": {"read": _S.ALL, "edit": _S.OWN}}
_USER_FIELDS = {"user": {"email": "read", "active": "read", "manager": "read"}}

ADMIN = Role(name="admin", label="Administrator", builtin=True, entities={"*": _all(_S.ALL)}, grants=["*"],
             description="everything, including users, roles, schema and plugins")
BUILTIN_ROLES = {r.name: r for r in [
    ADMIN,
    Role(name="sales_manager", label="Sales manager", builtin=True,
         description="every record of their teams", entities={"*": _all(_S.TEAM), **_USERS}, fields=_USER_FIELDS),
    Role(name="agent", label="Agent", builtin=True, description="their own records",
         entities={"*": _all(_S.OWN, assign=_S.NONE), **_USERS}, fields=_USER_FIELDS),
    Role(name="read_only", label="Read only", builtin=True, description="reads every record, changes none",
         entities={"*": {"read": _S.ALL}, "user": {"read": _S.ALL}}),
]}


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    """Who a read or write is made as: a user with a role (and teams), or the system.

    ``read_only``: a read-only API token, whatever the role allows. ``grants``: the named
    permissions in effect (the role's own plus those plugins give its built-in name).
    """

    user_id: int | None
    role: Role
    team_ids: tuple[int, ...] = ()
    grants: frozenset[str] = frozenset()
    read_only: bool = False
    system: bool = False
    via: str = "system"  # system | session | token | cli
    token_id: int | None = None

    def scope(self, entity: str, action: str) -> Scope:
        if self.system:
            return Scope.ALL
        if self.read_only and action not in ("read", "export"):
            return Scope.NONE
        return self.role.scope(entity, action)

    def can(self, entity: str, action: str) -> bool:
        """Whether the role allows ``action`` (read, create, edit, delete, export, assign) on some
        records of ``entity`` (the records service decides for each record)."""
        return self.scope(entity, action) is not Scope.NONE

    def field_access(self, entity: str, field: str) -> str:
        """``edit``, ``read`` or ``hidden``."""
        if self.system:
            return "edit"
        return self.role.fields.get(entity, {}).get(field, "edit")

    def hidden_fields(self, entity: str) -> frozenset[str]:
        if self.system:
            return frozenset()
        return frozenset(f for f, access in self.role.fields.get(entity, {}).items() if access == "hidden")

    def has(self, permission: str) -> bool:
        return self.system or "*" in self.grants or permission in self.grants

    def scope_sql(self, scope: Scope) -> tuple[str, list[Any]] | None:
        """The WHERE condition limiting a table's rows to ``scope`` (None: every row). Both
        forms are served by the partial owner and team indexes."""
        if scope is Scope.ALL:
            return None
        if scope is Scope.OWN or not self.team_ids:
            return '"owner_id" = ?', [self.user_id]
        marks = ", ".join("?" for _ in self.team_ids)
        return f'("owner_id" = ? OR "team_id" IN ({marks}))', [self.user_id, *self.team_ids]

    def reaches(self, scope: Scope, record: dict[str, Any]) -> bool:
        """Whether a record (with ``owner_id`` and ``team_id``) is within ``scope``."""
        if scope is Scope.ALL:
            return True
        if scope is Scope.NONE:
            return False
        if record.get("owner_id") is not None and record.get("owner_id") == self.user_id:
            return True
        return scope is Scope.TEAM and record.get("team_id") in self.team_ids


def effective_grants(role: Role, declared: dict[str, Permission]) -> frozenset[str]:
    """A role's grants plus the declared permissions that name it among their default roles."""
    return frozenset(role.grants) | {p.name for p in declared.values() if role.name in p.roles}


#: Trusted code: the CLI run by whoever owns the deployment folder, migrations, the demo loader.
SYSTEM = Actor(user_id=None, role=ADMIN, grants=frozenset({"*"}), system=True)
