"""Configuration bundles: everything a consultant configures, in one file, applied to another
deployment.

A bundle is JSON::

    {"format": 1, "crmcore": "0.1.0", "exported_at": "...",
     "plugins": ["telephony"],
     "custom_fields": {"contact": [{"name": "loyalty", "type": "choice", ...}]},
     "pipelines": [{"name": "windows", "entity": "deal", "stages": [...]}],
     "roles": [{"name": "measurer", "entities": {...}, ...}],
     "teams": ["Sales"],
     "document_templates": [{"name": "contract", "entity": "deal", "format": "pdf", "body": "..."}],
     "reports": [{"name": "calls_by_week", "entity": "activity", "group_by": [...], ...}],
     "rules": [{"name": "lead-sla", "trigger": {...}, ...}],
     "web_forms": [{"name": "window-request", "owner": "manager@shop.example", ...}]}

What names people or teams in one deployment names them portably in a bundle: users by e-mail
(a form's owner, a rule's ``{"user": ...}``), teams by name. Stored pipelines are exported (the
ones an admin made or customised; plugins declare theirs), and roles an admin made or changed.

:func:`plan` compares a bundle with a deployment: per item ``add``, ``change`` (with the keys
that differ) or ``same``, and what only the deployment has (kept: a bundle never deletes).
:func:`apply` makes the ``add`` and ``change`` items true, section by section, in an order that
lets later sections use earlier ones (plugins, fields, pipelines, teams, roles, document
templates, saved reports, rules, forms), so
applying a bundle twice changes nothing the second time. A problem names the section and item.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

import crmcore

from .auth.permissions import BUILTIN_ROLES, SYSTEM, Role
from .entities import Field
from .records.errors import NotFound, ValidationError
from .webforms import WebForm

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["export_bundle", "plan", "apply", "apply_edition", "load_bundle", "BundleError", "SECTIONS", "FORMAT"]

FORMAT = 1
SECTIONS = ("plugins", "custom_fields", "pipelines", "teams", "roles", "document_templates", "reports", "rules",
            "web_forms")
_FIELD_KEYS = ("name", "type", "label", "help_text", "required", "default", "indexed", "unique", "choices",
               "in_list", "searchable", "max_length", "target", "hidden")
_TEMPLATE_KEYS = ("name", "entity", "label", "format", "body")
_RULE_KEYS = ("name", "description", "entity", "trigger", "condition", "unless", "actions", "active")


class BundleError(Exception):
    """A bundle cannot be read or applied; the message names the section and item."""


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


# -- exporting ---------------------------------------------------------------------------------


async def _emails(deployment: Deployment) -> dict[int, str]:
    return {u["id"]: u["email"] for u in await deployment.auth.users()}


async def _team_names(deployment: Deployment) -> dict[int, str]:
    return {t["id"]: t["name"] for t in await deployment.auth.teams()}


def _recipients_out(value: Any, emails: dict[int, str]) -> Any:
    """Rules' ``{"user": id}`` as ``{"user": e-mail}``, anywhere in an action."""
    if isinstance(value, dict):
        if set(value) == {"user"} and isinstance(value["user"], int):
            return {"user": emails.get(value["user"], value["user"])}
        return {k: _recipients_out(v, emails) for k, v in value.items()}
    if isinstance(value, list):
        return [_recipients_out(v, emails) for v in value]
    return value


async def export_bundle(deployment: Deployment) -> dict[str, Any]:
    """The deployment's configuration as a bundle (a JSON-able dict)."""
    emails = await _emails(deployment)
    teams = await _team_names(deployment)
    custom: dict[str, list[dict[str, Any]]] = {}
    for entity in deployment.registry:
        fields = [_builtins(field) for field, removed in await deployment.custom_fields(entity.name) if not removed]
        if fields:
            custom[entity.name] = [{k: f[k] for k in _FIELD_KEYS if f.get(k) not in (None, [], False, "")} | {
                "type": f["type"]} for f in fields]
    pipelines = []
    for name, definition in await deployment.db.fetch('SELECT "name", "definition" FROM crm_pipeline ORDER BY "name"'):
        pipelines.append(json.loads(definition))
    stored_roles = {r[0] for r in await deployment.db.fetch('SELECT "name" FROM crm_role')}
    roles = [{k: v for k, v in _builtins(role).items() if k != "builtin"}
             for role in await deployment.auth.roles() if role.name in stored_roles]
    rules = [{k: _recipients_out(getattr(rule, k), emails) for k in _RULE_KEYS} for rule in await deployment.automation.list()]
    forms = []
    for form in await deployment.forms.list():
        data = _builtins(form)
        for key, kind in (("owner_id", "owner"), ("as_user_id", "as_user")):
            user = data.pop(key, None)
            if user is not None:
                data[kind] = emails.get(user, user)
        team = data.pop("team_id", None)
        if team is not None:
            data["team"] = teams.get(team, team)
        forms.append(data)
    templates = []
    for listed in await deployment.documents.templates():
        if not listed.get("read_only"):  # plugins ship their own
            template = await deployment.documents.template(listed["name"])
            templates.append({k: template[k] for k in _TEMPLATE_KEYS if template.get(k) is not None})
    reports = [{k: v for k, v in report.items() if k not in ("source", "created_at", "updated_at")}
               for report in await deployment.reports.list() if report.get("source") == "saved"]
    return {
        "format": FORMAT, "crmcore": crmcore.__version__, "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "plugins": list(deployment.settings.plugins), "custom_fields": custom, "pipelines": pipelines,
        "teams": sorted(teams.values()), "roles": roles, "document_templates": templates, "reports": reports,
        "rules": rules, "web_forms": forms,
    }


