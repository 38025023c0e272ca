"""crmcore: a plugin-based CRM framework. This module is the public API plugins may import."""

from .auth import SYSTEM, Actor, Permission, Role, Scope
from .contributions import Edition, Pipeline, Stage, UIItem
from .deployment import Deployment, DeploymentError, Settings, init_deployment
from .entities import EntityType, Field, FieldType, RegistryError
from .fieldvalues import Money, Phone, normalize_phone
from .hookspecs import hookimpl
from .plugins import PluginError, PluginInfo
from .records.errors import Conflict, FieldError, Forbidden, NotFound, ValidationError
from .records.query import ListQuery
from .records.service import Change, Page, RecordEvent
from .timeline import TimelineItem

__version__ = "0.1.0"


async def render_page(request, template: str, status: int = 200, **context):
    """A plugin's whole page in the web UI's frame (navigation, the user's language and
    formatting, CSP): ``template`` is ``"<plugin>/<file>.html"`` from the plugin's
    ``templates/`` folder and usually extends ``base.html`` (blocks ``title``, ``head``,
    ``content``, ``scripts``). See :func:`crmcore.web.render.page`."""
    from .web.render import page

    return await page(request, template, status, **context)


async def relation_titles(deployment: Deployment, actor: Actor, entity: EntityType,
                          records: list[dict]) -> dict[tuple[str, int], str]:
    """The titles of what ``records`` (of ``entity``) link to, as a page shows them: ``(target
    entity, id) -> title`` for every relation value the actor may read, one query per target."""
    from .web.fields import relation_titles as titles

    return await titles(deployment, actor, entity, records)


async def load_standard_demo(deployment: Deployment, **options) -> dict[str, int]:
    """The standard edition's demo data (users, companies, contacts, deals, activities), for an
    edition's demo to build on: ``counts = await load_standard_demo(deployment)``, then add its
    own records. ``options``: ``contacts=240``, ``seed=1``, ``today=``. See :mod:`crmcore.demo`."""
    from .demo import load_demo

    return await load_demo(deployment, **options)

__all__ = [
    "SYSTEM", "Actor", "Change", "Conflict", "Deployment", "DeploymentError", "Edition", "EntityType", "Field", "FieldError",
    "FieldType", "Forbidden", "ListQuery", "Money", "NotFound", "Page", "Phone", "Permission", "Pipeline", "PluginError", "PluginInfo",
    "RecordEvent", "RegistryError", "Role", "Scope", "Settings", "Stage", "TimelineItem", "UIItem", "ValidationError", "hookimpl",
    "init_deployment", "load_standard_demo", "normalize_phone", "relation_titles", "render_page",
]
