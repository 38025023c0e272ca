"""crmcore: a plugin-based CRM framework. This module is the public API plugins may import."""

from .contributions import Edition, Pipeline, Stage, UIItem
from .deployment import Deployment, DeploymentError, Settings, init_deployment
from .entities import EntityType, Field, FieldType, RegistryError
from .fieldvalues import Money, Phone, normalize_phone
from .hookspecs import hookimpl
from .plugins import PluginError, PluginInfo
from .records.errors import Conflict, FieldError, NotFound, ValidationError
from .records.query import ListQuery
from .records.service import Change, Page, RecordEvent

__version__ = "0.1.0"

__all__ = [
    "Change", "Conflict", "Deployment", "DeploymentError", "Edition", "EntityType", "Field", "FieldError",
    "FieldType", "ListQuery", "Money", "NotFound", "Page", "Phone", "Pipeline", "PluginError", "PluginInfo",
    "RecordEvent", "RegistryError", "Settings", "Stage", "UIItem", "ValidationError", "hookimpl",
    "init_deployment", "normalize_phone",
]
