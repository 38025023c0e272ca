"""The ``crm`` command: a thin click front over crmcore's services.

Build it with :func:`create_cli` (a fresh group each time, nothing happens at import). Commands
open the deployment, call one service and print the result; errors from the services are shown
as ``Error: ...`` with exit code 1 (bad usage: 2), never as a traceback (``CRM_DEBUG=1`` shows it).
Plugins add commands through the ``crm_register_commands`` hook.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

import crmcore
from crmcore import commands
import crmcore.commands.backup
import crmcore.commands.bundles
import crmcore.commands.documents
import crmcore.commands.importing
import crmcore.commands.reports
from crmcore import (
    Deployment, DeploymentError, Field, FieldType, ListQuery, NotFound, PluginError, RegistryError,
    ValidationError,
)

__all__ = ["create_cli", "main"]

T = TypeVar("T")
#: Errors from the services whose message is meant for the user as it is.
USER_ERRORS = (
    DeploymentError, PluginError, RegistryError, ValidationError, NotFound, crmcore.Conflict, crmcore.Forbidden,
    crmcore.auth.Unauthenticated, crmcore.auth.RateLimited,
)
DEMO_DEFAULTS = {"region": "TR", "currency": "TRY", "timezone": "Europe/Istanbul", "locale": "en"}


# -- plumbing ----------------------------------------------------------------------------------

class CrmGroup(click.Group):
    """The root group: turns service errors into ``Error: ...`` and guards core command names."""

    core_names: frozenset[str] = frozenset()
    #: The plugin whose ``crm_register_commands`` is running (for messages).
    adding_plugin: str | None = None

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name in self.core_names:
            click.echo(
                f"Warning: plugin {self.adding_plugin!r} tried to replace the core command {name!r}; ignored",
                err=True,
            )
            return
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:  # never a traceback for the user; CRM_DEBUG=1 shows it
            if os.environ.get("CRM_DEBUG"):
                traceback.print_exc()
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (set CRM_DEBUG=1 to see the traceback)"
            ) from None


class Obj:
    def __init__(self, path: Path):
        self.path = path


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def with_deployment(path: Path, action: Callable[[Deployment], Awaitable[T]]) -> T:
    """Open the deployment in ``path``, run ``action`` on it, close it."""
    async def go() -> T:
        async with await Deployment.open(path) as dep:
            return await action(dep)
    return _run(go())


def _settings(path: Path) -> crmcore.Settings:
    from crmcore.deployment import load_settings

    return load_settings(path)


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * w for w in widths))


def _enabled_for_commands(path: Path) -> list[str]:
    """The deployment's plugins that load (for their commands); a broken one is left out here and
    reported by the command that opens the deployment."""
    try:
        wanted = _settings(path).plugins
    except Exception:
        return []
    ok: list[str] = []
    changed = True
    while changed:
        changed = False
        for name in wanted:
            if name in ok:
                continue
            try:
                crmcore.plugins.get_plugin_manager(ok + [name])
            except Exception:
                continue
            ok.append(name)
            changed = True
    return ok


def _add_plugin_commands(group: CrmGroup, path: Path) -> None:
    from crmcore.plugins import get_plugin_manager

    pm = get_plugin_manager(_enabled_for_commands(path))
    for impl in pm.hook.crm_register_commands.get_hookimpls():
        kwargs = {"cli": group}
        group.adding_plugin = impl.plugin_name
        try:
            impl.function(**{a: kwargs[a] for a in impl.argnames})
        except Exception as exc:
            click.echo(f"Warning: plugin {impl.plugin_name!r} could not add its commands: {exc}", err=True)
        finally:
            group.adding_plugin = None


# -- option checks (input parsing only; the services validate again) --------------------------

def _check(name: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """An option callback checking a deployment setting the way the core does."""
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from crmcore.deployment import check_setting

        if value is None:
            return None
        try:
            return check_setting(name, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


# -- the command groups ------------------------------------------------------------------------

def _init_commands(cli: CrmGroup) -> None:
    @cli.command()
    @click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--edition", default="standard", show_default=True, help="The edition to set up (see crm plugins list).")
    @click.option("--currency", callback=_check("currency"), help="Default currency, ISO 4217 (EUR, TRY...).")
    @click.option("--region", callback=_check("region"), help="Region for phone numbers without a country code (TR, DE...).")
    @click.option("--timezone", callback=_check("timezone"), help="IANA time zone, e.g. Europe/Istanbul.")
    @click.option("--locale", callback=_check("locale"), help="Locale, e.g. en, tr.")
    @click.option("--database-url", help="PostgreSQL URL; default: an SQLite file in the folder.")
    @click.option("--admin-email", help="Create the first admin user with this e-mail (asked at a terminal).")
    @click.option("--admin-name", help="The first admin's name (default: from the e-mail).")
    @click.option("--admin-password-stdin", is_flag=True, help="Read the first admin's password from standard input.")
    def init(directory: Path, edition: str, currency: str | None, region: str | None, timezone: str | None,
             locale: str | None, database_url: str | None, admin_email: str | None, admin_name: str | None,
             admin_password_stdin: bool) -> None:
        """Create a deployment in DIRECTORY (crm.toml, database and tables) and its first admin.

        The admin comes from --admin-email/--admin-name/--admin-password-stdin (scripts), else
        is asked for at a terminal; without either, no admin is made and the command says how.
        """
        admin = _admin_input(admin_email, admin_name, admin_password_stdin)

        async def create_admin(dep: Deployment) -> dict[str, Any] | None:
            if admin is None:
                return None
            email, name, password = admin
            return await dep.auth.create_user(name=name, email=email, password=password, role="admin",
                                              actor=_cli_actor())

        made: list[dict[str, Any] | None] = []
        settings = _init(directory, after=lambda dep: _collect(made, create_admin(dep)), edition=edition,
                         currency=currency, region=region, timezone=timezone, locale=locale, database_url=database_url)
        click.echo(
            f"Created deployment {settings.name!r} in {directory} (edition {settings.edition}, region "
            f"{settings.region}, currency {settings.currency}, time zone {settings.timezone}, locale {settings.locale})"
        )
        user = made[0] if made else None
        if user is not None:
            click.echo(f"Created the admin {user['email']} (id {user['id']})")
            if not user["has_password"]:
                _no_password_hint(user["email"])
        else:
            click.echo("No admin user yet; make one with:")
            click.echo(f"  crm -d {directory} users add EMAIL --name NAME --role admin --password-stdin")
        click.echo("Next steps:")
        click.echo(f"  cd {directory}")
        click.echo("  crm demo             # load demo data (optional)")
        click.echo("  crm plugins list     # see and enable plugins")
        click.echo("  crm serve            # http://127.0.0.1:8000")


async def _collect(into: list[Any], result: Awaitable[Any]) -> None:
    into.append(await result)


def _admin_input(email: str | None, name: str | None, password_stdin: bool) -> tuple[str, str, str | None] | None:
    """(email, name, password) of the first admin from the options, or asked at a terminal;
    None: no admin now. Everything is read before the deployment is made."""
    if email is None and (name is not None or password_stdin):
        raise click.UsageError("--admin-name and --admin-password-stdin need --admin-email")
    if email is None:
        if not _interactive():
            return None
        click.echo("The first admin user (empty e-mail: none now)")
        email = click.prompt("Admin e-mail", default="", show_default=False).strip()
        if not email:
            return None
    if name is None:
        local = email.partition("@")[0]
        name = click.prompt("Admin name", default=local) if _interactive() else local
    if password_stdin:
        password = _password_from_stdin()
        from crmcore.auth.service import check_password

        check_password(password, email)  # refused before anything is made
    else:
        password = _prompt_password(email) if _interactive() else None
    return email, name, password


def _init(directory: Path, *, after: Callable[[Deployment], Awaitable[Any]] | None = None,
          **options: Any) -> crmcore.Settings:
    """init_deployment, then open once so the database and its tables exist (and run ``after``
    on it); undone on failure."""
    existed = directory.exists()
    settings = crmcore.init_deployment(directory, **options)

    async def setup(dep: Deployment) -> None:
        from crmcore.bundles import apply_edition

        await apply_edition(dep)  # the edition's configuration (fields, pipelines, rules...)
        if after is not None:
            await after(dep)

    try:
        with_deployment(directory, setup)
    except BaseException:
        from crmcore.deployment import CONFIG_FILE

        (directory / CONFIG_FILE).unlink(missing_ok=True)
        if not existed:
            try:
                for leftover in directory.iterdir():
                    if leftover.name.startswith("crm.db"):
                        leftover.unlink()
                directory.rmdir()
            except OSError:
                pass
        raise
    return settings


def _serve_commands(cli: CrmGroup) -> None:
    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--reload/--no-reload", default=False, show_default=True, help="Restart on code changes (development).")
    @click.pass_obj
    def serve(obj: Obj, host: str, port: int, reload: bool) -> None:
        """Run the web app and API of the deployment."""
        _serve(obj.path, host, port, reload)

    @cli.command("run-demo")
    @click.argument("directory", default="demo", required=False, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--no-serve", is_flag=True, help="Set up the demo deployment and stop (no server).")
    @click.option("--edition", default="standard", show_default=True,
                  help="The edition whose demo to set up (crm editions lists them), e.g. invoicing.")
    def run_demo(directory: Path, host: str, port: int, no_serve: bool, edition: str) -> None:
        """Set up a demo deployment in DIRECTORY (default ./demo) if needed, then serve it.

        The first run creates the deployment (the standard edition, region TR, unless --edition
        names another, which brings its own settings) and loads the edition's demo data; later
        runs just serve it.
        """
        from crmcore.deployment import CONFIG_FILE

        if not (directory / CONFIG_FILE).exists():
            _init(directory, edition=edition, **(DEMO_DEFAULTS if edition == "standard" else {}))
            click.echo(f"Created the demo deployment in {directory}")

        async def fill(dep: Deployment) -> dict[str, int] | None:
            page = await dep.records.list("contact", ListQuery(limit=1))
            if page.items:
                return None
            return await _load_edition_demo(dep, dep.settings.edition)

        async def fill_and_logins(dep: Deployment) -> tuple[dict[str, int] | None, list[str]]:
            return await fill(dep), await _demo_logins(dep)

        loaded, logins = with_deployment(directory, fill_and_logins)
        if loaded is not None:
            click.echo("Loaded demo data: " + ", ".join(f"{n} {e}" for e, n in loaded.items()))
        else:
            click.echo(f"{directory} already holds data; serving it as it is")
        if not no_serve:
            _serve(directory, host, port, False, notes=logins)
        else:
            for line in logins:
                click.echo(line)


async def _demo_logins(dep: Deployment) -> list[str]:
    """How to log in to a demo deployment (when its demo users are there)."""
    from crmcore.demo import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD, DEMO_PASSWORD

    try:
        admin = await dep.auth.user_by_email(DEMO_ADMIN_EMAIL)
    except NotFound:
        return []
    lines = [f"Log in as {admin['email']} with the password {DEMO_ADMIN_PASSWORD} (admin)"]
    others = [u for u in await dep.auth.users() if u["email"].endswith("@demo-crm.example.com") and u["has_password"]]
    if others:
        shown = ", ".join(f"{u['email']} ({u['role']})" for u in others[:2])
        lines.append(f"  or as a sales user, e.g. {shown}, with the password {DEMO_PASSWORD}")
    return lines


def _serve(path: Path, host: str, port: int, reload: bool, notes: Sequence[str] = ()) -> None:
    import uvicorn

    async def check(dep: Deployment) -> None:  # a clean error before the server starts
        return None

    with_deployment(path, check)
    _check_port_free(host, port)
    click.echo(f"Serving {path.resolve()} at http://{host}:{port} (Ctrl+C to stop)")
    for line in notes:
        click.echo(line)
    if reload:
        os.environ["CRM_DEPLOYMENT"] = str(path.resolve())
        uvicorn.run("cli:app_from_env", factory=True, host=host, port=port, reload=True)
    else:
        from crmcore.api import create_app

        uvicorn.run(create_app(path), host=host, port=port)


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot serve on host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror} (is another server running? use --port)"
            ) from None


def app_from_env() -> Any:
    """The app of the deployment in ``CRM_DEPLOYMENT`` (for ``crm serve --reload``)."""
    from crmcore.api import create_app

    return create_app(os.environ.get("CRM_DEPLOYMENT", "."))


async def _load_edition_demo(dep: Deployment, edition_name: str) -> dict[str, int]:
    from crmcore.deployment import available_editions

    editions = available_editions()
    edition = editions.get(edition_name)
    if edition is None:
        raise DeploymentError(f"unknown edition {edition_name!r}; available: {', '.join(sorted(editions))}")
    if edition.demo is None:
        raise DeploymentError(f"edition {edition_name!r} has no demo data")
    missing = [p for p in edition.plugins if p not in dep.settings.plugins]
    if missing:
        raise DeploymentError(
            f"edition {edition_name!r} needs plugins this deployment has not enabled: {', '.join(missing)} "
            f"(enable them with: crm plugins enable NAME)"
        )
    before = await _counts(dep)
    await edition.demo(dep)
    after = await _counts(dep)
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


async def _counts(dep: Deployment) -> dict[str, int]:
    counts = {}
    for entity in dep.registry:
        page = await dep.records.list(entity.name, ListQuery(limit=1, count=True))
        counts[entity.name] = page.total or 0
    return counts


def _demo_commands(cli: CrmGroup) -> None:
    @cli.command()
    @click.option("--edition", help="Whose demo data to load (default: the deployment's edition).")
    @click.pass_obj
    def demo(obj: Obj, edition: str | None) -> None:
        """Load the edition's demo data into the deployment (only into one without contacts)."""
        async def load(dep: Deployment) -> dict[str, int]:
            return await _load_edition_demo(dep, edition or dep.settings.edition)

        async def load_and_logins(dep: Deployment) -> tuple[dict[str, int], list[str]]:
            return await load(dep), await _demo_logins(dep)

        loaded, logins = with_deployment(obj.path, load_and_logins)
        click.echo("Loaded demo data: " + (", ".join(f"{n} {e}" for e, n in loaded.items()) or "nothing"))
        for line in logins:
            click.echo(line)


