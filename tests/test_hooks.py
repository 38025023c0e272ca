"""Every hook of the contract, exercised by an in-test plugin: one ``test_hook_<name>`` per hook.

``test_every_hook_has_a_test`` and ``test_every_hook_documented`` keep the contract honest: a new
hook without a test or without a documented, runnable-looking example fails the suite.
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
import textwrap

import click
import msgspec
import pytest
from click.testing import CliRunner

import crmcore
from crmcore import (
    Edition, EntityType, Field, FieldError, FieldType, Pipeline, PluginError, PluginInfo, Stage, UIItem,
    ValidationError, hookimpl,
)
from crmcore import hookspecs
from crmcore.deployment import available_editions
from crmcore.plugins import get_plugin_manager

T = FieldType


def spec_names() -> list[str]:
    return sorted(
        name for name, value in vars(hookspecs).items()
        if name.startswith("crm_") and callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
    )


def named(name: str, **members):
    """A plugin class named ``name`` with the given hook implementations."""
    attrs = {"PLUGIN": PluginInfo(name=name, version="1")}
    for key, function in members.items():
        attrs[key] = staticmethod(hookimpl(function))
    return type(f"{name.capitalize()}Plugin", (), attrs)


# -- the contract's own checks ------------------------------------------------------------------


def test_every_hook_has_a_test():
    missing = [name for name in spec_names() if f"test_hook_{name}" not in globals()]
    assert spec_names(), "no hookspecs found"
    assert not missing, f"hooks without a test_hook_<name> in tests/test_hooks.py: {missing}"


def test_every_hook_documented():
    problems = []
    for name in spec_names():
        spec = getattr(hookspecs, name)
        params = list(inspect.signature(spec).parameters)
        doc = inspect.getdoc(spec) or ""
        if not doc.strip():
            problems.append(f"{name}: no docstring")
            continue
        if "Example::" not in doc:
            problems.append(f"{name}: no 'Example::' block")
            continue
        example = textwrap.dedent(doc.split("Example::", 1)[1]).strip("\n")
        try:
            tree = ast.parse(example)
        except SyntaxError as exc:
            problems.append(f"{name}: the example is not valid Python ({exc})")
            continue
        impls = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
        if not impls:
            problems.append(f"{name}: the example does not implement {name}")
            continue
        impl = impls[0]
        if not any(isinstance(d, ast.Name) and d.id == "hookimpl" for d in impl.decorator_list):
            problems.append(f"{name}: the example's {name} is not decorated with @hookimpl")
        extra = [a.arg for a in impl.args.args if a.arg not in params]
        if extra:
            problems.append(f"{name}: the example takes {extra}, which the hook does not pass ({params})")
        for param in params:
            if param != "deployment" and not re.search(rf":param {param}:|``{param}``|\b{param}\b", doc.split("Example::")[0]):
                problems.append(f"{name}: parameter {param!r} is not described")
    assert not problems, "\n".join(problems)


# -- one test per hook --------------------------------------------------------------------------


async def test_hook_crm_register_entities(make_deployment):
    seen = {}

    def crm_register_entities(register, deployment):
        seen["deployment"] = deployment
        register(EntityType(name="call", label="Call", fields=[
            Field(name="number", type=T.PHONE, required=True),
            Field(name="duration", type=T.INTEGER, help_text="seconds"),
        ]))

    dep = await make_deployment(region="TR", extra_plugins=[named("telephony", crm_register_entities=crm_register_entities)])
    assert seen["deployment"] is dep
    call = dep.registry.get("telephony_call")
    assert call.plugin == "telephony" and call.table == "telephony_call" and call.label == "Call"
    assert "telephony_call" in await dep.schema.tables()
    record = await dep.records.create("telephony_call", {"number": "0532 123 45 67", "duration": 30})
    assert record["number"].e164 == "+905321234567"


async def test_hook_crm_extend_entities(make_deployment):
    def crm_extend_entities(add_field):
        add_field("contact", Field(name="loyalty_card", type=T.TEXT, unique=True))

    dep = await make_deployment(extra_plugins=[named("loyalty", crm_extend_entities=crm_extend_entities)])
    assert "loyalty_card" in await dep.schema.columns("crm_contact")
    await dep.records.create("contact", {"last_name": "A", "loyalty_card": "L1"})
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("contact", {"last_name": "B", "loyalty_card": "L1"})
    assert exc.value.errors[0].field == "loyalty_card"

    def bad(add_field):
        add_field("no_such_entity", Field(name="x", type=T.TEXT))

    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[named("broken", crm_extend_entities=bad)])
    assert "'broken'" in str(exc.value) and "no_such_entity" in str(exc.value)


async def test_hook_crm_register_pipelines(make_deployment):
    def crm_register_pipelines(register):
        register(Pipeline(name="rent", entity="deal", stages=[
            Stage(name="inquiry", probability=10),
            Stage(name="lease_signed", kind="won", probability=100),
            Stage(name="lost", kind="lost"),
        ]))

    dep = await make_deployment(extra_plugins=[named("estate", crm_register_pipelines=crm_register_pipelines)])
    assert set(dep.pipelines) == {"sales", "rent"}
    rent = dep.pipelines["rent"]
    assert rent.plugin == "estate" and [s.kind for s in rent.stages] == ["open", "won", "lost"]
    assert dep.pipelines["sales"].plugin == "core"

    def unknown_entity(register):
        register(Pipeline(name="x", entity="no_such_entity"))

    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[named("bad", crm_register_pipelines=unknown_entity)])
    assert "no_such_entity" in str(exc.value) and "'bad'" in str(exc.value)

    def duplicate(register):
        register(Pipeline(name="sales", entity="deal"))

    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[named("dup", crm_register_pipelines=duplicate)])
    assert "'sales'" in str(exc.value) and "already declared" in str(exc.value)
    with pytest.raises(ValueError):
        Stage(name="x", kind="maybe")


def test_hook_crm_register_editions():
    async def demo(deployment):
        await deployment.records.create("contact", {"last_name": "Demo"})

    def crm_register_editions(register):
        register(Edition(name="salon", label="Salon CRM", plugins=["beauty_salon"],
                         settings={"currency": "EUR"}, demo=demo))

    pm = get_plugin_manager(extra_plugins=[named("salon", crm_register_editions=crm_register_editions)])
    editions = available_editions(pm)
    assert {"standard", "salon"} <= set(editions)
    salon = editions["salon"]
    assert salon.plugin == "salon" and salon.plugins == ["beauty_salon"] and salon.demo is demo
    assert editions["standard"].plugin == "core"

    pm = get_plugin_manager(extra_plugins=[named("again", crm_register_editions=lambda register: register(Edition(name="standard")))])
    with pytest.raises(PluginError) as exc:
        available_editions(pm)
    assert "'standard'" in str(exc.value)


async def test_hook_crm_register_routes(make_deployment):
    from litestar import get

    @get("/api/hello/ping")
    async def ping() -> dict:
        return {"pong": True}

    seen = []

    def crm_register_routes(register, deployment):
        seen.append(deployment)
        register(ping)

    dep = await make_deployment(extra_plugins=[named("hello", crm_register_routes=crm_register_routes)])
    assert seen == [dep]
    assert ping in dep.routes
    assert dep.route_plugins[id(ping)] == "hello"


def test_hook_crm_register_commands():
    def crm_register_commands(cli):
        @cli.group()
        def calls():
            "Telephony commands."

        @calls.command()
        @click.argument("number")
        def dial(number):
            click.echo(f"dialling {number}")

    @click.group()
    def root():
        "The crm command line (a stand-in for cli.py's group)."

    pm = get_plugin_manager(extra_plugins=[named("telephony", crm_register_commands=crm_register_commands)])
    pm.hook.crm_register_commands(cli=root)
    result = CliRunner().invoke(root, ["calls", "dial", "+905321234567"])
    assert result.exit_code == 0, result.output
    assert result.output == "dialling +905321234567\n"
    assert "Telephony commands." in CliRunner().invoke(root, ["--help"]).output


async def test_hook_crm_ui_items(make_deployment):
    def crm_ui_items(register):
        register(UIItem(slot="record.panel", entity="contact", name="calls", label="Calls",
                        template="telephony/calls_panel.html"))
        register(UIItem(slot="menu", name="calls_menu", url="/telephony/", order=5))

    dep = await make_deployment(extra_plugins=[named("telephony", crm_ui_items=crm_ui_items)])
    mine = [i for i in dep.ui_items if i.plugin == "telephony"]
    assert [(i.slot, i.name) for i in mine] == [("record.panel", "calls"), ("menu", "calls_menu")]
    with pytest.raises(ValueError) as exc:
        UIItem(slot="sidebar", name="x")
    assert "record.panel" in str(exc.value)


async def test_hook_crm_before_save(make_deployment):
    seen = []

    def crm_before_save(change, deployment):
        seen.append((change.entity, change.action, change.before is not None, change.batch is not None))
        if change.entity != "deal":
            return
        if change.action in ("create", "update") and change.batch is None:
            if change.values.get("name") == "forbidden":
                raise ValidationError([FieldError("name", "forbidden", "this name is not allowed")])
            if "name" in change.values:
                change.values["name"] = change.values["name"].strip().title()
        if change.batch is not None and any(row.get("name") == "forbidden" for row in change.batch):
            raise ValidationError([FieldError("name", "forbidden", "this name is not allowed")])
        for row in change.batch or ():
            if row.get("name") == "tag me":
                row["pipeline"] = "partners"
            if row.get("name") == "bad amount":
                row["amount"] = "not money"  # validated like user input

    def crm_register_pipelines(register):  # hooks' values are checked too: a pipeline must exist
        register(Pipeline(name="partners", entity="deal", stages=[Stage(name="talks"), Stage(name="signed", kind="won")]))

    dep = await make_deployment(extra_plugins=[named("rules", crm_before_save=crm_before_save,
                                                     crm_register_pipelines=crm_register_pipelines)])
    deal = await dep.records.create("deal", {"name": "  big deal "})
    assert deal["name"] == "Big Deal"  # the hook changed what was written
    updated = await dep.records.update("deal", deal["id"], {"name": "bigger deal"})
    assert updated["name"] == "Bigger Deal"
    with pytest.raises(ValidationError) as exc:
        await dep.records.create("deal", {"name": "forbidden"})
    assert exc.value.errors[0].field == "name"
    with pytest.raises(ValidationError):
        await dep.records.update("deal", deal["id"], {"name": "forbidden"})
    assert (await dep.records.get("deal", deal["id"]))["name"] == "Bigger Deal"  # nothing written
    with pytest.raises(ValidationError):
        await dep.records.bulk_create("deal", [{"name": "ok"}, {"name": "forbidden"}])
    assert (await dep.records.list("deal", crmcore.ListQuery(count=True))).total == 1
    tagged = await dep.records.bulk_create("deal", [{"name": "tag me"}, {"name": "plain"}])
    assert [(await dep.records.get("deal", i))["pipeline"] for i in tagged] == ["partners", "sales"]
    with pytest.raises(ValidationError) as exc:
        await dep.records.bulk_create("deal", [{"name": "bad amount"}])
    assert exc.value.errors[0].field == "rows[0].amount"
    await dep.records.bulk_update("deal", [{"id": tagged[1], "name": "tag me"}])
    assert (await dep.records.get("deal", tagged[1]))["pipeline"] == "partners"
    await dep.records.delete("deal", deal["id"])
    await dep.records.restore("deal", deal["id"])
    deal_calls = [s for s in seen if s[0] == "deal"]
    assert ("deal", "create", False, False) in deal_calls
    assert ("deal", "update", True, False) in deal_calls
    assert ("deal", "create", False, True) in deal_calls  # once per batch
    assert ("deal", "delete", True, False) in deal_calls and ("deal", "restore", True, False) in deal_calls

    async def async_refusal(change):
        if change.entity == "contact":
            raise ValidationError([FieldError("last_name", "blocked", "no contacts today")])

    dep2 = await make_deployment(extra_plugins=[named("async_rules", crm_before_save=async_refusal)])
    with pytest.raises(ValidationError):
        await dep2.records.create("contact", {"last_name": "A"})


async def test_before_save_after_write_runs_in_the_writes_transaction(make_deployment):
    written: list[tuple[str, list[int]]] = []

    def crm_before_save(change, deployment):
        if change.entity != "company" or change.action not in ("create", "update"):
            return
        rows = change.batch if change.batch is not None else [change.values]
        if change.action == "update" and change.batch is not None:
            assert [b["id"] for b in change.befores] and len(change.befores) == len(rows)

        async def note(record_ids):
            written.append((change.action, list(record_ids)))
            if any(row.get("name") == "Boom" for row in rows):
                raise ValidationError([FieldError("name", "boom", "refused after the write")])

        change.after_write(note)

    dep = await make_deployment(extra_plugins=[named("notes", crm_before_save=crm_before_save)])
    one = await dep.records.create("company", {"name": "Acme"})
    ids = await dep.records.bulk_create("company", [{"name": "B"}, {"name": "C"}])
    await dep.records.update("company", one["id"], {"name": "Acme 2"})
    await dep.records.bulk_update("company", [{"id": ids[1], "name": "C2"}, {"id": ids[0], "name": "B2"}])
    assert written == [("create", [one["id"]]), ("create", ids), ("update", [one["id"]]), ("update", [ids[1], ids[0]])]
    with pytest.raises(ValidationError):
        await dep.records.create("company", {"name": "Boom"})
    with pytest.raises(ValidationError):
        await dep.records.update("company", one["id"], {"name": "Boom"})
    assert (await dep.records.get("company", one["id"]))["name"] == "Acme 2"  # rolled back with the callback
    assert (await dep.records.list("company", crmcore.ListQuery(count=True))).total == 3


async def test_hook_crm_after_commit(make_deployment, caplog):
    events = []

    async def crm_after_commit(event, deployment):
        # after commit: the record is readable from the database
        if event.action == "create":
            assert (await deployment.records.get(event.entity, event.record_id))["id"] == event.record_id
        events.append(event)

    def failing(event):
        raise RuntimeError("webhook down")

    dep = await make_deployment(extra_plugins=[
        named("audit_listener", crm_after_commit=crm_after_commit), named("flaky", crm_after_commit=failing),
    ])
    with caplog.at_level(logging.ERROR):
        contact = await dep.records.create("contact", {"last_name": "Kaya"})
    assert "flaky" in caplog.text  # logged, the write stays
    assert (await dep.records.get("contact", contact["id"]))["last_name"] == "Kaya"
    await dep.records.update("contact", contact["id"], {"city": "Izmir"})
    ids = await dep.records.bulk_create("contact", [{"last_name": "A"}, {"last_name": "B"}])
    await dep.records.delete("contact", contact["id"])
    with pytest.raises(ValidationError):
        await dep.records.create("contact", {})  # refused: no event
    assert [(e.entity, e.action) for e in events] == [
        ("contact", "create"), ("contact", "update"), ("contact", "create"), ("contact", "delete"),
    ]
    create, update, bulk, delete = events
    assert create.record["last_name"] == "Kaya" and create.changes[0]["last_name"] == [None, "Kaya"]
    assert update.changes == [{"city": [None, "Izmir"]}] and update.record["city"] == "Izmir"
    assert bulk.record_ids == ids and [r["last_name"] for r in bulk.records] == ["A", "B"]
    assert delete.record_id == contact["id"]


async def test_hook_crm_startup(make_deployment):
    calls = []

    def crm_startup(deployment):
        calls.append(("sync", deployment))

    async def async_startup(deployment):
        # the deployment is fully open: records can be written
        await deployment.records.create("contact", {"last_name": "Seeded"})
        calls.append(("async", deployment))

    dep = await make_deployment(extra_plugins=[
        named("hello", crm_startup=crm_startup), named("seed", crm_startup=async_startup),
    ])
    assert sorted(kind for kind, _ in calls) == ["async", "sync"]
    assert all(d is dep for _, d in calls)
    assert (await dep.records.list("contact", crmcore.ListQuery(count=True))).total == 1


async def test_hook_crm_register_permissions(make_deployment):
    def crm_register_permissions(register):
        register(crmcore.Permission(name="call", label="Place calls", roles=("admin", "agent")))

    dep = await make_deployment(extra_plugins=[named("phones", crm_register_permissions=crm_register_permissions)])
    assert dep.permissions["phones.call"].label == "Place calls"
    assert "manage_users" in dep.permissions  # the core's own
    admin = await dep.auth.create_user(name="Ann", email="ann@example.com", role="admin", actor=crmcore.SYSTEM)
    agent = await dep.auth.create_user(name="Ali", email="ali@example.com", role="agent", actor=crmcore.SYSTEM)
    viewer = await dep.auth.create_user(name="Vic", email="vic@example.com", role="read_only", actor=crmcore.SYSTEM)
    assert (await dep.auth.actor_for_user(agent["id"])).has("phones.call")
    assert (await dep.auth.actor_for_user(admin["id"])).has("phones.call")
    assert not (await dep.auth.actor_for_user(viewer["id"])).has("phones.call")
    # An admin grants it to another role by name.
    role = await dep.auth.role("read_only")
    await dep.auth.save_role(msgspec.structs.replace(role, grants=["phones.call"]), actor=crmcore.SYSTEM)
    assert (await dep.auth.actor_for_user(viewer["id"])).has("phones.call")

    def twice(register):
        register(crmcore.Permission(name="call"))
        register(crmcore.Permission(name="call"))

    with pytest.raises(PluginError, match="twice.call"):
        await make_deployment(extra_plugins=[named("twice", crm_register_permissions=twice)])


async def test_hook_crm_job_handlers(make_deployment):
    import datetime as dt

    calls, dead = [], []

    def crm_job_handlers(register, deployment):
        async def call_back(deployment, payload):
            calls.append(payload)
            if payload.get("fail"):
                raise RuntimeError("line busy")

        async def gave_up(deployment, payload, error):
            dead.append((payload, error))

        register("call_back", call_back, max_attempts=2, on_dead=gave_up)

    dep = await make_deployment(extra_plugins=[named("telephony", crm_job_handlers=crm_job_handlers)])
    assert "telephony.call_back" in dep.jobs.handlers()  # namespaced with the plugin's name
    dep.clock.set(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    await dep.jobs.enqueue("telephony.call_back", {"contact": 1})
    await dep.jobs.enqueue("telephony.call_back", {"contact": 2, "fail": True})
    assert await dep.jobs.run_due() == 2
    assert calls == [{"contact": 1}, {"contact": 2, "fail": True}]
    dep.clock.advance(minutes=5)
    assert await dep.jobs.run_due() == 1  # the retry; then it is dead (max_attempts=2)
    assert dead == [({"contact": 2, "fail": True}, "RuntimeError: line busy")]
    assert [j.payload["contact"] for j in await dep.jobs.list(status="dead")] == [2]

    def clash(register):
        register("call_back", lambda deployment, payload: None)

    other = await make_deployment(extra_plugins=[named("telephony", crm_job_handlers=crm_job_handlers),
                                                 named("clash", crm_job_handlers=clash)])
    assert {"telephony.call_back", "clash.call_back"} <= set(other.jobs.handlers())


async def test_hook_crm_deliver_password_reset(make_deployment, caplog):
    sent = []

    def crm_deliver_password_reset(user, link):
        sent.append((user["email"], link))

    async def failing(user, link, deployment):
        raise RuntimeError("smtp is down")

    dep = await make_deployment(extra_plugins=[
        named("mailer", crm_deliver_password_reset=crm_deliver_password_reset),
        named("broken", crm_deliver_password_reset=failing),
    ])
    user = await dep.auth.create_user(name="Ann", email="ann@example.com", password="first password 1",
                                      actor=crmcore.SYSTEM)
    with caplog.at_level(logging.ERROR):
        await dep.auth.request_password_reset("ann@example.com", ip="127.0.0.1", base_url="https://crm.example")
        await dep.auth.request_password_reset("nobody@example.com", ip="127.0.0.1", base_url="https://crm.example")
    assert "smtp is down" in caplog.text  # logged; the other plugin still delivered
    [(email, link)] = sent
    assert email == "ann@example.com" and link.startswith("https://crm.example/password/reset/")
    await dep.auth.reset_password(link.rsplit("/", 1)[1], "second password 2", ip="127.0.0.1")
    grant = await dep.auth.login("ann@example.com", "second password 2", ip="127.0.0.1")
    assert grant.user_id == user["id"]


async def test_hook_crm_timeline_items(make_deployment, caplog):
    import datetime as dt

    from crmcore import TimelineItem

    calls = []

    async def crm_timeline_items(entity, record_id, before, limit, actor, deployment):
        calls.append((entity, record_id, before, limit, actor.user_id))
        if entity != "contact":
            return []
        items = [TimelineItem(at=dt.datetime(2020, 1, day, 12, tzinfo=dt.timezone.utc), kind="call", id=day,
                              title=f"Call {day}")
                 for day in (3, 2, 1)]
        return [i for i in items if before is None or i.at <= before][:limit]

    def as_dicts(entity, record_id):
        return [{"at": "2019-06-01T00:00:00Z", "kind": "visit", "title": "Visit", "id": "v1", "link": "/visits/1"}]

    def broken(entity):
        raise RuntimeError("invoice service down")

    dep = await make_deployment(extra_plugins=[
        named("phones", crm_timeline_items=crm_timeline_items), named("salon", crm_timeline_items=as_dicts),
        named("invoices", crm_timeline_items=broken),
    ])
    contact = await dep.records.create("contact", {"last_name": "Kaya"})
    admin = await dep.auth.create_user(name="Ann", email="ann@example.com", role="admin", actor=crmcore.SYSTEM)
    actor = await dep.auth.actor_for_user(admin["id"])
    with caplog.at_level(logging.ERROR):
        first = await dep.timeline.timeline("contact", contact["id"], actor=actor, limit=3)
    assert "invoice service down" in caplog.text  # logged; the timeline still answers
    assert [(i.source, i.kind) for i in first.items] == [("history", "created"), ("phones", "call"), ("phones", "call")]
    assert [i.id for i in first.items[1:]] == [3, 2]
    second = await dep.timeline.timeline("contact", contact["id"], actor=actor, limit=3, cursor=first.next_cursor)
    assert [(i.source, i.title) for i in second.items] == [("phones", "Call 1"), ("salon", "Visit")]
    assert second.next_cursor is None and second.items[1].link == "/visits/1"
    assert calls[0] == ("contact", contact["id"], None, 4, admin["id"])
    assert calls[-1][2] == first.items[-1].at  # the next page asks for what is at or before the cursor


async def test_hook_crm_automation_actions(make_deployment):
    from crmcore.auth import SYSTEM
    from crmcore.automation import ActionError
    from crmcore.records.errors import ValidationError

    sent = []

    def crm_automation_actions(register):
        def check(params, entity):
            if not params.get("text"):
                raise ValueError("text is required")

        async def send_sms(context):
            if not context.record.get("mobile"):
                raise ActionError("the contact has no mobile number")
            sent.append(context.render(context.params["text"] + " ({{ record.mobile }})"))
            return {"to": context.record["mobile"]}

        register("send_sms", send_sms, check=check, label="Send an SMS")

    def broken(register):
        raise RuntimeError("cannot load")

    dep = await make_deployment(region="TR", extra_plugins=[named("sms", crm_automation_actions=crm_automation_actions),
                                                          named("broken", crm_automation_actions=broken)])
    types = dep.automation.action_types()
    assert types["sms.send_sms"].label == "Send an SMS" and "create_task" in types  # the broken one is left out
    with pytest.raises(ValidationError) as bad:
        await dep.automation.create({"name": "sms", "entity": "contact", "trigger": {"type": "created"},
                                     "actions": [{"type": "sms.send_sms"}]}, actor=SYSTEM)
    assert bad.value.errors[0].field == "actions[0]" and "text is required" in bad.value.errors[0].message
    rule = await dep.automation.create({
        "name": "sms", "entity": "contact", "trigger": {"type": "created"},
        "actions": [{"type": "set_field", "field": "job_title", "value": "texted"},
                    {"type": "sms.send_sms", "text": "Hello {{ record.first_name }}"}]}, actor=SYSTEM)
    ece = await dep.records.create("contact", {"first_name": "Ece", "last_name": "K", "mobile": "0532 123 45 67"})
    none = await dep.records.create("contact", {"first_name": "No", "last_name": "Mobile"})
    assert sent == ["Hello Ece (+905321234567)"]
    by_record = {f["record_id"]: f for f in await dep.automation.firings(rule_id=rule.id)}
    assert by_record[ece["id"]]["results"] == [{"field": "job_title", "value": "texted"},
                                               {"to": {"e164": "+905321234567", "raw": "0532 123 45 67"}}]
    assert by_record[none["id"]]["outcome"] == "failed"
    assert by_record[none["id"]]["error"] == "actions[1] (sms.send_sms): the contact has no mobile number"
    assert (await dep.records.get("contact", none["id"]))["job_title"] is None  # nothing of a failed firing stays


async def test_hook_crm_register_reports(make_deployment, caplog):
    def crm_register_reports(register, deployment):
        register({"name": "deals_by_stage", "label": "Deals by stage", "entity": "deal", "group_by": ["stage"],
                  "measures": [{"op": "count"}, {"op": "sum", "field": "amount"}], "chart": "pie"})

    dep = await make_deployment(extra_plugins=[named("estate", crm_register_reports=crm_register_reports)])
    await dep.records.create("deal", {"name": "Flat", "amount": {"amount": "100", "currency": "EUR"}})
    await dep.records.create("deal", {"name": "House", "amount": {"amount": "250.50", "currency": "EUR"}})
    found = await dep.reports.get("estate.deals_by_stage")
    assert found["source"] == "estate" and found["chart"] == "pie"
    assert "estate.deals_by_stage" in [r["name"] for r in await dep.reports.list()]
    result = await dep.reports.run("estate.deals_by_stage")
    assert [(r["stage"], r["count"], str(r["sum_amount"])) for r in result["rows"]] == [("prospecting", 2, "350.50")]

    def bad(register):
        register({"name": "broken", "entity": "deal", "chart": "radar"})

    broken = await make_deployment(extra_plugins=[named("broken", crm_register_reports=bad),
                                                  named("estate", crm_register_reports=crm_register_reports)])
    with caplog.at_level(logging.ERROR):
        names = [r["name"] for r in await broken.reports.list()]
    assert "estate.deals_by_stage" in names and "sales_funnel" in names and not any("broken" in n for n in names)
    assert "'broken'" in caplog.text and "chart" in caplog.text


async def test_hook_crm_automation_events(make_deployment):
    from crmcore.auth import SYSTEM
    from crmcore.records.errors import ValidationError

    def crm_automation_events(register):
        register("call.missed", "contact", label="A call was missed")

    dep = await make_deployment(extra_plugins=[named("phone", crm_automation_events=crm_automation_events)])
    assert dep.automation.event_types()["phone.call.missed"].entity == "contact"
    with pytest.raises(ValidationError) as bad:  # events are per entity type
        await dep.automation.create({"name": "x", "entity": "deal", "trigger": {"type": "event", "event": "phone.call.missed"},
                                     "actions": [{"type": "notify", "to": "owner", "text": "x"}]}, actor=SYSTEM)
    assert bad.value.errors[0].field == "trigger.event" and "none" in bad.value.errors[0].message
    now = await dep.automation.create({
        "name": "missed", "entity": "contact", "trigger": {"type": "event", "event": "phone.call.missed"},
        "condition": {"field": "city", "op": "eq", "value": "Izmir"},
        "actions": [{"type": "set_field", "field": "job_title", "value": "call back"}]}, actor=SYSTEM)
    later = await dep.automation.create({
        "name": "missed-later", "entity": "contact", "trigger": {"type": "event", "event": "phone.call.missed", "delay": "1h"},
        "actions": [{"type": "set_field", "field": "notes", "value": "still missed"}]}, actor=SYSTEM)
    izmir = await dep.records.create("contact", {"last_name": "A", "city": "Izmir"})
    bursa = await dep.records.create("contact", {"last_name": "B", "city": "Bursa"})
    assert not await dep.automation.firings(rule_id=now.id)  # writes do not fire event rules
    async with dep.db.transaction():
        await dep.automation.emit("phone.call.missed", [izmir["id"], bursa["id"]])
    await dep.automation.after_commit()
    assert (await dep.records.get("contact", izmir["id"]))["job_title"] == "call back"
    assert (await dep.records.get("contact", bursa["id"]))["job_title"] is None  # its condition does not hold
    assert (await dep.records.get("contact", izmir["id"]))["notes"] is None
    dep.clock.advance(hours=1, seconds=1)
    await dep.jobs.run_due()
    assert (await dep.records.get("contact", bursa["id"]))["notes"] == "still missed"
    assert {f["trigger"] for f in await dep.automation.firings(rule_id=later.id)} == {"event phone.call.missed + 1h"}
    fired = len(await dep.automation.firings())
    with pytest.raises(RuntimeError):  # an event whose transaction rolls back fires nothing
        async with dep.db.transaction():
            await dep.automation.emit("phone.call.missed", [izmir["id"]])
            raise RuntimeError("the call could not be stored")
    await dep.automation.after_commit()
    dep.clock.advance(hours=2)
    await dep.jobs.run_due()
    assert len(await dep.automation.firings()) == fired
    with pytest.raises(ValueError):
        await dep.automation.emit("phone.nothing", [izmir["id"]])


async def test_hook_crm_document_context(make_deployment):
    from crmcore.auth import SYSTEM

    seen = []

    async def crm_document_context(template, entity, record, actor, deployment):
        seen.append((template["name"], entity, record["id"], actor.system))
        if entity != "deal":
            return None
        return {"lines": [{"text": "Windows", "qty": 3}], "record": "not replaced"}

    def also(entity):
        return {"lines": "the first plugin's win", "signature": "<b>Demir</b>"}

    dep = await make_deployment(extra_plugins=[named("lines", crm_document_context=crm_document_context),
                                               named("sign", crm_document_context=also)])
    deal = await dep.records.create("deal", {"name": "Windows"})
    await dep.documents.create_template({"name": "sheet", "entity": "deal", "format": "html", "body":
        "{{ record.name }}|{% for line in lines %}{{ line.qty }} x {{ line.text }}{% endfor %}|{{ signature }}"},
        actor=SYSTEM)
    content, _, _ = await dep.documents.render("sheet", "deal", deal["id"], actor=SYSTEM)
    # Added names print (autoescaped); the core's own names and an earlier plugin's are kept.
    assert content.decode() == "Windows|3 x Windows|&lt;b&gt;Demir&lt;/b&gt;"
    assert ("sheet", "deal", deal["id"], True) in seen


async def test_a_plugin_declares_hooks_for_other_plugins_and_reads_its_settings(make_deployment):
    import types

    from crmcore.hookspecs import hookspec

    specs = types.SimpleNamespace()

    @hookspec
    def phone_providers(register):
        """Providers of the phone plugin."""

    specs.phone_providers = phone_providers
    phone = named("phone")
    phone.HOOKSPECS = specs

    def phone_providers_impl(register):
        register("acme")

    acme = type("AcmePlugin", (), {"PLUGIN": PluginInfo(name="acme", version="1"),
                                   "phone_providers": staticmethod(hookimpl(specname="phone_providers")(phone_providers_impl))})
    dep = await make_deployment(extra_plugins=[phone, acme])
    found = []
    dep.pm.hook.phone_providers(register=found.append)
    assert found == ["acme"]
    assert dep.plugin_settings("phone") == {}
    dep.settings.plugin["phone"] = {"secret": "s3"}
    assert dep.plugin_settings("phone") == {"secret": "s3"}
