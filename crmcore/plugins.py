"""The plugin manager: discovery, enabling per deployment, ``requires`` ordering, clear errors.

Plugins are found through the ``crm.plugins`` entry-point group, the built-in ones in ``plugins/``
included, so a plugin installed from PyPI works exactly like one shipped with crmcore. The core's
own entities come from :mod:`crmcore.default_plugins`, registered through the same hooks.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import msgspec
import pluggy

from . import hookspecs

__all__ = ["PluginInfo", "PluginError", "AvailablePlugin", "discover", "get_plugin_manager", "call_each"]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "crm.plugins"
DEFAULT_PLUGINS = ("crmcore.default_plugins.core",)


class PluginInfo(msgspec.Struct, kw_only=True):
    """What a plugin says about itself, as ``PLUGIN = PluginInfo(...)`` in its package."""

    name: str
    version: str
    description: str = ""
    requires: list[str] = []


class PluginError(Exception):
    """A plugin is missing, broken or its requirements are not met; the message names it."""


class AvailablePlugin(msgspec.Struct, kw_only=True):
    name: str
    #: Where it comes from: the distribution that declares the entry point.
    source: str
    info: PluginInfo | None = None
    #: Why it cannot be loaded, if it cannot.
    error: str | None = None
    module: Any = None


def _load(name: str, loader: Callable[[], ModuleType], source: str) -> AvailablePlugin:
    try:
        module = loader()
    except Exception as exc:  # a broken plugin must not take the deployment down with a traceback
        return AvailablePlugin(name=name, source=source, error=f"cannot be imported: {exc!r}")
    info = getattr(module, "PLUGIN", None)
    if not isinstance(info, PluginInfo):
        return AvailablePlugin(
            name=name, source=source, module=module,
            error="has no PLUGIN = crmcore.PluginInfo(...) declaration",
        )
    if info.name != name:
        return AvailablePlugin(
            name=name, source=source, module=module,
            error=f"declares the name {info.name!r} but is registered as {name!r}",
        )
    return AvailablePlugin(name=name, source=source, info=info, module=module)


def discover() -> dict[str, AvailablePlugin]:
    """Every plugin installed in this environment, loaded or with the reason it cannot be."""
    found: dict[str, AvailablePlugin] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        source = ep.dist.name if ep.dist else "unknown"
        if ep.name in found:
            log.warning("plugin %r is declared twice (by %s and %s)", ep.name, found[ep.name].source, source)
            continue
        found[ep.name] = _load(ep.name, ep.load, source)
    return found


def _ordered(names: Iterable[str], available: dict[str, AvailablePlugin]) -> list[AvailablePlugin]:
    """Enabled plugins, each after the plugins it requires; errors name the culprit."""
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        plugin = available.get(name)
        if plugin is None:
            known = ", ".join(sorted(available)) or "none"
            raise PluginError(f"plugin {name!r} is enabled but not installed (installed plugins: {known})")
        if plugin.error:
            raise PluginError(f"plugin {name!r} ({plugin.source}) {plugin.error}")
    ordered: list[AvailablePlugin] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise PluginError(f"plugins require each other in a cycle: {' -> '.join(chain + (name,))}")
        state[name] = "visiting"
        for dep in available[name].info.requires:
            if dep not in wanted:
                raise PluginError(
                    f"plugin {name!r} requires plugin {dep!r}, which is not enabled "
                    f"(enable it with: crm plugins enable {dep})"
                )
            visit(dep, chain + (name,))
        state[name] = "done"
        ordered.append(available[name])

    for name in wanted:
        visit(name, ())
    return ordered


def get_plugin_manager(
    enabled: Iterable[str] = (), available: dict[str, AvailablePlugin] | None = None, *,
    extra_plugins: Iterable[Any] = (),
) -> pluggy.PluginManager:
    """A fresh plugin manager with the core and the ``enabled`` plugins, in ``requires`` order.

    ``extra_plugins`` are plugin objects (modules, classes or instances with hook implementations)
    registered last, without discovery: for tests and embedding. One with a ``PLUGIN =
    PluginInfo(...)`` attribute is registered under that name (its entities are namespaced by it).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for dotted in DEFAULT_PLUGINS:
        module = importlib.import_module(dotted)
        pm.register(module, name=module.PLUGIN.name)
    enabled = list(enabled)
    registered: list[Any] = []
    if enabled:
        available = discover() if available is None else available
        for plugin in _ordered(enabled, available):
            pm.register(plugin.module, name=plugin.name)
            registered.append(plugin.module)
    for extra in extra_plugins:
        info = getattr(extra, "PLUGIN", None)
        pm.register(extra, name=info.name if isinstance(info, PluginInfo) else None)
        registered.append(extra)
    for plugin in registered:  # hooks a plugin declares for others (telephony's providers...)
        specs = getattr(plugin, "HOOKSPECS", None)
        if specs is not None:
            pm.add_hookspecs(specs)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from None
    return pm


def call_each(pm: pluggy.PluginManager, hook_name: str, make_kwargs: Callable[[str], dict[str, Any]]) -> None:
    """Call a hook plugin by plugin, in registration order, with arguments made for each plugin.

    ``register_*`` hooks need to know which plugin registers what (for namespacing), which a
    plain pluggy call does not tell; argument subsetting follows pluggy's rules.
    """
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        available = make_kwargs(impl.plugin_name)
        try:
            impl.function(**{arg: available[arg] for arg in impl.argnames})
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {exc}") from exc
