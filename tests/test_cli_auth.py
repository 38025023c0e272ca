"""The auth commands of ``crm`` end to end: ``init`` with its first admin, ``users``, ``roles``,
``teams``, ``tokens`` and ``security-log``, driven through ``create_cli()`` with click's runner on a
real deployment (SQLite, and PostgreSQL through ``--database-url``). The CLI acts as the system,
seen in the security log as ``cli``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli as cli_module
from cli import create_cli
from crmcore.auth import Unauthenticated
from crmcore.deployment import load_settings, save_settings

from .conftest import crm, run

PASSWORD = "correct horse battery"


def login(path: Path, email: str, password: str):
    async def go(dep):
        return await dep.auth.login(email, password, ip=None)
    return run(path, go)


@pytest.fixture
def new_path(tmp_path, crm_backend):
    """(path, init options): a deployment folder to make, on the test's backend."""
    options = ["--database-url", crm_backend.database_url] if crm_backend.database_url else []
    return tmp_path / "acme", options


@pytest.fixture
def dep_path(new_path):
    """A deployment with an admin (admin@example.com) and two teams."""
    path, options = new_path
    crm("init", path, *options, "--admin-email", "admin@example.com", "--admin-name", "Ada Admin",
        "--admin-password-stdin", input=PASSWORD + "\n")
    crm("teams", "add", "North", deployment=path)
    crm("teams", "add", "South", deployment=path)
    return path


# -- init -------------------------------------------------------------------------------------------

def test_init_makes_the_first_admin_from_flags(new_path):
    path, options = new_path
    out = crm("init", path, *options, "--admin-email", "boss@example.com", "--admin-password-stdin",
              input=PASSWORD + "\n").output
    assert "Created the admin boss@example.com" in out and "Next steps" in out
    grant = login(path, "boss@example.com", PASSWORD)

    async def check(dep):
        user = await dep.auth.user(grant.user_id)
        actor, _ = await dep.auth.session_actor(grant.token)
        return user, actor

    user, actor = run(path, check)
    assert user["role"] == "admin" and user["name"] == "boss" and actor.has("manage_users")


def test_init_without_a_terminal_makes_no_admin_and_says_how(new_path):
    path, options = new_path
    out = crm("init", path, *options).output
    assert "No admin user yet" in out and "users add EMAIL --name NAME --role admin --password-stdin" in out
    assert "Next steps" in out
    assert run(path, lambda dep: dep.auth.users()) == []


def test_init_asks_at_a_terminal(new_path, monkeypatch):
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    path, options = new_path
    # e-mail, name (default: from the e-mail), a refused password, then a good one twice.
    out = crm("init", path, *options, input=f"boss@example.com\n\nshort\n{PASSWORD}\n{PASSWORD}\n").output
    assert "at least 10 characters" in out and "Created the admin boss@example.com" in out
    assert PASSWORD not in out
    assert login(path, "boss@example.com", PASSWORD).user_id


def test_init_at_a_terminal_may_skip_the_admin(new_path, monkeypatch):
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    path, options = new_path
    assert "No admin user yet" in crm("init", path, *options, input="\n").output


@pytest.mark.parametrize("args, stdin, message", [
    (["--admin-email", "not an email", "--admin-password-stdin"], PASSWORD, "not a valid e-mail"),
    (["--admin-email", "boss@example.com", "--admin-password-stdin"], "short", "at least 10 characters"),
    (["--admin-email", "boss@example.com", "--admin-password-stdin"], "", "no password on standard input"),
    (["--admin-name", "Boss"], None, "need --admin-email"),
])
def test_init_refuses_a_bad_admin_and_leaves_nothing(new_path, args, stdin, message):
    path, options = new_path
    out = crm("init", path, *options, *args, input=stdin, ok=False).output
    assert message in out
    assert not (path / "crm.toml").exists()


# -- users ------------------------------------------------------------------------------------------

