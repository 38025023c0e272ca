"""Beauty salon: services, staff, resources, appointments without double booking, availability,
client metrics and calendar feeds.

Entities: :mod:`.entities`. Enable it with ``crm plugins enable beauty_salon``.
"""

from __future__ import annotations

import crmcore
from crmcore import hookimpl

from . import hookspecs
from .entities import ENTITIES

PLUGIN = crmcore.PluginInfo(name="beauty_salon", version="0.1.0",
                            description="Services, staff, appointments without double booking, online booking, "
                                        "client metrics and calendar feeds")
#: Other plugins send the clients' reminders (SMS...) through beauty_salon_send_message.
HOOKSPECS = hookspecs


@hookimpl
def crm_register_entities(register):
    for entity in ENTITIES:
        register(entity)


@hookimpl
def crm_extend_entities(add_field):
    from .metrics import client_fields

    client_fields(add_field)


@hookimpl
def crm_before_save(change, deployment):
    from .metrics import refuse_writes
    from .scheduling import before_save

    refuse_writes(change)
    return before_save(change, deployment)


@hookimpl
def crm_after_commit(event, deployment):
    from .metrics import after_commit

    return after_commit(event, deployment)


@hookimpl
def crm_register_routes(register):
    from .feeds import FEED_ROUTES
    from .routes import ROUTES

    from .online import ONLINE_ROUTES

    for route in [*ROUTES, *FEED_ROUTES, *ONLINE_ROUTES]:
        register(route)


@hookimpl
def crm_ui_items(register, deployment):
    from .feeds import feed_ui_items
    from .metrics import metrics_ui_items
    from .online import online_ui_items

    metrics_ui_items(register)
    feed_ui_items(register)
    online_ui_items(register)


@hookimpl
def crm_automation_actions(register):
    from .reminders import actions

    actions(register)


@hookimpl
def crm_job_handlers(register):
    from .reminders import jobs

    jobs(register)


@hookimpl
def crm_register_editions(register):
    from .demo import editions

    editions(register)


@hookimpl
def crm_register_reports(register, deployment):
    from .reports import reports

    reports(register, deployment)


@hookimpl
def crm_register_commands(cli):
    from .commands import commands

    commands(cli)
