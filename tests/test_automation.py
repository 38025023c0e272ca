"""Automation rules on SQLite and PostgreSQL, through the service: every trigger (created,
updated, field changed, stage entered, delayed with ``unless``, date, schedule), every core
action, the firing log, failure isolation, chains, durability across a restart (plugin actions: tests/test_hooks.py).
The job queue's clock is set and advanced, never slept."""

from __future__ import annotations

import datetime as dt

import pytest

from crmcore.auth import SYSTEM
from crmcore.records.errors import Forbidden, ValidationError
from crmcore.testing import make_user

UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


async def _setup(make_deployment, **settings):
    dep = await make_deployment(**settings)
    dep.clock.set(START)
    head = await make_user(dep, role="sales_manager", name="Head of Sales")
    agent = await make_user(dep, role="agent", name="Alice Agent")
    await dep.records.update("user", agent.id, {"manager": head.id})
    return dep, head, agent


async def _rule(dep, **data):
    return await dep.automation.create(data, actor=SYSTEM)


async def _tasks(dep, **where):
    from crmcore.records.query import ListQuery

    conditions = [{"field": k, "op": "eq", "value": v} for k, v in where.items()]
    page = await dep.records.list("activity", ListQuery(filter={"and": conditions} if conditions else None, limit=100))
    return page.items


async def _notes(dep, user_id):
    rows = await dep.db.fetch('SELECT "title", "body", "kind" FROM crm_notification WHERE "user_id" = ? ORDER BY "id"',
                              (user_id,))
    return [r[0] for r in rows]


