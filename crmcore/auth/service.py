"""Users' credentials, sessions, API tokens, roles, teams and the security log.

Everything lives in the database (several server processes share it); secrets are stored only
as hashes: passwords with argon2, tokens and session ids (random, 256 bits) with SHA-256.
User records themselves are ordinary ``user`` records written through the records service.

INTERFACE SKETCH: bodies are being filled in; signatures are the contract the API and CLI use.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec

from .permissions import Actor, Role

if TYPE_CHECKING:
    from ..deployment import Deployment

__all__ = ["AuthService", "SessionGrant", "NewToken"]


class SessionGrant(msgspec.Struct, kw_only=True):
    """A new login session: ``token`` goes in the session cookie, ``csrf_token`` in every form."""

    token: str
    csrf_token: str
    user_id: int
    expires_at: dt.datetime


class NewToken(msgspec.Struct, kw_only=True):
    """A new API token: ``token`` is shown once and never stored."""

    token: str
    info: dict[str, Any]


class AuthService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    # -- actors ---------------------------------------------------------------------------------

    async def actor_for_user(self, user_id: int, *, via: str = "system") -> Actor:
        """The actor of an active user (role, teams, grants). Unauthenticated when inactive/unknown."""
        raise NotImplementedError

    async def session_actor(self, token: str, *, ip: str | None = None) -> tuple[Actor, str]:
        """(actor, csrf_token) of a live session; Unauthenticated otherwise."""
        raise NotImplementedError

    async def token_actor(self, token: str, *, ip: str | None = None) -> Actor:
        """The actor of a valid API token; Unauthenticated (revoked, expired, unknown, user disabled)."""
        raise NotImplementedError

    # -- users (their records are "user" records; this adds role, teams, password) ---------------

    async def create_user(
        self, *, name: str, email: str, password: str | None = None, role: str = "agent",
        teams: list[str] = (), actor: Actor,
    ) -> dict[str, Any]:
        """A new active user: its record (owned by itself), role, teams and optional password.
        Needs ``manage_users``. Returns :meth:`user` of it. ValidationError naming the field."""
        raise NotImplementedError

    async def user(self, user_id: int) -> dict[str, Any]:
        """``{id, name, email, active, role, teams: [name...], has_password, locale, time_zone}``; NotFound."""
        raise NotImplementedError

    async def user_by_email(self, email: str) -> dict[str, Any]:
        raise NotImplementedError

    async def users(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def set_role(self, user_id: int, role: str, *, actor: Actor) -> dict[str, Any]:
        """Needs ``manage_users``; logged (``role_changed``)."""
        raise NotImplementedError

    async def set_teams(self, user_id: int, teams: list[str], *, actor: Actor) -> dict[str, Any]:
        """Replace a user's teams (by name; the first is their primary team). Logged."""
        raise NotImplementedError

    async def set_active(self, user_id: int, active: bool, *, actor: Actor) -> dict[str, Any]:
        """Disable (sessions ended, tokens stop working) or enable a user. Logged."""
        raise NotImplementedError

    async def set_password(self, user_id: int, password: str, *, actor: Actor) -> None:
        """An admin sets a password (``manage_users``, or the user themself). Ends the user's other sessions."""
        raise NotImplementedError

    async def change_password(self, actor: Actor, current: str, new: str, *, keep_session: str | None = None) -> None:
        """A user changes their own password, giving the current one. Other sessions end."""
        raise NotImplementedError

    # -- login, sessions ----------------------------------------------------------------------

    async def login(self, email: str, password: str, *, ip: str | None, user_agent: str | None = None) -> SessionGrant:
        """Check a password and open a session. Unauthenticated ("wrong e-mail or password", the
        same message whether the account exists or not); RateLimited after too many failures for
        the account or the address. Every attempt is logged."""
        raise NotImplementedError

    async def logout(self, token: str) -> None:
        raise NotImplementedError

    # -- password reset -------------------------------------------------------------------------

    async def request_password_reset(self, email: str, *, ip: str | None, base_url: str) -> None:
        """Make a one-time reset token and hand the link to ``crm_deliver_password_reset``
        implementations. Says nothing about whether the account exists. Rate limited like logins."""
        raise NotImplementedError

    async def reset_link(self, user_id: int, *, base_url: str, actor: Actor) -> str:
        """A one-time reset link an admin hands over (``crm users reset-link``)."""
        raise NotImplementedError

    async def reset_password(self, token: str, password: str, *, ip: str | None) -> None:
        """Use a reset token once: set the password, end the user's sessions. Unauthenticated when
        the token is unknown, used or expired; ValidationError for a refused password."""
        raise NotImplementedError

    # -- API tokens -----------------------------------------------------------------------------

    async def create_token(
        self, user_id: int, name: str, *, read_only: bool = False, expires_at: dt.datetime | None = None,
        actor: Actor,
    ) -> NewToken:
        """A personal API token for ``user_id`` (the actor's own, or any with ``manage_tokens``)."""
        raise NotImplementedError

    async def tokens(self, *, user_id: int | None = None) -> list[dict[str, Any]]:
        """``{id, user_id, name, prefix, read_only, created_at, expires_at, last_used_at, revoked_at}``."""
        raise NotImplementedError

    async def revoke_token(self, token_id: int, *, actor: Actor) -> None:
        raise NotImplementedError

    # -- roles and teams ------------------------------------------------------------------------

    async def roles(self) -> list[Role]:
        raise NotImplementedError

    async def role(self, name: str) -> Role:
        raise NotImplementedError

    async def save_role(self, role: Role, *, actor: Actor) -> Role:
        """Create or replace a role (``manage_roles``); a built-in role may be changed, not deleted. Logged."""
        raise NotImplementedError

    async def delete_role(self, name: str, *, actor: Actor) -> None:
        """Refused while users have it, and for built-in roles."""
        raise NotImplementedError

    async def teams(self) -> list[dict[str, Any]]:
        """``{id, name, members: [user_id...]}``."""
        raise NotImplementedError

    async def create_team(self, name: str, *, actor: Actor) -> dict[str, Any]:
        raise NotImplementedError

    async def delete_team(self, name: str, *, actor: Actor) -> None:
        raise NotImplementedError

    # -- security log ---------------------------------------------------------------------------

    async def log(
        self, event: str, *, user_id: int | None = None, actor: Actor | None = None, email: str | None = None,
        ip: str | None = None, detail: dict[str, Any] | None = None,
    ) -> None:
        """Append to the security log: login, login_failed, logout, password_changed,
        password_reset_requested, password_reset, user_created, user_disabled, user_enabled,
        role_changed, teams_changed, role_saved, role_deleted, token_created, token_revoked, token_used."""
        raise NotImplementedError

    async def security_log(
        self, *, event: str | None = None, user_id: int | None = None, before_id: int | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first: ``{id, at, event, user_id, actor_id, email, ip, detail}``."""
        raise NotImplementedError
