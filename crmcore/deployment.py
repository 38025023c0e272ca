"""A deployment: a folder with ``crm.toml`` (plugins, edition, locale, currency, time zone,
database URL) and, by default, its SQLite file. Opening one builds the plugin manager, the entity
registry (plugins' declarations plus the custom fields stored in the database), syncs the schema
and starts the records service.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pluggy
import tomli_w

from .auth.errors import Unauthenticated
from .auth.permissions import CORE_PERMISSIONS, SYSTEM, Actor, Permission
from .auth.service import AuthService
from .jobs import Clock, JobQueue
from .contributions import Edition, Pipeline, UIItem
from .entities import EntityType, Field, FieldType, Registry, RegistryError, check_field
from .pipelines import PipelineService, declaration_problem
from .plugins import PluginError, call_each, discover, get_plugin_manager
from .records.errors import NotFound
from .records.service import RecordsService
from .fieldvalues import FieldValueError, parse_value
from .storage.database import Database, IntegrityError, SQLiteDatabase, open_database
from .storage.schema import PendingChange, SchemaManager
from .webhooks import Webhooks
from .notifications import NotificationService
from .timeline import TimelineService
from .webforms import FormsService
from .automation import Automation
from .documents import DocumentService
from .exporting import ExportService
from .importing import ImportService
from .reports import ReportService

__all__ = [
    "Deployment", "Settings", "init_deployment", "DeploymentError", "available_editions", "load_settings",
    "save_settings", "check_setting",
]

CONFIG_FILE = "crm.toml"
#: Announced after every schema change, so other processes pick it up at once.
SCHEMA_CHANNEL = "crm_schema"
DB_FILE = "crm.db"


class DeploymentError(Exception):
    """The deployment folder or its configuration is unusable; the message says why."""


class Settings(msgspec.Struct, kw_only=True):
    name: str = "crm"
    edition: str = "standard"
    plugins: list[str] = []
    locale: str = "en"
    currency: str = "EUR"
    timezone: str = "UTC"
    #: Region phone numbers without a country code are read in (ISO 3166 alpha-2).
    region: str = "US"
    database_url: str | None = None
    #: The public address of the web app (``https://crm.example.com``): links sent out, such as
    #: password resets, point there. Unset: only requests to a loopback address get links (a
    #: request's Host header could name anyone's site).
    base_url: str | None = None
    #: Session cookies only over HTTPS (browsers allow them on http://localhost too). Turn off
    #: only for a deployment served over plain HTTP on a private network.
    secure_cookies: bool = True
    #: The user (e-mail) automation acts as: its role limits what rules may read and change.
    #: Unset: automation acts as the system.
    automation_user: str | None = None
    #: ``crm serve`` runs due jobs (webhook deliveries, reminders, time-based rules) in its own
    #: process. Turn off when separate ``crm worker`` processes do it.
    in_process_worker: bool = True
    #: The SMTP server notifications (reminders...) are e-mailed through; unset: in-app only.
    #: ``smtp_from`` is the sender address; ``smtp_user``/``smtp_password`` only if it wants a login.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_from: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    #: Each plugin's own settings: ``[plugin.telephony]`` in crm.toml is ``plugin["telephony"]``
    #: (read with ``deployment.plugin_settings("telephony")``).
    plugin: dict[str, dict[str, Any]] = {}


def check_setting(name: str, value: str) -> str:
    """A deployment setting checked and normalised; ValueError says what is accepted."""
    if name == "region":
        import phonenumbers

        if not isinstance(value, str) or value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region code; use ISO 3166 alpha-2 such as TR, DE, US")
        return value.upper()
    if name == "currency":
        from babel.numbers import list_currencies

        if not isinstance(value, str) or value.upper() not in list_currencies():
            raise ValueError(f"{value!r} is not an ISO 4217 currency code such as EUR, USD, TRY")
        return value.upper()
    if name == "timezone":
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"{value!r} is not a time zone; use an IANA name such as Europe/Istanbul") from None
        return value
    if name == "base_url":
        from urllib.parse import urlsplit

        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not a base URL; use e.g. https://crm.example.com")
        return value.rstrip("/")
    if name == "locale":
        from babel import Locale, UnknownLocaleError

        try:
            Locale.parse(value)
        except (UnknownLocaleError, ValueError, TypeError):
            raise ValueError(f"{value!r} is not a locale; use e.g. en, tr, de_DE") from None
        return value
    return value


CHECKED_SETTINGS = ("region", "currency", "timezone", "locale", "base_url")


def _checked(settings: Settings, where: str) -> Settings:
    try:
        for name in CHECKED_SETTINGS:
            if getattr(settings, name) is not None:
                setattr(settings, name, check_setting(name, getattr(settings, name)))
    except ValueError as exc:
        raise DeploymentError(f"{where}: {name}: {exc}") from None
    return settings


def load_settings(path: Path) -> Settings:
    """The settings in a deployment folder's ``crm.toml``, checked."""
    config = Path(path) / CONFIG_FILE
    if not config.exists():
        raise DeploymentError(f"{path} is not a deployment: {CONFIG_FILE} is missing (create one with: crm init {path})")
    try:
        settings = msgspec.convert(tomllib.loads(config.read_text()), Settings)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise DeploymentError(f"{config}: {exc}") from None
    return _checked(settings, str(config))