def test_users_add_list_and_change(dep_path):
    out = crm("users", "add", "ayse@example.com", "--name", "Ayşe Yılmaz", "--role", "sales_manager",
              "--team", "South", "--team", "North", "--locale", "tr", "--time-zone", "Europe/Istanbul",
              "--password-stdin", deployment=dep_path, input=PASSWORD + "\n").output
    assert "Added ayse@example.com" in out and "sales_manager" in out and "South, North" in out
    out = crm("users", "add", "bob@example.com", "--name", "Bob", deployment=dep_path).output
    assert "no password yet" in out and "crm users reset-link bob@example.com" in out

    table = crm("users", "list", deployment=dep_path).output
    assert "ayse@example.com" in table and "Ayşe Yılmaz" in table and "agent" in table
    users = {u["email"]: u for u in json.loads(crm("users", "list", "--json", deployment=dep_path).output)}
    assert users["ayse@example.com"] == {
        "id": users["ayse@example.com"]["id"], "name": "Ayşe Yılmaz", "email": "ayse@example.com", "active": True,
        "role": "sales_manager", "teams": ["South", "North"], "has_password": True, "locale": "tr",
        "time_zone": "Europe/Istanbul",
    }
    assert users["bob@example.com"]["has_password"] is False and users["admin@example.com"]["role"] == "admin"
    assert login(dep_path, "ayse@example.com", PASSWORD).user_id

    assert "role agent" in crm("users", "set-role", "ayse@example.com", "agent", deployment=dep_path).output
    assert "teams North" in crm("users", "set-teams", "AYSE@example.com", "North", deployment=dep_path).output
    assert "teams -" in crm("users", "set-teams", "ayse@example.com", deployment=dep_path).output
    assert "Disabled" in crm("users", "disable", "ayse@example.com", deployment=dep_path).output
    with pytest.raises(Unauthenticated):
        login(dep_path, "ayse@example.com", PASSWORD)
    assert "Enabled" in crm("users", "enable", "ayse@example.com", deployment=dep_path).output

    crm("users", "set-password", "bob@example.com", "--password-stdin", deployment=dep_path,
        input="bobs new password\n")
    assert login(dep_path, "bob@example.com", "bobs new password").user_id

    # Every change is in the security log, made by the CLI.
    log = json.loads(crm("security-log", "--user", "ayse@example.com", "--json", deployment=dep_path).output)
    events = [e["event"] for e in log]
    for event in ("user_created", "role_changed", "teams_changed", "user_disabled", "user_enabled", "login"):
        assert event in events
    assert all(e["detail"]["via"] == "cli" for e in log if not e["event"].startswith("login"))


def test_users_errors_are_clean(dep_path):
    cases = [
        (["users", "add", "x@example.com", "--name", "X", "--role", "boss"], "unknown role 'boss'"),
        (["users", "add", "x@example.com", "--name", "X", "--team", "East"], "unknown team 'East'"),
        (["users", "add", "admin@example.com", "--name", "Again"], "email"),
        (["users", "add", "x@example.com"], "Missing option '--name'"),
        (["users", "disable", "nobody@example.com"], "user nobody@example.com does not exist"),
        (["users", "set-role", "admin@example.com", "agent"], "last active admin"),
        (["users", "disable", "admin@example.com"], "last active admin"),
        (["users", "set-password", "admin@example.com"], "--password-stdin"),
        (["users", "reset-link", "admin@example.com", "--base-url", "ftp://x"], "http://"),
    ]
    for args, message in cases:
        assert message in crm(*args, deployment=dep_path, ok=False).output, args
    out = crm("users", "set-password", "admin@example.com", "--password-stdin", deployment=dep_path,
              input="admin@example.com\n", ok=False).output
    assert "must not be the e-mail address" in out


def test_users_set_password_asks_at_a_terminal(dep_path, monkeypatch):
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    crm("users", "add", "bob@example.com", "--name", "Bob", deployment=dep_path, input="\n")  # none for now
    crm("users", "set-password", "bob@example.com", deployment=dep_path,
        input="first try!!\nsecond try!\nbobs password\nbobs password\n")
    assert login(dep_path, "bob@example.com", "bobs password").user_id


