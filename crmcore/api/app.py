"""The litestar application: REST routes generated per entity type, meta and management routes.

One set of generic handlers serves every entity type, core and plugin ones alike, so an entity or
a custom field added at run time has working routes at once. Bodies are decoded and responses
encoded with msgspec directly: the record read path is one indexed query and one encode.

Every route but the public ones needs credentials (:mod:`crmcore.api.auth`); record routes read
and write as the request's actor, so its role's scopes and field rules hold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, delete, get, patch, post
from litestar.response import Redirect
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from ..auth.permissions import Actor
from ..deployment import Deployment, load_settings
from ..entities import Field
from ..plugins import call_each, discover, get_plugin_manager
from ..records.errors import FieldError, Forbidden, ValidationError
from ..records.service import RecordsService
from ._http import JSON, MAX_BODY, _body, _deployment, _encode, _int_param, _json, _list_query
from .auth import AUTH_ROUTES, PUBLIC, AuthMiddleware, provide_actor
from .automation import ROUTES as AUTOMATION_ROUTES
from .bundles import ROUTES as BUNDLE_ROUTES
from .documents import ROUTES as DOCUMENT_ROUTES
from .importing import ROUTES as IMPORT_ROUTES
from .reports import ROUTES as REPORT_ROUTES
from .pipelines import ROUTES as PIPELINE_ROUTES
from .timeline import ROUTES as TIMELINE_ROUTES
from .webhooks import ROUTES as WEBHOOK_ROUTES
from .openapi import build_openapi
from .problems import exception_handlers

__all__ = ["create_app"]

def _provide_deployment(request: Request) -> Deployment:
    return request.app.state.deployment


def _actor(request: Request | ASGIConnection) -> Actor:
    return request.scope["user"]


def _records(request: Request) -> RecordsService:
    """The records service acting as the request's actor."""
    return _deployment(request).records.as_actor(request.scope["user"])


