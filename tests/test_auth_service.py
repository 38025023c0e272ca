"""The auth service: users, passwords, sessions, API tokens, password reset, roles, teams and the
security log, on SQLite and PostgreSQL. Secrets are only ever stored as hashes.

Most tests give the deployment cheap argon2 parameters (the real ones cost ~0.1 s a hash); one
test checks that a login re-hashes a password made with other parameters.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from argon2 import PasswordHasher

import crmcore
from crmcore import SYSTEM, FieldError, Forbidden, NotFound, ValidationError, hookimpl
from crmcore.auth import RateLimited, Role, Scope, Unauthenticated
from crmcore.auth.service import _sha256, _ts

UTC = dt.timezone.utc
PASSWORD = "correct horse battery"
CHEAP = dict(time_cost=1, memory_cost=1024, parallelism=1)


class Mailbox:
    """A plugin delivering password reset links into a list (the second one always fails)."""

    PLUGIN = crmcore.PluginInfo(name="mailbox", version="1.0", description="reset links in a list")
    sent: list[tuple[str, str]] = []

    @staticmethod
    @hookimpl
    def crm_deliver_password_reset(user, link):
        Mailbox.sent.append((user["email"], link))


class BrokenMailer:
    PLUGIN = crmcore.PluginInfo(name="broken_mailer", version="1.0", description="fails")

    @staticmethod
    @hookimpl
    async def crm_deliver_password_reset(user, link, deployment):
        raise RuntimeError("smtp is down")


@pytest.fixture
async def dep(make_deployment):
    Mailbox.sent = []
    dep = await make_deployment(extra_plugins=[Mailbox, BrokenMailer])
    dep.auth.hasher = PasswordHasher(**CHEAP)
    return dep


async def add(dep, email, *, role="agent", teams=(), password=PASSWORD, name=None):
    return await dep.auth.create_user(name=name or email.split("@")[0].title(), email=email, password=password,
                                      role=role, teams=list(teams), actor=SYSTEM)


async def events(dep, event=None, **kwargs):
    return await dep.auth.security_log(event=event, **kwargs)


def fields(exc: ValidationError) -> set[str]:
    return {e.field for e in exc.errors}


async def shift(dep, table: str, column: str, delta: dt.timedelta, where: str = "1 = 1", params=()):
    """Move a stored time by ``delta`` (times are fixed-width ISO text in UTC)."""
    key = '"token_hash"' if table in ("crm_session", "crm_password_reset") else '"id"'
    rows = await dep.db.fetch(f'SELECT {key}, "{column}" FROM {table} WHERE {where}', params)
    async with dep.db.transaction():
        for row_key, value in rows:
            if value is not None:
                await dep.db.execute(f'UPDATE {table} SET "{column}" = ? WHERE {key} = ?',
                                     (_ts(dt.datetime.fromisoformat(value) + delta), row_key))


# -- tables ---------------------------------------------------------------------------------------

async def test_auth_tables_and_indexes_exist(dep):
    tables = await dep.schema.tables()
    assert {"crm_user_auth", "crm_role", "crm_team", "crm_team_member", "crm_session", "crm_api_token",
            "crm_password_reset", "crm_security_log"} <= tables
    indexes = await dep.schema.indexes()
    assert {"crm_security_log_email", "crm_security_log_ip", "crm_security_log_event", "crm_security_log_user",
            "crm_session_user", "crm_api_token_user"} <= indexes
    # Opening again (tables exist) is fine.
    await dep.schema.ensure_system_tables()


# -- users ----------------------------------------------------------------------------------------

async def test_create_user_record_owned_by_itself_in_its_primary_team(dep):
    north = await dep.auth.create_team("North", actor=SYSTEM)
    south = await dep.auth.create_team("South", actor=SYSTEM)
    user = await add(dep, "Ada@Example.com", role="sales_manager", teams=["South", "North"])
    assert user == {
        "id": user["id"], "name": "Ada", "email": "Ada@example.com", "active": True, "role": "sales_manager",
        "teams": ["South", "North"], "has_password": True, "locale": "en", "time_zone": "UTC",
    }
    record = await dep.records.get("user", user["id"])
    assert record["owner_id"] == user["id"] and record["team_id"] == south["id"]
    assert await dep.auth.user_by_email("ada@EXAMPLE.com") == user
    assert await dep.auth.users() == [user]
    stored = await dep.db.fetchval('SELECT "password_hash" FROM crm_user_auth WHERE "user_id" = ?', (user["id"],))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    [created] = await events(dep, "user_created")
    assert created["user_id"] == user["id"] and created["email"] == "ada@example.com"
    assert created["detail"] == {"role": "sales_manager", "teams": ["South", "North"], "password": True, "via": "system"}
    # Nothing in the log holds a password or a hash.
    text = str(await events(dep))
    assert PASSWORD not in text and "argon2" not in text
    teams = {t["name"]: t for t in await dep.auth.teams()}
    assert teams["North"]["members"] == [user["id"]] and teams["North"]["id"] == north["id"]


async def test_create_user_refusals(dep):
    await add(dep, "admin@example.com", role="admin")
    agent_user = await add(dep, "agent@example.com")
    agent = await dep.auth.actor_for_user(agent_user["id"])
    with pytest.raises(Forbidden, match="manage_users"):
        await dep.auth.create_user(name="X", email="x@example.com", actor=agent)
    with pytest.raises(ValidationError) as exc:
        await dep.auth.create_user(name="X", email="x@example.com", role="boss", actor=SYSTEM)
    assert fields(exc.value) == {"role"} and "agent" in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        await dep.auth.create_user(name="X", email="x@example.com", teams=["Nowhere"], actor=SYSTEM)
    assert fields(exc.value) == {"teams"} and "Nowhere" in str(exc.value)
    with pytest.raises(ValidationError) as exc:  # the records service's own check
        await dep.auth.create_user(name="X", email="admin@example.com", actor=SYSTEM)
    assert fields(exc.value) == {"email"}
    with pytest.raises(ValidationError, match="another user already has this e-mail") as exc:  # letter case
        await dep.auth.create_user(name="X", email="Admin@example.com", actor=SYSTEM)
    assert [(e.field, e.code) for e in exc.value.errors] == [("email", "unique")]
    with pytest.raises(ValidationError) as exc:
        await dep.auth.create_user(name="X", email="not an email", actor=SYSTEM)
    assert fields(exc.value) == {"email"}
    for bad, code in [("short", "too_short"), ("x" * 1025, "too_long"), ("X@Example.com", "is_email")]:
        with pytest.raises(ValidationError) as exc:
            await dep.auth.create_user(name="X", email="x@example.com", password=bad, actor=SYSTEM)
        assert [(e.field, e.code) for e in exc.value.errors] == [("password", code)]
    # Nothing half-made was left behind.
    assert [u["email"] for u in await dep.auth.users()] == ["admin@example.com", "agent@example.com"]
    assert await dep.db.fetchval("SELECT COUNT(*) FROM crm_user_auth") == 2
    # A password of 10 and of 1024 characters is fine; no password at all too.
    await dep.auth.create_user(name="Y", email="y@example.com", password="y" * 10, actor=SYSTEM)
    await dep.auth.create_user(name="Z", email="z@example.com", password="z" * 1024, actor=SYSTEM)
    assert (await dep.auth.create_user(name="W", email="w@example.com", actor=SYSTEM))["has_password"] is False


async def test_user_lookups_not_found(dep):
    with pytest.raises(NotFound):
        await dep.auth.user(999)
    with pytest.raises(NotFound):
        await dep.auth.user_by_email("nobody@example.com")
    with pytest.raises(NotFound):
        await dep.auth.set_role(999, "agent", actor=SYSTEM)


async def test_set_role_teams_active_are_logged_with_the_actor(dep):
    await dep.auth.create_team("North", actor=SYSTEM)
    await dep.auth.create_team("South", actor=SYSTEM)
    admin_user = await add(dep, "admin@example.com", role="admin")
    admin = await dep.auth.actor_for_user(admin_user["id"], via="session")
    bob = await add(dep, "bob@example.com", teams=["North"])

    assert (await dep.auth.set_role(bob["id"], "sales_manager", actor=admin))["role"] == "sales_manager"
    changed = await dep.auth.set_teams(bob["id"], ["South", "North"], actor=admin)
    assert changed["teams"] == ["South", "North"]
    south = next(t for t in await dep.auth.teams() if t["name"] == "South")
    assert (await dep.records.get("user", bob["id"]))["team_id"] == south["id"]
    actor = await dep.auth.actor_for_user(bob["id"])
    assert actor.team_ids[0] == south["id"] and len(actor.team_ids) == 2 and actor.role.name == "sales_manager"

    grant = await dep.auth.login("bob@example.com", PASSWORD, ip="10.0.0.1")
    assert (await dep.auth.set_active(bob["id"], False, actor=admin))["active"] is False
    with pytest.raises(Unauthenticated):  # disabling ended the session
        await dep.auth.session_actor(grant.token)
    with pytest.raises(Unauthenticated, match="disabled"):
        await dep.auth.actor_for_user(bob["id"])
    with pytest.raises(Unauthenticated, match="wrong e-mail or password"):
        await dep.auth.login("bob@example.com", PASSWORD, ip="10.0.0.1")
    assert (await dep.auth.set_active(bob["id"], True, actor=admin))["active"] is True
    await dep.auth.login("bob@example.com", PASSWORD, ip="10.0.0.1")

    log = {e["event"]: e for e in await events(dep, user_id=bob["id"])}
    assert log["role_changed"]["detail"] == {"from": "agent", "to": "sales_manager", "via": "session"}
    assert log["role_changed"]["actor_id"] == admin_user["id"]
    assert log["teams_changed"]["detail"]["to"] == ["South", "North"]
    assert log["user_disabled"]["actor_id"] == admin_user["id"] and "user_enabled" in log

    with pytest.raises(ValidationError) as exc:
        await dep.auth.set_teams(bob["id"], ["Nowhere"], actor=admin)
    assert fields(exc.value) == {"teams"}
    with pytest.raises(ValidationError) as exc:
        await dep.auth.set_role(bob["id"], "nope", actor=admin)
    assert fields(exc.value) == {"role"}
    agent = await dep.auth.actor_for_user((await add(dep, "c@example.com"))["id"])
    for call in (dep.auth.set_role(bob["id"], "admin", actor=agent), dep.auth.set_teams(bob["id"], [], actor=agent),
                 dep.auth.set_active(bob["id"], False, actor=agent)):
        with pytest.raises(Forbidden):
            await call
    assert (await dep.auth.set_teams(bob["id"], [], actor=admin))["teams"] == []
    assert (await dep.records.get("user", bob["id"]))["team_id"] is None


async def test_the_last_active_admin_stays(dep):
    first = await add(dep, "first@example.com", role="admin")
    with pytest.raises(ValidationError, match="last active admin") as exc:
        await dep.auth.set_role(first["id"], "agent", actor=SYSTEM)
    assert fields(exc.value) == {"role"}
    with pytest.raises(ValidationError, match="last active admin"):
        await dep.auth.set_active(first["id"], False, actor=SYSTEM)
    second = await add(dep, "second@example.com", role="admin")
    await dep.auth.set_active(first["id"], False, actor=SYSTEM)
    with pytest.raises(ValidationError, match="last active admin"):
        await dep.auth.set_role(second["id"], "agent", actor=SYSTEM)


# -- login and sessions ---------------------------------------------------------------------------

async def test_login_opens_a_session(dep):
    await dep.auth.create_team("North", actor=SYSTEM)
    user = await add(dep, "ada@example.com", role="sales_manager", teams=["North"])
    before = dt.datetime.now(UTC)
    grant = await dep.auth.login("  ADA@example.com ", PASSWORD, ip="10.0.0.1", user_agent="pytest/1.0")
    assert grant.user_id == user["id"] and len(grant.token) >= 43 and grant.csrf_token != grant.token
    assert dt.timedelta(days=13, hours=23) < grant.expires_at - before <= dt.timedelta(days=14, seconds=5)
    actor, csrf = await dep.auth.session_actor(grant.token, ip="10.0.0.1")
    assert csrf == grant.csrf_token
    assert actor.user_id == user["id"] and actor.via == "session" and actor.role.name == "sales_manager"
    assert actor.team_ids == (1,) and actor.read_only is False and actor.token_id is None
    assert actor.scope("contact", "read") is Scope.TEAM and not actor.has("manage_users")
    # Only the hash of the token is stored.
    stored = await dep.db.fetch('SELECT "token_hash", "ip", "user_agent" FROM crm_session')
    assert stored == [(_sha256(grant.token), "10.0.0.1", "pytest/1.0")]
    [entry] = await events(dep, "login")
    assert entry["user_id"] == user["id"] and entry["ip"] == "10.0.0.1" and entry["email"] == "ada@example.com"
    assert grant.token not in str(await events(dep))
    # Two logins are two sessions, each with its own CSRF token.
    other = await dep.auth.login("ada@example.com", PASSWORD, ip="10.0.0.2")
    assert other.token != grant.token and other.csrf_token != grant.csrf_token
    await dep.auth.logout(grant.token)
    with pytest.raises(Unauthenticated, match="unknown session"):
        await dep.auth.session_actor(grant.token)
    assert (await dep.auth.session_actor(other.token))[0].user_id == user["id"]
    assert [e["user_id"] for e in await events(dep, "logout")] == [user["id"]]
    await dep.auth.logout(grant.token)  # again: nothing happens
    with pytest.raises(Unauthenticated):
        await dep.auth.session_actor("")


async def test_login_failures_are_generic_and_logged(dep):
    await add(dep, "ada@example.com")
    await add(dep, "nopass@example.com", password=None)
    off = await add(dep, "off@example.com")
    await add(dep, "admin@example.com", role="admin")
    await dep.auth.set_active(off["id"], False, actor=SYSTEM)
    attempts = [("nobody@example.com", PASSWORD, "unknown_email"), ("ada@example.com", "wrong password!", "wrong_password"),
                ("nopass@example.com", PASSWORD, "no_password"), ("off@example.com", PASSWORD, "disabled"),
                ("ada@example.com", "x" * 5000, "invalid_password")]
    for email, password, _ in attempts:
        with pytest.raises(Unauthenticated) as exc:
            await dep.auth.login(email, password, ip="10.0.0.9")
        assert str(exc.value) == "wrong e-mail or password"
    failed = await events(dep, "login_failed")
    assert [(e["email"], e["detail"]["reason"]) for e in reversed(failed)] == [(a[0], a[2]) for a in attempts]
    assert all(e["ip"] == "10.0.0.9" for e in failed)
    assert "x" * 100 not in str(failed)


async def test_session_idle_and_absolute_expiry(dep):
    user = await add(dep, "ada@example.com")
    grant = await dep.auth.login("ada@example.com", PASSWORD, ip=None)

    async def last_seen():
        return await dep.db.fetchval('SELECT "last_seen_at" FROM crm_session WHERE "token_hash" = ?', (_sha256(grant.token),))

    seen = await last_seen()
    await dep.auth.session_actor(grant.token)
    assert await last_seen() == seen  # not written on every request
    await shift(dep, "crm_session", "last_seen_at", -dt.timedelta(minutes=6))
    await dep.auth.session_actor(grant.token, ip="10.1.1.1")
    assert await last_seen() > seen  # touched after 5 minutes
    # Idle for a day: over.
    await shift(dep, "crm_session", "last_seen_at", -dt.timedelta(hours=24, minutes=1))
    with pytest.raises(Unauthenticated, match="the session expired"):
        await dep.auth.session_actor(grant.token)
    assert await dep.db.fetchval("SELECT COUNT(*) FROM crm_session") == 0
    # Fourteen days after login: over, however active.
    grant = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    await shift(dep, "crm_session", "expires_at", -dt.timedelta(days=14, seconds=1))
    with pytest.raises(Unauthenticated, match="the session expired"):
        await dep.auth.session_actor(grant.token)
    # A deleted (trashed) user's session stops working.
    grant = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    await dep.records.delete("user", user["id"])
    with pytest.raises(Unauthenticated, match="disabled"):
        await dep.auth.session_actor(grant.token)


async def test_login_rate_limit_per_account(dep):
    await add(dep, "ada@example.com")
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await dep.auth.login("ada@example.com", "not the password", ip="10.0.0.1")
    # Limited: refused before the password is even checked, the right one too, from anywhere.
    with pytest.raises(RateLimited) as exc:
        await dep.auth.login("ADA@example.com", PASSWORD, ip="10.9.9.9")
    assert 890 <= exc.value.retry_after <= 900 and "try again in" in str(exc.value)
    limited = await events(dep, "login_rate_limited")
    assert len(limited) == 1 and limited[0]["detail"]["limit"] == "account" and limited[0]["ip"] == "10.9.9.9"
    # Refused attempts do not count as failures (the window does not grow).
    assert len(await events(dep, "login_failed")) == 5
    # retry_after: until the oldest failure that counts leaves the 15-minute window.
    await shift(dep, "crm_security_log", "at", -dt.timedelta(minutes=10), '"event" = ?', ("login_failed",))
    with pytest.raises(RateLimited) as exc:
        await dep.auth.login("ada@example.com", PASSWORD, ip="10.0.0.1")
    assert 290 <= exc.value.retry_after <= 300
    await shift(dep, "crm_security_log", "at", -dt.timedelta(minutes=5, seconds=1), '"event" = ?', ("login_failed",))
    assert (await dep.auth.login("ada@example.com", PASSWORD, ip="10.0.0.1")).user_id
    # Other accounts were never limited.
    await add(dep, "bob@example.com")
    await dep.auth.login("bob@example.com", PASSWORD, ip="10.0.0.1")


async def test_login_rate_limit_per_address(dep):
    await add(dep, "ada@example.com")
    for index in range(20):  # unknown accounts, one address
        with pytest.raises(Unauthenticated):
            await dep.auth.login(f"guess{index}@example.com", "whatever123", ip="203.0.113.7")
    with pytest.raises(RateLimited) as exc:
        await dep.auth.login("ada@example.com", PASSWORD, ip="203.0.113.7")
    assert "from this address" in str(exc.value) and exc.value.retry_after > 800
    [limited] = await events(dep, "login_rate_limited")
    assert limited["detail"]["limit"] == "address" and limited["user_id"] is not None
    # The same account from another address is fine.
    await dep.auth.login("ada@example.com", PASSWORD, ip="198.51.100.1")


async def test_login_rehashes_a_password_made_with_other_parameters(dep):
    user = await add(dep, "ada@example.com")  # cheap parameters
    old = await dep.db.fetchval('SELECT "password_hash" FROM crm_user_auth WHERE "user_id" = ?', (user["id"],))
    assert "m=1024" in old
    dep.auth.hasher = PasswordHasher()  # the real ones
    await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    new = await dep.db.fetchval('SELECT "password_hash" FROM crm_user_auth WHERE "user_id" = ?', (user["id"],))
    assert new.startswith("$argon2id$") and "m=65536" in new
    await dep.auth.login("ada@example.com", PASSWORD, ip=None)  # the new hash works
    assert await dep.db.fetchval('SELECT "password_hash" FROM crm_user_auth WHERE "user_id" = ?', (user["id"],)) == new


async def test_hot_path_is_one_query(dep):
    await dep.auth.create_team("North", actor=SYSTEM)
    await dep.auth.create_team("South", actor=SYSTEM)
    user = await add(dep, "ada@example.com", teams=["South", "North"])
    grant = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    token = (await dep.auth.create_token(user["id"], "ci", actor=SYSTEM)).token
    await dep.auth.token_actor(token)  # the first use is written
    calls = []
    db = dep.db
    for name in ("fetch", "fetchrow", "fetchval", "execute"):
        original = getattr(db, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)
        setattr(db, name, counting)
    try:
        for _ in range(3):
            actor, _ = await dep.auth.session_actor(grant.token)
            assert actor.team_ids == (2, 1)
            assert (await dep.auth.token_actor(token)).team_ids == (2, 1)
            assert (await dep.auth.actor_for_user(user["id"])).team_ids == (2, 1)
    finally:
        for name in ("fetch", "fetchrow", "fetchval", "execute"):
            delattr(db, name)
    assert calls == ["fetchrow"] * 9


# -- password changes and reset ---------------------------------------------------------------------

async def test_set_password_by_admin_and_by_oneself(dep):
    admin = await dep.auth.actor_for_user((await add(dep, "admin@example.com", role="admin"))["id"])
    user = await add(dep, "ada@example.com")
    ada = await dep.auth.actor_for_user(user["id"])
    other = await dep.auth.actor_for_user((await add(dep, "bob@example.com"))["id"])
    one = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    two = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    await dep.auth.set_password(user["id"], "a new password", actor=ada, keep_session=one.token)
    await dep.auth.session_actor(one.token)
    with pytest.raises(Unauthenticated):
        await dep.auth.session_actor(two.token)
    with pytest.raises(Forbidden):
        await dep.auth.set_password(user["id"], "bob sets it!", actor=other)
    with pytest.raises(ValidationError) as exc:
        await dep.auth.set_password(user["id"], "ada@example.com", actor=admin)
    assert fields(exc.value) == {"password"}
    await dep.auth.set_password(user["id"], "the admin's choice", actor=admin)
    with pytest.raises(Unauthenticated):  # an admin's change ends every session
        await dep.auth.session_actor(one.token)
    await dep.auth.login("ada@example.com", "the admin's choice", ip=None)
    by = [e["detail"]["by"] for e in await events(dep, "password_changed")]
    assert by == ["admin", "self"]
    # A user created without a password gets one later.
    late = await add(dep, "late@example.com", password=None)
    await dep.auth.set_password(late["id"], "finally a password", actor=SYSTEM)
    assert (await dep.auth.user(late["id"]))["has_password"] is True


async def test_change_password(dep):
    user = await add(dep, "ada@example.com")
    keep = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    other = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    actor, _ = await dep.auth.session_actor(keep.token)
    with pytest.raises(Unauthenticated, match="current password is wrong"):
        await dep.auth.change_password(actor, "not it at all", "brand new password", keep_session=keep.token)
    [failed] = await events(dep, "login_failed")
    assert failed["detail"]["reason"] == "wrong_current_password" and failed["user_id"] == user["id"]
    with pytest.raises(ValidationError) as exc:
        await dep.auth.change_password(actor, PASSWORD, "short", keep_session=keep.token)
    assert fields(exc.value) == {"password"}
    await dep.auth.change_password(actor, PASSWORD, "brand new password", keep_session=keep.token)
    await dep.auth.session_actor(keep.token)
    with pytest.raises(Unauthenticated):
        await dep.auth.session_actor(other.token)
    with pytest.raises(Unauthenticated):
        await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    await dep.auth.login("ada@example.com", "brand new password", ip=None)
    with pytest.raises(Forbidden):
        await dep.auth.change_password(SYSTEM, PASSWORD, "brand new password")


async def test_password_reset_is_one_time(dep):
    user = await add(dep, "ada@example.com")
    session = await dep.auth.login("ada@example.com", PASSWORD, ip=None)
    await dep.auth.request_password_reset("ADA@example.com", ip="10.0.0.5", base_url="https://crm.example.com/")
    # Delivered through the hook (a failing implementation is logged, not raised).
    [(email, link)] = Mailbox.sent
    assert email == "ada@example.com" and link.startswith("https://crm.example.com/password/reset/")
    token = link.rsplit("/", 1)[1]
    assert await dep.db.fetchval('SELECT "token_hash" FROM crm_password_reset') == _sha256(token)
    with pytest.raises(ValidationError) as exc:
        await dep.auth.reset_password(token, "short", ip=None)
    assert fields(exc.value) == {"password"}
    await dep.auth.reset_password(token, "reset to this one", ip="10.0.0.5")
    with pytest.raises(Unauthenticated, match="already used"):
        await dep.auth.reset_password(token, "and again to this", ip=None)
    with pytest.raises(Unauthenticated):  # sessions ended
        await dep.auth.session_actor(session.token)
    await dep.auth.login("ada@example.com", "reset to this one", ip=None)
    with pytest.raises(Unauthenticated, match="unknown reset link"):
        await dep.auth.reset_password("made-up", "whatever whatever", ip=None)
    [requested] = await events(dep, "password_reset_requested")
    assert requested["user_id"] == user["id"] and requested["ip"] == "10.0.0.5" and requested["detail"]["sent"]
    [done] = await events(dep, "password_reset")
    assert done["user_id"] == user["id"]
    assert token not in str(await events(dep))


async def test_password_reset_expiry_unknown_accounts_and_limits(dep):
    user = await add(dep, "ada@example.com")
    # An unknown address: no error, nothing sent, logged.
    await dep.auth.request_password_reset("nobody@example.com", ip="10.0.0.5", base_url="http://x")
    assert Mailbox.sent == []
    [entry] = await events(dep, "password_reset_requested")
    assert entry["user_id"] is None and entry["detail"] == {"sent": False, "reason": "unknown_email"}
    # A link older than an hour no longer works; a newer one makes older ones unusable once used.
    link = await dep.auth.reset_link(user["id"], base_url="http://x", actor=SYSTEM)
    await shift(dep, "crm_password_reset", "expires_at", -dt.timedelta(hours=1, seconds=1))
    with pytest.raises(Unauthenticated, match="expired"):
        await dep.auth.reset_password(link.rsplit("/", 1)[1], "a good new password", ip=None)
    first = await dep.auth.reset_link(user["id"], base_url="http://x", actor=SYSTEM)
    second = await dep.auth.reset_link(user["id"], base_url="http://x", actor=SYSTEM)
    await dep.auth.reset_password(second.rsplit("/", 1)[1], "a good new password", ip=None)
    with pytest.raises(Unauthenticated, match="already used"):
        await dep.auth.reset_password(first.rsplit("/", 1)[1], "another new password", ip=None)
    # Only admins make links.
    agent = await dep.auth.actor_for_user((await add(dep, "bob@example.com"))["id"])
    with pytest.raises(Forbidden):
        await dep.auth.reset_link(user["id"], base_url="http://x", actor=agent)
    # Rate limited per account, like logins (whether it exists or not).
    for _ in range(5):
        await dep.auth.request_password_reset("ada@example.com", ip="10.0.0.6", base_url="http://x")
    with pytest.raises(RateLimited):
        await dep.auth.request_password_reset("ada@example.com", ip="10.0.0.7", base_url="http://x")
    assert len(Mailbox.sent) == 5
    for _ in range(5):
        await dep.auth.request_password_reset("ghost@example.com", ip="10.0.0.8", base_url="http://x")
    with pytest.raises(RateLimited):
        await dep.auth.request_password_reset("ghost@example.com", ip="10.0.0.9", base_url="http://x")
    assert len(await events(dep, "password_reset_rate_limited")) == 2


# -- API tokens -------------------------------------------------------------------------------------

async def test_tokens_create_use_revoke(dep):
    user = await add(dep, "ada@example.com")
    ada = await dep.auth.actor_for_user(user["id"], via="session")
    new = await dep.auth.create_token(user["id"], " laptop ", actor=ada)
    assert new.token.startswith("crm_") and len(new.token) > 40
    info = new.info
    assert info["name"] == "laptop" and info["prefix"] == new.token[:10] and info["read_only"] is False
    assert info["user_id"] == user["id"] and info["expires_at"] is None and info["revoked_at"] is None
    assert isinstance(info["created_at"], dt.datetime)
    assert await dep.db.fetchval('SELECT "token_hash" FROM crm_api_token') == _sha256(new.token)
    actor = await dep.auth.token_actor(new.token, ip="10.0.0.3")
    assert actor.user_id == user["id"] and actor.via == "token" and actor.token_id == info["id"]
    assert actor.read_only is False and actor.scope("contact", "create") is Scope.OWN
    # Use is written (and logged) once an hour, not on every request.
    await dep.auth.token_actor(new.token, ip="10.0.0.3")
    used = await events(dep, "token_used")
    assert len(used) == 1 and used[0]["detail"]["token_id"] == info["id"] and used[0]["ip"] == "10.0.0.3"
    [listed] = await dep.auth.tokens(user_id=user["id"])
    assert listed["last_used_at"] is not None and set(listed) == set(info)
    assert new.token not in str(await dep.auth.tokens()) and new.token not in str(await events(dep))
    await shift(dep, "crm_api_token", "last_used_at", -dt.timedelta(hours=1, seconds=1))
    await dep.auth.token_actor(new.token)
    assert len(await events(dep, "token_used")) == 2

    await dep.auth.revoke_token(info["id"], actor=ada)
    with pytest.raises(Unauthenticated, match="the token was revoked"):
        await dep.auth.token_actor(new.token)
    await dep.auth.revoke_token(info["id"], actor=ada)  # twice: nothing more happens
    assert len(await events(dep, "token_revoked")) == 1
    with pytest.raises(Unauthenticated, match="unknown token"):
        await dep.auth.token_actor("crm_" + "x" * 43)
    with pytest.raises(Unauthenticated, match="unknown token"):
        await dep.auth.token_actor("Bearer nonsense")
    created = await events(dep, "token_created")
    assert created[0]["actor_id"] == user["id"] and created[0]["detail"]["name"] == "laptop"


async def test_token_expiry_read_only_and_disabled_user(dep):
    user = await add(dep, "ada@example.com")
    await add(dep, "admin@example.com", role="admin")
    soon = dt.datetime.now(UTC) + dt.timedelta(days=1)
    expiring = await dep.auth.create_token(user["id"], "short-lived", expires_at=soon, actor=SYSTEM)
    assert expiring.info["expires_at"] == soon
    await dep.auth.token_actor(expiring.token)
    await shift(dep, "crm_api_token", "expires_at", -dt.timedelta(days=2))
    with pytest.raises(Unauthenticated, match=r"the token expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC"):
        await dep.auth.token_actor(expiring.token)

    reader = await dep.auth.create_token(user["id"], "reports", read_only=True, actor=SYSTEM)
    actor = await dep.auth.token_actor(reader.token)
    assert actor.read_only and actor.scope("contact", "read") is Scope.OWN
    assert actor.scope("contact", "create") is Scope.NONE and actor.scope("contact", "edit") is Scope.NONE
    with pytest.raises(Forbidden):  # a read-only token cannot make a writing one
        await dep.auth.create_token(user["id"], "escalate", actor=actor)
    with pytest.raises(Forbidden):
        await dep.auth.change_password(actor, PASSWORD, "whatever whatever")

    await dep.auth.set_active(user["id"], False, actor=SYSTEM)
    with pytest.raises(Unauthenticated, match="the user is disabled"):
        await dep.auth.token_actor(reader.token)


async def test_token_rules(dep):
    ada = await add(dep, "ada@example.com")
    bob_user = await add(dep, "bob@example.com")
    bob = await dep.auth.actor_for_user(bob_user["id"])
    admin = await dep.auth.actor_for_user((await add(dep, "admin@example.com", role="admin"))["id"])
    with pytest.raises(Forbidden, match="manage_tokens"):
        await dep.auth.create_token(ada["id"], "not mine", actor=bob)
    for name, expires, field in [("", None, "name"), ("x" * 101, None, "name"),
                                 ("ok", dt.datetime.now(UTC) - dt.timedelta(seconds=1), "expires_at"),
                                 ("ok", dt.datetime(2099, 1, 1), "expires_at")]:
        with pytest.raises(ValidationError) as exc:
            await dep.auth.create_token(ada["id"], name, expires_at=expires, actor=admin)
        assert fields(exc.value) == {field}
    with pytest.raises(NotFound):
        await dep.auth.create_token(999, "nobody", actor=admin)
    theirs = await dep.auth.create_token(ada["id"], "by the admin", actor=admin)
    with pytest.raises(NotFound):  # another user's token does not exist for bob
        await dep.auth.revoke_token(theirs.info["id"], actor=bob)
    await dep.auth.revoke_token(theirs.info["id"], actor=admin)
    [entry] = await events(dep, "token_revoked")
    assert entry["user_id"] == ada["id"] and entry["actor_id"] == admin.user_id
    with pytest.raises(NotFound):
        await dep.auth.revoke_token(12345, actor=admin)
    assert [t["name"] for t in await dep.auth.tokens()] == ["by the admin"]


# -- roles and teams --------------------------------------------------------------------------------

async def test_roles_builtin_stored_and_used(dep):
    names = [r.name for r in await dep.auth.roles()]
    assert names == ["admin", "sales_manager", "agent", "read_only"]
    with pytest.raises(NotFound):
        await dep.auth.role("nope")
    auditor = Role(name="auditor", label="Auditor", entities={"*": {"read": Scope.ALL}, "deal": {"read": Scope.NONE}},
                   fields={"contact": {"email": "hidden"}}, grants=["view_audit_log"])
    saved = await dep.auth.save_role(auditor, actor=SYSTEM)
    assert saved.builtin is False and saved.fields == {"contact": {"email": "hidden"}}
    assert [r.name for r in await dep.auth.roles()][-1] == "auditor"
    user = await add(dep, "ann@example.com", role="auditor")
    actor = await dep.auth.actor_for_user(user["id"])
    assert actor.scope("deal", "read") is Scope.NONE and actor.scope("contact", "read") is Scope.ALL
    assert actor.hidden_fields("contact") == {"email"} and actor.has("view_audit_log")
    # A built-in role can be changed; users of it get the change at their next request.
    agent_user = await add(dep, "agent@example.com")
    changed = msgspec.structs.replace(await dep.auth.role("agent"), description="changed", grants=["view_audit_log"])
    assert (await dep.auth.save_role(changed, actor=SYSTEM)).builtin is True
    assert (await dep.auth.role("agent")).description == "changed"
    assert [r.description for r in await dep.auth.roles() if r.name == "agent"] == ["changed"]
    assert (await dep.auth.actor_for_user(agent_user["id"])).has("view_audit_log")
    # ... but not deleted; nor a role users have.
    with pytest.raises(ValidationError, match="built-in") as exc:
        await dep.auth.delete_role("agent", actor=SYSTEM)
    assert fields(exc.value) == {"name"}
    with pytest.raises(ValidationError, match="ann@example.com"):
        await dep.auth.delete_role("auditor", actor=SYSTEM)
    await dep.auth.set_role(user["id"], "agent", actor=SYSTEM)
    await dep.auth.delete_role("auditor", actor=SYSTEM)
    with pytest.raises(NotFound):
        await dep.auth.role("auditor")
    with pytest.raises(NotFound):
        await dep.auth.delete_role("auditor", actor=SYSTEM)
    log = [e["event"] for e in await events(dep)]
    assert log.count("role_saved") == 2 and log.count("role_deleted") == 1
    agent = await dep.auth.actor_for_user(agent_user["id"])
    with pytest.raises(Forbidden, match="manage_roles"):
        await dep.auth.save_role(auditor, actor=agent)


@pytest.mark.parametrize("data, bad", [
    ({"name": "x", "entities": {"ghost": {"read": "all"}}}, {"entities.ghost"}),
    ({"name": "x", "entities": {"contact": {"read": "most"}}}, {"entities"}),
    ({"name": "x", "entities": {"contact": {"fly": "all"}}}, {"entities.contact.fly"}),
    ({"name": "x", "fields": {"contact": {"shoe_size": "hidden"}}}, {"fields.contact.shoe_size"}),
    ({"name": "x", "fields": {"ghost": {"a": "hidden"}}}, {"fields.ghost"}),
    ({"name": "x", "fields": {"contact": {"email": "secret"}}}, {"fields.contact.email"}),
    ({"name": "x", "grants": ["fly_to_the_moon"]}, {"grants"}),
    ({"name": "Not OK"}, {"name"}),
])
async def test_save_role_names_what_is_wrong(dep, data, bad):
    with pytest.raises(ValidationError) as exc:
        await dep.auth.save_role(data, actor=SYSTEM)
    assert fields(exc.value) == bad
    assert all(isinstance(e, FieldError) and e.message for e in exc.value.errors)
    assert [r.name for r in await dep.auth.roles()] == ["admin", "sales_manager", "agent", "read_only"]


async def test_teams(dep):
    north = await dep.auth.create_team(" North ", actor=SYSTEM)
    assert north == {"id": north["id"], "name": "North", "members": []}
    for name in ("North", "", "x" * 101):
        with pytest.raises(ValidationError) as exc:
            await dep.auth.create_team(name, actor=SYSTEM)
        assert fields(exc.value) == {"name"}
    await dep.auth.create_team("Empty", actor=SYSTEM)
    user = await add(dep, "ada@example.com", teams=["North"])
    assert await dep.auth.teams() == [{"id": 2, "name": "Empty", "members": []},
                                      {"id": north["id"], "name": "North", "members": [user["id"]]}]
    with pytest.raises(ValidationError, match="1 member") as exc:
        await dep.auth.delete_team("North", actor=SYSTEM)
    assert fields(exc.value) == {"name"}
    await dep.auth.delete_team("Empty", actor=SYSTEM)
    with pytest.raises(NotFound):
        await dep.auth.delete_team("Empty", actor=SYSTEM)
    agent = await dep.auth.actor_for_user(user["id"])
    with pytest.raises(Forbidden):
        await dep.auth.create_team("Mine", actor=agent)
    assert [e["event"] for e in await events(dep)].count("team_created") == 2


# -- the security log -------------------------------------------------------------------------------

async def test_security_log_filters_and_pages(dep):
    user = await add(dep, "ada@example.com")
    for index in range(5):
        await dep.auth.log("custom_event", user_id=user["id"], ip=f"10.0.0.{index}", detail={"n": index})
    await dep.auth.log("other_event", actor=SYSTEM)
    newest = await dep.auth.security_log(limit=3)
    assert [e["event"] for e in newest] == ["other_event", "custom_event", "custom_event"]
    assert newest[0]["detail"] == {"via": "system"} and newest[0]["actor_id"] is None
    assert isinstance(newest[0]["at"], dt.datetime) and newest[0]["at"].tzinfo is not None
    page = await dep.auth.security_log(event="custom_event", limit=2)
    assert [e["detail"]["n"] for e in page] == [4, 3]
    page = await dep.auth.security_log(event="custom_event", before_id=page[-1]["id"], limit=2)
    assert [e["detail"]["n"] for e in page] == [2, 1]
    mine = await dep.auth.security_log(user_id=user["id"])
    assert {e["event"] for e in mine} == {"custom_event", "user_created"}
    for limit in (0, 1001, "10"):
        with pytest.raises(ValidationError) as exc:
            await dep.auth.security_log(limit=limit)
        assert fields(exc.value) == {"limit"}


async def test_control_characters_find_nothing_and_are_refused_in_names(dep):
    """PostgreSQL refuses NUL in text: such input must end as a clear answer, not a database error."""
    user = await add(dep, "ann@example.com", role="admin")
    with pytest.raises(Unauthenticated):
        await dep.auth.login("ann@example.com\x00", "whatever password", ip="127.0.0.1")
    with pytest.raises(NotFound):
        await dep.auth.role("agent\x00")
    with pytest.raises(NotFound):
        await dep.auth.delete_team("north\x00", actor=SYSTEM)
    with pytest.raises(NotFound):
        await dep.auth.user_by_email("ann\x00@example.com")
    assert await dep.auth.security_log(event="login\x00") == []
    for attempt, field in (
        (dep.auth.create_token(user["id"], "ci\x00", actor=SYSTEM), "name"),
        (dep.auth.create_team("north\x00", actor=SYSTEM), "name"),
        (dep.auth.set_role(user["id"], "admin\x00", actor=SYSTEM), "role"),
        (dep.auth.set_teams(user["id"], ["north\x00"], actor=SYSTEM), "teams"),
        (dep.auth.save_role(Role(name="viewer", label="View\x00er"), actor=SYSTEM), "label"),
    ):
        with pytest.raises(ValidationError) as refused:
            await attempt
        assert field in fields(refused.value)
    await dep.auth.request_password_reset("ann\x00@example.com", ip="127.0.0.1", base_url="https://crm.example")
