"""Automation: rules stored in the database (trigger -> conditions -> actions), their firing and
its log. The engine is :mod:`crmcore.automation.engine`; the core's actions are in
:mod:`crmcore.automation.actions`; plugins add actions through ``crm_automation_actions`` and events rules are triggered by through
``crm_automation_events``."""

from .engine import (
    AUTOMATION_TABLES, FIRE, OUTCOMES, SCHEDULE, TRIGGERS, ActionContext, ActionError, Automation, EventType, Rule,
    parse_duration,
)

__all__ = [
    "AUTOMATION_TABLES", "Automation", "ActionContext", "ActionError", "EventType", "Rule", "parse_duration", "TRIGGERS",
    "OUTCOMES", "FIRE", "SCHEDULE",
]
