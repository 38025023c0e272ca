"""The ``crm`` command, driven through ``create_cli()`` with click's runner and, once, through the
installed console script. Every deployment is a real one on SQLite in ``tmp_path``; plugins are
real installed distributions (a package plus its ``.dist-info`` on ``sys.path``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import crmcore
from crmcore.testing import free_port, make_user
from cli import _deployment_from_argv, create_cli

from .conftest import crm, run

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def dep_path(tmp_path: Path) -> Path:
    path = tmp_path / "acme"
    crm("init", path, "--region", "TR", "--currency", "TRY", "--timezone", "Europe/Istanbul")
    return path


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``install_plugin(name, body, requires=[])``: a real distribution declaring the
    ``crm.plugins`` entry point, put on ``sys.path`` (and ``PYTHONPATH`` for subprocesses)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    made: list[str] = []

    def install(name: str, body: str = "", *, requires: list[str] = (), module: str | None = None) -> Path:
        module = module or f"crm_test_{name}_{os.getpid()}_{len(made)}"
        package = site / module
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(
            "import crmcore\nfrom crmcore import EntityType, Field, FieldType, hookimpl\n"
            f"PLUGIN = crmcore.PluginInfo(name={name!r}, version='1.2.3', description='The {name} plugin', "
            f"requires={list(requires)!r})\n" + textwrap.dedent(body)
        )
        info = site / f"crm_test_{name}-1.2.3.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: crm-test-{name}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[crm.plugins]\n{name} = {module}\n")
        sys.modules.pop(module, None)
        made.append(module)
        import importlib

        importlib.invalidate_caches()
        return package / "__init__.py"

    yield install
    for module in made:
        sys.modules.pop(module, None)


TICKETS = """
@hookimpl
def crm_register_entities(register):
    register(EntityType(name="ticket", fields=[
        Field(name="title", type=FieldType.TEXT, required=True),
        Field(name="priority", type=FieldType.INTEGER),
    ]))
