"""Users' credentials, sessions, API tokens, roles, teams and the security log.

Everything lives in the database (several server processes share it); secrets are stored only
as hashes: passwords with argon2id, tokens and session ids (random, 256 bits) with SHA-256.
User records themselves are ordinary ``user`` records written through the records service; a
user record is owned by its user (so the *own* scope lets a user edit their profile) and sits in
the user's primary team.

The three ``*_actor`` methods run on every HTTP request: each is one query (credential, user
record, login row, stored role and team ids joined), plus at most one small write now and then
(a session's last-seen time every 5 minutes, a token's last use every hour).

Rate limits are counted from the security log itself: an account (by e-mail, known or not) with
5 failed logins in 15 minutes, or an address with 20, is refused until the window frees, even
with the right password. A team is deleted only when it has no members; records that named it
keep the (now dangling) team id, seen by their owners and by roles with *all* scope.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import inspect
import logging
import math
import re
import secrets
from typing import TYPE_CHECKING, Any

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..records.errors import FieldError, Forbidden, NotFound, ValidationError
from ..storage.database import IntegrityError
from .errors import RateLimited, Unauthenticated
from .permissions import BUILTIN_ROLES, Actor, Role, check_role, effective_grants

if TYPE_CHECKING:
    from ..deployment import Deployment

__all__ = ["AuthService", "SessionGrant", "NewToken", "PASSWORD_MIN", "PASSWORD_MAX"]

log = logging.getLogger("crmcore.auth")
UTC = dt.timezone.utc

PASSWORD_MIN = 10
PASSWORD_MAX = 1024
#: A session ends this long after login, whatever happens ...
SESSION_LIFETIME = dt.timedelta(days=14)
#: ... or after this long unused.
SESSION_IDLE = dt.timedelta(hours=24)
#: A session's last-seen time is written at most this often.
SESSION_TOUCH = dt.timedelta(minutes=5)
#: A token's last use is written (and logged as ``token_used``) at most this often.
TOKEN_TOUCH = dt.timedelta(hours=1)
RESET_LIFETIME = dt.timedelta(hours=1)
RATE_WINDOW = dt.timedelta(minutes=15)
#: Failures (or reset requests) in RATE_WINDOW after which an account / an address is refused.
ACCOUNT_LIMIT = 5
ADDRESS_LIMIT = 20
TOKEN_PREFIX = "crm_"
NAME_MAX = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


# -- small helpers -------------------------------------------------------------------------------

def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _ts(value: dt.datetime) -> str:
    """Fixed-width ISO 8601 UTC text: compares and sorts as text on both backends."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _email_key(email: Any) -> str:
    """How the security log and the rate limits name an account: trimmed, lower case, without
    control characters (no address has them; PostgreSQL refuses NUL in text)."""
    return _CONTROL.sub("", str(email or "")).strip().lower()[:320]


def _name(value: Any) -> str | None:
    """A name to look something up by, or None when it cannot name anything (not text, or
    holding control characters): such input finds nothing rather than reaching the database."""
    return value if isinstance(value, str) and not _CONTROL.search(value) else None


