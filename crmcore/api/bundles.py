"""HTTP routes of configuration bundles (:mod:`crmcore.bundles`).

``GET /api/bundle`` downloads the deployment's configuration as a bundle (JSON);
``POST /api/bundle/plan`` answers what applying the bundle in the body would do (per item: add,
change with the keys that differ, same; and what only this deployment has, which is kept);
``POST /api/bundle/apply`` applies it and answers what changed. A bundle holds fields, pipelines,
roles, rules, templates, forms and plugins, so every route needs all of ``manage_schema``,
``manage_roles`` and ``manage_automation``. A malformed bundle, or one this deployment cannot
take (a user it names is missing here...), is a 422 naming the section and item.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from ..bundles import FORMAT, BundleError, apply, export_bundle, plan
from ..entities import RegistryError
from ..plugins import PluginError
from ..records.errors import FieldError, Forbidden, ValidationError
from ._http import _body, _convert, _deployment, _json
from .auth import _actor

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths", "PERMISSIONS", "check_permissions", "check_bundle",
           "apply_to_app"]

#: What a bundle touches needs all of these.
PERMISSIONS = ("manage_schema", "manage_roles", "manage_automation")


class Bundle(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A configuration bundle, as ``GET /api/bundle`` gives it; every section may be left out.
    People are named by e-mail and teams by name, so a bundle travels between deployments."""

    #: The bundle format (1).
    format: int
    #: The crmcore version that exported it.
    crmcore: str | None = None
    exported_at: str | None = None
    #: Plugins to enable (a bundle never disables one).
    plugins: list[str] = []
    #: Custom fields per entity type: ``{"contact": [{"name": "loyalty", "type": "choice", ...}]}``.
    custom_fields: dict[str, list[dict[str, Any]]] = {}
    pipelines: list[dict[str, Any]] = []
    #: Team names.
    teams: list[str] = []
    roles: list[dict[str, Any]] = []
    document_templates: list[dict[str, Any]] = []
    #: Saved reports.
    reports: list[dict[str, Any]] = []
    #: Automation rules.
    rules: list[dict[str, Any]] = []
    web_forms: list[dict[str, Any]] = []


class BundleStep(msgspec.Struct, kw_only=True):
    section: str
    #: The item's name (``entity.field`` for a custom field).
    item: str
    #: ``add``, ``change`` or ``same`` (``only_here`` in ``kept``).
    change: str
    #: What differs, for a ``change``.
    keys: list[str]


class BundlePlan(msgspec.Struct, kw_only=True):
    #: How many items applying would add or change.
    changes: int
    #: Every item of the bundle and what applying would do to it.
    items: list[BundleStep]
    #: What only this deployment has: a bundle never deletes, so it is kept.
    kept: list[BundleStep]


class BundleApplied(msgspec.Struct, kw_only=True):
    changes: int
    #: The items added or changed.
    applied: list[BundleStep]


SCHEMA_TYPES: list[Any] = [Bundle, BundleStep, BundlePlan, BundleApplied]

#: Sections listing named objects (``{"name": ..., ...}``); the service keys its plan by name.
_NAMED_SECTIONS = ("pipelines", "roles", "document_templates", "reports", "rules", "web_forms")


def check_permissions(actor: Any) -> None:
    """Forbidden, naming what is missing, unless ``actor`` has every permission a bundle needs."""
    missing = [p for p in PERMISSIONS if not actor.has(p)]
    if missing:
        raise Forbidden(f"configuration bundles need all of {', '.join(PERMISSIONS[:-1])} and {PERMISSIONS[-1]}; "
                        f"missing: {', '.join(missing)}")


def _named(item: Any, where: str) -> list[FieldError]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        return [FieldError(where, "invalid", f"{where}: an object with a name")]
    return []


def check_bundle(data: Any) -> dict[str, Any]:
    """``data`` (decoded JSON) if it has a bundle's shape; a ValidationError naming the section
    and item otherwise. What each item says is the service's to check when it is applied."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("bundle", "invalid", "a bundle is a JSON object, as GET /api/bundle gives")])
    if "format" not in data:
        raise ValidationError([FieldError("format", "required", f'not a crmcore bundle: it has no "format": {FORMAT}')])
    _convert(data, Bundle)  # the sections' types, and no unknown section
    if data["format"] != FORMAT:
        raise ValidationError([FieldError("format", "invalid", f"a bundle of format {data['format']!r}; this "
                                                               f"deployment reads format {FORMAT}")])
    errors: list[FieldError] = []
    for section in _NAMED_SECTIONS:
        for index, item in enumerate(data.get(section) or []):
            errors += _named(item, f"{section}[{index}]")
    for entity, fields in (data.get("custom_fields") or {}).items():
        for index, item in enumerate(fields):
            errors += _named(item, f"custom_fields.{entity}[{index}]")
    for index, form in enumerate(data.get("web_forms") or []):
        # People and teams are looked up by these before the service checks the form.
        for key in ("owner", "as_user"):
            if key in form and (isinstance(form[key], bool) or not isinstance(form[key], (str, int))):
                errors.append(FieldError(f"web_forms[{index}].{key}", "invalid", "a user's e-mail address"))
        if "team" in form and not isinstance(form["team"], str):
            errors.append(FieldError(f"web_forms[{index}].team", "invalid", "a team's name"))
    if errors:
        raise ValidationError(errors)
    return data


def _refused(exc: BundleError) -> ValidationError:
    """The service's refusal (``rules 'lead-task': ...``) as a 422 naming the section."""
    message = str(exc)
    section = message.split(" ", 1)[0]
    return ValidationError([FieldError(section if section in Bundle.__struct_fields__ else "bundle", "refused",
                                       message)])


