"""What plugins contribute besides entities: pipelines, editions and UI items, as data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

__all__ = ["Stage", "Pipeline", "Edition", "UIItem", "UI_SLOTS"]

UI_SLOTS = ("record.panel", "record.action", "menu", "dashboard.widget", "page.script")


class Stage(msgspec.Struct, kw_only=True):
    name: str
    label: str = ""
    #: Chance of winning at this stage, in percent.
    probability: int = 0
    kind: str = "open"  # open | won | lost

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.name.replace("_", " ").capitalize()
        if self.kind not in ("open", "won", "lost"):
            raise ValueError(f"stage {self.name!r}: kind must be open, won or lost, not {self.kind!r}")


class Pipeline(msgspec.Struct, kw_only=True):
    """Ordered stages records of an entity type move through. Declared by plugins
    (``crm_register_pipelines``) or stored at run time (see :mod:`crmcore.pipelines`)."""

    name: str
    entity: str = "deal"
    label: str = ""
    stages: list[Stage] = []
    #: Set by the registry: the plugin that declared it ("custom": stored at run time).
    plugin: str = ""
    #: A plugin-declared pipeline an admin changed: the stored definition is in force.
    customised: bool = False

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.name.replace("_", " ").capitalize()


class Edition(msgspec.Struct, kw_only=True):
    """A packaged deployment: plugins, settings and demo data (e.g. "Salon CRM")."""

    name: str
    label: str = ""
    description: str = ""
    plugins: list[str] = []
    settings: dict[str, Any] = {}
    #: ``async def demo(deployment)``: loads the edition's demo data through the records service.
    demo: Callable[[Any], Awaitable[None]] | None = None
    #: Its configuration (custom fields, pipelines, roles, rules, web forms...): a bundle
    #: (:mod:`crmcore.bundles`) as a dict or the path of a bundle file, applied by ``crm init``.
    bundle: Any = None
    plugin: str = ""


class UIItem(msgspec.Struct, kw_only=True):
    """Something a plugin shows in a named slot of the web UI."""

    slot: str
    name: str
    label: str = ""
    #: Only on records of this entity type (for record.* slots).
    entity: str | None = None
    template: str | None = None
    url: str | None = None
    order: int = 100
    #: A ``record.panel`` that shows related records its own way stands in for the core's list
    #: of them: ``"telephony_call.contact"`` (the calls whose ``contact`` is this record), or
    #: several: ``("invoicing_line.invoice", "invoicing_payment.invoice")``.
    replaces: str | tuple[str, ...] | None = None
    #: Data a panel or widget template cannot read with ``records.list`` (a balance, metrics
    #: computed in SQL): ``context(deployment=, actor=, record=, entity=)``, may be async,
    #: returns a dict of names added to the template's (``record`` is None on the dashboard).
    context: Callable[..., Any] | None = None
    plugin: str = ""

    def __post_init__(self) -> None:
        if self.slot not in UI_SLOTS:
            raise ValueError(f"UI item {self.name!r}: unknown slot {self.slot!r}; slots: {', '.join(UI_SLOTS)}")

    @property
    def replaced(self) -> tuple[str, ...]:
        """The core's related lists this item stands in for (``entity.field`` names)."""
        if self.replaces is None:
            return ()
        return (self.replaces,) if isinstance(self.replaces, str) else tuple(self.replaces)