def _plugin_module(name: str) -> crmcore.plugins.AvailablePlugin:
    from crmcore.plugins import DEFAULT_PLUGINS, AvailablePlugin, discover

    if name == "core":
        import importlib

        module = importlib.import_module(DEFAULT_PLUGINS[0])
        return AvailablePlugin(name="core", source="crmcore (built in)", info=module.PLUGIN, module=module)
    found = discover()
    plugin = found.get(name)
    if plugin is None:
        raise PluginError(
            f"plugin {name!r} is not installed (installed plugins: {', '.join(sorted(found)) or 'none'}); "
            "install its package with pip first"
        )
    return plugin


def _plugins_commands(cli: CrmGroup) -> None:
    from crmcore.deployment import CONFIG_FILE

    @cli.group()
    def plugins() -> None:
        """List, enable, disable and describe plugins."""

    @plugins.command("list")
    @click.pass_obj
    def list_(obj: Obj) -> None:
        """Every installed plugin: version, enabled state, source, and why a broken one fails."""
        from crmcore.plugins import discover

        enabled: list[str] | None = None
        if (obj.path / CONFIG_FILE).exists():
            enabled = _settings(obj.path).plugins
        core = _plugin_module("core").info
        rows = [("core", core.version, "yes (built in)", "crmcore", core.description)]
        found = discover()
        for name, plugin in sorted(found.items()):
            state = "-" if enabled is None else "yes" if name in enabled else "no"
            detail = f"BROKEN: {plugin.error}" if plugin.error else plugin.info.description
            if plugin.info and plugin.info.requires:
                detail += f" (requires {', '.join(plugin.info.requires)})"
            rows.append((name, plugin.info.version if plugin.info else "?", state, plugin.source, detail))
        if enabled is not None:
            for name in enabled:
                if name not in found:
                    rows.append((name, "?", "yes", "-", "MISSING: enabled but not installed "
                                 f"(crm plugins disable {name})"))
        _table(rows, ["name", "version", "enabled", "source", "description"])
        if enabled is None:
            click.echo(f"(no deployment in {obj.path}: enabled state not shown; use -d PATH)")

    @plugins.command()
    @click.argument("name")
    @click.pass_obj
    def enable(obj: Obj, name: str) -> None:
        """Enable plugin NAME in the deployment and create its tables."""
        from crmcore.plugins import get_plugin_manager

        settings = _settings(obj.path)
        if name == "core":
            raise click.ClickException("core is built in and always enabled")
        if name in settings.plugins:
            click.echo(f"{name} is already enabled")
            return
        plugin = _plugin_module(name)  # a clear error when it is not installed
        if plugin.error:
            raise PluginError(f"plugin {name!r} ({plugin.source}) {plugin.error}")
        new = [*settings.plugins, name]
        get_plugin_manager(new)  # names a missing plugin or an unmet requirement before anything changes

        async def apply(dep: Deployment) -> list[str]:
            before = set(dep.registry.entities)
            await dep.set_plugins_live(new)  # writes crm.toml only once the tables exist
            return sorted(set(dep.registry.entities) - before)

        added = with_deployment(obj.path, apply)
        click.echo(f"Enabled {name}" + (f"; new entities: {', '.join(added)}" if added else ""))

    @plugins.command()
    @click.argument("name")
    @click.pass_obj
    def disable(obj: Obj, name: str) -> None:
        """Disable plugin NAME: hidden from the deployment, its tables and data kept."""
        from crmcore.deployment import save_settings
        from crmcore.plugins import discover, get_plugin_manager

        settings = _settings(obj.path)
        if name == "core":
            raise click.ClickException("core is built in and cannot be disabled")
        if name not in settings.plugins:
            raise click.ClickException(
                f"plugin {name!r} is not enabled (enabled: {', '.join(settings.plugins) or 'none'})"
            )
        remaining = [p for p in settings.plugins if p != name]
        found = discover()
        dependants = [p for p in remaining if found.get(p) and found[p].info and name in found[p].info.requires]
        if dependants:
            raise click.ClickException(
                f"cannot disable {name}: {', '.join(dependants)} require(s) it (disable those first)"
            )
        get_plugin_manager(remaining)
        settings.plugins = remaining
        save_settings(obj.path, settings)  # no database change: its tables and data stay
        click.echo(f"Disabled {name}; its tables and data are kept (enable it again to see them)")

    @plugins.command()
    @click.argument("name")
    def info(name: str) -> None:
        """Describe plugin NAME: version, requirements and what it declares."""
        plugin = _plugin_module(name)
        if plugin.error:
            raise PluginError(f"plugin {name!r} ({plugin.source}) {plugin.error}")
        pi = plugin.info
        click.echo(f"{pi.name} {pi.version}  ({plugin.source})")
        if pi.description:
            click.echo(f"  {pi.description}")
        click.echo(f"  requires: {', '.join(pi.requires) or 'nothing'}")
        entities, extra_fields, pipelines = _declared_by(plugin)
        click.echo("  entities:" + ("" if entities else " none"))
        for entity in entities:
            fields = ", ".join(f"{f.name} ({f.type.value})" for f in entity.fields)
            click.echo(f"    {entity.name}: {fields}")
        if extra_fields:
            click.echo("  fields added to other entities:")
            for entity_name, field in extra_fields:
                click.echo(f"    {entity_name}.{field.name} ({field.type.value})")
        if pipelines:
            click.echo("  pipelines:")
            for pipeline in pipelines:
                click.echo(f"    {pipeline.name} ({pipeline.entity}): {', '.join(s.name for s in pipeline.stages)}")


def _declared_by(plugin: Any) -> tuple[list[crmcore.EntityType], list[tuple[str, Field]], list[crmcore.Pipeline]]:
    """What a plugin's register hooks declare, called on the plugin alone (no deployment)."""
    from crmcore.entities import Registry

    module = plugin.module
    registry = Registry()
    entities: list[crmcore.EntityType] = []
    extra: list[tuple[str, Field]] = []
    pipelines: list[crmcore.Pipeline] = []

    def call(hook: str, **kwargs: Any) -> None:
        function = getattr(module, hook, None)
        if function is None:
            return
        import inspect

        names = inspect.signature(function).parameters
        try:
            function(**{k: v for k, v in kwargs.items() if k in names})
        except Exception as exc:
            raise PluginError(f"plugin {plugin.name!r} failed in {hook}: {exc}") from None

    def register_entity(entity: crmcore.EntityType) -> None:
        import msgspec

        entities.append(msgspec.structs.replace(entity, name=registry.qualified(plugin.name, entity.name)))

    call("crm_register_entities", register=register_entity, deployment=None)
    call("crm_extend_entities", add_field=lambda entity, field: extra.append((entity, field)), deployment=None)
    call("crm_register_pipelines", register=pipelines.append, deployment=None)
    return entities, extra, pipelines


