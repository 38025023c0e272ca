"""Words the UI shows that come from data, not templates: the core's entity, field, stage and
activity-kind labels. Listed here so that ``pybabel extract`` (keyword ``N_``) puts them in the
catalogs; pages translate them with ``_()`` when they show them. Plugins ship their own catalogs."""

from __future__ import annotations


def N_(text: str) -> str:  # noqa: N802 (gettext's name for "mark for translation, translate later")
    return text


LABELS = [
    # entity types
    N_("Contact"), N_("Contacts"), N_("Company"), N_("Companies"), N_("Deal"), N_("Deals"), N_("Activity"),
    N_("Activities"), N_("User"), N_("Users"),
    # fields
    N_("First name"), N_("Last name"), N_("Name"), N_("Email"), N_("Phone"), N_("Mobile"), N_("Website"),
    N_("Industry"), N_("Street"), N_("City"), N_("Postal code"), N_("Country"), N_("Tags"), N_("Notes"),
    N_("Job title"), N_("Source"), N_("Amount"), N_("Pipeline"), N_("Stage"), N_("Probability"),
    N_("Expected close"), N_("Lost reason"), N_("Kind"), N_("Subject"), N_("Body"), N_("Due at"),
    N_("Remind at"), N_("Done"), N_("Assignee"), N_("Related entity"), N_("Related id"), N_("Locale"),
    N_("Time zone"), N_("Active"), N_("Manager"), N_("Owner"), N_("Team"), N_("Created at"), N_("Updated at"),
    # the sales pipeline and its stages
    N_("Sales"), N_("Prospecting"), N_("Qualification"), N_("Quote"), N_("Negotiation"), N_("Won"), N_("Lost"),
    # activity kinds
    N_("call"), N_("meeting"), N_("email"), N_("note"), N_("task"),
    # list columns of every record
    N_("Created"), N_("Updated"),
    # field types (the custom fields settings)
    N_("text"), N_("long_text"), N_("integer"), N_("decimal"), N_("money"), N_("boolean"), N_("date"),
    N_("datetime"), N_("choice"), N_("multi_choice"), N_("tags"), N_("relation"), N_("phone"), N_("url"),
    # built-in field help
    N_("where the lead came from: web form, referral..."), N_("ISO 3166 code, e.g. TR"), N_("percent"),
    N_("for records of plugin entities: their entity type"),
    # built-in roles and the core's permissions
    N_("Administrator"), N_("everything, including users, roles, schema and plugins"), N_("Sales manager"),
    N_("every record of their teams"), N_("Agent"), N_("their own records"), N_("Read only"),
    N_("reads every record, changes none"), N_("Manage users"),
    N_("add, disable and change users, their roles, teams and passwords"), N_("Manage roles"),
    N_("create and change roles and teams"), N_("Manage schema"), N_("custom fields, plugins and schema migrations"),
    N_("Manage tokens"), N_("see and revoke other users' API tokens"), N_("View the security log"),
    N_("logins, failures, permission changes, token use"), N_("Manage integrations"),
    N_("webhook subscriptions and their deliveries, the job queue"), N_("Manage automation"),
    N_("automation rules and their firing log"),
    # values and error pages
    N_("Yes"), N_("No"), N_("Not found"), N_("This page or record does not exist, or you may not see it."),
    N_("Not allowed"), N_("Your role does not allow this."), N_("Changed meanwhile"),
    N_("Someone else changed this record meanwhile. Reload to see their changes."), N_("Something went wrong"),
    N_("The error was logged; please try again."),
]