"""


# -- init ---------------------------------------------------------------------------------------

def test_init_creates_a_deployment_with_its_database(tmp_path):
    path = tmp_path / "acme"
    result = crm("init", path, "--region", "tr", "--currency", "try", "--timezone", "Europe/Istanbul", "--locale", "tr")
    assert "Next steps" in result.output and "crm serve" in result.output
    settings = tomllib.loads((path / "crm.toml").read_text())
    assert settings["region"] == "TR" and settings["currency"] == "TRY" and settings["edition"] == "standard"
    assert settings["timezone"] == "Europe/Istanbul" and settings["locale"] == "tr"
    assert (path / "crm.db").exists()  # opened once: database and tables made

    async def tables(dep):
        return set(dep.registry.entities), await dep.schema.tables()

    entities, existing = run(path, tables)
    assert {"contact", "company", "deal", "activity", "user"} <= entities
    assert "crm_contact" in existing


@pytest.mark.parametrize("args, message", [
    (["--region", "XX"], "not a region code"),
    (["--currency", "XXQ"], "not an ISO 4217 currency"),
    (["--timezone", "Mars/Olympus"], "not a time zone"),
    (["--locale", "zz_QQ"], "not a locale"),
    (["--edition", "nope"], "unknown edition 'nope'"),
    (["--database-url", "mysql://localhost/x"], "Error"),
])
def test_init_refuses_bad_options_cleanly(tmp_path, args, message):
    path = tmp_path / "bad"
    result = crm("init", path, *args, ok=False)
    assert message in result.output
    assert not (path / "crm.toml").exists()  # nothing half-made is left behind


def test_init_twice_and_missing_deployment(tmp_path, dep_path):
    assert "already holds a deployment" in crm("init", dep_path, ok=False).output
    result = crm("fields", "list", "contact", deployment=tmp_path / "nowhere", ok=False)
    assert "is not a deployment" in result.output and "crm init" in result.output
    assert crm("init", ok=False).exit_code == 2  # missing DIRECTORY: usage error


def test_every_command_has_help():
    cli = create_cli()
    paths = [[]]
    for name, command in cli.commands.items():
        paths.append([name])
        for sub in getattr(command, "commands", {}):
            paths.append([name, sub])
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)


def test_unknown_command_and_option_are_usage_errors():
    assert crm("frobnicate", ok=False).exit_code == 2
    assert crm("fields", "add", "--bogus", ok=False).exit_code == 2


def test_deployment_from_env(tmp_path, dep_path, monkeypatch):
    monkeypatch.setenv("CRM_DEPLOYMENT", str(dep_path))
    result = CliRunner().invoke(create_cli(), ["fields", "list", "company"])
    assert result.exit_code == 0 and "industry" in result.output
    assert _deployment_from_argv(["-d", "x", "fields"]) == "x"
    assert _deployment_from_argv(["--deployment=y", "fields"]) == "y"
    assert _deployment_from_argv(["fields", "add", "-d", "z"]) is None


# -- fields -------------------------------------------------------------------------------------

def test_fields_add_is_live_and_filterable(dep_path):
    result = crm("fields", "add", "contact", "loyalty", "--type", "choice", "--choices", "bronze,silver,gold",
                 "--indexed", "--label", "Loyalty tier", "--in-list", deployment=dep_path)
    assert "Added contact.loyalty" in result.output
    crm("fields", "add", "contact", "score", "--type", "integer", "--default", "0", deployment=dep_path)
    listing = crm("fields", "list", "contact", deployment=dep_path).output
    line = next(l for l in listing.splitlines() if l.startswith("loyalty"))
    assert "Loyalty tier" in line and "custom" in line and "indexed" in line and "bronze, silver, gold" in line

    async def use(dep):
        await dep.records.create("contact", {"last_name": "Yılmaz", "loyalty": "gold", "phone": "(0532) 123 45 67"})
        await dep.records.create("contact", {"last_name": "Demir", "loyalty": "bronze"})
        await dep.records.create("contact", {"last_name": "Kaya"})
        page = await dep.records.list("contact", crmcore.ListQuery(
            filter={"field": "loyalty", "op": "eq", "value": "gold"}, count=True))
        zero = await dep.records.list("contact", crmcore.ListQuery(filter={"field": "score", "op": "eq", "value": 0}))
        return page, zero

    page, zero = run(dep_path, use)
    assert page.total == 1 and page.items[0]["last_name"] == "Yılmaz"
    assert page.items[0]["phone"].e164 == "+905321234567"
    assert len(zero.items) == 3  # the default applied to new records


@pytest.mark.parametrize("args, message", [
    (["nope", "x", "--type", "text"], "unknown entity 'nope'"),
    (["contact", "Bad Name", "--type", "text"], "is invalid"),
    (["contact", "last_name", "--type", "text"], "already has a field"),
    (["contact", "id", "--type", "text"], "reserved"),
    (["contact", "x", "--type", "wat"], "Invalid value for '--type'"),
    (["contact", "x", "--type", "choice"], "needs choices"),
    (["contact", "x", "--type", "text", "--choices", "a,b"], "--choices applies"),
    (["contact", "x", "--type", "relation"], "needs --target"),
    (["contact", "x", "--type", "relation", "--target", "nope"], "not a known entity"),
    (["contact", "x", "--type", "text", "--required"], "needs a default"),
    (["contact", "x", "--type", "integer", "--default", "many"], "the default is not valid"),
    (["contact", "x", "--type", "text", "--max-length", "0"], "--max-length"),
    (["contact"], "Missing argument"),
])
def test_fields_add_refuses_bad_input(dep_path, args, message):
    assert message in crm("fields", "add", *args, deployment=dep_path, ok=False).output


def test_fields_hide_show_relabel(dep_path):
    crm("fields", "add", "company", "vat_no", "--type", "text", "--unique", deployment=dep_path)
    crm("fields", "relabel", "company", "vat_no", "VAT number", deployment=dep_path)
    crm("fields", "hide", "company", "vat_no", deployment=dep_path)
    line = next(l for l in crm("fields", "list", "company", deployment=dep_path).output.splitlines()
                if l.startswith("vat_no"))
    assert "VAT number" in line and "hidden" in line and "unique" in line
    crm("fields", "show", "company", "vat_no", deployment=dep_path)
    line = next(l for l in crm("fields", "list", "company", deployment=dep_path).output.splitlines()
                if l.startswith("vat_no"))
    assert "hidden" not in line
    # Only custom fields can be changed; a missing one is named.
    assert "no custom field 'name'" in crm("fields", "hide", "company", "name", deployment=dep_path, ok=False).output
    assert "no custom field 'zzz'" in crm("fields", "relabel", "company", "zzz", "Z", deployment=dep_path, ok=False).output
    assert "must not be empty" in crm("fields", "relabel", "company", "vat_no", " ", deployment=dep_path, ok=False).output


def test_fields_remove_keeps_data_and_purge_drops_it_after_a_backup(dep_path):
    crm("fields", "add", "contact", "shoe_size", "--type", "integer", deployment=dep_path)

    async def fill(dep):
        record = await dep.records.create("contact", {"last_name": "Öztürk", "shoe_size": 42})
        return record["id"]

    rid = run(dep_path, fill)
    out = crm("fields", "remove", "contact", "shoe_size", deployment=dep_path).output
    assert "data are kept" in out and "crm fields purge contact shoe_size --yes" in out

    async def after_remove(dep):
        record = await dep.records.get("contact", rid)
        column = await dep.db.fetchval('SELECT "shoe_size" FROM crm_contact WHERE "id" = ?', (rid,))
        with pytest.raises(crmcore.ValidationError):
            await dep.records.create("contact", {"last_name": "X", "shoe_size": 1})
        return record, column

    record, column = run(dep_path, after_remove)
    assert "shoe_size" not in record  # hidden from reads...
    assert column == 42  # ...while the column and its data stay
    assert "removed" in next(l for l in crm("fields", "list", "contact", deployment=dep_path).output.splitlines()
                            if l.startswith("shoe_size"))
    # Purging asks first; without an answer nothing happens.
    assert crm("fields", "purge", "contact", "shoe_size", deployment=dep_path, input="n\n", ok=False).exit_code == 1
    out = crm("fields", "purge", "contact", "shoe_size", "--yes", deployment=dep_path).output
    backup = out.strip().split()[-1]
    assert backup.startswith("crm_backup_crm_contact__shoe_size")

    async def after_purge(dep):
        kept = await dep.db.fetch(f'SELECT "id", "shoe_size" FROM "{backup}"')
        return kept, await dep.schema.columns("crm_contact")

    kept, columns = run(dep_path, after_purge)
    assert [tuple(r) for r in kept] == [(rid, 42)] and "shoe_size" not in columns
    # The name is free again.
    crm("fields", "add", "contact", "shoe_size", "--type", "decimal", deployment=dep_path)


def test_fields_remove_and_purge_errors(dep_path):
    crm("fields", "add", "contact", "nick", "--type", "text", deployment=dep_path)
    assert "must be removed before" in crm("fields", "purge", "contact", "nick", "--yes", deployment=dep_path, ok=False).output
    assert "no custom field" in crm("fields", "remove", "contact", "email", deployment=dep_path, ok=False).output
    crm("fields", "remove", "contact", "nick", deployment=dep_path)
    assert "restore it first" in crm("fields", "show", "contact", "nick", deployment=dep_path, ok=False).output
    assert "purge it first" in crm("fields", "add", "contact", "nick", "--type", "text", deployment=dep_path, ok=False).output
    listing = crm("fields", "list", "contact", deployment=dep_path).output
    assert "removed" in next(line for line in listing.splitlines() if line.startswith("nick"))
    crm("fields", "restore", "contact", "nick", deployment=dep_path)
    listing = crm("fields", "list", "contact", deployment=dep_path).output
    assert "removed" not in next(line for line in listing.splitlines() if line.startswith("nick"))


# -- plugins ------------------------------------------------------------------------------------

def test_plugins_list_enable_disable(dep_path, install_plugin):
    install_plugin("tickets", TICKETS)
    install_plugin("kaputt", "raise RuntimeError('boom at import')\n")
    listing = crm("plugins", "list", deployment=dep_path).output
    tickets = next(l for l in listing.splitlines() if l.startswith("tickets"))
    assert "1.2.3" in tickets and " no " in tickets and "crm-test-tickets" in tickets
    assert "boom at import" in next(l for l in listing.splitlines() if l.startswith("kaputt"))
    assert next(l for l in listing.splitlines() if l.startswith("core"))

    out = crm("plugins", "enable", "tickets", deployment=dep_path).output
    assert "Enabled tickets" in out and "tickets_ticket" in out
    assert tomllib.loads((dep_path / "crm.toml").read_text())["plugins"] == ["tickets"]
    assert " yes " in next(l for l in crm("plugins", "list", deployment=dep_path).output.splitlines()
                           if l.startswith("tickets"))
    assert "already enabled" in crm("plugins", "enable", "tickets", deployment=dep_path).output

    async def create(dep):
        return (await dep.records.create("tickets_ticket", {"title": "Printer jam", "priority": 2}))["id"]

    rid = run(dep_path, create)
    crm("plugins", "disable", "tickets", deployment=dep_path)
    assert tomllib.loads((dep_path / "crm.toml").read_text())["plugins"] == []

    async def gone(dep):
        return dep.registry.get("tickets_ticket"), "tickets_ticket" in await dep.schema.tables()

    entity, table_kept = run(dep_path, gone)
    assert entity is None and table_kept
    crm("plugins", "enable", "tickets", deployment=dep_path)

    async def back(dep):
        return await dep.records.get("tickets_ticket", rid)

    assert run(dep_path, back)["title"] == "Printer jam"  # data kept across disable/enable


def test_plugin_errors_are_clean(dep_path, install_plugin):
    install_plugin("tickets", TICKETS)
    install_plugin("kaputt", "raise RuntimeError('boom at import')\n")
    install_plugin("sla", TICKETS.replace('"ticket"', '"rule"'), requires=["tickets"])
    out = crm("plugins", "enable", "missing_one", deployment=dep_path, ok=False).output
    assert "'missing_one' is not installed" in out and "tickets" in out
    assert "boom at import" in crm("plugins", "enable", "kaputt", deployment=dep_path, ok=False).output
    out = crm("plugins", "enable", "sla", deployment=dep_path, ok=False).output
    assert "requires plugin 'tickets'" in out and "crm plugins enable tickets" in out
    assert "is not enabled" in crm("plugins", "disable", "tickets", deployment=dep_path, ok=False).output
    assert "built in" in crm("plugins", "disable", "core", deployment=dep_path, ok=False).output
    assert "not installed" in crm("plugins", "info", "nothing", ok=False).output
    crm("plugins", "enable", "tickets", deployment=dep_path)
    crm("plugins", "enable", "sla", deployment=dep_path)
    out = crm("plugins", "disable", "tickets", deployment=dep_path, ok=False).output
    assert "sla" in out and "disable those first" in out
    assert tomllib.loads((dep_path / "crm.toml").read_text())["plugins"] == ["tickets", "sla"]
    assert "is not a deployment" in crm("plugins", "enable", "x", deployment=dep_path / "none", ok=False).output


def test_enabled_plugin_that_is_gone_can_still_be_disabled(dep_path, install_plugin):
    install_plugin("tickets", TICKETS)
    crm("plugins", "enable", "tickets", deployment=dep_path)
    text = (dep_path / "crm.toml").read_text().replace('"tickets"', '"vanished"')
    (dep_path / "crm.toml").write_text(text)
    out = crm("fields", "list", "contact", deployment=dep_path, ok=False).output
    assert "'vanished' is enabled but not installed" in out
    assert "MISSING" in crm("plugins", "list", deployment=dep_path).output
    crm("plugins", "disable", "vanished", deployment=dep_path)
    crm("fields", "list", "contact", deployment=dep_path)


def test_plugin_declaring_a_bad_entity_leaves_the_deployment_unchanged(dep_path, install_plugin):
    install_plugin("clash", """