def _plugin_new_commands(cli: CrmGroup) -> None:
    @cli.group()
    def plugin() -> None:
        """Write plugins."""

    @plugin.command()
    @click.argument("name")
    @click.option("--dir", "directory", default=".", show_default=True,
                  type=click.Path(file_okay=False, path_type=Path), help="Where to create crm-NAME/.")
    @click.option("--description", default="", help="One line saying what the plugin does.")
    def new(name: str, directory: Path, description: str) -> None:
        """Create a plugin package crm-NAME/ (entry point, one entity, a test)."""
        from crmcore.scaffold import ScaffoldError, create_plugin

        try:
            target = create_plugin(name, directory, description=description)
        except ScaffoldError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Created {target}")
        click.echo("Next steps:")
        click.echo(f"  pip install -e {target}")
        click.echo(f"  cd {target} && pytest")
        click.echo(f"  crm plugins enable {name}    # in a deployment")


def _fields_commands(cli: CrmGroup) -> None:
    @cli.group()
    def fields() -> None:
        """Custom fields: add, list, hide, relabel, remove, purge."""

    types = [t.value for t in FieldType]

    @fields.command("add")
    @click.argument("entity")
    @click.argument("name")
    @click.option("--type", "type_", required=True, type=click.Choice(types), help="The field type.")
    @click.option("--label", help="Shown in forms and lists (default: from the name).")
    @click.option("--required", is_flag=True, help="A value is required (needs --default).")
    @click.option("--unique", is_flag=True, help="No two records share a value.")
    @click.option("--indexed", is_flag=True, help="Index the column (fast filters and sorts).")
    @click.option("--choices", help="For choice / multi_choice: comma-separated values.")
    @click.option("--default", "default", help="Value for records that do not give one.")
    @click.option("--target", help="For relation: the entity it points to.")
    @click.option("--in-list", is_flag=True, help="Show as a column in lists.")
    @click.option("--help-text", default="", help="A hint shown with the field.")
    @click.option("--max-length", type=click.IntRange(1, 10_000), help="For text: the longest value accepted.")
    @click.pass_obj
    def add(obj: Obj, entity: str, name: str, type_: str, label: str | None, required: bool, unique: bool,
            indexed: bool, choices: str | None, default: str | None, target: str | None, in_list: bool,
            help_text: str, max_length: int | None) -> None:
        """Add a custom field NAME to ENTITY: a real column, live at once."""
        kind = FieldType(type_)
        choice_list = [c.strip() for c in (choices or "").split(",") if c.strip()]
        if choice_list and kind not in (FieldType.CHOICE, FieldType.MULTI_CHOICE):
            raise click.UsageError("--choices applies to choice and multi_choice fields only")
        if target and kind is not FieldType.RELATION:
            raise click.UsageError("--target applies to relation fields only")
        if kind is FieldType.RELATION and not target:
            raise click.UsageError("a relation field needs --target ENTITY")
        field = Field(
            name=name, type=kind, label=label or "", required=required, unique=unique, indexed=indexed,
            choices=choice_list, default=default, target=target, in_list=in_list, help_text=help_text,
            max_length=max_length,
        )

        async def apply(dep: Deployment) -> Field:
            return await dep.add_custom_field(entity, field)

        added = with_deployment(obj.path, apply)
        click.echo(f"Added {entity}.{added.name} ({added.type.value}, label {added.label!r})")

    @fields.command("list")
    @click.argument("entity")
    @click.pass_obj
    def list_(obj: Obj, entity: str) -> None:
        """The fields of ENTITY, with their type and flags (custom, hidden...)."""
        async def get(dep: Deployment) -> tuple[crmcore.EntityType, set[str]]:
            found = dep.registry.get(entity)
            if found is None:
                raise RegistryError(f"unknown entity {entity!r}; known: {', '.join(sorted(dep.registry.entities))}")
            return found, {f.name for f, removed in await dep.custom_fields(entity) if removed}

        found, removed = with_deployment(obj.path, get)
        rows = []
        for f in found.fields:
            flags = [flag for flag, on in (
                ("required", f.required), ("unique", f.unique), ("indexed", f.indexed), ("in-list", f.in_list),
                ("custom", f.custom), ("removed", f.name in removed), ("hidden", f.hidden and f.name not in removed),
            ) if on]
            extra = f"-> {f.target}" if f.target else ", ".join(f.choices)
            rows.append((f.name, f.type.value, f.label, " ".join(flags), extra))
        click.echo(f"{found.label_plural} ({found.name}, plugin {found.plugin}, table {found.table})")
        _table(rows, ["name", "type", "label", "flags", "target/choices"])

    def _update(obj: Obj, entity: str, name: str, **changes: Any) -> Field:
        async def apply(dep: Deployment) -> Field:
            return await dep.update_custom_field(entity, name, **changes)
        return with_deployment(obj.path, apply)

    @fields.command()
    @click.argument("entity")
    @click.argument("name")
    @click.pass_obj
    def hide(obj: Obj, entity: str, name: str) -> None:
        """Hide custom field NAME of ENTITY from the API, lists and forms (data kept)."""
        _update(obj, entity, name, hidden=True)
        click.echo(f"{entity}.{name} is hidden; its data is kept (crm fields show {entity} {name})")

    @fields.command()
    @click.argument("entity")
    @click.argument("name")
    @click.pass_obj
    def show(obj: Obj, entity: str, name: str) -> None:
        """Show a hidden custom field NAME of ENTITY again."""
        _update(obj, entity, name, hidden=False)
        click.echo(f"{entity}.{name} is shown again")

    @fields.command()
    @click.argument("entity")
    @click.argument("name")
    @click.pass_obj
    def restore(obj: Obj, entity: str, name: str) -> None:
        """Bring back removed custom field NAME of ENTITY, with its data."""
        async def apply(dep: Deployment) -> None:
            await dep.restore_custom_field(entity, name)

        with_deployment(obj.path, apply)
        click.echo(f"Restored {entity}.{name} with its data")

    @fields.command()
    @click.argument("entity")
    @click.argument("name")
    @click.argument("label")
    @click.pass_obj
    def relabel(obj: Obj, entity: str, name: str, label: str) -> None:
        """Give custom field NAME of ENTITY a new LABEL."""
        if not label.strip():
            raise click.BadParameter("the label must not be empty", param_hint="LABEL")
        field = _update(obj, entity, name, label=label)
        click.echo(f"{entity}.{name} is now labelled {field.label!r}")

    @fields.command()
    @click.argument("entity")
    @click.argument("name")
    @click.pass_obj
    def remove(obj: Obj, entity: str, name: str) -> None:
        """Remove custom field NAME of ENTITY: hidden everywhere, its column and data kept."""
        async def apply(dep: Deployment) -> None:
            await dep.remove_custom_field(entity, name)

        with_deployment(obj.path, apply)
        click.echo(f"Removed {entity}.{name}; its column and data are kept. "
                   f"Drop them for good with: crm fields purge {entity} {name} --yes")

    @fields.command()
    @click.argument("entity")
    @click.argument("name")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.pass_obj
    def purge(obj: Obj, entity: str, name: str, yes: bool) -> None:
        """Drop a removed custom field's column for good (after a backup table copy)."""
        if not yes:
            click.confirm(f"Drop the column of {entity}.{name} and its data (a backup table is kept)?", abort=True)

        async def apply(dep: Deployment) -> str:
            return await dep.purge_custom_field(entity, name)

        backup = with_deployment(obj.path, apply)
        click.echo(f"Purged {entity}.{name}; the old values are in the backup table {backup}")


def _schema_commands(cli: CrmGroup) -> None:
    @cli.group()
    def schema() -> None:
        """Schema status, history and destructive migrations."""

    @schema.command()
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 1000), help="History entries shown.")
    @click.pass_obj
    def status(obj: Obj, limit: int) -> None:
        """Pending destructive changes and recent schema history."""
        async def get(dep: Deployment) -> tuple[list[Any], list[Any]]:
            return list(dep.pending_changes), list(await dep.schema.history(limit)) if limit else []

        pending, history = with_deployment(obj.path, get)
        if pending:
            click.echo(f"{len(pending)} pending change(s) that could lose data (apply with: crm schema migrate --yes):")
            _table([(p.kind, f"{p.table}.{p.column}", p.detail) for p in pending], ["kind", "column", "detail"])
        else:
            click.echo("No pending changes: the schema matches the plugins and custom fields.")
        if history:
            click.echo("")
            click.echo("Recent schema history:")
            _table([(h[0], h[1], h[2], h[3]) for h in history], ["id", "applied at", "kind", "target"])

    @schema.command()
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.pass_obj
    def migrate(obj: Obj, yes: bool) -> None:
        """Apply the pending destructive changes, each after a backup copy."""
        async def pending(dep: Deployment) -> list[Any]:
            return list(dep.pending_changes)

        changes = with_deployment(obj.path, pending)
        if not changes:
            click.echo("Nothing to migrate.")
            return
        click.echo("Pending changes (each column is copied to a backup table first):")
        _table([(p.kind, f"{p.table}.{p.column}", p.detail) for p in changes], ["kind", "column", "detail"])
        if not yes:
            click.confirm("Apply the pending changes (backups are kept)?", abort=True)

        async def apply(dep: Deployment) -> list[str]:
            return await dep.apply_pending()

        for line in with_deployment(obj.path, apply):
            click.echo(line)


# -- users, roles, teams, tokens, security log ---------------------------------------------------

def _cli_actor() -> Any:
    """Who the CLI acts as: the system (whoever may open the deployment folder), seen as ``cli``."""
    import msgspec

    from crmcore.auth import SYSTEM

    return msgspec.structs.replace(SYSTEM, via="cli")