async def test_created_rule_makes_a_task_for_the_owner_before_the_write_returns(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    rule = await _rule(dep, name="first-contact", entity="contact", trigger={"type": "created"},
                       condition={"field": "source", "op": "eq", "value": "web"},
                       actions=[{"type": "create_task", "subject": "Call {{ record.first_name }} {{ record.last_name }}",
                                 "assignee": "owner", "due": "15m", "remind": "5m"}])
    contact = await dep.records.create("contact", {"first_name": "Ada", "last_name": "Lovelace", "source": "web",
                                                   "owner_id": agent.id})
    tasks = await _tasks(dep, contact=contact["id"])
    assert [t["subject"] for t in tasks] == ["Call Ada Lovelace"]
    task = tasks[0]
    assert task["assignee"] == agent.id and task["owner_id"] == agent.id and task["kind"] == "task"
    assert task["due_at"] == START + dt.timedelta(minutes=15)
    assert task["remind_at"] == START + dt.timedelta(minutes=10)
    # The condition holds only for web leads.
    other = await dep.records.create("contact", {"last_name": "Other", "source": "phone", "owner_id": agent.id})
    assert await _tasks(dep, contact=other["id"]) == []
    [firing] = await dep.automation.firings(rule_id=rule.id)
    assert firing["outcome"] == "done" and firing["record_id"] == contact["id"] and firing["rule"] == "first-contact"
    assert firing["results"][0]["activity"] == task["id"]


async def test_delayed_rule_escalates_unless_an_activity_was_logged(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    await _rule(dep, name="sla", entity="contact", trigger={"type": "created", "delay": "15m"},
                unless={"has": {"entity": "activity", "via": "contact", "filter": {
                    "field": "kind", "op": "in", "value": ["call", "email", "meeting"]}}},
                actions=[{"type": "notify", "to": "owner_manager",
                          "title": "Lead {{ record.last_name }} not contacted in 15 minutes"}])
    missed = await dep.records.create("contact", {"last_name": "Missed", "owner_id": agent.id})
    called = await dep.records.create("contact", {"last_name": "Called", "owner_id": agent.id})
    await dep.records.create("activity", {"kind": "call", "subject": "Intro call", "contact": called["id"]})
    dep.clock.advance(minutes=14)
    assert await dep.jobs.run_due() == 0
    assert await _notes(dep, head.id) == []
    dep.clock.advance(minutes=2)
    assert await dep.jobs.run_due() == 2
    assert await _notes(dep, head.id) == ["Lead Missed not contacted in 15 minutes"]
    outcomes = {f["record_id"]: (f["outcome"], f["error"]) for f in await dep.automation.firings()}
    assert outcomes[missed["id"]] == ("done", None)
    assert outcomes[called["id"]] == ("skipped", "its unless-condition became true")
    assert await dep.jobs.run_due() == 0
    assert await _notes(dep, head.id) == ["Lead Missed not contacted in 15 minutes"]


async def test_field_changed_to_a_value_and_stage_entered(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    await dep.add_custom_field("deal", __import__("crmcore").Field(name="paid", type="boolean", default=False))
    await _rule(dep, name="paid-installs", entity="deal", trigger={"type": "field_changed", "field": "paid", "to": True},
                actions=[{"type": "move_stage", "stage": "negotiation"}])
    await _rule(dep, name="negotiation-alert", entity="deal",
                trigger={"type": "stage_entered", "stage": "negotiation", "pipeline": "sales"},
                actions=[{"type": "notify", "to": {"role": "sales_manager"}, "title": "{{ record.name }} in negotiation"}])
    deal = await dep.records.create("deal", {"name": "Windows", "owner_id": agent.id})
    assert deal["stage"] == "prospecting"
    await dep.records.update("deal", deal["id"], {"name": "Windows x3"})
    assert await _notes(dep, head.id) == []
    await dep.records.update("deal", deal["id"], {"paid": True})
    # The first rule moved the stage; that write triggered the second (a chain).
    assert (await dep.records.get("deal", deal["id"]))["stage"] == "negotiation"
    assert await _notes(dep, head.id) == ["Windows x3 in negotiation"]
    await dep.records.update("deal", deal["id"], {"paid": False})
    await dep.records.update("deal", deal["id"], {"paid": True})
    assert [f["rule"] for f in await dep.automation.firings()].count("paid-installs") == 2
    assert await _notes(dep, head.id) == ["Windows x3 in negotiation"]  # already in the stage: no new entry


async def test_a_failing_rule_never_breaks_the_write_and_none_of_its_actions_stay(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    rule = await _rule(dep, name="broken", entity="contact", trigger={"type": "created"}, actions=[
        {"type": "set_field", "field": "job_title", "value": "Lead"},
        {"type": "create_task", "subject": "Follow up", "assignee": "owner_manager"},
    ])
    orphan = await dep.records.create("contact", {"last_name": "NoOwner"})
    assert (await dep.records.get("contact", orphan["id"]))["job_title"] is None  # rolled back with the firing
    [firing] = await dep.automation.firings(rule_id=rule.id)
    assert firing["outcome"] == "failed"
    assert firing["error"] == "actions[1] (create_task): the contact has no owner, so no owner's manager"
    owned = await dep.records.create("contact", {"last_name": "Owned", "owner_id": agent.id})
    assert (await dep.records.get("contact", owned["id"]))["job_title"] == "Lead"
    [task] = await _tasks(dep, contact=owned["id"])
    assert task["assignee"] == head.id
    assert [f["outcome"] for f in await dep.automation.firings(rule_id=rule.id)] == ["done", "failed"]
    assert [f["outcome"] for f in await dep.automation.firings(outcome="failed")] == ["failed"]


async def test_role_assignee_goes_to_the_least_busy_and_create_record_links_back(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    await dep.auth.save_role(__import__("crmcore").auth.Role(name="measurer", label="Measurer",
                                                           entities={"*": {"read": "all", "edit": "own"}}), actor=SYSTEM)
    busy = await make_user(dep, role="measurer")
    free = await make_user(dep, role="measurer")
    await dep.records.create("activity", {"kind": "task", "subject": "Old job", "assignee": busy.id})
    await _rule(dep, name="deal-for-lead", entity="contact", trigger={"type": "created"}, actions=[
        {"type": "create_record", "entity": "deal", "values": {"name": "Windows for {{ record.last_name }}"}},
    ])
    await _rule(dep, name="measure", entity="deal", trigger={"type": "created"}, actions=[
        {"type": "create_task", "subject": "Measure {{ record.name }}", "assignee": {"role": "measurer"}},
    ])
    contact = await dep.records.create("contact", {"last_name": "Curie", "owner_id": agent.id})
    from crmcore.records.query import ListQuery

    [deal] = (await dep.records.list("deal", ListQuery(filter={"field": "contact", "op": "eq", "value": contact["id"]}))).items
    assert deal["name"] == "Windows for Curie" and deal["owner_id"] == agent.id
    [task] = await _tasks(dep, deal=deal["id"])
    assert task["subject"] == "Measure Windows for Curie" and task["assignee"] == free.id
    assert task["contact"] == contact["id"]  # a deal's task shows on its contact too


async def test_date_rule_is_scheduled_moved_and_withdrawn_with_the_field(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    await _rule(dep, name="before-close", entity="deal", trigger={"type": "date", "field": "expected_close", "offset": "-1d"},
                actions=[{"type": "notify", "to": "owner", "title": "{{ record.name }} closes tomorrow"}])
    assert await dep.jobs.run_due() == 1  # planning the records already there: none
    deal = await dep.records.create("deal", {"name": "A", "owner_id": agent.id, "expected_close": "2026-03-10"})
    await dep.records.create("deal", {"name": "Past", "owner_id": agent.id, "expected_close": "2026-01-01"})
    dep.clock.set(dt.datetime(2026, 3, 9, 0, 0, tzinfo=UTC))
    await dep.records.update("deal", deal["id"], {"expected_close": "2026-03-12"})  # moved
    assert await dep.jobs.run_due() == 0
    dep.clock.set(dt.datetime(2026, 3, 11, 0, 1, tzinfo=UTC))
    assert await dep.jobs.run_due() == 1
    assert await _notes(dep, agent.id) == ["A closes tomorrow"]
    other = await dep.records.create("deal", {"name": "B", "owner_id": agent.id, "expected_close": "2026-03-20"})
    await dep.records.update("deal", other["id"], {"expected_close": None})  # withdrawn
    dep.clock.set(dt.datetime(2026, 3, 25, tzinfo=UTC))
    assert await dep.jobs.run_due() == 0
    assert await _notes(dep, agent.id) == ["A closes tomorrow"]


async def test_schedule_rule_ticks_in_the_deployment_time_zone_once_per_tick(make_deployment):
    dep, head, agent = await _setup(make_deployment, timezone="Europe/Istanbul")
    stale = await dep.records.create("deal", {"name": "Stale", "owner_id": agent.id})
    await dep.records.create("deal", {"name": "Won", "owner_id": agent.id, "stage": "won"})
    rule = await _rule(dep, name="weekday-digest", entity="deal", trigger={"type": "schedule", "cron": "0 9 * * 1-5"},
                       condition={"field": "stage", "op": "eq", "value": "prospecting"},
                       actions=[{"type": "notify", "to": "owner", "title": "Still prospecting: {{ record.name }}"}])
    [job] = await dep.jobs.list(key=f"automation:{rule.id}:schedule")
    assert job.run_at == dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 9:00 in Istanbul, the next morning
    dep.clock.set(dt.datetime(2026, 3, 5, 12, 0, tzinfo=UTC))  # three ticks missed while nothing ran
    assert await dep.jobs.run_due() == 1
    assert await _notes(dep, agent.id) == ["Still prospecting: Stale"]
    [firing] = await dep.automation.firings(rule_id=rule.id)
    assert firing["record_id"] == stale["id"]
    [pending] = await dep.jobs.list(key=f"automation:{rule.id}:schedule", status="pending")
    assert pending.run_at == dt.datetime(2026, 3, 6, 6, 0, tzinfo=UTC)
    await dep.automation.update(rule.id, {"active": False}, actor=SYSTEM)
    assert await dep.jobs.list(key=f"automation:{rule.id}:schedule", status="pending") == []


async def test_pending_timers_survive_a_restart_and_fire_exactly_once(make_deployment, tmp_path):
    dep, head, agent = await _setup(make_deployment)
    await _rule(dep, name="sla", entity="contact", trigger={"type": "created", "delay": "15m"},
                actions=[{"type": "notify", "to": {"role": "sales_manager"}, "title": "Missed {{ record.last_name }}"}])
    await dep.records.create("contact", {"last_name": "Late", "owner_id": agent.id})
    path = dep.path
    await dep.close()
    again = await make_deployment(path=path)
    again.clock.set(START + dt.timedelta(hours=2))  # the job fell due while nothing ran
    assert await again.jobs.run_due() == 1
    assert await again.jobs.run_due() == 0
    assert await _notes(again, head.id) == ["Missed Late"]


async def test_a_firing_is_recorded_once_even_when_its_job_runs_twice(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    rule = await _rule(dep, name="note", entity="contact", trigger={"type": "created"},
                       actions=[{"type": "notify", "to": "owner", "title": "New"}])
    contact = await dep.records.create("contact", {"last_name": "Once", "owner_id": agent.id})
    [job] = await dep.jobs.list(kind="automation.fire")
    await dep.jobs.retry(job.id)  # as if its worker died after acting, and the job ran again
    assert await dep.jobs.run_due() == 1
    assert await _notes(dep, agent.id) == ["New"]
    assert len(await dep.automation.firings(rule_id=rule.id, record_id=contact["id"])) == 1


async def test_rules_act_as_the_automation_user_and_cannot_loop(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    reader = await make_user(dep, role="read_only", email="robot@example.com")
    dep.settings.automation_user = reader.email
    rule = await _rule(dep, name="tag", entity="contact", trigger={"type": "updated"},
                       actions=[{"type": "set_field", "field": "job_title", "value": "{{ record.last_name }}!"}])
    contact = await dep.records.create("contact", {"last_name": "Loop", "owner_id": agent.id})
    await dep.records.update("contact", contact["id"], {"first_name": "X"})
    [firing] = await dep.automation.firings(rule_id=rule.id)
    assert firing["outcome"] == "failed" and "may not edit" in firing["error"]
    dep.settings.automation_user = None
    await dep.records.update("contact", contact["id"], {"first_name": "Y"})
    # The rule's own update does not trigger it again.
    assert (await dep.records.get("contact", contact["id"]))["job_title"] == "Loop!"
    assert [f["outcome"] for f in await dep.automation.firings(rule_id=rule.id)] == ["done", "failed"]


@pytest.mark.parametrize("data, field", [
    ({"entity": "contact", "trigger": {"type": "created"}, "actions": []}, "actions"),
    ({"entity": "nope", "trigger": {"type": "created"}, "actions": [{"type": "notify"}]}, "entity"),
    ({"entity": "contact", "trigger": {"type": "sometimes"}, "actions": [{"type": "notify"}]}, "trigger.type"),
    ({"entity": "contact", "trigger": {"type": "created", "delay": "soon"}, "actions": []}, "trigger.delay"),
    ({"entity": "contact", "trigger": {"type": "field_changed", "field": "nope"}, "actions": []}, "trigger.field"),
    ({"entity": "deal", "trigger": {"type": "field_changed", "field": "amount", "to": "lots"}, "actions": []}, "trigger.to"),
    ({"entity": "deal", "trigger": {"type": "stage_entered", "stage": "moon"}, "actions": []}, "trigger.stage"),
    ({"entity": "deal", "trigger": {"type": "schedule", "cron": "every day"}, "actions": []}, "trigger.cron"),
    ({"entity": "deal", "trigger": {"type": "date", "field": "name"}, "actions": []}, "trigger.field"),
    ({"entity": "contact", "trigger": {"type": "created"}, "condition": {"field": "nope", "op": "eq", "value": 1},
      "actions": [{"type": "notify", "to": "owner", "title": "x"}]}, "condition.nope"),
    ({"entity": "contact", "trigger": {"type": "created"}, "unless": {"field": "city", "op": "eq", "value": "x"},
      "actions": [{"type": "notify", "to": "owner", "title": "x"}]}, "unless"),
    ({"entity": "contact", "trigger": {"type": "created"}, "actions": [{"type": "teleport"}]}, "actions[0].type"),
    ({"entity": "contact", "trigger": {"type": "created"}, "actions": [{"type": "notify", "to": "boss", "title": "x"}]},
     "actions[0].to"),
    ({"entity": "contact", "trigger": {"type": "created"},
      "actions": [{"type": "notify", "to": {"role": "nobody"}, "title": "x"}]}, "actions[0].to.role"),
    ({"entity": "contact", "trigger": {"type": "created"},
      "actions": [{"type": "notify", "to": "owner", "title": "{{ unclosed"}]}, "actions[0].title"),
    ({"entity": "contact", "trigger": {"type": "created"},
      "actions": [{"type": "set_field", "field": "email", "value": "not an address"}]}, "actions[0].value"),
    ({"entity": "contact", "trigger": {"type": "created"}, "actions": [{"type": "move_stage", "stage": "won"}]},
     "actions[0].stage"),
    ({"entity": "contact", "trigger": {"type": "created"},
      "actions": [{"type": "create_task", "subject": "x", "due": "tomorrow"}]}, "actions[0].due"),
    ({"entity": "contact", "trigger": {"type": "created"},
      "actions": [{"type": "create_record", "entity": "deal", "values": {"nope": 1}}]}, "actions[0].values.nope"),
    ({"entity": "contact", "trigger": {"type": "created"}, "actions": [{"type": "webhook", "webhook_id": 999}]},
     "actions[0].webhook_id"),
])
async def test_bad_rules_are_refused_naming_the_field(make_deployment, data, field):
    dep = await make_deployment()
    with pytest.raises(ValidationError) as bad:
        await _rule(dep, name="bad", **data)
    assert bad.value.errors[0].field == field, bad.value.errors
    assert await dep.automation.list() == []


async def test_managing_rules_needs_the_permission(make_deployment):
    dep = await make_deployment()
    agent = await make_user(dep, role="agent")
    actor = await dep.auth.actor_for_user(agent.id)
    with pytest.raises(Forbidden):
        await dep.automation.create({"name": "x", "entity": "contact", "trigger": {"type": "created"},
                                     "actions": [{"type": "notify", "to": "owner", "title": "x"}]}, actor=actor)


async def test_a_removed_rule_id_is_never_given_again(make_deployment):
    dep = await make_deployment()
    data = {"entity": "contact", "trigger": {"type": "created"}, "actions": [{"type": "notify", "to": "owner", "title": "x"}]}
    first = await _rule(dep, name="first", **data)
    await dep.automation.delete(first.id, actor=SYSTEM)
    second = await _rule(dep, name="second", **data)
    assert second.id != first.id  # the firing log of the first keeps naming it alone


async def test_a_late_planning_job_neither_repeats_nor_drops_a_due_timer(make_deployment):
    """The job timing a new date rule's records may run late, beside (or after) a timer that a
    write made meanwhile and that is due: that timer fires once, never twice, never not at all."""
    dep, head, agent = await _setup(make_deployment)
    await _rule(dep, name="close-soon", entity="deal", trigger={"type": "date", "field": "expected_close", "offset": "-2d"},
                actions=[{"type": "notify", "to": "owner", "title": "{{ record.name }} closes soon"}])
    await dep.records.create("deal", {"name": "Fresh", "owner_id": agent.id, "expected_close": "2026-03-10"})
    dep.clock.set(dt.datetime(2026, 3, 8, tzinfo=UTC))  # the planning job never ran until the timer was due
    while await dep.jobs.run_due():
        pass
    assert await _notes(dep, agent.id) == ["Fresh closes soon"]


async def test_a_new_date_rule_times_the_records_already_there(make_deployment):
    dep, head, agent = await _setup(make_deployment)
    early = await dep.records.create("deal", {"name": "Early", "owner_id": agent.id, "expected_close": "2026-03-10"})
    await dep.records.create("deal", {"name": "Closed", "owner_id": agent.id, "expected_close": "2026-02-01"})
    await dep.records.create("deal", {"name": "Undated", "owner_id": agent.id})
    rule = await _rule(dep, name="close-soon", entity="deal",
                       trigger={"type": "date", "field": "expected_close", "offset": "-2d"},
                       actions=[{"type": "notify", "to": "owner", "title": "{{ record.name }} closes on {{ record.expected_close }}"}])
    assert await dep.jobs.run_due() == 1  # the planning job: one timer made
    [timer] = await dep.jobs.list(key=f"automation:{rule.id}:deal:{early['id']}")
    assert timer.run_at == dt.datetime(2026, 3, 8, tzinfo=UTC)
    dep.clock.set(dt.datetime(2026, 3, 8, 0, 1, tzinfo=UTC))
    assert await dep.jobs.run_due() == 1
    assert await _notes(dep, agent.id) == ["Early closes on Mar 10, 2026"]
    # Turned off, the timers go; turned on again, they are made again for what is still ahead.
    later = await dep.records.create("deal", {"name": "Later", "owner_id": agent.id, "expected_close": "2026-04-01"})
    await dep.automation.update(rule.id, {"active": False}, actor=SYSTEM)
    assert await dep.jobs.list(key=f"automation:{rule.id}:deal:{later['id']}", status="pending") == []
    await dep.automation.update(rule.id, {"active": True}, actor=SYSTEM)
    assert await dep.jobs.run_due() == 1
    assert len(await dep.jobs.list(key=f"automation:{rule.id}:deal:{later['id']}", status="pending")) == 1