def _shown(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _invalid(field: str, code: str, message: str) -> ValidationError:
    return ValidationError([FieldError(field, code, message)])


def check_password(password: Any, email: str | None = None) -> str:
    """The password policy: 10 to 1024 characters, not the e-mail address. ValidationError
    naming ``password`` otherwise."""
    if not isinstance(password, str):
        raise _invalid("password", "invalid", "a password is text")
    if len(password) < PASSWORD_MIN:
        raise _invalid("password", "too_short", f"a password has at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise _invalid("password", "too_long", f"a password has at most {PASSWORD_MAX} characters")
    if email and password.strip().lower() == _email_key(email):
        raise _invalid("password", "is_email", "the password must not be the e-mail address")
    return password


class AuthService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        #: argon2id with the library's recommended parameters; a hash made with other
        #: parameters is replaced at the next successful login.
        self.hasher = PasswordHasher()
        self._dummy: tuple[tuple, str] | None = None
        self._roles: dict[str, Role] = {}
        self._grants: dict[str, frozenset[str]] = {}
        self._grants_of: Any = None
        self._sql: dict[str, str] = {}

    @property
    def db(self):
        return self.deployment.db

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def _users(self) -> str:
        """The quoted table of user records."""
        entity = self.deployment.registry.get("user")
        return f'"{entity.table if entity is not None else "crm_user"}"'

    def _team_agg(self, user_column: str) -> str:
        """A subquery giving a user's team ids in order (position first)."""
        if self.db.dialect == "postgres":
            return (f'(SELECT string_agg(CAST(m."team_id" AS TEXT), \',\' ORDER BY m."position", m."team_id") '
                    f'FROM crm_team_member m WHERE m."user_id" = {user_column})')
        return (f'(SELECT group_concat(m."position" || \':\' || m."team_id") '
                f'FROM crm_team_member m WHERE m."user_id" = {user_column})')

    @staticmethod
    def _team_ids(text: str | None) -> tuple[int, ...]:
        if not text:
            return ()
        parts = text.split(",")
        if ":" not in parts[0]:
            return tuple(int(p) for p in parts)
        pairs = sorted(tuple(int(x) for x in p.split(":")) for p in parts)
        return tuple(team for _, team in pairs)

    def _actor_sql(self, kind: str) -> str:
        """The one hot-path query of ``kind``: session, token or user."""
        key = f"{kind}:{self._users}"
        sql = self._sql.get(key)
        if sql is not None:
            return sql
        tail = (f'LEFT JOIN {self._users} u ON u."id" = {{uid}} '
                'LEFT JOIN crm_user_auth a ON a."user_id" = {uid} '
                'LEFT JOIN crm_role r ON r."name" = a."role" ')
        person = 'u."id", u."active", u."deleted_at" IS NULL, a."role", r."definition", ' + self._team_agg("{uid}")
        if kind == "session":
            sql = (f'SELECT s."user_id", s."csrf_token", s."expires_at", s."last_seen_at", {person} '
                   f'FROM crm_session s {tail} WHERE s."token_hash" = ?').replace("{uid}", 's."user_id"')
        elif kind == "token":
            sql = (f'SELECT t."id", t."user_id", t."read_only", t."expires_at", t."revoked_at", t."last_used_at", '
                   f'{person} FROM crm_api_token t {tail} WHERE t."token_hash" = ?').replace("{uid}", 't."user_id"')
        else:
            sql = (f'SELECT {person} FROM (SELECT CAST(? AS BIGINT) AS "user_id") q {tail}'
                   ).replace("{uid}", 'q."user_id"')
        self._sql[key] = sql
        return sql

    def _role_of(self, name: str, definition: str | None) -> tuple[Role, frozenset[str]]:
        """A role (stored definition, else built-in, else one allowing nothing) and its grants;
        decoded roles are remembered by their JSON text."""
        declared = self.deployment.permissions
        if declared is not self._grants_of:  # plugins changed: grants are recomputed
            self._grants.clear()
            self._grants_of = declared
        key = definition if definition is not None else f"builtin:{name}"
        role = self._roles.get(key)
        if role is None:
            if definition is not None:
                role = msgspec.json.decode(definition, type=Role)
            else:
                role = BUILTIN_ROLES.get(name) or Role(name=name)
            if len(self._roles) > 512:
                self._roles.clear()
            self._roles[key] = role
        grants = self._grants.get(key)
        if grants is None:
            grants = self._grants[key] = effective_grants(role, declared)
        return role, grants

    def _make_actor(
        self, row: tuple, *, via: str, read_only: bool = False, token_id: int | None = None,
    ) -> Actor:
        """An actor from the person part of a hot-path row (id, active, alive, role, definition, teams)."""
        user_id, active, alive, role_name, definition, teams = row
        if user_id is None:
            raise Unauthenticated("the user no longer exists")
        if not alive or not active:
            raise Unauthenticated("the user is disabled")
        if role_name is None:
            raise Unauthenticated("the user has no login (give them a role: crm users set-role)")
        role, grants = self._role_of(role_name, definition)
        return Actor(user_id=user_id, role=role, team_ids=self._team_ids(teams), grants=grants,
                     read_only=bool(read_only), via=via, token_id=token_id)

    @staticmethod
    def _require(actor: Actor, permission: str) -> None:
        if actor.read_only:
            raise Forbidden("a read-only token cannot change this")
        if not actor.has(permission):
            raise Forbidden(f"your role does not have the {permission} permission")

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _dummy_hash(self) -> str:
        """A hash of a random password, made with the current parameters (once)."""
        params = (self.hasher.time_cost, self.hasher.memory_cost, self.hasher.parallelism)
        if self._dummy is None or self._dummy[0] != params:
            self._dummy = (params, await self._hash(secrets.token_urlsafe(16)))
        return self._dummy[1]

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; without a hash, one is verified anyway (same time spent)."""
        if password_hash is None:
            await asyncio.to_thread(self._check, await self._dummy_hash(), password)
            return False
        return await asyncio.to_thread(self._check, password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _rate_limit(self, event: str, email: str | None, ip: str | None, *, limited_event: str,
                          what: str, user_id: int | None = None) -> None:
        """RateLimited (logged as ``limited_event``) when the account or the address had too many
        ``event`` entries within the window; ``retry_after`` is when the oldest one that counts
        leaves it."""
        now = _now()
        since = _ts(now - RATE_WINDOW)
        waits: list[tuple[float, str]] = []
        for column, value, limit, whose in (("email", email, ACCOUNT_LIMIT, "for this account"),
                                           ("ip", ip, ADDRESS_LIMIT, "from this address")):
            if value is None:
                continue
            at = await self.db.fetchval(
                f'SELECT "at" FROM crm_security_log WHERE "{column}" = ? AND "event" = ? AND "at" > ? '
                'ORDER BY "at" DESC LIMIT 1 OFFSET ?', (value, event, since, limit - 1))
            if at is not None:
                waits.append(((_time(at) + RATE_WINDOW - now).total_seconds(), whose))
        if waits:
            seconds, whose = max(waits)
            retry_after = max(1, math.ceil(seconds))
            await self.log(limited_event, user_id=user_id, email=email, ip=ip,
                           detail={"retry_after": retry_after, "limit": "account" if whose.startswith("for") else "address"})
            raise RateLimited(f"too many {what} {whose}; try again in {retry_after} seconds", retry_after)

    async def _login_row(self, email: str) -> tuple | None:
        """(id, email, active, password_hash) of the live user with this e-mail (case-insensitive)."""
        if _name(email) is None:
            return None
        key = _email_key(email)
        rows = await self.db.fetch(
            f'SELECT u."id", u."email", u."active", a."password_hash" FROM {self._users} u '
            'LEFT JOIN crm_user_auth a ON a."user_id" = u."id" '
            'WHERE lower(u."email") = ? AND u."deleted_at" IS NULL ORDER BY u."id"', (key,))
        if not rows:
            return None
        exact = [r for r in rows if r[1] == str(email).strip()]
        return (exact or rows)[0]

    async def _user_id(self, user_id: Any) -> int:
        """The id of a live user record; NotFound otherwise."""
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id < 2**63:
            raise NotFound("user", user_id)
        found = await self.db.fetchval(
            f'SELECT "id" FROM {self._users} WHERE "id" = ? AND "deleted_at" IS NULL', (user_id,))
        if found is None:
            raise NotFound("user", user_id)
        return found

    async def _known_role(self, name: Any, field: str = "role") -> str:
        if _name(name) in BUILTIN_ROLES:
            return name
        if _name(name) and await self.db.fetchval('SELECT "name" FROM crm_role WHERE "name" = ?', (name,)):
            return name
        known = ", ".join(r.name for r in await self.roles())
        raise _invalid(field, "unknown_role", f"unknown role {name!r}; roles are: {known}")

    async def _team_ids_by_name(self, names: Any) -> list[int]:
        if isinstance(names, str) or not all(_name(n) is not None for n in names):
            raise _invalid("teams", "invalid", "teams are a list of team names (one line each)")
        names = list(dict.fromkeys(n.strip() for n in names))
        if not names:
            return []
        found = dict(await self.db.fetch(
            f'SELECT "name", "id" FROM crm_team WHERE "name" IN ({", ".join("?" for _ in names)})', names))
        missing = [n for n in names if n not in found]
        if missing:
            known = ", ".join(t["name"] for t in await self.teams()) or "none yet (crm teams add NAME)"
            raise _invalid("teams", "unknown_team", f"unknown team {', '.join(map(repr, missing))}; teams are: {known}")
        return [found[n] for n in names]

    async def _write_teams(self, user_id: int, team_ids: list[int]) -> None:
        await self.db.execute('DELETE FROM crm_team_member WHERE "user_id" = ?', (user_id,))
        if team_ids:
            await self.db.executemany(
                'INSERT INTO crm_team_member ("team_id", "user_id", "position") VALUES (?, ?, ?)',
                [(team, user_id, position) for position, team in enumerate(team_ids)])

    async def _end_sessions(self, user_id: int, *, keep: str | None = None) -> None:
        if keep:
            await self.db.execute('DELETE FROM crm_session WHERE "user_id" = ? AND "token_hash" <> ?',
                                  (user_id, _sha256(keep)))
        else:
            await self.db.execute('DELETE FROM crm_session WHERE "user_id" = ?', (user_id,))

    async def _store_password(self, user_id: int, password_hash: str) -> None:
        """Set a user's password hash (a user without a login row gets one, as an agent); unused
        reset links stop working."""
        now = _ts(_now())
        await self.db.execute(
            'INSERT INTO crm_user_auth ("user_id", "role", "password_hash", "password_changed_at", "created_at") '
            'VALUES (?, ?, ?, ?, ?) ON CONFLICT ("user_id") DO UPDATE SET '
            '"password_hash" = excluded."password_hash", "password_changed_at" = excluded."password_changed_at"',
            (user_id, "agent", password_hash, now, now))
        await self.db.execute(
            'UPDATE crm_password_reset SET "used_at" = ? WHERE "user_id" = ? AND "used_at" IS NULL', (now, user_id))

    async def _is_last_admin(self, user_id: int) -> bool:
        """Whether ``user_id`` is the only active admin."""
        rows = await self.db.fetch(
            f'SELECT a."user_id" FROM crm_user_auth a JOIN {self._users} u ON u."id" = a."user_id" '
            'WHERE a."role" = ? AND u."deleted_at" IS NULL AND u."active" = ?', ("admin", True))
        return [r[0] for r in rows] == [user_id]

    # -- actors ---------------------------------------------------------------------------------

    async def actor_for_user(self, user_id: int, *, via: str = "system") -> Actor:
        """The actor of an active user (role, teams, grants). Unauthenticated when inactive/unknown."""
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id < 2**63:
            raise Unauthenticated("the user no longer exists")
        row = await self.db.fetchrow(self._actor_sql("user"), (user_id,))
        return self._make_actor(row, via=via)

    async def session_actor(self, token: str, *, ip: str | None = None) -> tuple[Actor, str]:
        """(actor, csrf_token) of a live session; Unauthenticated otherwise."""
        if not isinstance(token, str) or not token:
            raise Unauthenticated("no session")
        token_hash = _sha256(token)
        row = await self.db.fetchrow(self._actor_sql("session"), (token_hash,))
        if row is None:
            raise Unauthenticated("unknown session (it ended or never existed); log in again")
        _, csrf, expires_at, last_seen_at = row[:4]
        now = _now()
        if _time(expires_at) <= now or _time(last_seen_at) + SESSION_IDLE <= now:
            await self.db.execute('DELETE FROM crm_session WHERE "token_hash" = ?', (token_hash,))
            raise Unauthenticated("the session expired; log in again")
        actor = self._make_actor(row[4:], via="session")
        if _time(last_seen_at) + SESSION_TOUCH <= now:
            await self.db.execute(
                'UPDATE crm_session SET "last_seen_at" = ?, "ip" = COALESCE(?, "ip") WHERE "token_hash" = ?',
                (_ts(now), ip, token_hash))
        return actor, csrf

    async def token_actor(self, token: str, *, ip: str | None = None) -> Actor:
        """The actor of a valid API token; Unauthenticated (revoked, expired, unknown, user disabled)."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise Unauthenticated(f"unknown token (API tokens start with {TOKEN_PREFIX}; make one with crm tokens create)")
        row = await self.db.fetchrow(self._actor_sql("token"), (_sha256(token),))
        if row is None:
            raise Unauthenticated("unknown token")
        token_id, _, read_only, expires_at, revoked_at, last_used_at = row[:6]
        now = _now()
        if revoked_at is not None:
            raise Unauthenticated(f"the token was revoked on {_shown(_time(revoked_at))}")
        if expires_at is not None and _time(expires_at) <= now:
            raise Unauthenticated(f"the token expired on {_shown(_time(expires_at))}")
        actor = self._make_actor(row[6:], via="token", read_only=read_only, token_id=token_id)
        if last_used_at is None or _time(last_used_at) + TOKEN_TOUCH <= now:
            async with self.db.transaction():
                # Conditional: of several processes seeing the same stale time, one writes and logs.
                touched = await self.db.fetchrow(
                    'UPDATE crm_api_token SET "last_used_at" = ? WHERE "id" = ? '
                    'AND ("last_used_at" IS NULL OR "last_used_at" <= ?) RETURNING "id"',
                    (_ts(now), token_id, _ts(now - TOKEN_TOUCH)))
                if touched is not None:
                    await self.log("token_used", user_id=actor.user_id, actor=actor, ip=ip, detail={"token_id": token_id})
        return actor

    # -- users (their records are "user" records; this adds role, teams, password) ---------------

    async def create_user(
        self, *, name: str, email: str, password: str | None = None, role: str = "agent",
        teams: list[str] = (), actor: Actor, fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new active user: its record (owned by itself), role, teams and optional password.
        Needs ``manage_users``. Returns :meth:`user` of it. ValidationError naming the field.

        ``fields``: other values of the user record (``phone``, ``locale``, ``time_zone`` ...).
        """
        self._require(actor, "manage_users")
        role = await self._known_role(role)
        team_ids = await self._team_ids_by_name(teams)
        if isinstance(email, str):  # e-mail addresses are logins: unique whatever their letter case
            same = await self._login_row(email)
            if same is not None and same[1] != email.strip():
                raise _invalid("email", "unique", f"another user already has this e-mail address ({same[1]})")
        if password is not None:
            check_password(password, email)
        password_hash = await self._hash(password) if password is not None else None
        data = {**(fields or {}), "name": name, "email": email, "active": True}
        now = _ts(_now())
        async with self.db.transaction():
            record = await self.deployment.records.as_actor(actor).create("user", data)
            user_id = record["id"]
            await self._write_teams(user_id, team_ids)
            # Owned by itself, in its primary team (the owner's first team follows the owner).
            await self.deployment.records.update("user", user_id, {"owner_id": user_id})
            await self.db.execute(
                'INSERT INTO crm_user_auth ("user_id", "role", "password_hash", "password_changed_at", "created_at") '
                "VALUES (?, ?, ?, ?, ?)", (user_id, role, password_hash, now if password_hash else None, now))
            await self.log("user_created", user_id=user_id, actor=actor, email=record["email"],
                           detail={"role": role, "teams": [t.strip() for t in teams], "password": password is not None})
        return await self.user(user_id)

    async def _describe(self, where: str, params: tuple) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            f'SELECT u."id", u."name", u."email", u."active", u."locale", u."time_zone", a."role", '
            f'a."password_hash" IS NOT NULL FROM {self._users} u LEFT JOIN crm_user_auth a ON a."user_id" = u."id" '
            f'WHERE u."deleted_at" IS NULL{where} ORDER BY u."id"', params)
        if not rows:
            return []
        ids = [r[0] for r in rows]
        teams: dict[int, list[str]] = {}
        member_sql = ('SELECT m."user_id", t."name" FROM crm_team_member m JOIN crm_team t ON t."id" = m."team_id" ')
        if len(ids) <= 500:
            member_sql += f'WHERE m."user_id" IN ({", ".join("?" for _ in ids)}) '
            member_params: list[Any] = ids
        else:
            member_params = []
        for user_id, team in await self.db.fetch(member_sql + 'ORDER BY m."user_id", m."position", t."id"', member_params):
            teams.setdefault(user_id, []).append(team)
        return [{
            "id": r[0], "name": r[1], "email": r[2], "active": bool(r[3]), "role": r[6],
            "teams": teams.get(r[0], []), "has_password": bool(r[7]), "locale": r[4], "time_zone": r[5],
        } for r in rows]

    async def user(self, user_id: int) -> dict[str, Any]:
        """``{id, name, email, active, role, teams: [name...], has_password, locale, time_zone}``; NotFound."""
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id < 2**63:
            raise NotFound("user", user_id)
        found = await self._describe(' AND u."id" = ?', (user_id,))
        if not found:
            raise NotFound("user", user_id)
        return found[0]

    async def user_by_email(self, email: str) -> dict[str, Any]:
        """:meth:`user` of the user with this e-mail address (case-insensitive); NotFound."""
        row = await self._login_row(email) if isinstance(email, str) else None
        if row is None:
            raise NotFound("user", email)
        return await self.user(row[0])

    async def users(self) -> list[dict[str, Any]]:
        """Every user (not in the trash), by id."""
        return await self._describe("", ())

    async def set_role(self, user_id: int, role: str, *, actor: Actor) -> dict[str, Any]:
        """Needs ``manage_users``; logged (``role_changed``). The last active admin keeps the role."""
        self._require(actor, "manage_users")
        before = await self.user(user_id)
        role = await self._known_role(role)
        if before["role"] == "admin" and role != "admin" and before["active"] and await self._is_last_admin(user_id):
            raise _invalid("role", "last_admin",
                           f"{before['email']} is the last active admin; make another user admin first")
        if before["role"] != role:
            async with self.db.transaction():
                await self.db.execute(
                    'INSERT INTO crm_user_auth ("user_id", "role", "created_at") VALUES (?, ?, ?) '
                    'ON CONFLICT ("user_id") DO UPDATE SET "role" = excluded."role"', (user_id, role, _ts(_now())))
                await self.log("role_changed", user_id=user_id, actor=actor, email=before["email"],
                               detail={"from": before["role"], "to": role})
        return await self.user(user_id)

    async def set_teams(self, user_id: int, teams: list[str], *, actor: Actor) -> dict[str, Any]:
        """Replace a user's teams (by name; the first is their primary team). Logged."""
        self._require(actor, "manage_users")
        before = await self.user(user_id)
        team_ids = await self._team_ids_by_name(teams)
        async with self.db.transaction():
            await self._write_teams(user_id, team_ids)
            # The user's own record follows its primary team.
            await self.deployment.records.update("user", user_id, {"team_id": team_ids[0] if team_ids else None})
            after = await self.user(user_id)
            if after["teams"] != before["teams"]:
                await self.log("teams_changed", user_id=user_id, actor=actor, email=before["email"],
                               detail={"from": before["teams"], "to": after["teams"]})
        return after

    async def set_active(self, user_id: int, active: bool, *, actor: Actor) -> dict[str, Any]:
        """Disable (sessions ended, tokens stop working) or enable a user. Logged. The last
        active admin cannot be disabled."""
        self._require(actor, "manage_users")
        if not isinstance(active, bool):
            raise _invalid("active", "invalid", "active is true or false")
        before = await self.user(user_id)
        if not active and before["role"] == "admin" and before["active"] and await self._is_last_admin(user_id):
            raise _invalid("active", "last_admin",
                           f"{before['email']} is the last active admin; make another user admin first")
        async with self.db.transaction():
            if before["active"] != active:
                await self.deployment.records.update("user", user_id, {"active": active})
                await self.log("user_enabled" if active else "user_disabled", user_id=user_id, actor=actor,
                               email=before["email"])
            if not active:
                await self._end_sessions(user_id)
        return await self.user(user_id)

    async def set_password(self, user_id: int, password: str, *, actor: Actor, keep_session: str | None = None) -> None:
        """An admin sets a password (``manage_users``, or the user themself). Ends the user's
        sessions (but ``keep_session``, the caller's own)."""
        if actor.user_id is None or actor.user_id != user_id:
            self._require(actor, "manage_users")
        elif actor.read_only:
            raise Forbidden("a read-only token cannot change this")
        target = await self.user(user_id)
        check_password(password, target["email"])
        password_hash = await self._hash(password)
        async with self.db.transaction():
            await self._store_password(user_id, password_hash)
            await self._end_sessions(user_id, keep=keep_session)
            await self.log("password_changed", user_id=user_id, actor=actor, email=target["email"],
                           detail={"by": "self" if actor.user_id == user_id else "admin"})

    async def hash_password(self, password: str) -> str:
        """An argon2id hash of a password that passes the policy (for loaders giving many users
        one password: hash once, then :meth:`set_password_hash`)."""
        return await self._hash(check_password(password))

    async def set_password_hash(self, user_id: int, password_hash: str, *, actor: Actor) -> None:
        """Give a user a password already hashed by :meth:`hash_password` (``manage_users``).
        Ends the user's sessions. Logged as ``password_changed``."""
        self._require(actor, "manage_users")
        if not isinstance(password_hash, str) or not password_hash.startswith("$argon2"):
            raise _invalid("password_hash", "invalid", "expected an argon2 hash made by hash_password()")
        target = await self.user(user_id)
        async with self.db.transaction():
            await self._store_password(user_id, password_hash)
            await self._end_sessions(user_id)
            await self.log("password_changed", user_id=user_id, actor=actor, email=target["email"],
                           detail={"by": "admin"})

    async def change_password(self, actor: Actor, current: str, new: str, *, keep_session: str | None = None) -> None:
        """A user changes their own password, giving the current one. Other sessions end.
        A wrong current password counts as a failed login (and is rate limited like one)."""
        if actor.user_id is None:
            raise Forbidden("only a user can change their own password")
        if actor.read_only:
            raise Forbidden("a read-only token cannot change this")
        row = await self.db.fetchrow(
            f'SELECT u."email", a."password_hash" FROM {self._users} u '
            'LEFT JOIN crm_user_auth a ON a."user_id" = u."id" WHERE u."id" = ? AND u."deleted_at" IS NULL',
            (actor.user_id,))
        if row is None:
            raise NotFound("user", actor.user_id)
        email, password_hash = row
        key = _email_key(email)
        await self._rate_limit("login_failed", key, None, limited_event="login_rate_limited",
                               what="failed password checks", user_id=actor.user_id)
        ok = isinstance(current, str) and len(current) <= PASSWORD_MAX and await self._verify(password_hash, current)
        if not ok:
            await self.log("login_failed", user_id=actor.user_id, actor=actor, email=key,
                           detail={"reason": "wrong_current_password"})
            raise Unauthenticated("the current password is wrong")
        check_password(new, email)
        new_hash = await self._hash(new)
        async with self.db.transaction():
            await self._store_password(actor.user_id, new_hash)
            await self._end_sessions(actor.user_id, keep=keep_session)
            await self.log("password_changed", user_id=actor.user_id, actor=actor, email=key, detail={"by": "self"})

    # -- login, sessions ----------------------------------------------------------------------

    async def login(self, email: str, password: str, *, ip: str | None, user_agent: str | None = None) -> SessionGrant:
        """Check a password and open a session. Unauthenticated ("wrong e-mail or password", the
        same message whether the account exists or not); RateLimited after too many failures for
        the account or the address. Every attempt is logged."""
        key = _email_key(email)
        await self._dummy_hash()  # made before the first check, so no attempt takes longer for it
        row = await self._login_row(key) if key else None
        user_id = row[0] if row else None
        await self._rate_limit("login_failed", key, ip, limited_event="login_rate_limited", what="failed logins",
                               user_id=user_id)
        reason = None
        if not isinstance(password, str) or len(password) > PASSWORD_MAX:
            reason = "invalid_password"
        elif row is None:
            await self._verify(None, password)  # as long as a real check
            reason = "unknown_email"
        elif row[3] is None:
            await self._verify(None, password)
            reason = "no_password"
        elif not await self._verify(row[3], password):
            reason = "wrong_password"
        elif not row[2]:
            reason = "disabled"
        if reason is not None:
            await self.log("login_failed", user_id=user_id, email=key, ip=ip, detail={"reason": reason})
            raise Unauthenticated("wrong e-mail or password")
        if self.hasher.check_needs_rehash(row[3]):
            await self.db.execute('UPDATE crm_user_auth SET "password_hash" = ? WHERE "user_id" = ?',
                                  (await self._hash(password), user_id))
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = _now()
        expires = now + SESSION_LIFETIME
        async with self.db.transaction():
            await self.db.execute(
                'DELETE FROM crm_session WHERE "expires_at" <= ? OR ("user_id" = ? AND "last_seen_at" <= ?)',
                (_ts(now), user_id, _ts(now - SESSION_IDLE)))
            await self.db.execute(
                'INSERT INTO crm_session ("token_hash", "csrf_token", "user_id", "created_at", "expires_at", '
                '"last_seen_at", "ip", "user_agent") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                (_sha256(token), csrf, user_id, _ts(now), _ts(expires), _ts(now), ip, (user_agent or None) and user_agent[:500]))
            await self.log("login", user_id=user_id, email=key, ip=ip,
                           detail={"user_agent": user_agent[:200]} if user_agent else None)
        return SessionGrant(token=token, csrf_token=csrf, user_id=user_id, expires_at=expires)

    async def logout(self, token: str) -> None:
        """End a session (nothing happens for an unknown one). Logged."""
        if not isinstance(token, str) or not token:
            return
        async with self.db.transaction():
            row = await self.db.fetchrow('DELETE FROM crm_session WHERE "token_hash" = ? RETURNING "user_id", "ip"',
                                         (_sha256(token),))
            if row is not None:
                await self.log("logout", user_id=row[0], ip=row[1])

    # -- password reset -------------------------------------------------------------------------

    async def _new_reset(self, user_id: int) -> str:
        token = secrets.token_urlsafe(32)
        now = _now()
        await self.db.execute(
            'INSERT INTO crm_password_reset ("token_hash", "user_id", "created_at", "expires_at") VALUES (?, ?, ?, ?)',
            (_sha256(token), user_id, _ts(now), _ts(now + RESET_LIFETIME)))
        return token

    @staticmethod
    def _reset_url(base_url: str, token: str) -> str:
        return f"{str(base_url).rstrip('/')}/password/reset/{token}"

    async def request_password_reset(self, email: str, *, ip: str | None, base_url: str | None = None) -> None:
        """Make a one-time reset token and hand the link to ``crm_deliver_password_reset``
        implementations. Says nothing about whether the account exists. Rate limited like logins.

        The link points to the ``base_url`` setting, else to ``base_url`` given (the API gives a
        loopback request's own address); with neither, nothing is sent and the log says why."""
        base_url = self.deployment.settings.base_url or base_url
        key = _email_key(email)
        row = await self._login_row(key) if key else None
        user_id = row[0] if row else None
        await self._rate_limit("password_reset_requested", key, ip, limited_event="password_reset_rate_limited",
                               what="password reset requests", user_id=user_id)
        sent = row is not None and bool(row[2]) and bool(base_url)
        reason = "unknown_email" if row is None else "disabled" if not row[2] else None if base_url else "no_base_url"
        if reason == "no_base_url":
            log.warning("password reset for %s not sent: set base_url in crm.toml to the web app's address", key)
        async with self.db.transaction():
            await self.log("password_reset_requested", user_id=user_id, email=key, ip=ip,
                           detail={"sent": sent, **({"reason": reason} if reason else {})})
            token = await self._new_reset(user_id) if sent else None
        if token is None:
            return
        link = self._reset_url(base_url, token)
        record = await self.deployment.records.get("user", user_id)
        await self._deliver(record, link)

    async def _deliver(self, record: dict[str, Any], link: str) -> None:
        """Call every ``crm_deliver_password_reset``; a failing one is logged, not raised."""
        kwargs = {"user": record, "link": link, "deployment": self.deployment}
        for impl in self.deployment.pm.hook.crm_deliver_password_reset.get_hookimpls():
            try:
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r failed to deliver a password reset link", impl.plugin_name)

    async def reset_link(self, user_id: int, *, base_url: str, actor: Actor) -> str:
        """A one-time reset link an admin hands over (``crm users reset-link``); valid one hour."""
        self._require(actor, "manage_users")
        target = await self.user(user_id)
        async with self.db.transaction():
            token = await self._new_reset(user_id)
            await self.log("password_reset_link", user_id=user_id, actor=actor, email=target["email"])
        return self._reset_url(base_url, token)

    async def reset_password(self, token: str, password: str, *, ip: str | None) -> None:
        """Use a reset token once: set the password, end the user's sessions. Unauthenticated when
        the token is unknown, used or expired; ValidationError for a refused password."""
        if not isinstance(token, str) or not token:
            raise Unauthenticated("unknown reset link")
        token_hash = _sha256(token)
        row = await self.db.fetchrow(
            f'SELECT p."user_id", p."expires_at", p."used_at", u."email", u."active" FROM crm_password_reset p '
            f'LEFT JOIN {self._users} u ON u."id" = p."user_id" AND u."deleted_at" IS NULL WHERE p."token_hash" = ?',
            (token_hash,))
        if row is None:
            raise Unauthenticated("unknown reset link")
        user_id, expires_at, used_at, email, active = row
        if used_at is not None:
            raise Unauthenticated("the reset link was already used; ask for a new one")
        if _time(expires_at) <= _now():
            raise Unauthenticated(f"the reset link expired on {_shown(_time(expires_at))}; ask for a new one")
        if email is None or not active:
            raise Unauthenticated("the user is disabled")
        check_password(password, email)
        password_hash = await self._hash(password)
        async with self.db.transaction():
            used = await self.db.fetchrow(  # one use only, even when two requests race
                'UPDATE crm_password_reset SET "used_at" = ? WHERE "token_hash" = ? AND "used_at" IS NULL RETURNING "user_id"',
                (_ts(_now()), token_hash))
            if used is None:
                raise Unauthenticated("the reset link was already used; ask for a new one")
            await self._store_password(user_id, password_hash)
            await self._end_sessions(user_id)
            await self.log("password_reset", user_id=user_id, email=_email_key(email), ip=ip)

    # -- API tokens -----------------------------------------------------------------------------

    @staticmethod
    def _token_info(row: tuple) -> dict[str, Any]:
        return {
            "id": row[0], "user_id": row[1], "name": row[2], "prefix": row[3], "read_only": bool(row[4]),
            "created_at": _time(row[5]), "expires_at": _time(row[6]), "last_used_at": _time(row[7]),
            "revoked_at": _time(row[8]),
        }

    _TOKEN_COLUMNS = ('"id", "user_id", "name", "prefix", "read_only", "created_at", "expires_at", '
                      '"last_used_at", "revoked_at"')

    async def create_token(
        self, user_id: int, name: str, *, read_only: bool = False, expires_at: dt.datetime | None = None,
        actor: Actor,
    ) -> NewToken:
        """A personal API token for ``user_id`` (the actor's own, or any with ``manage_tokens``)."""
        if actor.read_only:
            raise Forbidden("a read-only token cannot make tokens")
        if actor.user_id is None or actor.user_id != user_id:
            self._require(actor, "manage_tokens")
        target = await self.user(user_id)
        errors = []
        if not isinstance(name, str) or not name.strip():
            errors.append(FieldError("name", "required", "give the token a name saying what it is for"))
        elif len(name.strip()) > NAME_MAX or _name(name) is None:
            errors.append(FieldError("name", "invalid", f"a token name is one line of at most {NAME_MAX} characters"))
        if expires_at is not None:
            if not isinstance(expires_at, dt.datetime) or expires_at.tzinfo is None:
                errors.append(FieldError("expires_at", "invalid", "an expiry is a date and time with a time zone"))
            elif expires_at <= _now():
                errors.append(FieldError("expires_at", "in_past", "the expiry must be in the future"))
        if errors:
            raise ValidationError(errors)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = _ts(_now())
        async with self.db.transaction():
            row = await self.db.fetchrow(
                'INSERT INTO crm_api_token ("user_id", "name", "token_hash", "prefix", "read_only", "created_at", '
                f'"expires_at") VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {self._TOKEN_COLUMNS}',
                (user_id, name.strip(), _sha256(token), token[:len(TOKEN_PREFIX) + 6], bool(read_only), now,
                 _ts(expires_at) if expires_at else None))
            info = self._token_info(row)
            await self.log("token_created", user_id=user_id, actor=actor, email=target["email"],
                           detail={"token_id": info["id"], "name": info["name"], "read_only": info["read_only"],
                                   "expires_at": _ts(expires_at) if expires_at else None})
        return NewToken(token=token, info=info)

    async def tokens(self, *, user_id: int | None = None) -> list[dict[str, Any]]:
        """``{id, user_id, name, prefix, read_only, created_at, expires_at, last_used_at, revoked_at}``."""
        if user_id is None:
            rows = await self.db.fetch(f'SELECT {self._TOKEN_COLUMNS} FROM crm_api_token ORDER BY "id"')
        else:
            rows = await self.db.fetch(
                f'SELECT {self._TOKEN_COLUMNS} FROM crm_api_token WHERE "user_id" = ? ORDER BY "id"', (user_id,))
        return [self._token_info(r) for r in rows]

    async def revoke_token(self, token_id: int, *, actor: Actor) -> None:
        """Revoke a token (one's own, or any with ``manage_tokens``); revoking twice does nothing.
        Another user's token is NotFound to an actor who may not manage tokens."""
        if actor.read_only:
            raise Forbidden("a read-only token cannot revoke tokens")
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 < token_id < 2**63:
            raise NotFound("token", token_id)
        row = await self.db.fetchrow('SELECT "user_id", "revoked_at", "name" FROM crm_api_token WHERE "id" = ?',
                                     (token_id,))
        if row is None or (row[0] != actor.user_id and not actor.has("manage_tokens")):
            raise NotFound("token", token_id)
        if row[1] is not None:
            return
        async with self.db.transaction():
            await self.db.execute('UPDATE crm_api_token SET "revoked_at" = ? WHERE "id" = ? AND "revoked_at" IS NULL',
                                  (_ts(_now()), token_id))
            await self.log("token_revoked", user_id=row[0], actor=actor, detail={"token_id": token_id, "name": row[2]})

    # -- roles and teams ------------------------------------------------------------------------

    async def roles(self) -> list[Role]:
        """Built-in roles (as an admin changed them, if so), then the others by name."""
        stored = {name: self._role_of(name, definition)[0]
                  for name, definition in await self.db.fetch('SELECT "name", "definition" FROM crm_role ORDER BY "name"')}
        merged = [stored.pop(name, role) for name, role in BUILTIN_ROLES.items()]
        return merged + list(stored.values())

    async def role(self, name: str) -> Role:
        """A role by name; NotFound("role", name)."""
        definition = await self.db.fetchval('SELECT "definition" FROM crm_role WHERE "name" = ?', (name,)) \
            if _name(name) else None
        if definition is not None:
            return self._role_of(name, definition)[0]
        if isinstance(name, str) and name in BUILTIN_ROLES:
            return BUILTIN_ROLES[name]
        raise NotFound("role", name)

    async def save_role(self, role: Role, *, actor: Actor) -> Role:
        """Create or replace a role (``manage_roles``); a built-in role may be changed, not deleted. Logged.

        Checked: the role's shape (:func:`check_role`), that every entity type named exists
        (``*``: all others), that every field named exists, and that grants are declared
        permissions (or ``*``). ValidationError naming each wrong part.
        """
        self._require(actor, "manage_roles")
        role = check_role(msgspec.to_builtins(role) if isinstance(role, Role) else role)
        registry = self.deployment.registry
        errors = []
        for entity_name in role.entities:
            if entity_name != "*" and registry.get(entity_name) is None:
                errors.append(FieldError(f"entities.{entity_name}", "unknown_entity",
                                         f"unknown entity type {entity_name!r}; known: *, {', '.join(sorted(registry.entities))}"))
        for entity_name, rules in role.fields.items():
            entity = registry.get(entity_name) if entity_name != "*" else None
            if entity is None:
                errors.append(FieldError(f"fields.{entity_name}", "unknown_entity",
                                         f"unknown entity type {entity_name!r}; known: {', '.join(sorted(registry.entities))}"))
                continue
            names = {f.name for f in entity.fields}
            for field_name in rules:
                if field_name not in names:
                    errors.append(FieldError(f"fields.{entity_name}.{field_name}", "unknown_field",
                                             f"{entity_name} has no field {field_name!r}; fields: {', '.join(sorted(names))}"))
        declared = self.deployment.permissions
        for grant in role.grants:
            if grant != "*" and grant not in declared:
                errors.append(FieldError("grants", "unknown_permission",
                                         f"unknown permission {grant!r}; declared: *, {', '.join(sorted(declared))}"))
        if errors:
            raise ValidationError(errors)
        role = msgspec.structs.replace(role, builtin=role.name in BUILTIN_ROLES)
        definition = msgspec.json.encode(role).decode()
        async with self.db.transaction():
            existed = await self.db.fetchval('SELECT "name" FROM crm_role WHERE "name" = ?', (role.name,))
            await self.db.execute(
                'INSERT INTO crm_role ("name", "definition", "updated_at") VALUES (?, ?, ?) '
                'ON CONFLICT ("name") DO UPDATE SET "definition" = excluded."definition", "updated_at" = excluded."updated_at"',
                (role.name, definition, _ts(_now())))
            await self.log("role_saved", actor=actor, detail={
                "name": role.name, "new": existed is None and role.name not in BUILTIN_ROLES,
                "definition": msgspec.to_builtins(role)})
        return self._role_of(role.name, definition)[0]

    async def delete_role(self, name: str, *, actor: Actor) -> None:
        """Refused while users have it, and for built-in roles."""
        self._require(actor, "manage_roles")
        if isinstance(name, str) and name in BUILTIN_ROLES:
            raise _invalid("name", "builtin", f"{name!r} is a built-in role: it can be changed, not deleted")
        await self.role(name)  # NotFound
        users = await self.db.fetch(
            f'SELECT u."email" FROM crm_user_auth a JOIN {self._users} u ON u."id" = a."user_id" '
            'WHERE a."role" = ? AND u."deleted_at" IS NULL ORDER BY u."id"', (name,))
        if users:
            shown = ", ".join(r[0] for r in users[:5]) + (" ..." if len(users) > 5 else "")
            raise _invalid("name", "in_use", f"{len(users)} user(s) have the role {name!r} ({shown}); give them another role first")
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_role WHERE "name" = ?', (name,))
            await self.log("role_deleted", actor=actor, detail={"name": name})

    async def teams(self) -> list[dict[str, Any]]:
        """``{id, name, members: [user_id...]}``, by name; members by their place in the team list."""
        teams = {r[0]: {"id": r[0], "name": r[1], "members": []}
                 for r in await self.db.fetch('SELECT "id", "name" FROM crm_team ORDER BY "name"')}
        for team_id, user_id in await self.db.fetch(
                'SELECT "team_id", "user_id" FROM crm_team_member ORDER BY "team_id", "user_id"'):
            if team_id in teams:
                teams[team_id]["members"].append(user_id)
        return list(teams.values())

    async def create_team(self, name: str, *, actor: Actor) -> dict[str, Any]:
        """A new team (``manage_roles``); names are unique. Logged (``team_created``)."""
        self._require(actor, "manage_roles")
        if not isinstance(name, str) or not name.strip():
            raise _invalid("name", "required", "a team needs a name")
        name = name.strip()
        if len(name) > NAME_MAX or _name(name) is None:
            raise _invalid("name", "invalid", f"a team name is one line of at most {NAME_MAX} characters")
        if await self.db.fetchval('SELECT "id" FROM crm_team WHERE "name" = ?', (name,)) is not None:
            raise _invalid("name", "unique", f"a team named {name!r} already exists")
        try:
            async with self.db.transaction():
                team_id = await self.db.fetchval(
                    'INSERT INTO crm_team ("name", "created_at") VALUES (?, ?) RETURNING "id"', (name, _ts(_now())))
                await self.log("team_created", actor=actor, detail={"team_id": team_id, "name": name})
        except IntegrityError:
            raise _invalid("name", "unique", f"a team named {name!r} already exists") from None
        return {"id": team_id, "name": name, "members": []}

    async def delete_team(self, name: str, *, actor: Actor) -> None:
        """Delete a team (``manage_roles``): refused while it has members (move them first with
        :meth:`set_teams`). Records that named the team keep its id. Logged (``team_deleted``)."""
        self._require(actor, "manage_roles")
        team_id = await self.db.fetchval('SELECT "id" FROM crm_team WHERE "name" = ?', (name,)) \
            if _name(name) else None
        if team_id is None:
            raise NotFound("team", name)
        members = await self.db.fetchval('SELECT COUNT(*) FROM crm_team_member WHERE "team_id" = ?', (team_id,))
        if members:
            raise _invalid("name", "in_use", f"team {name!r} has {members} member(s); move them to other teams first")
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_team WHERE "id" = ?', (team_id,))
            await self.log("team_deleted", actor=actor, detail={"team_id": team_id, "name": name})

    # -- security log ---------------------------------------------------------------------------

    async def log(
        self, event: str, *, user_id: int | None = None, actor: Actor | None = None, email: str | None = None,
        ip: str | None = None, detail: dict[str, Any] | None = None,
    ) -> None:
        """Append to the security log: login, login_failed, login_rate_limited, logout,
        password_changed, password_reset_requested, password_reset_rate_limited, password_reset_link
        (an admin made a link), password_reset,
        user_created, user_disabled, user_enabled, role_changed, teams_changed, role_saved,
        role_deleted, team_created, team_deleted, token_created, token_revoked, token_used.

        ``actor`` gives ``actor_id`` (its user) and ``detail.via`` (session, token, cli ...)."""
        detail = dict(detail or {})
        if actor is not None:
            detail.setdefault("via", actor.via)
        await self.db.execute(
            'INSERT INTO crm_security_log ("at", "event", "user_id", "actor_id", "email", "ip", "detail") '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_ts(_now()), event, user_id, actor.user_id if actor is not None else None,
             _email_key(email) if email else None, ip, msgspec.json.encode(detail).decode() if detail else None))

    async def security_log(
        self, *, event: str | None = None, user_id: int | None = None, before_id: int | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first: ``{id, at, event, user_id, actor_id, email, ip, detail}``. Page on with
        ``before_id`` = the last id seen. ``limit``: 1 to 1000."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise _invalid("limit", "invalid", "limit is a whole number from 1 to 1000")
        if event is not None and _name(event) is None:
            return []  # no event is named so
        rows = await self.db.newest('"id", "at", "event", "user_id", "actor_id", "email", "ip", "detail"',
                                    "crm_security_log", limit=limit, before_id=before_id, event=event, user_id=user_id)
        return [{
            "id": r[0], "at": _time(r[1]), "event": r[2], "user_id": r[3], "actor_id": r[4], "email": r[5],
            "ip": r[6], "detail": msgspec.json.decode(r[7]) if r[7] else {},
        } for r in rows]
