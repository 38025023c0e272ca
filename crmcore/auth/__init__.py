"""Authentication (passwords, sessions, API tokens) and authorisation (roles, scopes, field rules)."""

from .errors import RateLimited, Unauthenticated
from .permissions import ACTIONS, ADMIN, BUILTIN_ROLES, SYSTEM, Actor, Permission, Role, Scope

__all__ = [
    "ACTIONS", "ADMIN", "BUILTIN_ROLES", "SYSTEM", "Actor", "Permission", "RateLimited", "Role", "Scope",
    "Unauthenticated",
]