def test_users_reset_link(dep_path):
    result = CliRunner().invoke(create_cli(dep_path), ["-d", str(dep_path), "users", "reset-link",
                                                       "admin@example.com", "--base-url", "https://crm.example.com"])
    assert result.exit_code == 0, result.output
    link = next(line for line in result.output.splitlines() if line.startswith("https://"))
    assert link.startswith("https://crm.example.com/password/reset/")

    async def reset(dep):
        await dep.auth.reset_password(link.rsplit("/", 1)[1], "a fresh password", ip=None)

    run(dep_path, reset)
    assert login(dep_path, "admin@example.com", "a fresh password").user_id

    # Without --base-url: the deployment's base_url setting, else the local server.
    def link_of() -> str:
        out = crm("users", "reset-link", "admin@example.com", deployment=dep_path).output
        return next(line for line in out.splitlines() if "/password/reset/" in line)

    assert link_of().startswith("http://127.0.0.1:8000/password/reset/")
    settings = load_settings(dep_path)
    settings.base_url = "https://crm.acme-corp.com"
    save_settings(dep_path, settings)
    assert link_of().startswith("https://crm.acme-corp.com/password/reset/")


# -- roles and teams --------------------------------------------------------------------------------

def test_roles_list_show_set_delete(dep_path, tmp_path):
    out = crm("roles", "list", deployment=dep_path).output
    for name in ("admin", "sales_manager", "agent", "read_only"):
        assert name in out
    shown = crm("roles", "show", "agent", deployment=dep_path).output
    agent = json.loads(shown)
    assert agent["name"] == "agent" and agent["entities"]["*"]["read"] == "own"

    # What show prints, set takes back (changed): a built-in role may be changed.
    agent["description"] = "our agents"
    agent["entities"]["deal"] = {"read": "team"}
    (tmp_path / "agent.json").write_text(json.dumps(agent))
    assert "built-in, changed" in crm("roles", "set", "agent", "--file", tmp_path / "agent.json",
                                      deployment=dep_path).output
    assert json.loads(crm("roles", "show", "agent", deployment=dep_path).output)["entities"]["deal"] == {"read": "team"}
    assert "built-in, changed" in crm("roles", "list", deployment=dep_path).output

    # A new role from TOML.
    (tmp_path / "auditor.toml").write_text(
        'label = "Auditor"\ngrants = ["view_audit_log"]\n[entities."*"]\nread = "all"\n'
        '[fields.contact]\nemail = "hidden"\n')
    crm("roles", "set", "auditor", "--file", tmp_path / "auditor.toml", deployment=dep_path)
    auditor = json.loads(crm("roles", "show", "auditor", deployment=dep_path).output)
    assert auditor == {"name": "auditor", "label": "Auditor", "entities": {"*": {"read": "all"}},
                       "fields": {"contact": {"email": "hidden"}}, "grants": ["view_audit_log"]}
    crm("users", "add", "ann@example.com", "--name", "Ann", "--role", "auditor", deployment=dep_path)
    assert "give them another role first" in crm("roles", "delete", "auditor", deployment=dep_path, ok=False).output
    crm("users", "set-role", "ann@example.com", "agent", deployment=dep_path)
    assert "Deleted role auditor" in crm("roles", "delete", "auditor", deployment=dep_path).output
    assert "role auditor does not exist" in crm("roles", "show", "auditor", deployment=dep_path, ok=False).output

    bad = [
        ('{"entities": {"ghost": {"read": "all"}}}', "json", "unknown entity type 'ghost'"),
        ('{"entities": {"contact": {"read": "lots"}}}', "json", "scopes are none, own, team, all"),
        ('{"grants": ["fly"]}', "json", "unknown permission 'fly'"),
        ('{"name": "other"}', "json", "describes role 'other'"),
        ("{not json", "json", "not valid JSON"),
        ("entities = [", "toml", "not valid TOML"),
        ("[1, 2]", "json", "expected an object"),
    ]
    for index, (text, suffix, message) in enumerate(bad):
        file = tmp_path / f"bad{index}.{suffix}"
        file.write_text(text)
        assert message in crm("roles", "set", "custom", "--file", file, deployment=dep_path, ok=False).output, text
    assert "built-in role" in crm("roles", "delete", "agent", deployment=dep_path, ok=False).output
    assert "does not exist" in crm("roles", "set", "x", "--file", tmp_path / "nope.json",
                                   deployment=dep_path, ok=False).output


