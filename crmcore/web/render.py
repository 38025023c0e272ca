"""Rendering the web UI's pages: templates, translations, formatting per user, the page frame.

**Templates** are found by convention: the core's in ``crmcore/web/templates``; each enabled
plugin's ``templates/`` folder under the plugin's name (``telephony/calls_panel.html`` is
``plugins/telephony/templates/calls_panel.html``), so a :class:`crmcore.UIItem`'s ``template``
names it that way. Autoescaping is on everywhere.

**Translations** are gettext catalogs made with Babel: ``crmcore/web/locale/<locale>/LC_MESSAGES/
messages.po``, compiled in memory when first used (no ``.mo`` files to build or commit). Templates
use ``{{ _("Contacts") }}`` and ``{% trans %}``; Python code :func:`gettext_for`. Maintainers
refresh them with::

    pybabel extract -F crmcore/web/babel.cfg -o crmcore/web/locale/messages.pot crmcore/web
    pybabel update -i crmcore/web/locale/messages.pot -d crmcore/web/locale

**Formatting** follows the signed-in user's ``locale`` and ``time_zone`` (their user record):
dates, times, numbers and money through Babel; a right-to-left locale (Persian, Arabic...) gets
``dir="rtl"``.

**The frame** (:func:`page`): every page gets the user, the navigation (entity types the user may
read, plugins' ``menu`` items), unread notifications, the session's CSRF token (forms post it as
``_csrf``; scripts send it as ``X-CSRF-Token``) and a strict Content-Security-Policy: scripts and
styles only from this site's ``/static/``, nothing inline.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import io
import logging
import zoneinfo
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape
from markupsafe import Markup, escape
from litestar import Request, Response

from ..contributions import UIItem
from ..entities import EntityType, Field, FieldType
from ..fieldvalues import Money, Phone
from ..records.query import ListQuery

if TYPE_CHECKING:
    from ..auth.permissions import Actor
    from ..deployment import Deployment

__all__ = [
    "page", "environment", "error_page", "record_title", "UserFormat", "gettext_for", "LOCALES", "user_format",
    "STATIC_PREFIX", "PAGE_HEADERS",
]

log = logging.getLogger("crmcore.web")
HERE = Path(__file__).parent
LOCALE_DIR = HERE / "locale"
STATIC_PREFIX = "/static"
#: The locales the UI ships catalogs for (English is the source language).
LOCALES = ("en", "tr", "fa")

#: Who sees Settings in the navigation: anyone configuring something there.
ADMIN_PERMISSIONS = ("manage_schema", "manage_users", "manage_roles", "manage_automation", "manage_integrations",
                     "manage_tokens")

PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
}


# -- translations ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def translations(locale: str) -> NullTranslations:
    """The catalog of ``locale`` (``tr_TR`` falls back to ``tr``), compiled in memory."""
    for name in (locale, locale.split("_")[0]):
        po = LOCALE_DIR / name / "LC_MESSAGES" / "messages.po"
        if po.exists():
            with po.open("rb") as source:
                catalog = read_po(source, locale=name)
            compiled = io.BytesIO()
            write_mo(compiled, catalog)
            compiled.seek(0)
            return Translations(fp=compiled)
    return NullTranslations()


def gettext_for(locale: str):
    """``_(text)`` translating into ``locale`` (Python code's strings)."""
    return translations(locale).gettext


# -- formatting per user --------------------------------------------------------------------------


class UserFormat:
    """How the signed-in user reads values: their locale, time zone and the deployment's currency."""

    def __init__(self, locale: str, timezone: str, currency: str):
        try:
            self.babel = Locale.parse(locale or "en")
        except (UnknownLocaleError, ValueError):
            self.babel = Locale.parse("en")
        self.locale = str(self.babel)
        try:
            self.zone = zoneinfo.ZoneInfo(timezone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.zone = zoneinfo.ZoneInfo("UTC")
        self.currency = currency
        self.dir = "rtl" if self.babel.character_order == "right-to-left" else "ltr"

    def local(self, value: dt.datetime) -> dt.datetime:
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).astimezone(self.zone)

    def datetime(self, value: Any, style: str = "medium") -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        local = self.local(value)
        return f"{format_date(local, style, locale=self.babel)} {format_time(local, 'short', locale=self.babel)}"

    def date(self, value: Any, style: str = "medium") -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            value = dt.date.fromisoformat(value[:10])
        if isinstance(value, dt.datetime):
            value = self.local(value).date()
        return format_date(value, style, locale=self.babel)

    def time(self, value: Any) -> str:
        if value is None:
            return ""
        return format_time(self.local(value) if isinstance(value, dt.datetime) else value, "short", locale=self.babel)

    def number(self, value: Any) -> str:
        return "" if value is None else format_decimal(value, locale=self.babel)

    def money(self, value: Any, currency: str | None = None) -> str:
        if value is None:
            return ""
        if isinstance(value, Money):
            return format_currency(value.amount, value.currency, locale=self.babel)
        if isinstance(value, dict) and "amount" in value:
            return format_currency(Decimal(str(value["amount"])), value.get("currency") or self.currency, locale=self.babel)
        return format_currency(Decimal(str(value)), currency or self.currency, locale=self.babel)

    def relative_day(self, value: dt.datetime, now: dt.datetime) -> str:
        """today / overdue / upcoming, for the dashboard's tasks."""
        day, today = self.local(value).date(), self.local(now).date()
        return "today" if day == today else "overdue" if day < today else "upcoming"

    def field(self, field: Field, value: Any) -> str:
        """A field's value as text for a page (relations are shown by the caller, with a link)."""
        if value is None or value == "" or value == []:
            return ""
        kind = field.type
        if kind is FieldType.MONEY:
            return self.money(value)
        if kind is FieldType.DATETIME:
            return self.datetime(value)
        if kind is FieldType.DATE:
            return self.date(value)
        if kind in (FieldType.INTEGER, FieldType.DECIMAL):
            return self.number(value)
        if kind is FieldType.BOOLEAN:
            return gettext_for(self.locale)("Yes") if value else gettext_for(self.locale)("No")
        if kind is FieldType.PHONE:
            return value.raw if isinstance(value, Phone) else str(value.get("raw") if isinstance(value, dict) else value)
        if kind in (FieldType.TAGS, FieldType.MULTI_CHOICE):
            return ", ".join(str(v) for v in value)
        return str(value)


def user_format(deployment: Deployment, user: dict[str, Any] | None) -> UserFormat:
    settings = deployment.settings
    locale = (user or {}).get("locale") or settings.locale or "en"
    zone = (user or {}).get("time_zone") or settings.timezone or "UTC"
    if zone == "UTC" and settings.timezone:  # the user kept the default: the deployment's zone
        zone = settings.timezone
    return UserFormat(locale, zone, settings.currency)


# -- templates ------------------------------------------------------------------------------------


def plugin_dirs(deployment: Deployment, folder: str) -> dict[str, Path]:
    """Enabled plugin name -> its ``folder`` (``templates``, ``static``), where it has one."""
    import inspect

    found: dict[str, Path] = {}
    for name, plugin in deployment.pm.list_name_plugin():
        if name == "core" or plugin is None:
            continue
        try:
            source = Path(inspect.getfile(plugin if inspect.ismodule(plugin) or inspect.isclass(plugin) else type(plugin)))
        except (TypeError, OSError):
            continue
        if (source.parent / folder).is_dir():
            found[name] = source.parent / folder
    return found


_environments: dict[tuple[int, str, bool], Environment] = {}


def environment(deployment: Deployment, locale: str, *, is_async: bool = True) -> Environment:
    """The template environment of the enabled plugins, translating into ``locale``. Async:
    a template (a plugin's panel) may call the records service, ``records.list(...)``, and
    Jinja awaits it."""
    key = (id(deployment.pm), locale, is_async)
    env = _environments.get(key)
    if env is None:
        plugins = {name: FileSystemLoader(str(path)) for name, path in plugin_dirs(deployment, "templates").items()}
        env = Environment(
            loader=ChoiceLoader([FileSystemLoader(str(HERE / "templates")), PrefixLoader(plugins)]),
            autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True, lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"], enable_async=is_async,
        )
        env.install_gettext_translations(translations(locale), newstyle=True)
        env.globals["record_title"] = record_title
        env.globals["query"] = ListQuery  # templates list records: records.list("deal", query(limit=5))
        _environments[key] = env
    return env


def record_title(entity: EntityType, record: dict[str, Any]) -> str:
    """What a record is called on a page: its title field, else its type and id."""
    value = record.get(entity.title_field) if entity.title_field else None
    if entity.name == "contact" and record.get("first_name"):
        value = f"{record['first_name']} {record.get('last_name') or ''}".strip()
    return str(value) if value not in (None, "") else f"{entity.label} #{record.get('id')}"


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    """A plain error page (no database needed: it is also what a broken request gets)."""
    from ..api._http import _deployment

    deployment = _deployment(request)
    fmt = user_format(deployment, None)
    html = environment(deployment, fmt.locale, is_async=False).get_template("error.html").render(
        title=title, message=message, site=deployment.settings.name, lang=fmt.babel.language, dir=fmt.dir)
    return Response(content=html, status_code=status, media_type="text/html; charset=utf-8", headers=dict(PAGE_HEADERS))


# -- the page frame -------------------------------------------------------------------------------


def readable_entities(deployment: Deployment, actor: Actor) -> list[EntityType]:
    """Entity types the actor may list, in menu order (core ones first)."""
    order = {"contact": 0, "company": 1, "deal": 2, "activity": 3, "user": 9}
    entities = [e for e in deployment.registry if actor.can(e.name, "read")]
    return sorted(entities, key=lambda e: (order.get(e.name, 5), e.label_plural.lower()))


async def frame(request: Request) -> dict[str, Any]:
    """What every page's layout needs."""
    from ..api._http import _deployment

    deployment = _deployment(request)
    actor = request.scope["user"]
    user = await deployment.records.get("user", actor.user_id) if actor.user_id else {}
    fmt = user_format(deployment, user)
    credentials = request.scope.get("auth")
    unread = await deployment.notifications.unread_count(actor) if actor.user_id else 0
    menu = sorted((i for i in deployment.ui_items if i.slot == "menu"), key=lambda i: (i.order, i.label))
    nav = readable_entities(deployment, actor)
    readable = {e.name for e in nav}
    boards = [p for p in deployment.pipelines.values() if p.entity in readable]
    _ = gettext_for(fmt.locale)
    palette = [{"label": _("Dashboard"), "url": "/"}, {"label": _("Search"), "url": "/search"},
               *({"label": _(e.label_plural), "url": f"/{e.name}"} for e in nav),
               *({"label": _("New") + " " + _(e.label).lower(), "url": f"/{e.name}/new"} for e in nav
                 if actor.can(e.name, "create")),
               *({"label": _("Board") + ": " + (p.label or p.name), "url": f"/board/{p.name}"} for p in boards),
               *({"label": i.label or i.name, "url": i.url} for i in menu if i.url)]
    stages = {(p.entity, st.name): st.label or st.name for p in deployment.pipelines.values() for st in p.stages}

    def stage_label(entity: str, stage: str | None) -> str:
        """A stage's label in the user's language (a record's ``stage`` value as people read it)."""
        return _(stages.get((entity, stage), stage or ""))

    return {
        "stage_label": stage_label,
        "deployment": deployment, "site": deployment.settings.name, "actor": actor, "user": user, "fmt": fmt,
        "locale": fmt.locale, "dir": fmt.dir, "lang": fmt.babel.language,
        "csrf_token": credentials.csrf_token if credentials is not None and credentials.via == "session" else "",
        "may_create": actor.system or any(actor.can(e.name, "create") for e in nav),
        "nav": nav, "boards": boards, "menu_items": menu, "unread": unread, "palette": palette, "flashes": [],
        "page_scripts": [i.url for i in deployment.ui_items if i.slot == "page.script" and i.url],
        "path": request.url.path, "static": STATIC_PREFIX,
        "q": request.query_params.get("q") if request.url.path == "/search" else None,
        "locale_names": [(code, Locale.parse(code).get_display_name(code).capitalize()) for code in LOCALES],
        "is_admin": any(actor.has(p) for p in ADMIN_PERMISSIONS),
    }


async def page(request: Request, template: str, status: int = 200, *, plugin_items: Iterable[UIItem] = (),
               **context: Any) -> Response:
    """Render ``template`` in the page frame, as the signed-in user reads it.

    ``plugin_items``: plugins' UI items (panels, widgets) whose templates the page shows: each is
    rendered first, with the page's context and ``item``, as ``rendered[item.name]`` (Markup).
    Their templates may call the records service (``records.list(...)``): they render in the
    async environment; the page itself renders synchronously, which is twice as fast. A broken
    plugin template is logged and shown as a short note, never a broken page."""
    values = {**await frame(request), **context}
    values["rendered"] = {item.name: await _render_item(values, item) for item in plugin_items if item.template}
    env = environment(values["deployment"], values["locale"], is_async=False)
    html = env.get_template(template).render(values)
    return Response(content=html, status_code=status, media_type="text/html; charset=utf-8", headers=dict(PAGE_HEADERS))


async def _render_item(values: dict[str, Any], item: UIItem) -> Markup:
    env = environment(values["deployment"], values["locale"])
    try:
        extra: Any = {}
        if item.context is not None:
            entity = values.get("entity")
            extra = item.context(deployment=values["deployment"], actor=values["actor"], record=values.get("record"),
                                 entity=getattr(entity, "name", entity))
            if inspect.isawaitable(extra):
                extra = await extra
        return Markup(await env.get_template(item.template).render_async({**values, **(extra or {}), "item": item}))
    except Exception:
        log.exception("the template %r of plugin %r failed", item.template, item.plugin)
        message = gettext_for(values["locale"])("This panel could not be shown.")
        return Markup('<p class="error">') + escape(message) + Markup("</p>")