async def apply_to_app(request: Request, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply a checked bundle to the request's app; the steps taken. Plugins it adds are enabled first the way
    ``/api/meta/plugins`` enables them, so their routes answer at once (the service alone would
    enable them in the deployment only, their routes waiting for a restart)."""
    from .app import set_plugins

    dep = _deployment(request)
    added = [s for s in await plan(dep, bundle) if s["section"] == "plugins" and s["change"] == "add"]
    if added:
        names = list(dict.fromkeys(s["item"] for s in added))
        try:
            await set_plugins(request, [*dep.settings.plugins, *names])
        except (PluginError, RegistryError, ValidationError) as exc:
            raise ValidationError([FieldError("plugins", "refused", f"plugins {', '.join(names)!r}: {exc}")]) from None
    try:
        return added + await apply(dep, bundle)
    except BundleError as exc:
        raise _refused(exc) from None


def _plan_answer(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"changes": sum(s["change"] in ("add", "change") for s in steps),
            "items": [s for s in steps if s["change"] != "only_here"],
            "kept": [s for s in steps if s["change"] == "only_here"]}


async def _checked_body(request: Request) -> dict[str, Any]:
    check_permissions(_actor(request))
    return check_bundle(await _body(request))


def download_name(name: str) -> str:
    """``<deployment>-bundle.json``, the name made safe for a Content-Disposition header."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-.') or 'crm'}-bundle.json"


@get("/api/bundle", include_in_schema=False)
async def download_bundle(request: Request) -> Response:
    check_permissions(_actor(request))
    dep = _deployment(request)
    # Indented: a file people read, compare and keep in version control.
    content = msgspec.json.format(msgspec.json.encode(await export_bundle(dep)), indent=2)
    return Response(content=content, media_type="application/json", headers={
        "content-disposition": f'attachment; filename="{download_name(dep.settings.name)}"'})


@post("/api/bundle/plan", include_in_schema=False, status_code=200)
async def plan_bundle(request: Request) -> Response:
    bundle = await _checked_body(request)
    return _json(_plan_answer(await plan(_deployment(request), bundle)))


@post("/api/bundle/apply", include_in_schema=False, status_code=200)
async def apply_bundle(request: Request) -> Response:
    bundle = await _checked_body(request)
    steps = await apply_to_app(request, bundle)
    return _json({"changes": len(steps), "applied": steps})


ROUTES: list[Any] = [download_bundle, plan_bundle, apply_bundle]


def openapi_paths(problem: Any) -> dict[str, Any]:
    """The OpenAPI path items of these routes; ``problem(description)`` makes a problem response."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    ok = lambda name: {"description": "OK", "content": {"application/json": {"schema": ref(name)}}}  # noqa: E731
    body = {"required": True, "content": {"application/json": {"schema": ref("Bundle")}}}
    tag = ["configuration bundles"]
    needs = {"403": problem("Needs all of manage_schema, manage_roles and manage_automation; names what is missing")}
    bad = {"422": problem("Not a bundle this deployment can take: errors name the section and item"),
           "413": problem("The bundle is larger than a request may be")}
    return {
        "/api/bundle": {
            "get": {"operationId": "bundle_export", "tags": tag,
                    "summary": "The deployment's configuration as a bundle (a JSON download)",
                    "responses": {"200": {**ok("Bundle"), "description": "The bundle (Content-Disposition names "
                                                                         "it <deployment>-bundle.json)"}, **needs}}},
        "/api/bundle/plan": {
            "post": {"operationId": "bundle_plan", "tags": tag,
                     "summary": "What applying a bundle would do, per item (add, change and its keys, same), "
                                "and what only this deployment has (kept); nothing changes",
                     "requestBody": body, "responses": {"200": ok("BundlePlan"), **needs, **bad}}},
        "/api/bundle/apply": {
            "post": {"operationId": "bundle_apply", "tags": tag,
                     "summary": "Apply a bundle: add and change what it says, delete nothing; applying it twice "
                                "changes nothing the second time",
                     "requestBody": body, "responses": {"200": ok("BundleApplied"), **needs, **bad}}},
    }