def load_bundle(source: str | Path) -> dict[str, Any]:
    """A bundle file, checked for its shape."""
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{source} is not a bundle (JSON): {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{source}: not a crmcore bundle of format {FORMAT}")
    unknown = sorted(set(data) - set(SECTIONS) - {"format", "crmcore", "exported_at"})
    if unknown:
        raise BundleError(f"{source}: unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    return data


# -- comparing ---------------------------------------------------------------------------------


def _differing(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(current) | set(wanted) if current.get(k) != wanted.get(k))


async def plan(deployment: Deployment, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """What applying ``bundle`` would do: ``{section, item, change, keys}`` per item, ``change``
    being ``add``, ``change``, ``same`` or ``only_here`` (the deployment has it, the bundle not)."""
    here = await export_bundle(deployment)
    steps: list[dict[str, Any]] = []

    def compare(section: str, wanted: list[tuple[str, Any]], current: dict[str, Any]) -> None:
        for item, value in wanted:
            if item not in current:
                steps.append({"section": section, "item": item, "change": "add", "keys": []})
            else:
                keys = _differing(current[item], value) if isinstance(value, dict) else (
                    [] if current[item] == value else ["value"])
                steps.append({"section": section, "item": item, "change": "change" if keys else "same", "keys": keys})
        names = {item for item, _ in wanted}
        steps.extend({"section": section, "item": item, "change": "only_here", "keys": []}
                     for item in current if item not in names)

    compare("plugins", [(p, p) for p in bundle.get("plugins") or []], {p: p for p in here["plugins"]})
    wanted_fields = [(f"{entity}.{f['name']}", f) for entity, fields in (bundle.get("custom_fields") or {}).items()
                     for f in fields]
    compare("custom_fields", wanted_fields, {f"{entity}.{f['name']}": f for entity, fields in here["custom_fields"].items()
                                             for f in fields})
    compare("pipelines", [(p["name"], p) for p in bundle.get("pipelines") or []],
            {p["name"]: p for p in here["pipelines"]})
    compare("teams", [(t, t) for t in bundle.get("teams") or []], {t: t for t in here["teams"]})
    compare("roles", [(r["name"], r) for r in bundle.get("roles") or []], {r["name"]: r for r in here["roles"]})
    compare("document_templates", [(t["name"], t) for t in bundle.get("document_templates") or []],
            {t["name"]: t for t in here["document_templates"]})
    compare("reports", [(r["name"], r) for r in bundle.get("reports") or []], {r["name"]: r for r in here["reports"]})
    compare("rules", [(r["name"], r) for r in bundle.get("rules") or []], {r["name"]: r for r in here["rules"]})
    compare("web_forms", [(f["name"], f) for f in bundle.get("web_forms") or []],
            {f["name"]: f for f in here["web_forms"]})
    return steps


# -- applying ----------------------------------------------------------------------------------


async def _user_id(deployment: Deployment, value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return (await deployment.auth.user_by_email(value))["id"]
    except NotFound:
        raise BundleError(f"{where}: no user {value!r} in this deployment (make them first)") from None


async def apply(deployment: Deployment, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply a bundle (as the system); returns the steps taken (``add`` and ``change`` ones)."""
    steps = [s for s in await plan(deployment, bundle) if s["change"] in ("add", "change")]
    todo = {(s["section"], s["item"]) for s in steps}

    def wanted(section: str, item: str) -> bool:
        return (section, item) in todo

    async def step(section: str, item: str, action: Any) -> None:
        try:
            await action()
        except BundleError:
            raise
        except (ValidationError, NotFound) as exc:
            details = "; ".join(f"{e.field}: {e.message}" for e in getattr(exc, "errors", []) or []) or str(exc)
            raise BundleError(f"{section} {item!r}: {details}") from None
        except Exception as exc:  # RegistryError, PluginError...: their messages say what is wrong
            raise BundleError(f"{section} {item!r}: {exc}") from None

    plugins = bundle.get("plugins") or []
    missing = [p for p in plugins if wanted("plugins", p)]
    if missing:
        await step("plugins", ", ".join(missing), lambda: deployment.set_plugins_live(
            list(dict.fromkeys([*deployment.settings.plugins, *missing]))))
    for entity, fields in (bundle.get("custom_fields") or {}).items():
        for data in fields:
            item = f"{entity}.{data['name']}"
            if not wanted("custom_fields", item):
                continue
            existing = {f.name for f, _ in await deployment.custom_fields(entity)} if deployment.registry.get(entity) else set()
            if data["name"] in existing:
                changes = {k: v for k, v in data.items() if k not in ("name", "type", "target")}
                await step("custom_fields", item, lambda e=entity, d=data, c=changes: deployment.update_custom_field(
                    e, d["name"], **c))
            else:
                await step("custom_fields", item, lambda e=entity, d=data: deployment.add_custom_field(
                    e, msgspec.convert(d, Field)))
    for data in bundle.get("pipelines") or []:
        if wanted("pipelines", data["name"]):
            service = deployment.pipeline_service
            exists = data["name"] in deployment.pipelines
            await step("pipelines", data["name"], (lambda d=data: service.update(d["name"], d)) if exists
                       else (lambda d=data: service.create(d)))
    known_teams = {t["name"] for t in await deployment.auth.teams()}
    for team in bundle.get("teams") or []:
        if wanted("teams", team) and team not in known_teams:
            await step("teams", team, lambda t=team: deployment.auth.create_team(t, actor=SYSTEM))
    for data in bundle.get("roles") or []:
        if wanted("roles", data["name"]):
            await step("roles", data["name"], lambda d=data: deployment.auth.save_role(
                msgspec.convert({**d, "builtin": d["name"] in BUILTIN_ROLES}, Role), actor=SYSTEM))
    stored_templates = {t["name"] for t in await deployment.documents.templates() if not t.get("read_only")}
    for data in bundle.get("document_templates") or []:
        name = data["name"]
        if wanted("document_templates", name):
            if name in stored_templates:
                changes = {k: v for k, v in data.items() if k != "name"}
                await step("document_templates", name, lambda n=name, c=changes: deployment.documents.update_template(
                    n, c, actor=SYSTEM))
            else:
                await step("document_templates", name, lambda d=data: deployment.documents.create_template(d, actor=SYSTEM))
    for data in bundle.get("reports") or []:
        if wanted("reports", data["name"]):
            await step("reports", data["name"], lambda d=data: deployment.reports.save(d, SYSTEM))
    existing_rules = {r.name: r.id for r in await deployment.automation.list()}
    for data in bundle.get("rules") or []:
        name = data["name"]
        if not wanted("rules", name):
            continue
        if name in existing_rules:
            await step("rules", name, lambda d=data, i=existing_rules[name]: deployment.automation.update(i, d, actor=SYSTEM))
        else:
            await step("rules", name, lambda d=data: deployment.automation.create(d, actor=SYSTEM))
    for data in bundle.get("web_forms") or []:
        if not wanted("web_forms", data["name"]):
            continue
        form = dict(data)
        for kind, key in (("owner", "owner_id"), ("as_user", "as_user_id")):
            if kind in form:
                form[key] = await _user_id(deployment, form.pop(kind), f"web_forms {data['name']!r}: {kind}")
        if "team" in form:
            team = form.pop("team")
            ids = {t["name"]: t["id"] for t in await deployment.auth.teams()}
            if team not in ids:
                raise BundleError(f"web_forms {data['name']!r}: no team {team!r} in this deployment")
            form["team_id"] = ids[team]
        try:
            definition = msgspec.convert(form, WebForm)
        except msgspec.ValidationError as exc:
            raise BundleError(f"web_forms {data['name']!r}: {exc}") from None
        await step("web_forms", data["name"], lambda f=definition: deployment.forms.save(f))
    return steps


async def apply_edition(deployment: Deployment) -> list[dict[str, Any]]:
    """Apply the bundle of the deployment's edition, if it ships one (``crm init`` does)."""
    from .deployment import available_editions

    edition = available_editions(deployment.pm).get(deployment.settings.edition)
    if edition is None or edition.bundle is None:
        return []
    bundle = edition.bundle if isinstance(edition.bundle, dict) else load_bundle(edition.bundle)
    return await apply(deployment, bundle)