@hookimpl
def crm_extend_entities(add_field):
    add_field("contact", Field(name="email", type=FieldType.TEXT))
""")
    out = crm("plugins", "enable", "clash", deployment=dep_path, ok=False).output
    assert "already has a field 'email'" in out
    assert tomllib.loads((dep_path / "crm.toml").read_text())["plugins"] == []
    crm("fields", "list", "contact", deployment=dep_path)


def test_plugins_info(install_plugin):
    install_plugin("tickets", TICKETS + """
@hookimpl
def crm_extend_entities(add_field):
    add_field("contact", Field(name="support_level", type=FieldType.TEXT))
""", requires=[])
    out = crm("plugins", "info", "tickets").output
    assert "tickets 1.2.3" in out and "requires: nothing" in out
    assert "tickets_ticket: title (text), priority (integer)" in out
    assert "contact.support_level (text)" in out
    core = crm("plugins", "info", "core").output
    assert "contact:" in core and "sales (deal): prospecting" in core


def test_plugins_add_commands(dep_path, install_plugin, capsys):
    install_plugin("hello", """
import click

@hookimpl
def crm_register_commands(cli):
    @cli.command()
    @click.argument("who")
    def greet(who):
        "Say hello."
        click.echo(f"hello {who}")

    @cli.command()
    def fields():
        "Tries to replace a core command."