def _interactive() -> bool:
    """Whether a person is at the keyboard (prompts are allowed)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _password_from_stdin() -> str:
    """The password on standard input (one line; the newline is not part of it)."""
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
    if value.endswith("\r"):
        value = value[:-1]
    if not value:
        raise click.UsageError("no password on standard input")
    return value


def _prompt_password(email: str | None, *, allow_empty: bool = False) -> str | None:
    """Ask for a new password twice (hidden), again while the policy refuses it."""
    from crmcore.auth.service import check_password

    def checked(value: str) -> str:
        if allow_empty and value == "":
            return value
        try:
            return check_password(value, email)
        except ValidationError as exc:
            raise click.UsageError(exc.errors[0].message) from None

    label = "Password (empty: none for now)" if allow_empty else "Password"
    value = click.prompt(label, hide_input=True, confirmation_prompt=not allow_empty, value_proc=checked,
                         default="" if allow_empty else None, show_default=False)
    if allow_empty and value:
        click.prompt("Repeat for confirmation", hide_input=True, value_proc=lambda v: _same(v, value))
    return value or None


def _same(repeated: str, value: str) -> str:
    if repeated != value:
        raise click.UsageError("the two entered values do not match")
    return repeated


def _new_password(email: str, from_stdin: bool, *, required: bool) -> str | None:
    """A password from stdin (``--password-stdin``), a prompt (at a terminal), or none."""
    if from_stdin:
        return _password_from_stdin()
    if _interactive():
        return _prompt_password(email, allow_empty=not required)
    if required:
        raise click.UsageError("give the password on standard input with --password-stdin "
                               "(no terminal to ask it at)")
    return None


def _no_password_hint(email: str) -> None:
    click.echo(f"{email} has no password yet, so cannot log in: set one with "
               f"`crm users set-password {email}` or hand out `crm users reset-link {email}`")


def _user_row(user: dict[str, Any]) -> tuple:
    return (user["id"], user["email"], user["name"], user["role"] or "-", ", ".join(user["teams"]) or "-",
            "yes" if user["active"] else "no", "yes" if user["has_password"] else "no")


_USER_HEADERS = ["id", "email", "name", "role", "teams", "active", "password"]


def _show_user(verb: str, user: dict[str, Any]) -> None:
    click.echo(f"{verb} {user['email']} (id {user['id']}): role {user['role'] or '-'}, "
               f"teams {', '.join(user['teams']) or '-'}, {'active' if user['active'] else 'disabled'}")


def _json_out(value: Any) -> None:
    import msgspec

    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _users_commands(cli: CrmGroup) -> None:
    @cli.group()
    def users() -> None:
        """Users: add, list, disable, enable, roles, teams, passwords."""

    @users.command("add")
    @click.argument("email")
    @click.option("--name", required=True, help="The user's full name.")
    @click.option("--role", default="agent", show_default=True, help="A role (see crm roles list).")
    @click.option("--team", "teams", multiple=True, help="A team (repeat for several; the first is the primary team).")
    @click.option("--locale", callback=_check("locale"), help="The user's locale, e.g. en, tr.")
    @click.option("--time-zone", callback=_check("timezone"), help="The user's IANA time zone.")
    @click.option("--password-stdin", is_flag=True,
                  help="Read the password from standard input (else asked at a terminal, or none).")
    @click.pass_obj
    def add(obj: Obj, email: str, name: str, role: str, teams: tuple[str, ...], locale: str | None,
            time_zone: str | None, password_stdin: bool) -> None:
        """Add a user with e-mail EMAIL (their login)."""
        password = _new_password(email, password_stdin, required=False)
        fields = {k: v for k, v in (("locale", locale), ("time_zone", time_zone)) if v is not None}

        async def apply(dep: Deployment) -> dict[str, Any]:
            return await dep.auth.create_user(name=name, email=email, password=password, role=role,
                                              teams=list(teams), fields=fields, actor=_cli_actor())

        user = with_deployment(obj.path, apply)
        _show_user("Added", user)
        if not user["has_password"]:
            _no_password_hint(user["email"])

    @users.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def list_(obj: Obj, as_json: bool) -> None:
        """Every user: role, teams, active, whether a password is set."""
        async def get(dep: Deployment) -> list[dict[str, Any]]:
            return await dep.auth.users()

        found = with_deployment(obj.path, get)
        if as_json:
            _json_out(found)
        elif not found:
            click.echo("No users yet; add one with: crm users add EMAIL --name NAME --role admin")
        else:
            _table([_user_row(u) for u in found], _USER_HEADERS)

    def _change(obj: Obj, email: str, change: Callable[[Deployment, int], Awaitable[T]]) -> T:
        async def apply(dep: Deployment) -> T:
            user = await dep.auth.user_by_email(email)
            return await change(dep, user["id"])
        return with_deployment(obj.path, apply)

    @users.command()
    @click.argument("email")
    @click.pass_obj
    def disable(obj: Obj, email: str) -> None:
        """Disable user EMAIL: their sessions end and their tokens stop working."""
        user = _change(obj, email, lambda dep, uid: dep.auth.set_active(uid, False, actor=_cli_actor()))
        _show_user("Disabled", user)

    @users.command()
    @click.argument("email")
    @click.pass_obj
    def enable(obj: Obj, email: str) -> None:
        """Enable user EMAIL again."""
        user = _change(obj, email, lambda dep, uid: dep.auth.set_active(uid, True, actor=_cli_actor()))
        _show_user("Enabled", user)

    @users.command("set-role")
    @click.argument("email")
    @click.argument("role")
    @click.pass_obj
    def set_role(obj: Obj, email: str, role: str) -> None:
        """Give user EMAIL the role ROLE (see crm roles list)."""
        user = _change(obj, email, lambda dep, uid: dep.auth.set_role(uid, role, actor=_cli_actor()))
        _show_user("Changed", user)

    @users.command("set-teams")
    @click.argument("email")
    @click.argument("teams", nargs=-1)
    @click.pass_obj
    def set_teams(obj: Obj, email: str, teams: tuple[str, ...]) -> None:
        """Put user EMAIL in TEAMS (the first is their primary team; none: in no team)."""
        user = _change(obj, email, lambda dep, uid: dep.auth.set_teams(uid, list(teams), actor=_cli_actor()))
        _show_user("Changed", user)

    @users.command("set-password")
    @click.argument("email")
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
    @click.pass_obj
    def set_password(obj: Obj, email: str, password_stdin: bool) -> None:
        """Set the password of user EMAIL (asked at a terminal). Their sessions end."""
        password = _new_password(email, password_stdin, required=True)

        async def apply(dep: Deployment, uid: int) -> None:
            await dep.auth.set_password(uid, password, actor=_cli_actor())

        _change(obj, email, apply)
        click.echo(f"Set the password of {email}; their sessions were ended")

    @users.command("reset-link")
    @click.argument("email")
    @click.option("--base-url", help="Where the deployment is served. [default: the base_url setting, "
                                     "else http://127.0.0.1:8000]")
    @click.pass_obj
    def reset_link(obj: Obj, email: str, base_url: str | None) -> None:
        """Print a one-time link (valid one hour) with which user EMAIL sets a new password."""
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise click.BadParameter("the base URL starts with http:// or https://", param_hint="--base-url")
        link = _change(obj, email, lambda dep, uid: dep.auth.reset_link(
            uid, base_url=base_url or dep.settings.base_url or "http://127.0.0.1:8000", actor=_cli_actor()))
        click.echo(link)
        click.echo(f"Hand this link to {email}: it works once, within the hour.", err=True)


def _roles_commands(cli: CrmGroup) -> None:
    @cli.group()
    def roles() -> None:
        """Roles: what each role may do with which records and fields."""

    @roles.command("list")
    @click.pass_obj
    def list_(obj: Obj) -> None:
        """Every role: built-in or not, how many users have it."""
        from crmcore.auth import BUILTIN_ROLES

        async def get(dep: Deployment) -> tuple[list[Any], list[dict[str, Any]]]:
            return await dep.auth.roles(), await dep.auth.users()

        found, people = with_deployment(obj.path, get)
        counts: dict[str, int] = {}
        for user in people:
            counts[user["role"]] = counts.get(user["role"], 0) + 1
        rows = []
        for role in found:
            kind = ("built-in" if BUILTIN_ROLES.get(role.name) == role else "built-in, changed") \
                if role.builtin else "custom"
            rows.append((role.name, role.label, kind, counts.get(role.name, 0), role.description))
        _table(rows, ["name", "label", "kind", "users", "description"])

    @roles.command()
    @click.argument("name")
    @click.pass_obj
    def show(obj: Obj, name: str) -> None:
        """Print role NAME as JSON (the form crm roles set takes)."""
        async def get(dep: Deployment) -> Any:
            return await dep.auth.role(name)

        _json_out(with_deployment(obj.path, get))

    @roles.command("set")
    @click.argument("name")
    @click.option("--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="The role as JSON, or TOML (.toml); see crm roles show NAME.")
    @click.pass_obj
    def set_(obj: Obj, name: str, file: Path) -> None:
        """Create or replace role NAME from a JSON or TOML file."""
        import tomllib

        import msgspec

        text = file.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text) if file.suffix.lower() == ".toml" else msgspec.json.decode(text)
        except (tomllib.TOMLDecodeError, msgspec.DecodeError) as exc:
            raise click.ClickException(f"{file}: not valid {'TOML' if file.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
        if not isinstance(data, dict):
            raise click.ClickException(f"{file}: expected an object with the role's parts (see crm roles show admin)")
        if data.get("name", name) != name:
            raise click.ClickException(f"{file} describes role {data['name']!r}, not {name!r}")
        data["name"] = name

        async def apply(dep: Deployment) -> Any:
            return await dep.auth.save_role(data, actor=_cli_actor())

        role = with_deployment(obj.path, apply)
        click.echo(f"Saved role {role.name}" + (" (built-in, changed)" if role.builtin else ""))

    @roles.command()
    @click.argument("name")
    @click.pass_obj
    def delete(obj: Obj, name: str) -> None:
        """Delete role NAME (not a built-in one, nor one users have)."""
        async def apply(dep: Deployment) -> None:
            await dep.auth.delete_role(name, actor=_cli_actor())

        with_deployment(obj.path, apply)
        click.echo(f"Deleted role {name}")


def _teams_commands(cli: CrmGroup) -> None:
    @cli.group()
    def teams() -> None:
        """Teams: groups of users whose records a team scope reaches."""

    @teams.command("list")
    @click.pass_obj
    def list_(obj: Obj) -> None:
        """Every team with its members."""
        async def get(dep: Deployment) -> tuple[list[dict[str, Any]], dict[int, str]]:
            return await dep.auth.teams(), {u["id"]: u["email"] for u in await dep.auth.users()}

        found, emails = with_deployment(obj.path, get)
        if not found:
            click.echo("No teams yet; add one with: crm teams add NAME")
            return
        _table([(t["id"], t["name"], len(t["members"]), ", ".join(emails.get(m, str(m)) for m in t["members"]))
                for t in found], ["id", "name", "members", "member e-mails"])

    @teams.command("add")
    @click.argument("name")
    @click.pass_obj
    def add(obj: Obj, name: str) -> None:
        """Add a team NAME."""
        async def apply(dep: Deployment) -> dict[str, Any]:
            return await dep.auth.create_team(name, actor=_cli_actor())

        team = with_deployment(obj.path, apply)
        click.echo(f"Added team {team['name']} (id {team['id']}); put users in it with: crm users set-teams EMAIL TEAM...")

    @teams.command()
    @click.argument("name")
    @click.pass_obj
    def remove(obj: Obj, name: str) -> None:
        """Remove team NAME (only when it has no members)."""
        async def apply(dep: Deployment) -> None:
            await dep.auth.delete_team(name, actor=_cli_actor())

        with_deployment(obj.path, apply)
        click.echo(f"Removed team {name}")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _tokens_commands(cli: CrmGroup) -> None:
    @cli.group()
    def tokens() -> None:
        """Personal API tokens (sent as Authorization: Bearer TOKEN)."""

    @tokens.command()
    @click.argument("email")
    @click.argument("name")
    @click.option("--read-only", is_flag=True, help="The token may only read.")
    @click.option("--expires-days", type=click.IntRange(1, 3650), help="Expire after this many days (default: never).")
    @click.pass_obj
    def create(obj: Obj, email: str, name: str, read_only: bool, expires_days: int | None) -> None:
        """Make an API token NAME for user EMAIL; it is printed once and never shown again."""
        import datetime as dt

        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=expires_days) if expires_days else None

        async def apply(dep: Deployment) -> Any:
            user = await dep.auth.user_by_email(email)
            return await dep.auth.create_token(user["id"], name, read_only=read_only, expires_at=expires,
                                               actor=_cli_actor())

        new = with_deployment(obj.path, apply)
        info = new.info
        click.echo(new.token)
        click.echo(f"Token {info['id']} ({info['name']!r} for {email}{', read-only' if info['read_only'] else ''}"
                   f"{', expires ' + _when(info['expires_at']) + ' UTC' if info['expires_at'] else ''}): "
                   "copy it now, it is not shown again", err=True)

    @tokens.command("list")
    @click.argument("email", required=False)
    @click.pass_obj
    def list_(obj: Obj, email: str | None) -> None:
        """API tokens (of user EMAIL, or everyone's); never the tokens themselves."""
        async def get(dep: Deployment) -> tuple[list[dict[str, Any]], dict[int, str]]:
            user_id = (await dep.auth.user_by_email(email))["id"] if email else None
            return await dep.auth.tokens(user_id=user_id), {u["id"]: u["email"] for u in await dep.auth.users()}

        found, emails = with_deployment(obj.path, get)
        if not found:
            click.echo("No API tokens" + (f" of {email}" if email else "") + "; make one with: crm tokens create EMAIL NAME")
            return
        _table([(t["id"], emails.get(t["user_id"], t["user_id"]), t["name"], t["prefix"] + "...",
                 "read" if t["read_only"] else "read/write", _when(t["created_at"]), _when(t["expires_at"]),
                 _when(t["last_used_at"]), _when(t["revoked_at"])) for t in found],
               ["id", "user", "name", "prefix", "access", "created", "expires", "last used", "revoked"])

    @tokens.command()
    @click.argument("token_id", metavar="ID", type=int)
    @click.pass_obj
    def revoke(obj: Obj, token_id: int) -> None:
        """Revoke API token ID (see crm tokens list): it stops working at once."""
        async def apply(dep: Deployment) -> None:
            await dep.auth.revoke_token(token_id, actor=_cli_actor())

        with_deployment(obj.path, apply)
        click.echo(f"Revoked token {token_id}")


def _security_log_commands(cli: CrmGroup) -> None:
    @cli.command("security-log")
    @click.option("--event", help="Only this event (login, login_failed, role_changed, token_used ...).")
    @click.option("--user", "email", help="Only entries about this user (by e-mail).")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="How many entries.")
    @click.option("--before", "before_id", type=int, help="Only entries older than this id (the next page).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def security_log(obj: Obj, event: str | None, email: str | None, limit: int, before_id: int | None,
                     as_json: bool) -> None:
        """The security log, newest first: logins, failures, permission changes, token use."""
        async def get(dep: Deployment) -> list[dict[str, Any]]:
            user_id = (await dep.auth.user_by_email(email))["id"] if email else None
            return await dep.auth.security_log(event=event, user_id=user_id, before_id=before_id, limit=limit)

        found = with_deployment(obj.path, get)
        if as_json:
            _json_out(found)
            return
        if not found:
            click.echo("No entries.")
            return
        import msgspec

        _table([(e["id"], e["at"].strftime("%Y-%m-%d %H:%M:%S"), e["event"], e["user_id"] or "-",
                 e["actor_id"] or "-", e["email"] or "-", e["ip"] or "-",
                 msgspec.json.encode(e["detail"]).decode() if e["detail"] else "") for e in found],
               ["id", "at (UTC)", "event", "user", "actor", "e-mail", "address", "detail"])
        if len(found) == limit:
            click.echo(f"(more: --before {found[-1]['id']})")


