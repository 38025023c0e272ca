"""The core's own entities, pipeline and edition, declared through the same hooks as any plugin."""

from __future__ import annotations

from ..contributions import Edition, Pipeline, Stage
from ..entities import EntityType, Field, FieldType
from ..hookspecs import hookimpl
from ..plugins import PluginInfo

PLUGIN = PluginInfo(name="core", version="0.1.0", description="Contacts, companies, deals, activities and users")

T = FieldType
ACTIVITY_KINDS = ["call", "meeting", "email", "note", "task"]


def _address() -> list[Field]:
    return [
        Field(name="street", type=T.TEXT),
        Field(name="city", type=T.TEXT, indexed=True),
        Field(name="postal_code", type=T.TEXT),
        Field(name="country", type=T.TEXT, help_text="ISO 3166 code, e.g. TR"),
    ]


@hookimpl
def crm_register_entities(register):
    register(EntityType(name="user", label="User", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, in_list=True),
        Field(name="email", type=T.EMAIL, required=True, unique=True, in_list=True),
        Field(name="phone", type=T.PHONE),
        Field(name="locale", type=T.TEXT, default="en"),
        Field(name="time_zone", type=T.TEXT, default="UTC"),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
        # Whom automation means by "the owner's manager" (escalations, approvals).
        Field(name="manager", type=T.RELATION, target="user"),
    ]))
    register(EntityType(name="company", label="Company", label_plural="Companies", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, indexed=True, in_list=True),
        Field(name="website", type=T.URL),
        Field(name="email", type=T.EMAIL, indexed=True),
        Field(name="phone", type=T.PHONE, indexed=True, in_list=True),
        Field(name="industry", type=T.TEXT, in_list=True),
        *_address(),
        Field(name="tags", type=T.TAGS),
        Field(name="notes", type=T.LONG_TEXT),
    ]))
    register(EntityType(name="contact", label="Contact", title_field="last_name", fields=[
        Field(name="first_name", type=T.TEXT, in_list=True),
        Field(name="last_name", type=T.TEXT, required=True, indexed=True, in_list=True),
        Field(name="email", type=T.EMAIL, indexed=True, in_list=True),
        Field(name="phone", type=T.PHONE, indexed=True, in_list=True),
        Field(name="mobile", type=T.PHONE, indexed=True),
        Field(name="company", type=T.RELATION, target="company", in_list=True),
        Field(name="job_title", type=T.TEXT),
        *_address(),
        Field(name="source", type=T.TEXT, help_text="where the lead came from: web form, referral..."),
        Field(name="tags", type=T.TAGS),
        Field(name="notes", type=T.LONG_TEXT),
    ]))
    register(EntityType(name="deal", label="Deal", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, in_list=True),
        Field(name="amount", type=T.MONEY, in_list=True),
        Field(name="pipeline", type=T.TEXT, indexed=True, default="sales"),
        Field(name="stage", type=T.TEXT, indexed=True, in_list=True),
        Field(name="probability", type=T.INTEGER, help_text="percent"),
        Field(name="expected_close", type=T.DATE, in_list=True),
        Field(name="company", type=T.RELATION, target="company"),
        Field(name="contact", type=T.RELATION, target="contact"),
        Field(name="lost_reason", type=T.TEXT),
    ]))
    register(EntityType(name="activity", label="Activity", label_plural="Activities", title_field="subject", fields=[
        Field(name="kind", type=T.CHOICE, choices=ACTIVITY_KINDS, required=True, in_list=True, indexed=True),
        Field(name="subject", type=T.TEXT, required=True, in_list=True),
        Field(name="body", type=T.LONG_TEXT),
        Field(name="due_at", type=T.DATETIME, indexed=True, in_list=True),
        Field(name="remind_at", type=T.DATETIME, indexed=True),
        Field(name="done", type=T.BOOLEAN, default=False, in_list=True),
        Field(name="assignee", type=T.RELATION, target="user", in_list=True),
        Field(name="contact", type=T.RELATION, target="contact"),
        Field(name="company", type=T.RELATION, target="company"),
        Field(name="deal", type=T.RELATION, target="deal"),
        Field(name="related_entity", type=T.TEXT, help_text="for records of plugin entities: their entity type"),
        Field(name="related_id", type=T.INTEGER),
    ]))


@hookimpl
def crm_register_pipelines(register):
    register(Pipeline(name="sales", entity="deal", label="Sales", stages=[
        Stage(name="prospecting", probability=10),
        Stage(name="qualification", probability=25),
        Stage(name="quote", probability=50),
        Stage(name="negotiation", probability=75),
        Stage(name="won", probability=100, kind="won"),
        Stage(name="lost", probability=0, kind="lost"),
    ]))


@hookimpl(trylast=True)
def crm_before_save(change, deployment):
    """Stage moves of every entity with pipelines: default first stage, the stage must be in
    the record's pipeline, a lost stage needs a lost_reason, probability follows the stage, and
    the move is recorded in the stage history (see crmcore.pipelines); then automation rules
    are matched against the write (crmcore.automation). Runs after the other plugins'
    implementations, so a stage or pipeline they set is checked, recorded and seen by rules."""
    deployment.pipeline_service.before_save(change)
    # Last: automation sees the stage and values every other hook set.
    return deployment.automation.before_save(change)


# Automation (crmcore.automation): rules matched inside a write run right after its commit.
@hookimpl(specname="crm_after_commit")
async def _run_automation(event, deployment):
    await deployment.automation.after_commit()


async def _standard_demo(deployment) -> None:
    from ..demo import load_demo

    await load_demo(deployment)


@hookimpl
def crm_register_editions(register):
    register(Edition(
        name="standard", label="crmcore", description="The core CRM: contacts, companies, deals, activities",
        plugins=[], demo=_standard_demo,
    ))


# Reminders of activities (crmcore.notifications): named by specname so other core hooks of the
# same names can sit beside them.
@hookimpl(specname="crm_after_commit")
async def _schedule_reminders(event, deployment):
    if event.entity == "activity":
        await deployment.notifications.schedule_reminders(event)


@hookimpl(specname="crm_job_handlers")
def _reminder_jobs(register):
    from ..notifications import register_job_handlers

    register_job_handlers(register)


# Documents generated from templates (crmcore.documents) show on their record's timeline.
@hookimpl(specname="crm_timeline_items")
def _document_timeline(entity, record_id, before, limit, actor, deployment):
    return deployment.documents.timeline_items(entity, record_id, before, limit, actor)