""")
    assert "No such command 'greet'" in crm("greet", "x", deployment=dep_path, ok=False).output  # not enabled
    crm("plugins", "enable", "hello", deployment=dep_path)
    result = crm("greet", "world", deployment=dep_path)
    assert "hello world" in result.output
    assert "plugin 'hello' tried to replace the core command 'fields'" in capsys.readouterr().err
    assert "Usage: crm fields" in crm("fields", "--help", deployment=dep_path).output


# -- schema -------------------------------------------------------------------------------------

def test_schema_status_and_migrate(dep_path, install_plugin):
    module = install_plugin("tickets", TICKETS, module="crm_test_schema_tickets")
    crm("plugins", "enable", "tickets", deployment=dep_path)
    out = crm("schema", "status", deployment=dep_path).output
    assert "No pending changes" in out and "create_table" in out and "tickets_ticket" in out
    assert "Nothing to migrate" in crm("schema", "migrate", "--yes", deployment=dep_path).output

    async def fill(dep):
        await dep.records.create("tickets_ticket", {"title": "t", "priority": 5})

    run(dep_path, fill)
    # A new version of the plugin no longer declares "priority".
    module.write_text(module.read_text().replace(
        '        Field(name="priority", type=FieldType.INTEGER),\n', ""))
    sys.modules.pop("crm_test_schema_tickets", None)
    out = crm("schema", "status", deployment=dep_path).output
    assert "1 pending change" in out and "tickets_ticket.priority" in out and "drop_column" in out
    assert crm("schema", "migrate", deployment=dep_path, input="n\n", ok=False).exit_code == 1
    out = crm("schema", "migrate", "--yes", deployment=dep_path).output
    assert "dropped tickets_ticket.priority (backup: crm_backup_tickets_ticket__priority" in out
    assert "No pending changes" in crm("schema", "status", deployment=dep_path).output


# -- demo ---------------------------------------------------------------------------------------

def test_demo_command_loads_once(dep_path):
    out = crm("demo", deployment=dep_path).output
    assert "240 contact" in out and "60 company" in out
    out = crm("demo", deployment=dep_path, ok=False).output
    assert "already holds 240 contacts" in out
    assert "unknown edition 'nope'" in crm("demo", "--edition", "nope", deployment=dep_path, ok=False).output


def test_run_demo_sets_up_once(tmp_path):
    target = tmp_path / "demo"
    out = crm("run-demo", target, "--no-serve").output
    assert "Created the demo deployment" in out and "240 contact" in out
    assert tomllib.loads((target / "crm.toml").read_text())["region"] == "TR"
    out = crm("run-demo", target, "--no-serve").output
    assert "already holds data" in out and "Created" not in out


# -- plugin new (fast part; the slow test installs and runs it) ---------------------------------

def test_plugin_new_writes_a_package(tmp_path):
    out = crm("plugin", "new", "real_estate", "--dir", tmp_path, "--description", 'Homes "and" flats').output
    target = tmp_path / "crm-real-estate"
    assert str(target) in out and "pip install -e" in out
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["crm.plugins"] == {"real_estate": "crm_real_estate"}
    source = (target / "crm_real_estate" / "__init__.py").read_text()
    compile(source, "init", "exec")
    compile((target / "tests" / "test_plugin.py").read_text(), "test", "exec")
    assert 'name="real_estate"' in source and "crm_register_entities" in source
    assert "already exists" in crm("plugin", "new", "real_estate", "--dir", tmp_path, ok=False).output


@pytest.mark.parametrize("name", ["Hello", "1abc", "with-dash", "a__b", "core", "class", "x" * 31, "trailing_"])
def test_plugin_new_refuses_bad_names(tmp_path, name):
    out = crm("plugin", "new", name, "--dir", tmp_path, ok=False).output
    assert "invalid plugin name" in out
    assert not list(tmp_path.iterdir())


# -- the real console script --------------------------------------------------------------------

def test_console_script(tmp_path, install_plugin):
    install_plugin("tickets", TICKETS)
    script = VENV_BIN / "crm"
    env = {**os.environ, "CRM_DEPLOYMENT": str(tmp_path / "site-dep")}

    def sh(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        return done

    sh("init", "site-dep", "--region", "DE", "--currency", "EUR")
    sh("fields", "add", "contact", "loyalty", "--type", "choice", "--choices", "a,b")
    assert "loyalty" in sh("fields", "list", "contact").stdout
    sh("plugins", "enable", "tickets")
    assert "tickets_ticket" in sh("plugins", "info", "tickets").stdout
    assert "Error: unknown entity 'nope'" in sh("-d", "site-dep", "fields", "list", "nope", code=1).stderr
    assert "Error:" in sh("plugins", "enable", "nope", code=1).stderr
    assert "Usage:" in sh("--help").stdout



@pytest.mark.timeout(180)
def test_run_demo_serves_the_api(tmp_path):
    """``crm run-demo DIR --port P`` through the console script: set up, load, serve; the port
    in use then gives a clean error."""
    import time

    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "CRM_DEPLOYMENT")}
    server = subprocess.Popen([str(VENV_BIN / "crm"), "run-demo", str(tmp_path / "demo"), "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/contact", params={"count": "true", "limit": 1})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert response.status_code == 401  # the API needs credentials: an admin's token

        async def admin_token() -> str:
            async with await crmcore.Deployment.open(tmp_path / "demo") as dep:
                return (await make_user(dep, role="admin")).token

        token = asyncio.run(admin_token())
        response = httpx.get(f"http://127.0.0.1:{port}/api/contact", params={"count": "true", "limit": 1},
                             headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["total"] == 240
        busy = subprocess.run([str(VENV_BIN / "crm"), "-d", str(tmp_path / "demo"), "serve", "--port", str(port)],
                              env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1 and "Address already in use" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Loaded demo data" in output and "Traceback" not in output


@pytest.mark.parametrize("args", [
    ["serve"], ["demo"], ["schema", "status"], ["schema", "migrate", "--yes"], ["plugins", "enable", "x"],
    ["plugins", "disable", "x"], ["fields", "list", "contact"], ["fields", "remove", "contact", "x"],
])
def test_commands_outside_a_deployment_say_so(tmp_path, args):
    out = crm(*args, deployment=tmp_path / "none", ok=False).output
    assert "is not a deployment" in out


def test_plugins_list_without_a_deployment(tmp_path):
    out = crm("plugins", "list", deployment=tmp_path).output
    assert out.splitlines()[2].startswith("core") and "no deployment" in out


def test_serve_refuses_a_bad_port(dep_path):
    assert crm("serve", "--port", "70000", deployment=dep_path, ok=False).exit_code == 2


def test_plugin_edition_init_and_demo(tmp_path, install_plugin):
    install_plugin("salon", """
from crmcore import Edition

@hookimpl
def crm_register_entities(register):
    register(EntityType(name="chair", fields=[Field(name="label", type=FieldType.TEXT, required=True)]))

async def demo(deployment):
    await deployment.records.bulk_create("salon_chair", [{"label": "Window"}, {"label": "Back"}])

@hookimpl
def crm_register_editions(register):
    register(Edition(name="parlour", label="Parlour CRM", plugins=["salon"], settings={"currency": "EUR"}, demo=demo))
    register(Edition(name="bare", label="No demo"))
""")
    plain = tmp_path / "plain"
    crm("init", plain)
    out = crm("demo", "--edition", "parlour", deployment=plain, ok=False).output
    assert "needs plugins this deployment has not enabled: salon" in out
    assert "has no demo data" in crm("demo", "--edition", "bare", deployment=plain, ok=False).output
    salon = tmp_path / "salon"
    assert "edition parlour" in crm("init", salon, "--edition", "parlour").output
    assert tomllib.loads((salon / "crm.toml").read_text())["plugins"] == ["salon"]
    assert "2 salon_chair" in crm("demo", deployment=salon).output