# -- the factory -------------------------------------------------------------------------------

def create_cli(deployment: str | Path | None = None) -> click.Group:
    """A fresh ``crm`` command group.

    ``deployment``: the folder whose enabled plugins may add commands (default: ``CRM_DEPLOYMENT``
    or the current directory); commands themselves use ``--deployment``.
    """

    @click.group(name="crm", cls=CrmGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(crmcore.__version__, prog_name="crm")
    @click.option("--deployment", "-d", envvar="CRM_DEPLOYMENT", default=".", show_default=True,
                  type=click.Path(file_okay=False, path_type=Path), help="The deployment folder (env CRM_DEPLOYMENT).")
    @click.pass_context
    def cli(ctx: click.Context, deployment: Path) -> None:
        """crmcore: a plugin-based CRM. Commands work on the deployment in --deployment."""
        ctx.obj = Obj(deployment)

    for add in (_init_commands, _serve_commands, _demo_commands, _plugins_commands, _plugin_new_commands,
                _fields_commands, _schema_commands, _users_commands, _roles_commands, _teams_commands,
                _tokens_commands, _security_log_commands, _pipelines_commands, _jobs_commands,
                _timeline_commands, _rules_commands):
        add(cli)
    # Larger parts keep their commands beside their service (crmcore/commands/).
    for part in (commands.reports, commands.documents, commands.importing, commands.backup, commands.bundles):
        part.register(cli)
    cli.core_names = frozenset(cli.commands)
    path = Path(deployment if deployment is not None else os.environ.get("CRM_DEPLOYMENT") or ".")
    _add_plugin_commands(cli, path)
    return cli


def _pipelines_commands(cli: CrmGroup) -> None:
    @cli.group()
    def pipelines() -> None:
        """Pipelines: list, show, add, set (change or customise), summary, remove."""

    def _stage_option(value: str) -> dict[str, Any]:
        parts = value.split(":")
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise click.BadParameter(f"{value!r}: use name[:probability[:kind]], e.g. quote:50 or won:100:won")
        stage: dict[str, Any] = {"name": parts[0]}
        if len(parts) > 1 and parts[1] != "":
            try:
                stage["probability"] = int(parts[1])
            except ValueError:
                raise click.BadParameter(f"{value!r}: the probability must be a whole number of percent") from None
        if len(parts) > 2:
            stage["kind"] = parts[2]
        return stage

    def _source(p: crmcore.Pipeline) -> str:
        return "custom" if p.plugin == "custom" else (f"{p.plugin}, customised" if p.customised else p.plugin)

    @pipelines.command("list")
    @click.option("--entity", help="Only the pipelines of this entity type.")
    @click.pass_obj
    def list_(obj: Obj, entity: str | None) -> None:
        """Every pipeline in force with its stages."""
        async def get(dep: Deployment) -> list[crmcore.Pipeline]:
            return dep.pipeline_service.list(entity)

        found = with_deployment(obj.path, get)
        if not found:
            click.echo("No pipelines" + (f" for {entity}" if entity else "") + "; add one with: crm pipelines add NAME --stage ...")
            return
        _table([(p.name, p.entity, p.label, _source(p), " > ".join(s.name for s in p.stages)) for p in found],
               ["name", "entity", "label", "source", "stages"])

    @pipelines.command()
    @click.argument("name")
    @click.pass_obj
    def show(obj: Obj, name: str) -> None:
        """Print pipeline NAME as JSON (the form crm pipelines set --file takes)."""
        async def get(dep: Deployment) -> crmcore.Pipeline:
            return dep.pipeline_service.get(name)

        pipeline = with_deployment(obj.path, get)
        _json_out({"name": pipeline.name, "entity": pipeline.entity, "label": pipeline.label,
                   "stages": pipeline.stages, "source": _source(pipeline)})

    @pipelines.command()
    @click.argument("name")
    @click.option("--entity", default="deal", show_default=True, help="The entity type whose records it holds.")
    @click.option("--label", default="", help="Shown in the UI (default: from the name).")
    @click.option("--stage", "stages", multiple=True, required=True, metavar="NAME[:PROBABILITY[:KIND]]",
                  help="A stage, in order; KIND is open (default), won or lost. Repeat for each stage.")
    @click.pass_obj
    def add(obj: Obj, name: str, entity: str, label: str, stages: tuple[str, ...]) -> None:
        """Store a new pipeline NAME, e.g. --stage inquiry:10 --stage signed:100:won --stage lost:0:lost."""
        data = {"name": name, "entity": entity, "label": label, "stages": [_stage_option(s) for s in stages]}

        async def apply(dep: Deployment) -> crmcore.Pipeline:
            return await dep.pipeline_service.create(data, actor=_cli_actor())

        pipeline = with_deployment(obj.path, apply)
        click.echo(f"Added pipeline {pipeline.name} for {pipeline.entity}: {' > '.join(s.name for s in pipeline.stages)}")

    @pipelines.command("set")
    @click.argument("name")
    @click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="The pipeline as JSON, or TOML (.toml): label, stages, name (rename), entity; see crm pipelines show.")
    @click.option("--label", help="A new label.")
    @click.option("--stage", "stages", multiple=True, metavar="NAME[:PROBABILITY[:KIND]]",
                  help="Replace the stages with these, in order.")
    @click.pass_obj
    def set_(obj: Obj, name: str, file: Path | None, label: str | None, stages: tuple[str, ...]) -> None:
        """Change pipeline NAME (a plugin's pipeline is customised; crm pipelines remove undoes that)."""
        import tomllib

        import msgspec

        data: dict[str, Any] = {}
        if file is not None:
            text = file.read_text(encoding="utf-8")
            try:
                data = tomllib.loads(text) if file.suffix.lower() == ".toml" else msgspec.json.decode(text)
            except (tomllib.TOMLDecodeError, msgspec.DecodeError) as exc:
                raise click.ClickException(f"{file}: not valid {'TOML' if file.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
            if not isinstance(data, dict):
                raise click.ClickException(f"{file}: expected an object with label and stages (see crm pipelines show {name})")
            data.pop("source", None)  # as crm pipelines show prints it
        if label is not None:
            data["label"] = label
        if stages:
            data["stages"] = [_stage_option(s) for s in stages]
        if not data:
            raise click.UsageError("give --file, --label or --stage")

        async def apply(dep: Deployment) -> crmcore.Pipeline:
            return await dep.pipeline_service.update(name, data, actor=_cli_actor())

        pipeline = with_deployment(obj.path, apply)
        click.echo(f"Saved pipeline {pipeline.name} ({_source(pipeline)}): {' > '.join(s.name for s in pipeline.stages)}")

    @pipelines.command()
    @click.argument("name")
    @click.option("--durations", is_flag=True, help="Also the average time a stay in each stage lasted.")
    @click.pass_obj
    def summary(obj: Obj, name: str, durations: bool) -> None:
        """Records, amounts and conversion per stage of pipeline NAME."""
        async def get(dep: Deployment) -> dict[str, Any]:
            return await dep.pipeline_service.summary(name, durations=durations)

        found = with_deployment(obj.path, get)

        def money(values: list[dict[str, str]] | None) -> str:
            return ", ".join(f"{v['amount']} {v['currency']}" for v in values or [])

        def hours(seconds: float | None) -> str:
            return "" if seconds is None else f"{seconds / 3600:.1f} h"

        rows = [(s["name"], s["kind"], f"{s['probability']}%", s["count"], money(s["amount"]), money(s["weighted_amount"]),
                 s["reached"], "" if s["conversion"] is None else f"{s['conversion']}%",
                 *([hours(s["average_seconds"])] if durations else [])) for s in found["stages"]]
        click.echo(f"{found['label']} ({found['pipeline']}, {found['entity']}): {found['count']} records, "
                   f"expected {money(found['expected_amount']) or '-'}")
        _table(rows, ["stage", "kind", "probability", "records", "amount", "weighted", "reached", "conversion",
                      *(["average stay"] if durations else [])])

    @pipelines.command()
    @click.argument("name")
    @click.pass_obj
    def remove(obj: Obj, name: str) -> None:
        """Delete stored pipeline NAME (no record may be in it), or a plugin pipeline's customisation."""
        async def apply(dep: Deployment) -> crmcore.Pipeline | None:
            return await dep.pipeline_service.delete(name, actor=_cli_actor())

        restored = with_deployment(obj.path, apply)
        if restored is None:
            click.echo(f"Removed pipeline {name}")
        else:
            click.echo(f"Removed the customisation of {name}; plugin {restored.plugin}'s pipeline is in force again")


def _jobs_commands(cli: CrmGroup) -> None:
    """crm worker, crm jobs ..., crm webhooks ..."""

    @cli.command()
    @click.option("--once", is_flag=True, help="Run the jobs due now, then exit.")
    @click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05, 3600),
                  help="Seconds between looks for due jobs when none are waiting.")
    @click.option("--batch", default=20, show_default=True, type=click.IntRange(1, 1000),
                  help="Jobs claimed (and run concurrently) at a time.")
    @click.pass_obj
    def worker(obj: Obj, once: bool, poll: float, batch: int) -> None:
        """Run due jobs (webhook deliveries, reminders, time-based rules) until interrupted.

        Any number of workers may run beside `crm serve` (which runs jobs too unless its
        in_process_worker setting is off): each job is claimed by one of them.
        """
        import signal

        async def run(dep: Deployment) -> int:
            if once:
                total = 0
                while (ran := await dep.jobs.run_due(batch)):
                    total += ran
                return total
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                    pass
            await dep.watch_schema()  # schema changes made elsewhere are picked up by notification
            click.echo(f"Worker {dep.jobs.worker_id} running jobs of {obj.path.resolve()} (Ctrl+C to stop)")
            await dep.jobs.work(stop, poll=poll, batch=batch)
            return 0

        ran = with_deployment(obj.path, run)
        if once:
            click.echo(f"Ran {ran} job{'s' if ran != 1 else ''}")

    @cli.group()
    def jobs() -> None:
        """The durable job queue: what is waiting, what failed."""

    @jobs.command("list")
    @click.option("--status", type=click.Choice(["pending", "running", "done", "dead", "cancelled"]))
    @click.option("--kind", help="Only jobs of this kind, e.g. webhook.deliver.")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
    @click.pass_obj
    def jobs_list(obj: Obj, status: str | None, kind: str | None, limit: int) -> None:
        """Jobs, newest first."""
        found = with_deployment(obj.path, lambda dep: dep.jobs.list(status=status, kind=kind, limit=limit))
        if not found:
            click.echo("No jobs" + (f" {status}" if status else ""))
            return
        _table([(j.id, j.kind, j.status, j.run_at.isoformat(timespec="seconds"), f"{j.attempts}/{j.max_attempts}",
                 j.key, (j.last_error or "")[:60]) for j in found],
               ["id", "kind", "status", "run_at", "attempts", "key", "last_error"])

    @jobs.command("retry")
    @click.argument("job_id", type=int)
    @click.pass_obj
    def jobs_retry(obj: Obj, job_id: int) -> None:
        """Run a dead (or cancelled, or done) job again now."""
        job = with_deployment(obj.path, lambda dep: dep.jobs.retry(job_id))
        click.echo(f"Job {job.id} ({job.kind}) is pending again")

    @cli.group()
    def webhooks() -> None:
        """Outgoing webhooks: subscriptions, deliveries, redelivery."""

    @webhooks.command("list")
    @click.pass_obj
    def webhooks_list(obj: Obj) -> None:
        """The subscriptions."""
        hooks = with_deployment(obj.path, lambda dep: dep.webhooks.list())
        if not hooks:
            click.echo("No webhooks yet; add one with: crm webhooks add URL --event contact.created")
            return
        _table([(h["id"], h["url"], ", ".join(h["events"]), ", ".join(h["entities"]) or "all",
                 "yes" if h["active"] else "no", h["description"]) for h in hooks],
               ["id", "url", "events", "entities", "active", "description"])

    @webhooks.command("add")
    @click.argument("url")
    @click.option("--event", "events", multiple=True, required=True,
                  help="An event to send: contact.created, deal.updated, deal.*, *.deleted or * (repeatable).")
    @click.option("--entity", "entities", multiple=True, help="Only these entity types (repeatable; default: all).")
    @click.option("--description", default="", help="What the receiver is.")
    @click.option("--inactive", is_flag=True, help="Add it turned off.")
    @click.pass_obj
    def webhooks_add(obj: Obj, url: str, events: tuple[str, ...], entities: tuple[str, ...], description: str,
                     inactive: bool) -> None:
        """Subscribe URL to events; prints the signing secret (Standard Webhooks)."""
        hook = with_deployment(obj.path, lambda dep: dep.webhooks.create(
            url, list(events), entities=list(entities), description=description, active=not inactive))
        click.echo(f"Added webhook {hook['id']} -> {hook['url']}")
        click.echo(f"Signing secret (verify deliveries with it): {hook['secret']}")

    @webhooks.command("remove")
    @click.argument("webhook_id", type=int)
    @click.pass_obj
    def webhooks_remove(obj: Obj, webhook_id: int) -> None:
        """Remove a subscription (queued deliveries are cancelled; the log is kept)."""
        with_deployment(obj.path, lambda dep: dep.webhooks.delete(webhook_id))
        click.echo(f"Removed webhook {webhook_id}")

    @webhooks.command("deliveries")
    @click.option("--webhook", "webhook_id", type=int, help="Only this subscription's.")
    @click.option("--status", type=click.Choice(["pending", "retrying", "delivered", "dead", "cancelled"]))
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
    @click.pass_obj
    def webhooks_deliveries(obj: Obj, webhook_id: int | None, status: str | None, limit: int) -> None:
        """The delivery log, newest first."""
        found = with_deployment(obj.path, lambda dep: dep.webhooks.deliveries(
            webhook_id=webhook_id, status=status, limit=limit))
        if not found:
            click.echo("No deliveries")
            return
        _table([(d["id"], d["webhook_id"], d["event"], d["record_id"], d["status"], d["attempts"],
                 d["response_status"], (d["last_error"] or "")[:60]) for d in found],
               ["id", "webhook", "event", "record", "status", "attempts", "http", "last_error"])

    @webhooks.command("redeliver")
    @click.argument("delivery_id", type=int)
    @click.pass_obj
    def webhooks_redeliver(obj: Obj, delivery_id: int) -> None:
        """Send a delivery again (same body and webhook-id); a worker or crm serve sends it."""
        with_deployment(obj.path, lambda dep: dep.webhooks.redeliver(delivery_id))
        click.echo(f"Delivery {delivery_id} is queued again")