def _manage_schema(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard of the custom-field and plugin routes."""
    if not connection.scope["user"].has("manage_schema"):
        raise Forbidden("this needs the manage_schema permission")


def _record_path(request: Request) -> tuple[str, int]:
    params = request.path_params
    return params["entity"], params["record_id"]


# -- records ------------------------------------------------------------------------------------


@get("/api/{entity:str}", include_in_schema=False)
async def list_records(request: Request) -> Response:
    entity = request.path_params["entity"]
    page = await _records(request).list(entity, _list_query(request))
    return _json(page)


@get("/api/{entity:str}/trash", include_in_schema=False)
async def list_trash(request: Request) -> Response:
    entity = request.path_params["entity"]
    page = await _records(request).list(entity, _list_query(request, deleted=True))
    return _json(page)


@post("/api/{entity:str}", include_in_schema=False)
async def create_record(request: Request) -> Response:
    entity = request.path_params["entity"]
    records = _records(request)
    records.entity(entity)  # 404 for an unknown entity type before reading the body
    return _json(await records.create(entity, await _body(request)), 201)


MAX_BULK = 10_000


async def _bulk_rows(request: Request) -> tuple[str, list[Any]]:
    entity = request.path_params["entity"]
    _deployment(request).records.entity(entity)  # 404 for an unknown entity type first
    rows = await _body(request)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValidationError([FieldError("body", "invalid", "expected a JSON array of objects")])
    if len(rows) > MAX_BULK:
        raise ValidationError([FieldError("body", "too_many", f"at most {MAX_BULK} records per request")])
    return entity, rows


@post("/api/{entity:str}/bulk", include_in_schema=False)
async def bulk_create(request: Request) -> Response:
    entity, rows = await _bulk_rows(request)
    return _json({"ids": await _records(request).bulk_create(entity, rows)}, 201)


@patch("/api/{entity:str}/bulk", include_in_schema=False)
async def bulk_update(request: Request) -> Response:
    """Each object names the record by ``id`` (and may give the ``version`` read)."""
    entity, rows = await _bulk_rows(request)
    return _json({"updated": await _records(request).bulk_update(entity, rows)})


@get("/api/{entity:str}/{record_id:int}", include_in_schema=False)
async def get_record(request: Request) -> Response:
    entity, record_id = _record_path(request)
    return _json(await _records(request).get(entity, record_id))


@patch("/api/{entity:str}/{record_id:int}", include_in_schema=False)
async def update_record(request: Request) -> Response:
    entity, record_id = _record_path(request)
    records = _records(request)
    records.entity(entity)
    data = await _body(request)
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", "invalid", "expected a JSON object of field values")])
    version = _int_param("If-Match", (request.headers.get("if-match") or "").strip('W/"') or None)
    return _json(await records.update(entity, record_id, data, version=version))


@delete("/api/{entity:str}/{record_id:int}", include_in_schema=False, status_code=204)
async def delete_record(request: Request) -> None:
    entity, record_id = _record_path(request)
    version = _int_param("version", request.query_params.get("version"))
    await _records(request).delete(entity, record_id, version=version)


@post("/api/{entity:str}/{record_id:int}/restore", include_in_schema=False, status_code=200)
async def restore_record(request: Request) -> Response:
    entity, record_id = _record_path(request)
    return _json(await _records(request).restore(entity, record_id))


@get("/api/{entity:str}/{record_id:int}/history", include_in_schema=False)
async def record_history(request: Request) -> Response:
    entity, record_id = _record_path(request)
    limit = _int_param("limit", request.query_params.get("limit"), 100)
    if not 1 <= limit <= 1000:
        raise ValidationError([FieldError("limit", "invalid", "limit must be between 1 and 1000")])
    before = _int_param("before", request.query_params.get("before"))
    return _json(await _records(request).history(entity, record_id, limit=limit, before_id=before))


# -- meta, custom fields, plugins ---------------------------------------------------------------


def _entity_meta(entity, actor: Actor) -> dict[str, Any]:
    """An entity type as ``actor`` sees it: the fields its role hides are left out."""
    hidden = actor.hidden_fields(entity.name)
    return {
        "name": entity.name, "label": entity.label, "label_plural": entity.label_plural,
        "plugin": entity.plugin, "title_field": entity.title,
        "fields": [msgspec.to_builtins(f) | {"type": f.type.value, "read_only": actor.field_access(entity.name, f.name) == "read"}
                   for f in entity.visible_fields if f.name not in hidden],
    }


@get("/api/health", include_in_schema=True, tags=["meta"], opt=PUBLIC)
async def health(request: Request) -> dict[str, Any]:
    """Liveness and database check (public)."""
    await _deployment(request).db.fetchval("SELECT 1")
    return {"status": "ok"}


@get("/", include_in_schema=False, opt=PUBLIC)
async def index(request: Request) -> Response:
    """A browser's start page: the dashboard (the login first). Anyone else: the API's entry
    points (public), the entity routes once authenticated."""
    dep = _deployment(request)
    actor: Actor | None = request.scope.get("user")
    if "text/html" in request.headers.get("accept", ""):
        if actor is None:
            return Redirect("/login?next=%2F", status_code=303)
        from ..web import dashboard  # the web UI builds on this module: imported once both exist

        return await dashboard(request)
    api: dict[str, Any] = {"meta": "/api/meta", "openapi": "/schema", "health": "/api/health",
                           "login": "/api/auth/login", "me": "/api/auth/me"}
    body: dict[str, Any] = {"name": dep.settings.name, "login": "/login", "api": api}
    if actor is not None:
        body["edition"] = dep.settings.edition
        api["entities"] = {e.name: f"/api/{e.name}" for e in dep.registry if actor.can(e.name, "read")}
    return _json(body)


@get("/api/meta", tags=["meta"])
async def meta(request: Request) -> Response:
    """Entities with their fields, pipelines, UI items and the deployment's settings."""
    dep = _deployment(request)
    actor = _actor(request)
    return _json({
        "entities": [_entity_meta(e, actor) for e in dep.registry],
        "pipelines": list(dep.pipelines.values()),
        "ui_items": dep.ui_items,
        "plugins": dep.settings.plugins,
        "settings": {k: getattr(dep.settings, k) for k in ("name", "edition", "locale", "currency", "timezone", "region")},
    })


@get("/api/meta/entities/{entity:str}", tags=["meta"])
async def entity_meta(request: Request) -> Response:
    """One entity type with its fields."""
    entity = request.path_params["entity"]
    return _json(_entity_meta(_deployment(request).records.entity(entity), _actor(request)))


def _field_from(data: Any) -> Field:
    try:
        return msgspec.convert(data, Field)
    except msgspec.ValidationError as exc:
        path = str(exc).rsplit("at `$.", 1)
        name = path[1].rstrip("`").split("[")[0] if len(path) == 2 else "body"
        raise ValidationError([FieldError(name, "invalid", str(exc))]) from None


@get("/api/meta/entities/{entity:str}/fields", tags=["custom fields"], guards=[_manage_schema])
async def list_custom_fields(request: Request) -> Response:
    """The entity's custom fields, removed ones included (``removed``: hidden, data kept)."""
    entity = request.path_params["entity"]
    fields = await _deployment(request).custom_fields(entity)
    return _json([msgspec.to_builtins(f) | {"type": f.type.value, "removed": removed} for f, removed in fields])


@post("/api/meta/entities/{entity:str}/fields/{name:str}/restore", tags=["custom fields"], status_code=200, guards=[_manage_schema])
async def restore_field(request: Request) -> Response:
    """Bring a removed custom field back, with its data."""
    entity, name = request.path_params["entity"], request.path_params["name"]
    await _deployment(request).restore_custom_field(entity, name)
    return _json({"restored": name})


@post("/api/meta/entities/{entity:str}/fields", tags=["custom fields"], status_code=201, guards=[_manage_schema])
async def add_field(request: Request) -> Response:
    """Add a custom field: a real column, filterable, sortable and searchable at once."""
    entity = request.path_params["entity"]
    field = _field_from(await _body(request))
    added = await _deployment(request).add_custom_field(entity, field)
    return _json(added, 201)


@patch("/api/meta/entities/{entity:str}/fields/{name:str}", tags=["custom fields"], guards=[_manage_schema])
async def change_field(request: Request) -> Response:
    """Relabel, change options, hide or show a custom field."""
    entity, name = request.path_params["entity"], request.path_params["name"]
    changes = await _body(request)
    if not isinstance(changes, dict):
        raise ValidationError([FieldError("body", "invalid", "expected a JSON object")])
    return _json(await _deployment(request).update_custom_field(entity, name, **changes))


@delete("/api/meta/entities/{entity:str}/fields/{name:str}", tags=["custom fields"], status_code=204, guards=[_manage_schema])
async def remove_field(request: Request) -> None:
    """Remove a custom field softly: hidden everywhere, data kept (purge drops it)."""
    entity, name = request.path_params["entity"], request.path_params["name"]
    await _deployment(request).remove_custom_field(entity, name)


@post("/api/meta/entities/{entity:str}/fields/{name:str}/purge", tags=["custom fields"], status_code=200, guards=[_manage_schema])
async def purge_field(request: Request) -> Response:
    """Drop a removed custom field's column for good, after a backup."""
    entity, name = request.path_params["entity"], request.path_params["name"]
    return _json({"backup": await _deployment(request).purge_custom_field(entity, name)})


@get("/api/meta/plugins", tags=["plugins"], guards=[_manage_schema])
async def list_plugins(request: Request) -> Response:
    """Installed plugins, which are enabled, and why a broken one cannot load."""
    enabled = set(_deployment(request).settings.plugins)
    return _json([
        {"name": p.name, "source": p.source, "enabled": p.name in enabled, "error": p.error,
         "version": p.info.version if p.info else None, "description": p.info.description if p.info else None,
         "requires": p.info.requires if p.info else []}
        for p in discover().values()
    ])


async def set_plugins(request: Request, plugins: list[str]) -> Response:
    dep = _deployment(request)
    await dep.set_plugins_live(plugins)
    registered = request.app.state.registered_routes
    added: dict[str, list[Any]] = {}
    for route in dep.routes:
        if id(route) not in registered:
            added.setdefault(dep.route_plugins[id(route)], []).append(route)
            registered.add(id(route))
    for plugin, routes in added.items():
        request.app.register(_guarded(routes, plugin))
    return _json({"plugins": dep.settings.plugins})


@post("/api/meta/plugins/{name:str}/enable", tags=["plugins"], status_code=200, guards=[_manage_schema])
async def enable_plugin(request: Request) -> Response:
    """Enable a plugin: requirements checked, its tables created."""
    name = request.path_params["name"]
    plugins = _deployment(request).settings.plugins
    return await set_plugins(request, plugins + [name] if name not in plugins else plugins)


@post("/api/meta/plugins/{name:str}/disable", tags=["plugins"], status_code=200, guards=[_manage_schema])
async def disable_plugin(request: Request) -> Response:
    """Disable a plugin: hidden, its data kept."""
    name = request.path_params["name"]
    return await set_plugins(request, [p for p in _deployment(request).settings.plugins if p != name])


@get("/schema", include_in_schema=False)
async def openapi_schema(request: Request) -> Response:
    """The OpenAPI document of the live API (entity routes generated from the registry)."""
    dep = _deployment(request)
    cache = request.app.state.openapi_cache
    key = (dep.schema_version, tuple(dep.settings.plugins))
    if cache.get("key") != key:
        base = request.app.openapi_schema.to_schema()
        cache["doc"] = _encode(build_openapi(list(dep.registry), base))
        cache["key"] = key
    return Response(content=cache["doc"], media_type=JSON)


@get("/schema/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> Response:
    return await openapi_schema.fn(request)


# -- plugin routes ------------------------------------------------------------------------------


def _guarded(routes: list[Any], plugin: str) -> Router:
    """A plugin's routes, in one router (so that handlers of one path, GET and PUT, share it),
    answering 404 once the plugin is disabled (litestar cannot unregister)."""

    def plugin_enabled(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        dep = _deployment(connection)
        if plugin and plugin not in dep.settings.plugins and plugin not in {dep.pm.get_name(e) for e in dep.extra_plugins}:
            raise NotFoundException(f"plugin {plugin!r} is not enabled")

    return Router(path="/", route_handlers=routes, guards=[plugin_enabled])


def _plugin_routes(path: Path, extra_plugins: Any = ()) -> list[tuple[str, Any]]:
    """Routes of the deployment's enabled plugins, read before the database is opened."""
    settings = load_settings(path)
    pm = get_plugin_manager(settings.plugins, extra_plugins=extra_plugins)
    routes: list[tuple[str, Any]] = []
    call_each(pm, "crm_register_routes", lambda plugin: {
        "register": lambda handler: routes.append((plugin, handler)), "deployment": None,
    })
    return routes


def create_app(deployment_path: str | Path, *, database_url: str | None = None, extra_plugins: Any = ()) -> Litestar:
    """The web application for a deployment; the deployment opens on startup, closes on shutdown.
    ``extra_plugins``: plugin objects registered besides the enabled ones (tests, embedding)."""
    path = Path(deployment_path)
    plugin_routes = _plugin_routes(path, extra_plugins)

    async def startup(app: Litestar) -> None:
        dep = await Deployment.open(path, database_url=database_url, extra_plugins=extra_plugins)
        await dep.watch_schema()
        app.state.deployment = dep
        # Due jobs (webhook deliveries, reminders...) run in this process unless turned off.
        app.state.worker_stop = asyncio.Event()
        app.state.worker = (asyncio.create_task(dep.jobs.work(app.state.worker_stop))
                            if dep.settings.in_process_worker else None)

    async def shutdown(app: Litestar) -> None:
        dep = getattr(app.state, "deployment", None)
        worker = getattr(app.state, "worker", None)
        if worker is not None:  # let the job in hand finish before the database closes
            app.state.worker_stop.set()
            await worker
        if dep is not None:
            await dep.close()

    async def refresh(request: Request) -> None:
        """Pick up custom fields and plugin changes made by other processes (e.g. the CLI)."""
        await _deployment(request).refresh()

    from ..web import ROUTES as WEB_ROUTES, html_errors

    app = Litestar(
        route_handlers=[
            index, health, meta, entity_meta, list_custom_fields, restore_field, add_field, change_field, remove_field, purge_field,
            list_plugins, enable_plugin, disable_plugin, openapi_schema, openapi_json,
            list_records, list_trash, create_record, bulk_create, bulk_update, get_record, update_record,
            delete_record, restore_record, record_history, *AUTH_ROUTES,
            *PIPELINE_ROUTES, *WEBHOOK_ROUTES, *TIMELINE_ROUTES, *AUTOMATION_ROUTES, *REPORT_ROUTES,
            *DOCUMENT_ROUTES, *IMPORT_ROUTES, *BUNDLE_ROUTES, *WEB_ROUTES,
            *[_guarded([r for p, r in plugin_routes if p == plugin], plugin) for plugin in dict.fromkeys(p for p, _ in plugin_routes)],
        ],
        on_startup=[startup],
        on_shutdown=[shutdown],
        before_request=refresh,
        exception_handlers=html_errors(exception_handlers),
        middleware=[AuthMiddleware()],
        # Route handlers (plugins' too) may take ``deployment: CurrentDeployment`` and ``actor: CurrentActor``.
        dependencies={"deployment": Provide(_provide_deployment, sync_to_thread=False),
                      "actor": Provide(provide_actor, sync_to_thread=False)},
        openapi_config=OpenAPIConfig(title="crmcore API", version="0.1.0", path="/_litestar_schema"),
        request_max_body_size=MAX_BODY,
        debug=False,
    )
    app.state.registered_routes = {id(route) for _, route in plugin_routes}
    app.state.openapi_cache = {}
    return app