def test_teams_list_add_remove(dep_path):
    crm("users", "add", "bob@example.com", "--name", "Bob", "--team", "North", deployment=dep_path)
    out = crm("teams", "list", deployment=dep_path).output
    assert "North" in out and "bob@example.com" in out and "South" in out
    assert "already exists" in crm("teams", "add", "North", deployment=dep_path, ok=False).output
    assert "1 member" in crm("teams", "remove", "North", deployment=dep_path, ok=False).output
    assert "Removed team South" in crm("teams", "remove", "South", deployment=dep_path).output
    assert "team South does not exist" in crm("teams", "remove", "South", deployment=dep_path, ok=False).output
    assert "South" not in crm("teams", "list", deployment=dep_path).output


# -- tokens and the security log --------------------------------------------------------------------

def test_tokens_create_list_revoke(dep_path):
    crm("users", "add", "bob@example.com", "--name", "Bob", deployment=dep_path)
    result = CliRunner().invoke(create_cli(dep_path), ["-d", str(dep_path), "tokens", "create", "bob@example.com",
                                                       "reports", "--read-only", "--expires-days", "30"])
    assert result.exit_code == 0, result.output
    token = result.output.splitlines()[0]
    assert token.startswith("crm_") and "not shown again" in result.output

    async def actor(dep):
        return await dep.auth.token_actor(token)

    found = run(dep_path, actor)
    assert found.read_only and found.via == "token"
    crm("tokens", "create", "admin@example.com", "ci", deployment=dep_path)
    listed = crm("tokens", "list", deployment=dep_path).output
    assert "reports" in listed and "ci" in listed and token[:10] in listed and token not in listed
    assert "ci" not in crm("tokens", "list", "bob@example.com", deployment=dep_path).output.split()
    assert "Revoked token 1" in crm("tokens", "revoke", "1", deployment=dep_path).output
    with pytest.raises(Unauthenticated, match="revoked"):
        run(dep_path, actor)
    assert "token 99 does not exist" in crm("tokens", "revoke", "99", deployment=dep_path, ok=False).output
    assert "give the token a name" in crm("tokens", "create", "bob@example.com", " ", deployment=dep_path,
                                          ok=False).output
    assert crm("tokens", "create", "bob@example.com", "x", "--expires-days", "0", deployment=dep_path,
               ok=False).exit_code == 2
    assert "user nobody@example.com does not exist" in crm("tokens", "list", "nobody@example.com",
                                                           deployment=dep_path, ok=False).output


def test_security_log_command(dep_path):
    with pytest.raises(Unauthenticated):
        login(dep_path, "admin@example.com", "not the password")
    login(dep_path, "admin@example.com", PASSWORD)
    out = crm("security-log", deployment=dep_path).output
    assert "login_failed" in out and "wrong_password" in out and "team_created" in out
    entries = json.loads(crm("security-log", "--event", "login", "--json", deployment=dep_path).output)
    assert [e["event"] for e in entries] == ["login"] and entries[0]["email"] == "admin@example.com"
    limited = crm("security-log", "--limit", "2", deployment=dep_path).output
    assert "(more: --before" in limited
    before = limited.rsplit("--before ", 1)[1].strip(" )\n")
    older = json.loads(crm("security-log", "--before", before, "--json", deployment=dep_path).output)
    assert older and all(e["id"] < int(before) for e in older)
    assert crm("security-log", "--limit", "0", deployment=dep_path, ok=False).exit_code == 2
    assert "No entries." in crm("security-log", "--event", "nothing_like_this", deployment=dep_path).output


# -- the demo -----------------------------------------------------------------------------------------

def test_demo_prints_how_to_log_in(new_path):
    path, options = new_path
    crm("init", path, *options)
    out = crm("demo", deployment=path).output
    assert "Log in as admin@example.com with the password demo-admin-password" in out
    assert login(path, "admin@example.com", "demo-admin-password").user_id
    users = {u["email"]: u for u in json.loads(crm("users", "list", "--json", deployment=path).output)}
    assert users["admin@example.com"]["role"] == "admin"
    roles = sorted(u["role"] for u in users.values())
    assert roles.count("sales_manager") == 2 and roles.count("agent") == 3
    assert {u["teams"][0] for u in users.values() if u["role"] == "sales_manager"} == {"Türkiye", "Europe"}
    assert all(len(u["teams"]) == 1 for u in users.values() if u["role"] != "admin")
    assert login(path, "ayse.yilmaz@demo-crm.example.com", "demo-password").user_id