def _timeline_commands(cli: CrmGroup) -> None:
    """crm forms ... (web-form lead capture) and crm notifications ..."""
    from crmcore.webforms import WebForm

    @cli.group()
    def forms() -> None:
        """Web forms capturing leads: list, show, add, remove, submissions (POST /forms/NAME)."""

    @forms.command("list")
    @click.pass_obj
    def list_forms(obj: Obj) -> None:
        """Every web form with its target entity and field mapping."""
        found = with_deployment(obj.path, lambda dep: dep.forms.list())
        if not found:
            click.echo("No web forms; add one with: crm forms add NAME --field email=email --field phone=phone")
            return
        _table([(f.name, f.entity, ", ".join(f"{k}->{v}" for k, v in f.fields.items()) or "(same names)",
                 ", ".join(f.required), ", ".join(f.dedup), f"/forms/{f.name}") for f in found],
               ["name", "entity", "fields", "required", "dedup", "endpoint"])

    @forms.command("show")
    @click.argument("name")
    @click.pass_obj
    def show_form(obj: Obj, name: str) -> None:
        """Print form NAME as JSON."""
        _json_out(with_deployment(obj.path, lambda dep: dep.forms.get(name)))

    @forms.command("add")
    @click.argument("name")
    @click.option("--entity", default="contact", show_default=True, help="The entity type a submission creates.")
    @click.option("--field", "fields", multiple=True, metavar="FORM=ENTITY",
                  help="Map a form field to an entity field (repeat); none: form fields named like entity fields.")
    @click.option("--require", "required", multiple=True, metavar="FORM_FIELD", help="A required form field (repeat).")
    @click.option("--dedup", multiple=True, metavar="FIELD",
                  help="An e-mail or phone field finding an existing record (repeat; default: email and phone).")
    @click.option("--no-dedup", is_flag=True, help="Never look for an existing record.")
    @click.option("--owner", metavar="EMAIL", help="The user who owns new records.")
    @click.option("--team", metavar="NAME", help="The team of new records.")
    @click.option("--as-user", metavar="EMAIL", help="Create records as this user (their role applies); default: the system.")
    @click.option("--honeypot", default="_gotcha", show_default=True, help="The hidden field bots fill in.")
    @click.option("--rate-limit", type=int, default=10, show_default=True, help="Submissions per minute from one address.")
    @click.option("--redirect", metavar="URL", help="Where a browser goes after a successful post.")
    @click.option("--replace", is_flag=True, help="Replace an existing form of that name.")
    @click.pass_obj
    def add_form(obj: Obj, name: str, entity: str, fields: tuple[str, ...], required: tuple[str, ...],
                 dedup: tuple[str, ...], no_dedup: bool, owner: str | None, team: str | None, as_user: str | None,
                 honeypot: str, rate_limit: int, redirect: str | None, replace: bool) -> None:
        """Add web form NAME, e.g. --field tel=phone --field mail=email --require tel."""
        mapping = {}
        for item in fields:
            source, sep, target = item.partition("=")
            if not sep or not source or not target:
                raise click.BadParameter(f"{item!r}: use FORM_FIELD=ENTITY_FIELD, e.g. tel=phone", param_hint="--field")
            mapping[source] = target

        async def apply(dep: Deployment) -> WebForm:
            if not replace and name in {f.name for f in await dep.forms.list()}:
                raise crmcore.ValidationError([crmcore.FieldError(
                    "name", "unique", f"a form named {name!r} exists (use --replace to replace it)")])
            teams = {t["name"]: t["id"] for t in await dep.auth.teams()}
            if team is not None and team not in teams:
                raise click.BadParameter(f"no team {team!r}", param_hint="--team")
            form = WebForm(
                name=name, entity=entity, fields=mapping, required=list(required),
                dedup=[] if no_dedup else (list(dedup) if dedup else [
                    f for f in ("email", "phone") if (e := dep.registry.get(entity)) and e.field(f)]),
                owner_id=(await dep.auth.user_by_email(owner))["id"] if owner else None,
                team_id=teams[team] if team else None,
                as_user_id=(await dep.auth.user_by_email(as_user))["id"] if as_user else None,
                honeypot=honeypot or None, rate_limit=rate_limit, redirect_url=redirect)
            return await dep.forms.save(form)

        form = with_deployment(obj.path, apply)
        click.echo(f"Web form {form.name!r} saved: POST /forms/{form.name} creates a {form.entity}")

    @forms.command("remove")
    @click.argument("name")
    @click.pass_obj
    def remove_form(obj: Obj, name: str) -> None:
        """Remove web form NAME (its submission log stays)."""
        with_deployment(obj.path, lambda dep: dep.forms.remove(name))
        click.echo(f"Web form {name!r} removed")

    @forms.command("submissions")
    @click.argument("name")
    @click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
    @click.pass_obj
    def submissions(obj: Obj, name: str, limit: int) -> None:
        """The latest submissions of form NAME: when, from where, what came of them."""
        async def get(dep: Deployment) -> list[dict[str, Any]]:
            await dep.forms.get(name)
            return await dep.forms.submissions(name, limit=limit)

        rows = with_deployment(obj.path, get)
        _table([(s["at"].isoformat(timespec="seconds"), s["ip"], s["outcome"], s["record_id"],
                 "; ".join(f"{e['field']}: {e['message']}" for e in s["errors"])) for s in rows],
               ["at", "ip", "outcome", "record", "errors"])

    @cli.command("timeline")
    @click.argument("entity")
    @click.argument("record_id", type=int)
    @click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
    @click.pass_obj
    def timeline(obj: Obj, entity: str, record_id: int, limit: int) -> None:
        """A record's history, newest first: activities, field changes, plugins' items."""
        page = with_deployment(obj.path, lambda dep: dep.timeline.timeline(entity, record_id, actor=crmcore.SYSTEM,
                                                                         limit=limit))
        if not page.items:
            click.echo(f"Nothing on the timeline of {entity} {record_id}")
            return
        _table([(i.at.isoformat(timespec="seconds"), i.source, i.kind, i.title) for i in page.items],
               ["at", "source", "kind", "title"])

    @cli.group()
    def notifications() -> None:
        """In-app notifications (reminders, automation): send one."""

    @notifications.command("send")
    @click.option("--user", "users", multiple=True, metavar="EMAIL", help="A user to notify (repeat).")
    @click.option("--role", help="Notify every active user having this role.")
    @click.option("--link", help="Where the notification leads (/contact/12...).")
    @click.argument("title")
    @click.argument("body", required=False)
    @click.pass_obj
    def send(obj: Obj, users: tuple[str, ...], role: str | None, link: str | None, title: str, body: str | None) -> None:
        """Notify users (and e-mail them when SMTP is configured)."""
        if not users and not role:
            raise click.UsageError("name at least one --user or a --role")

        async def apply(dep: Deployment) -> list[int]:
            ids = [(await dep.auth.user_by_email(email))["id"] for email in users]
            if role:
                ids += await dep.notifications.users_with_role(role)
            return await dep.notifications.notify(ids, title, body, link, "message")

        made = with_deployment(obj.path, apply)
        click.echo(f"{len(made)} notification(s) sent")


