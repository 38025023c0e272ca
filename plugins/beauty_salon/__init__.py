"""Beauty salon: services, staff, resources, appointments without double booking, availability,
client metrics and calendar feeds.

Entities: :mod:`.entities`. Enable it with ``crm plugins enable beauty_salon``.
"""

from __future__ import annotations

import crmcore
from crmcore import hookimpl

from .entities import ENTITIES

PLUGIN = crmcore.PluginInfo(name="beauty_salon", version="0.1.0",
                            description="Services, staff, appointments without double booking, online booking, "
                                        "client metrics and calendar feeds")


@hookimpl
def crm_register_entities(register):
    for entity in ENTITIES:
        register(entity)