def save_settings(path: Path, settings: Settings) -> None:
    data = {k: v for k, v in msgspec.to_builtins(settings).items() if v is not None}
    (path / CONFIG_FILE).write_text(tomli_w.dumps(data))


def available_editions(pm: pluggy.PluginManager | None = None) -> dict[str, Edition]:
    """Editions declared by every installed plugin (an edition names the plugins it enables)."""
    available = discover()
    pm = pm or get_plugin_manager([n for n, p in available.items() if p.error is None], available)
    editions: dict[str, Edition] = {}

    def make(plugin: str) -> dict[str, Any]:
        def register(edition: Edition) -> None:
            if edition.name in editions:
                raise RegistryError(f"plugin {plugin!r}: edition {edition.name!r} is already declared")
            editions[edition.name] = msgspec.structs.replace(edition, plugin=plugin)
        return {"register": register}

    call_each(pm, "crm_register_editions", make)
    return editions


def init_deployment(path: Path, *, edition: str = "standard", **overrides: Any) -> Settings:
    """Write ``crm.toml`` for a new deployment in ``path`` (the database is made on first open)."""
    path = Path(path)
    if (path / CONFIG_FILE).exists():
        raise DeploymentError(f"{path} already holds a deployment ({CONFIG_FILE} exists)")
    editions = available_editions()
    chosen = editions.get(edition)
    if chosen is None:
        raise DeploymentError(f"unknown edition {edition!r}; available: {', '.join(sorted(editions))}")
    values = {"name": path.resolve().name, **chosen.settings, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = msgspec.convert({**values, "edition": edition, "plugins": list(chosen.plugins)}, Settings)
    except msgspec.ValidationError as exc:
        raise DeploymentError(str(exc)) from None
    settings = _checked(settings, "settings")
    path.mkdir(parents=True, exist_ok=True)
    save_settings(path, settings)
    return settings


class Deployment:
    """An open deployment. Use ``await Deployment.open(path)`` and ``await deployment.close()``."""

    def __init__(self, path: Path, settings: Settings, db: Database, pm: pluggy.PluginManager):
        self.path = path
        self.settings = settings
        self.db = db
        self.pm = pm
        self.registry = Registry()
        self.pipelines: dict[str, Pipeline] = {}
        self.ui_items: list[UIItem] = []
        self.routes: list[Any] = []
        #: id(route handler) -> the plugin that registered it.
        self.route_plugins: dict[int, str] = {}
        self.schema = SchemaManager(db, self._engine())
        self.records = RecordsService(self)
        self.auth = AuthService(self)
        #: The time for everything scheduled (tests set and advance it), and the durable job queue.
        self.clock = Clock()
        self.jobs = JobQueue(self)
        #: Outgoing webhooks: subscriptions and their signed deliveries (jobs of kind webhook.deliver).
        self.webhooks = Webhooks(self)
        #: Record timelines, notifications (and reminders), web forms.
        self.timeline = TimelineService(self)
        self.notifications = NotificationService(self)
        self.forms = FormsService(self)
        #: Automation rules, their firing (jobs of kind automation.*) and the firing log.
        self.automation = Automation(self)
        #: Reports (saved and built-in), documents from templates, import and export of records.
        self.reports = ReportService(self)
        self.documents = DocumentService(self)
        self.imports = ImportService(self)
        self.exports = ExportService(self)
        #: Stored pipelines, stage moves and history (crmcore.pipelines); ``pipelines`` above
        #: holds the definitions in force.
        self.pipeline_service = PipelineService(self)
        #: Named permissions: the core's and those plugins declare (crm_register_permissions).
        self.permissions: dict[str, Permission] = dict(CORE_PERMISSIONS)
        self.schema_version = 0
        self.pending_changes: list[PendingChange] = []
        self._data_version: int | None = None
        self._watched = False
        self._schema_stale = False
        #: Plugin objects given to ``open(extra_plugins=...)``; kept across ``set_plugins_live``.
        self.extra_plugins: tuple[Any, ...] = ()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: str | Path, *, database_url: str | None = None, sync: bool = True, extra_plugins: Any = (),
    ) -> Deployment:
        """Open the deployment in ``path``. ``extra_plugins``: plugin objects registered besides the
        enabled ones (tests, embedding); see :func:`crmcore.plugins.get_plugin_manager`."""
        path = Path(path)
        extra_plugins = tuple(extra_plugins)
        settings = load_settings(path)
        url = database_url or os.environ.get("CRM_DATABASE_URL") or settings.database_url
        if not url:
            url = f"sqlite:///{(path / DB_FILE).resolve()}"
        pm = get_plugin_manager(settings.plugins, extra_plugins=extra_plugins)
        try:
            db = open_database(url)
        except ValueError as exc:
            raise DeploymentError(str(exc)) from None
        try:
            await db.connect()
        except Exception as exc:
            raise DeploymentError(f"cannot connect to the database {url.split('@')[-1]}: {exc}") from None
        deployment = cls(path, settings, db, pm)
        deployment.extra_plugins = extra_plugins
        try:
            deployment.schema.engine = deployment._engine()
            async with db.exclusive("crmcore.schema"):  # processes starting together take turns
                await deployment.schema.ensure_system_tables()
                await deployment._build()
                if sync:
                    deployment.pending_changes = await deployment._sync()
            await deployment._run_startup()
        except BaseException:
            await db.close()
            raise
        return deployment

    def _engine(self) -> Any:
        if self.db.dialect == "postgres":
            return getattr(self.db, "engine", None)
        from piccolo.engine.sqlite import SQLiteEngine

        return SQLiteEngine(path=getattr(self.db, "path", ":memory:"))

    async def _run_startup(self) -> None:
        for result in self.pm.hook.crm_startup(deployment=self):
            if inspect.isawaitable(result):
                await result

    def plugin_settings(self, plugin: str) -> dict[str, Any]:
        """The plugin's own settings (``[plugin.<name>]`` in crm.toml); empty when there are none."""
        return dict(self.settings.plugin.get(plugin) or {})

    async def automation_actor(self) -> Actor:
        """The actor automation runs as: ``automation_user``'s (a DeploymentError when that user
        is missing or disabled, rather than quietly running as someone else), else the system."""
        if not self.settings.automation_user:
            return msgspec.structs.replace(SYSTEM, via="automation")
        try:
            user = await self.auth.user_by_email(self.settings.automation_user)
            return await self.auth.actor_for_user(user["id"], via="automation")
        except (NotFound, Unauthenticated) as exc:
            raise DeploymentError(f"automation_user {self.settings.automation_user!r}: {exc}") from None

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Deployment:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- the registry ------------------------------------------------------------------------

    async def _build(self) -> None:
        """(Re)build entity types, pipelines and UI items from the plugins and stored custom fields."""
        await self.db.schema_changed()
        registry = Registry()
        pipelines: dict[str, Pipeline] = {}
        ui_items: list[UIItem] = []
        routes: list[Any] = []
        route_plugins: dict[int, str] = {}

        def for_plugin(plugin: str) -> dict[str, Any]:
            def register_entity(entity: EntityType) -> None:
                declared = registry.add_entity(entity, plugin=plugin)
                for field in entity.fields:
                    registry.add_field(declared.name, field, plugin=plugin)

            def add_field(entity_name: str, field: Field) -> None:
                registry.add_field(entity_name, field, plugin=plugin)

            def register_pipeline(pipeline: Pipeline) -> None:
                if pipeline.name in pipelines:
                    raise RegistryError(f"plugin {plugin!r}: pipeline {pipeline.name!r} is already declared")
                pipelines[pipeline.name] = msgspec.structs.replace(pipeline, plugin=plugin)

            def register_ui(item: UIItem) -> None:
                ui_items.append(msgspec.structs.replace(item, plugin=plugin))

            def register_route(handler: Any) -> None:
                routes.append(handler)
                route_plugins[id(handler)] = plugin

            return {
                "deployment": self, "register": register_entity, "add_field": add_field,
                "register_pipeline": register_pipeline, "register_ui": register_ui, "register_route": register_route,
            }

        def renamed(key: str):
            """Each register_* hook calls its callback ``register``."""
            def make(plugin: str) -> dict[str, Any]:
                callbacks = for_plugin(plugin)
                return {**callbacks, "register": callbacks[key]}
            return make

        call_each(self.pm, "crm_register_entities", for_plugin)
        call_each(self.pm, "crm_extend_entities", for_plugin)
        call_each(self.pm, "crm_register_pipelines", renamed("register_pipeline"))
        call_each(self.pm, "crm_ui_items", renamed("register_ui"))
        call_each(self.pm, "crm_register_routes", renamed("register_route"))
        permissions = dict(CORE_PERMISSIONS)

        def register_permission(plugin: str) -> dict[str, Any]:
            def register(permission: Permission) -> None:
                name = permission.name if plugin == "core" else f"{plugin}.{permission.name}"
                if name in permissions:
                    raise RegistryError(f"plugin {plugin!r}: permission {name!r} is already declared")
                permissions[name] = msgspec.structs.replace(permission, name=name)
            return {"deployment": self, "register": register}

        call_each(self.pm, "crm_register_permissions", register_permission)
        for pipeline in pipelines.values():
            if registry.get(pipeline.entity) is None:
                raise PluginError(f"plugin {pipeline.plugin!r}: pipeline {pipeline.name!r} is for unknown entity {pipeline.entity!r}")
            problem = declaration_problem(pipeline, registry)
            if problem:
                raise PluginError(f"plugin {pipeline.plugin!r}: pipeline {pipeline.name!r}: {problem}")
        for (entity_name, definition, removed) in await self.db.fetch(
            'SELECT "entity", "definition", "removed" FROM crm_custom_field ORDER BY "created_at", "name"'
        ):
            entity = registry.get(entity_name)
            if entity is None:  # the plugin owning it is disabled: its data stays, unseen
                continue
            field = msgspec.json.decode(definition, type=Field)
            if removed:
                field.hidden = True
            try:
                registry.add_field(entity_name, field, plugin="custom")
            except RegistryError:
                continue  # a plugin now declares a field of that name itself
        registry.check_relations()
        pipelines = await self.pipeline_service.merge_stored(pipelines, registry)
        self.registry, self.pipelines, self.ui_items = registry, pipelines, ui_items
        self.routes, self.route_plugins = routes, route_plugins
        self.permissions = permissions
        self.schema_version = int(await self.schema.meta("schema_version") or 0)
        self.records.invalidate()

    async def _sync(self, entities: list[EntityType] | None = None) -> list[PendingChange]:
        active = {name for name, _ in self.pm.list_name_plugin()} | {"custom"}
        return await self.schema.sync(list(self.registry) if entities is None else entities, active)

    async def refresh(self, *, force: bool = False) -> bool:
        """Pick up schema changes made by another process (a CLI, another server). Cheap: on
        SQLite a look at the file's change counter, on PostgreSQL a flag set by a notification;
        ``force`` reads the stored schema version regardless."""
        if not force:
            if isinstance(self.db, SQLiteDatabase):
                version = self.db.data_version()
                if version == self._data_version:
                    return False
                self._data_version = version
            elif self._watched and not self._schema_stale:
                return False
        self._schema_stale = False
        stored = int(await self.schema.meta("schema_version") or 0)
        if stored == self.schema_version:
            return False
        await self._build()
        return True

    async def _schema_changed(self) -> None:
        await self.schema.set_meta("schema_version", str(self.schema_version + 1))
        await self.db.announce(SCHEMA_CHANNEL)
        await self._build()

    async def watch_schema(self) -> None:
        """For long-running processes (the server): be told of schema changes by notification
        where the database can (PostgreSQL), so ``refresh()`` costs no query per request."""
        self._watched = await self.db.watch(SCHEMA_CHANNEL, self._mark_stale)

    def _mark_stale(self) -> None:
        self._schema_stale = True

    # -- custom fields -----------------------------------------------------------------------

    async def add_custom_field(self, entity_name: str, field: Field) -> Field:
        """Add a typed field at run time: a real column (indexed when asked), live at once."""
        entity = self._entity(entity_name)
        field = msgspec.structs.replace(field, custom=True, plugin="custom")
        existing = await self.db.fetchrow(
            'SELECT "removed" FROM crm_custom_field WHERE "entity" = ? AND "name" = ?', (entity.name, field.name)
        )
        if existing is not None:
            raise RegistryError(
                f"{entity.name} already has a custom field {field.name!r}"
                + (" (removed; purge it first to reuse the name)" if existing[0] else "")
            )
        check_field(entity, field)
        if field.type is FieldType.RELATION and self.registry.get(field.target or "") is None:
            raise RegistryError(f"field {field.name!r}: relation target {field.target!r} is not a known entity")
        self._check_options(field)
        await self.db.execute(
            'INSERT INTO crm_custom_field ("entity", "name", "definition", "removed", "created_at") VALUES (?, ?, ?, ?, ?)',
            (entity.name, field.name, msgspec.json.encode(field).decode(), False,
             dt.datetime.now(dt.timezone.utc).isoformat()),
        )
        try:
            await self._schema_changed()  # the registry now holds the field ...
            await self._sync([self._entity(entity_name)])  # ... and the table its column
            await self._fill_default(self._entity(entity_name), field)
        except BaseException:  # no definition without its column
            await self.db.execute(
                'DELETE FROM crm_custom_field WHERE "entity" = ? AND "name" = ?', (entity.name, field.name)
            )
            await self._schema_changed()
            raise
        return field

    async def _fill_default(self, entity: EntityType, field: Field) -> None:
        """The records there already get a new field's default (a schema change, like the
        column itself: no audit entry per record)."""
        if field.default is None:
            return
        settings = self.settings
        value = parse_value(field, field.default, region=settings.region, currency=settings.currency)
        encoded = self.records.codec(entity).encode({field.name: value})
        first = next(iter(encoded))
        assignments = ", ".join(f'"{column}" = ?' for column in encoded)
        await self.db.execute(f'UPDATE "{entity.table}" SET {assignments} WHERE "{first}" IS NULL',
                              list(encoded.values()), long=True)

    def _check_options(self, field: Field) -> None:
        """Options a custom field must satisfy whenever it is added or changed."""
        if field.type in (FieldType.CHOICE, FieldType.MULTI_CHOICE) and not field.choices:
            raise RegistryError(f"field {field.name!r}: a {field.type.value} field needs choices")
        if field.default is not None:
            try:
                parse_value(field, field.default, region=self.settings.region, currency=self.settings.currency)
            except FieldValueError as exc:
                raise RegistryError(f"field {field.name!r}: the default is not valid: {exc.message}") from None
        if field.required and field.default is None:
            raise RegistryError(f"field {field.name!r}: a required custom field needs a default for existing records")

    async def update_custom_field(self, entity_name: str, name: str, **changes: Any) -> Field:
        """Relabel, change options, hide or show a custom field (never its type: see migrations)."""
        entity = self._entity(entity_name)
        row = await self.db.fetchrow(
            'SELECT "definition", "removed" FROM crm_custom_field WHERE "entity" = ? AND "name" = ?', (entity.name, name)
        )
        if row is None:
            raise RegistryError(f"{entity.name} has no custom field {name!r}")
        if row[1]:
            raise RegistryError(f"custom field {name!r} was removed; restore it first (crm fields restore)")
        allowed = {"label", "help_text", "required", "default", "indexed", "choices", "in_list", "hidden", "searchable", "max_length", "unique"}
        wrong = set(changes) - allowed
        if wrong:
            raise RegistryError(f"cannot change {', '.join(sorted(wrong))} of a field; changeable: {', '.join(sorted(allowed))}")
        old = msgspec.json.decode(row[0], type=Field)
        try:
            field = msgspec.convert({**msgspec.to_builtins(old), **changes}, Field)
        except msgspec.ValidationError as exc:
            raise RegistryError(f"field {name!r}: {exc}") from None
        self._check_options(field)

        async def store(definition: Field) -> None:
            await self.db.execute(
                'UPDATE crm_custom_field SET "definition" = ? WHERE "entity" = ? AND "name" = ?',
                (msgspec.json.encode(definition).decode(), entity.name, name),
            )
            await self._schema_changed()

        await store(field)
        try:
            await self._sync([self._entity(entity_name)])
        except IntegrityError:
            await store(old)
            raise RegistryError(
                f"field {name!r} cannot be made unique: some {entity.name} records share a value"
            ) from None
        return field

    async def custom_fields(self, entity_name: str) -> list[tuple[Field, bool]]:
        """The entity's custom fields with whether each was removed (hidden, data kept)."""
        entity = self._entity(entity_name)
        rows = await self.db.fetch(
            'SELECT "definition", "removed" FROM crm_custom_field WHERE "entity" = ? ORDER BY "created_at", "name"',
            (entity.name,),
        )
        return [(msgspec.json.decode(definition, type=Field), bool(removed)) for definition, removed in rows]

    async def remove_custom_field(self, entity_name: str, name: str) -> None:
        """Soft removal: hidden everywhere, the column and its data kept (``purge`` drops it)."""
        await self._set_removed(entity_name, name, True)

    async def restore_custom_field(self, entity_name: str, name: str) -> None:
        """Bring a removed custom field back, with the data it had."""
        await self._set_removed(entity_name, name, False)

    async def _set_removed(self, entity_name: str, name: str, removed: bool) -> None:
        entity = self._entity(entity_name)
        row = await self.db.fetchrow(
            'SELECT "removed" FROM crm_custom_field WHERE "entity" = ? AND "name" = ?', (entity.name, name)
        )
        if row is None:
            raise RegistryError(f"{entity.name} has no custom field {name!r}")
        await self.db.execute(
            'UPDATE crm_custom_field SET "removed" = ? WHERE "entity" = ? AND "name" = ?', (removed, entity.name, name)
        )
        await self._schema_changed()

    async def purge_custom_field(self, entity_name: str, name: str) -> str:
        """Drop a removed custom field's column for good, after copying it to a backup table."""
        entity = self._entity(entity_name)
        row = await self.db.fetchrow(
            'SELECT "definition", "removed" FROM crm_custom_field WHERE "entity" = ? AND "name" = ?', (entity.name, name)
        )
        if row is None:
            raise RegistryError(f"{entity.name} has no custom field {name!r}")
        if not row[1]:
            raise RegistryError(f"custom field {name!r} must be removed before it is purged")
        field = msgspec.json.decode(row[0], type=Field)
        backups = []
        for column in field.columns():
            backups.append(await self.schema.drop_column(entity.table, column))
        await self.db.execute('DELETE FROM crm_custom_field WHERE "entity" = ? AND "name" = ?', (entity.name, name))
        await self._schema_changed()
        await self.schema.rebuild_search(self._entity(entity_name))
        return ", ".join(backups)

    async def apply_pending(self) -> list[str]:
        """Apply the destructive schema changes sync left pending, each after a backup. A column
        whose type changed is re-created and the old values the new type accepts are copied in."""
        done: list[str] = []
        converted: list[tuple[PendingChange, str]] = []
        for change in self.pending_changes:
            if change.kind == "drop_column":
                backup = await self.schema.drop_column(change.table, change.column)
                done.append(f"dropped {change.table}.{change.column} (backup: {backup})")
            elif change.kind == "type_change":
                backup = await self.schema.drop_column(change.table, change.column)
                converted.append((change, backup))
        if done or converted:
            self.pending_changes = await self._sync()
            await self._schema_changed()
        for change, backup in converted:
            moved, total = await self._convert_from_backup(change.table, change.column, backup)
            done.append(
                f"re-created {change.table}.{change.column} ({change.detail}): {moved} of {total} values "
                f"converted; all old values are kept in {backup}"
            )
        return done

    async def _convert_from_backup(self, table: str, column: str, backup: str) -> tuple[int, int]:
        """Copy the old values that the new type accepts back into the re-created column."""
        entity = next((e for e in self.registry if e.table == table), None)
        field = entity.field(column) if entity else None
        rows = await self.db.fetch(f'SELECT "id", "{column}" FROM "{backup}"')
        if field is None or len(field.columns()) != 1:
            return 0, len(rows)
        convert = self.records.codec(entity).writers[field.name][0][1]
        updates = []
        for record_id, old in rows:
            for candidate in (old, str(old)):
                try:
                    value = parse_value(field, candidate, region=self.settings.region, currency=self.settings.currency)
                except FieldValueError:
                    continue
                updates.append((convert(value), record_id))
                break
        async with self.db.transaction():
            await self.db.executemany(f'UPDATE "{table}" SET "{column}" = ? WHERE "id" = ?', updates)
        if field.is_searchable:
            await self.schema.rebuild_search(entity)
        return len(updates), len(rows)

    def _entity(self, name: str) -> EntityType:
        entity = self.registry.get(name)
        if entity is None:
            raise RegistryError(f"unknown entity {name!r}; known: {', '.join(sorted(self.registry.entities))}")
        return entity

    # -- plugins -----------------------------------------------------------------------------

    def set_plugins(self, plugins: list[str]) -> None:
        """Write the enabled plugins to crm.toml (takes effect when the deployment is next opened)."""
        get_plugin_manager(plugins)  # refuses a missing, broken or unmet plugin before anything is written
        self.settings.plugins = list(plugins)
        save_settings(self.path, self.settings)

    async def set_plugins_live(self, plugins: list[str]) -> None:
        """Enable/disable plugins in this running deployment: tables of newly enabled plugins are
        created; a disabled plugin's entities disappear while its tables and data stay."""
        pm = get_plugin_manager(plugins, extra_plugins=self.extra_plugins)
        old_pm, old_plugins = self.pm, self.settings.plugins
        self.pm = pm
        try:
            await self._build()
            self.pending_changes = await self._sync()
        except BaseException:
            self.pm = old_pm
            await self._build()
            raise
        self.settings.plugins = list(plugins)
        save_settings(self.path, self.settings)
        if set(plugins) - set(old_plugins):
            await self._run_startup()
        await self._schema_changed()