# -- automation rules --------------------------------------------------------------------------

def _trigger_text(trigger: dict[str, Any]) -> str:
    """A trigger in a few words: ``created + 15m``, ``field_changed status to 'won'``, ``date due -1d``."""
    kind = trigger.get("type", "?")
    text = kind
    if kind == "updated" and trigger.get("fields"):
        text += f" ({', '.join(trigger['fields'])})"
    if trigger.get("field"):
        text += f" {trigger['field']}"
    if trigger.get("pipeline"):
        text += f" {trigger['pipeline']}:"
    if trigger.get("stage"):
        text += f"{'' if trigger.get('pipeline') else ' '}{trigger['stage']}"
    for key in ("from", "to"):
        if key in trigger:
            text += f" {key} {trigger[key]!r}"
    if trigger.get("offset") and trigger["offset"] != "0m":
        text += f" {trigger['offset']}"
    if trigger.get("cron"):
        text += f" {trigger['cron']}" + (f" ({trigger['timezone']})" if trigger.get("timezone") else "")
    if trigger.get("delay"):
        text += f" + {trigger['delay']}"
    return text


def _read_json(file: str) -> Any:
    """The JSON in ``file`` (``-``: standard input); a clean error naming the file otherwise."""
    import msgspec

    name = "standard input" if file == "-" else file
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    if not text.strip():
        raise click.ClickException(f"{name} is empty: expected JSON")
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise click.ClickException(f"{name}: not valid JSON: {exc}") from None


