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

__all__ = [
    "SYSTEM", "Actor", "Change", "Conflict", "Deployment", "DeploymentError", "Edition", "EntityType", "Field", "FieldError",
    "FieldType", "Forbidden", "ListQuery", "Money", "NotFound", "Page", "Phone", "Permission", "Pipeline", "PluginError", "PluginInfo",
    "RecordEvent", "RegistryError", "Role", "Scope", "Settings", "Stage", "TimelineItem", "UIItem", "ValidationError", "hookimpl",
    "init_deployment", "normalize_phone",
]