def _rules_commands(cli: CrmGroup) -> None:
    from crmcore.automation import OUTCOMES, Rule

    @cli.group()
    def rules() -> None:
        """Automation rules (trigger -> conditions -> actions): list, show, add, set, enable,
        disable, remove, run, firings, actions."""

    async def _find(dep: Deployment, ref: str) -> Rule:
        """Rule REF: its id or its name (a name of digits only is found too)."""
        try:
            return await dep.automation.get(ref)
        except NotFound:
            if ref.isdigit():
                for rule in await dep.automation.list():
                    if rule.name == ref:
                        return rule
            raise NotFound("rule", repr(ref)) from None

    def _summary(rule: Rule) -> str:
        count = len(rule.actions)
        actions = f"{count} action{'s' if count != 1 else ''}"
        return f"{rule.entity or 'no entity'}, {_trigger_text(rule.trigger)}, {actions}{'' if rule.active else ', disabled'}"

    def _data_for(file: str, what: str) -> Any:
        data = _read_json(file)
        if what == "object" and not isinstance(data, dict):
            raise click.ClickException(f"{'standard input' if file == '-' else file}: expected a JSON object with the "
                                       "rule's keys to change (see crm rules show RULE --json)")
        return data

    @rules.command("list")
    @click.option("--entity", help="Only the rules of this entity type.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def list_(obj: Obj, entity: str | None, as_json: bool) -> None:
        """Every rule: its entity, trigger, whether it is active, how many actions."""
        async def get(dep: Deployment) -> list[Rule]:
            if entity is not None and dep.registry.get(entity) is None:
                known = ", ".join(sorted(e.name for e in dep.registry))
                raise click.BadParameter(f"no entity type {entity!r} (known: {known})", param_hint="--entity")
            return await dep.automation.list(entity=entity)

        found = with_deployment(obj.path, get)
        if as_json:
            _json_out(found)
        elif not found:
            click.echo("No automation rules" + (f" for {entity}" if entity else "") +
                       " yet; add some with: crm rules add FILE (see crm rules actions for what they can do)")
        else:
            _table([(r.id, r.name, r.entity or "-", _trigger_text(r.trigger), "yes" if r.active else "no",
                     len(r.actions), r.description[:50]) for r in found],
                   ["id", "name", "entity", "trigger", "active", "actions", "description"])

    @rules.command()
    @click.argument("rule")
    @click.option("--json", "as_json", is_flag=True, help="Print the rule as JSON (the form crm rules add/set take).")
    @click.pass_obj
    def show(obj: Obj, rule: str, as_json: bool) -> None:
        """Show rule RULE (its id or name) in full."""
        import msgspec

        found = with_deployment(obj.path, lambda dep: _find(dep, rule))
        if as_json:
            _json_out(found)
            return

        def js(value: Any) -> str:
            return "-" if value is None else msgspec.json.encode(value).decode()

        click.echo(f"Rule {found.id}: {found.name} ({'active' if found.active else 'disabled'})")
        if found.description:
            click.echo(f"  description: {found.description}")
        click.echo(f"  entity:      {found.entity or '-'}")
        click.echo(f"  trigger:     {_trigger_text(found.trigger)}  {js(found.trigger)}")
        click.echo(f"  condition:   {js(found.condition)}")
        click.echo(f"  unless:      {js(found.unless)}")
        click.echo("  actions:")
        for index, action in enumerate(found.actions, 1):
            click.echo(f"    {index}. {action['type']}  {js({k: v for k, v in action.items() if k != 'type'})}")
        click.echo(f"  created:     {_when(found.created_at)} UTC, changed {_when(found.updated_at)} UTC")

    @rules.command()
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
    @click.pass_obj
    def add(obj: Obj, file: str) -> None:
        """Add the rule(s) in FILE (JSON: one rule or a list of them; - reads standard input).

        A rule: {"name", "entity", "trigger": {"type": ...}, "condition", "unless", "actions": [...],
        "description", "active"}. All are added, or none when one of them is refused.
        """
        data = _read_json(file)
        many = isinstance(data, list)
        items = data if many else [data]
        if not items:
            raise click.ClickException(f"{'standard input' if file == '-' else file} holds no rules (an empty list)")

        def label(index: int, item: Any) -> str:
            name = item.get("name") if isinstance(item, dict) else None
            return f"rule {index + 1} of {len(items)}" + (f" ({name})" if isinstance(name, str) else "")

        async def apply(dep: Deployment) -> list[Rule]:
            problems: dict[int, str] = {}
            seen: dict[str, int] = {}
            taken = {r.name for r in await dep.automation.list()}
            for index, item in enumerate(items):
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(item, dict):
                    problems[index] = "not a JSON object"
                elif isinstance(name, str) and name in seen:
                    problems[index] = f"name: rule {seen[name] + 1} is named {name!r} too"
                elif isinstance(name, str) and name in taken:
                    problems[index] = f"name: a rule named {name!r} exists (change it with crm rules set {name} FILE)"
                if isinstance(name, str):
                    seen.setdefault(name, index)
            added: list[Rule] = []
            # One transaction: every rule is checked and stored, and a refused one undoes them all.
            async with dep.db.transaction():
                for index, item in enumerate(items):
                    if index in problems:
                        continue
                    try:
                        added.append(await dep.automation.create(item, actor=_cli_actor()))
                    except ValidationError as exc:
                        problems[index] = str(exc)
                        if any(e.code == "taken" for e in exc.errors):
                            break  # the database refused a write: nothing more is tried in this transaction
                if problems:
                    if not many:
                        name = items[0].get("name") if isinstance(items[0], dict) else None
                        raise click.ClickException(
                            f"{f'rule {name}' if isinstance(name, str) else 'the rule'} was not added: {problems[0]}")
                    lines = [f"  {label(i, items[i])}: {problems[i]}" for i in sorted(problems)]
                    raise click.ClickException("\n".join([f"nothing was added; {len(problems)} of {len(items)} "
                                                          f"rules refused:", *lines]))
            return added

        for rule in with_deployment(obj.path, apply):
            click.echo(f"Added rule {rule.id} {rule.name}: {_summary(rule)}")

    @rules.command("set")
    @click.argument("rule")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
    @click.pass_obj
    def set_(obj: Obj, rule: str, file: str) -> None:
        """Change rule RULE with the keys in FILE (a JSON object; keys left out keep their value;
        - reads standard input). A new trigger withdraws the old one's pending timers."""
        data = _data_for(file, "object")

        async def apply(dep: Deployment) -> Rule:
            current = await _find(dep, rule)
            try:
                return await dep.automation.update(current.id, data, actor=_cli_actor())
            except ValidationError as exc:
                raise click.ClickException(f"rule {current.name} was not changed: {exc}") from None

        saved = with_deployment(obj.path, apply)
        click.echo(f"Saved rule {saved.id} {saved.name}: {_summary(saved)}")

    def _set_active(obj: Obj, rule: str, active: bool) -> None:
        async def apply(dep: Deployment) -> tuple[Rule, bool]:
            current = await _find(dep, rule)
            if current.active == active:
                return current, False
            return await dep.automation.update(current.id, {"active": active}, actor=_cli_actor()), True

        saved, changed = with_deployment(obj.path, apply)
        state = "enabled" if active else "disabled"
        click.echo(f"Rule {saved.id} {saved.name} is {state}" + ("" if changed else " already"))

    @rules.command()
    @click.argument("rule")
    @click.pass_obj
    def enable(obj: Obj, rule: str) -> None:
        """Turn rule RULE on."""
        _set_active(obj, rule, True)

    @rules.command()
    @click.argument("rule")
    @click.pass_obj
    def disable(obj: Obj, rule: str) -> None:
        """Turn rule RULE off: it stops firing, and its pending delayed firings lapse."""
        _set_active(obj, rule, False)

    @rules.command()
    @click.argument("rule")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.pass_obj
    def remove(obj: Obj, rule: str, yes: bool) -> None:
        """Delete rule RULE and its pending timers (its firing log stays)."""
        if not yes:
            found = with_deployment(obj.path, lambda dep: _find(dep, rule))
            click.confirm(f"Remove rule {found.id} {found.name} ({_summary(found)})?", abort=True)

        async def apply(dep: Deployment) -> Rule:
            current = await _find(dep, rule)
            await dep.automation.delete(current.id, actor=_cli_actor())
            return current

        gone = with_deployment(obj.path, apply)
        click.echo(f"Removed rule {gone.id} {gone.name} (its firing log stays)")

    @rules.command("run")
    @click.argument("rule")
    @click.option("--record", "record_id", type=int, metavar="ID",
                  help="The record to run it on (unless the rule has no entity).")
    @click.pass_obj
    def run_(obj: Obj, rule: str, record_id: int | None) -> None:
        """Fire rule RULE now for one record, as if triggered (its condition is checked); even
        a disabled rule runs. Exits with 1 when the rule failed."""
        async def apply(dep: Deployment) -> tuple[Rule, dict[str, Any]]:
            current = await _find(dep, rule)
            if current.entity is not None and record_id is None:
                raise click.UsageError(f"rule {current.name} acts on {current.entity} records: give --record ID")
            return current, await dep.automation.run(current.id, record_id, actor=_cli_actor())

        current, firing = with_deployment(obj.path, apply)
        target = f" on {current.entity} {firing['record_id']}" if firing["record_id"] is not None else ""
        if firing["outcome"] == "failed":
            raise click.ClickException(f"rule {current.name} failed{target}: {firing['error']} (firing {firing['id']})")
        click.echo(f"Rule {current.name} ran{target}: {firing['outcome']}"
                   + (f" ({firing['error']})" if firing["error"] else "") + f" (firing {firing['id']})")

    @rules.command()
    @click.option("--rule", "rule", help="Only this rule's firings (its id or name; a removed rule's by id).")
    @click.option("--entity", help="Only firings on records of this entity type.")
    @click.option("--record", "record_id", type=int, metavar="ID", help="Only firings on this record.")
    @click.option("--outcome", type=click.Choice(OUTCOMES))
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="How many firings.")
    @click.option("--before", "before_id", type=int, help="Only firings older than this id (the next page).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def firings(obj: Obj, rule: str | None, entity: str | None, record_id: int | None, outcome: str | None,
                limit: int, before_id: int | None, as_json: bool) -> None:
        """The firing log, newest first: which rule fired on which record, and what came of it."""
        async def get(dep: Deployment) -> list[dict[str, Any]]:
            rule_id = None
            if rule is not None:
                rule_id = int(rule) if rule.isdigit() else (await _find(dep, rule)).id
            return await dep.automation.firings(rule_id=rule_id, entity=entity, record_id=record_id, outcome=outcome,
                                                before_id=before_id, limit=limit)

        found = with_deployment(obj.path, get)
        if as_json:
            _json_out(found)
            return
        if not found:
            filtered = any(v is not None for v in (rule, entity, record_id, outcome, before_id))
            click.echo("No firings match" if filtered else "No firings yet")
            return
        _table([(f["id"], f["at"].strftime("%Y-%m-%d %H:%M:%S") if f["at"] else "-", f["rule"],
                 f["entity"] or "-", f["record_id"] if f["record_id"] is not None else "-", f["trigger"], f["outcome"],
                 (f["error"] or "")[:80]) for f in found],
               ["id", "at (UTC)", "rule", "entity", "record", "trigger", "outcome", "error"])
        if len(found) == limit:
            click.echo(f"(more: --before {found[-1]['id']})")

    @rules.command()
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @click.pass_obj
    def actions(obj: Obj, as_json: bool) -> None:
        """The action types rules can use: the core's and the enabled plugins'."""
        async def get(dep: Deployment) -> list[dict[str, str]]:
            return [{"name": a.name, "label": a.label, "plugin": a.plugin, "description": a.description}
                    for a in sorted(dep.automation.action_types().values(), key=lambda a: (a.plugin != "core", a.name))]

        found = with_deployment(obj.path, get)
        if as_json:
            _json_out(found)
            return
        _table([(a["name"], a["label"], a["plugin"], a["description"]) for a in found],
               ["name", "label", "plugin", "description"])


def _deployment_from_argv(argv: Sequence[str]) -> str | None:
    """The ``--deployment`` given before the command (plugin commands depend on it)."""
    args = list(argv)
    for index, arg in enumerate(args):
        if arg in ("-d", "--deployment"):
            return args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("--deployment="):
            return arg.split("=", 1)[1]
        if arg.startswith("-d") and len(arg) > 2:
            return arg[2:]
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    create_cli(_deployment_from_argv(args))(args=args, prog_name="crm")


if __name__ == "__main__":
    main()
