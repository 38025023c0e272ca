"""The record timeline, notifications and reminders (with their e-mail), on SQLite and PostgreSQL.

Real parts only: the job queue with its controllable clock, a local SMTP server (aiosmtpd) as
the mail sink, the HTTP app through litestar's test client.
"""

from __future__ import annotations

import datetime as dt
import email
import threading

import pytest

import crmcore
from crmcore import ListQuery, NotFound, TimelineItem, hookimpl
from crmcore.testing import crm_user, free_port, make_user

from .conftest import problem

UTC = dt.timezone.utc


class CallsPlugin:
    """An in-test plugin contributing phone calls to contacts' timelines."""

    PLUGIN = crmcore.PluginInfo(name="calls", version="1", description="calls on the timeline")
    calls: dict[int, list[dt.datetime]] = {}

    @staticmethod
    @hookimpl
    def crm_timeline_items(entity, record_id, before, limit):
        if entity != "contact":
            return []
        times = sorted(CallsPlugin.calls.get(record_id, []), reverse=True)
        return [TimelineItem(at=at, kind="call", id=i, title=f"Call at {at:%H:%M}", link=f"/calls/{i}")
                for i, at in enumerate(times) if before is None or at <= before][:limit]


async def actor_of(dep, user):
    return await dep.auth.actor_for_user(user.id)


async def all_pages(dep, entity, record_id, actor, limit):
    pages, cursor = [], None
    while True:
        page = await dep.timeline.timeline(entity, record_id, actor=actor, limit=limit, cursor=cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages


# -- the timeline ---------------------------------------------------------------------------------


async def test_timeline_merges_activities_history_and_plugin_items_newest_first(make_deployment):
    dep = await make_deployment(region="TR", extra_plugins=[CallsPlugin])
    admin = await actor_of(dep, await make_user(dep, role="admin"))
    records = dep.records
    company = await records.create("company", {"name": "Acme"})
    contact = await records.create("contact", {"last_name": "Kaya", "company": company["id"]})
    other = await records.create("contact", {"last_name": "Other"})
    await records.update("contact", contact["id"], {"city": "Izmir"})
    deal = await records.create("deal", {"name": "Windows", "contact": contact["id"], "company": company["id"]})
    call = await records.create("activity", {"kind": "call", "subject": "First call", "contact": contact["id"]})
    on_deal = await records.create("activity", {"kind": "meeting", "subject": "Measure", "deal": deal["id"]})
    await records.create("activity", {"kind": "note", "subject": "Not theirs", "contact": other["id"]})
    task = await records.create("activity", {"kind": "task", "subject": "Call back", "contact": contact["id"],
                                             "due_at": "2030-01-01T15:00:00+03:00"})
    await records.update("contact", contact["id"], {"job_title": "Owner"})
    now = dt.datetime.now(UTC)
    CallsPlugin.calls = {contact["id"]: [now - dt.timedelta(days=2), now + dt.timedelta(seconds=5)]}
    page = await dep.timeline.timeline("contact", contact["id"], actor=admin, limit=50)
    got = [(i.source, i.kind, i.title) for i in page.items]
    assert got == [
        ("calls", "call", got[0][2]),                       # the plugin's newest (in 5 seconds)
        ("history", "change", "Changed job_title"),
        ("activity", "task", "Call back"),
        ("activity", "meeting", "Measure"),                 # the contact's deal's activity
        ("activity", "call", "First call"),
        ("history", "change", "Changed city"),
        ("history", "created", "Contact created"),
        ("calls", "call", got[-1][2]),                      # two days ago
    ]
    assert page.next_cursor is None
    assert [i.at for i in page.items] == sorted((i.at for i in page.items), reverse=True)
    assert page.items[2].data["due_at"] and page.items[2].link == f"/api/activity/{task['id']}"
    assert page.items[1].data["changes"] == {"job_title": [None, "Owner"]}
    # The deal's timeline: its own activity only; the company's: every activity of its contacts and deals.
    deal_items = (await dep.timeline.timeline("deal", deal["id"], actor=admin)).items
    assert [i.id for i in deal_items if i.source == "activity"] == [on_deal["id"]]
    company_items = (await dep.timeline.timeline("company", company["id"], actor=admin)).items
    assert {i.id for i in company_items if i.source == "activity"} == {call["id"], on_deal["id"], task["id"]}
    # Paging: every item once, in the same order, whatever the page size.
    for limit in (1, 2, 3, 7):
        pages = await all_pages(dep, "contact", contact["id"], admin, limit)
        assert all(len(p) <= limit for p in pages)
        assert [(i.source, i.id) for p in pages for i in p] == [(i.source, i.id) for i in page.items]


async def test_timeline_of_a_plugin_entity_record_by_related_entity(make_deployment, lab_plugin):
    dep = await make_deployment(extra_plugins=[lab_plugin])
    admin = await actor_of(dep, await make_user(dep, role="admin"))
    item = await dep.records.create("lab_item", {"name": "Widget"})
    note = await dep.records.create("activity", {"kind": "note", "subject": "About the widget",
                                                 "related_entity": "lab_item", "related_id": item["id"]})
    await dep.records.create("activity", {"kind": "note", "subject": "Another item's",
                                          "related_entity": "lab_item", "related_id": item["id"] + 1})
    items = (await dep.timeline.timeline("lab_item", item["id"], actor=admin)).items
    assert [(i.source, i.id) for i in items] == [("activity", note["id"]), ("history", items[1].id)]


async def test_timeline_shows_only_what_the_actor_may_read(make_deployment):
    dep = await make_deployment()
    ann = await make_user(dep, role="agent")
    bob = await make_user(dep, role="agent")
    ann_actor, bob_actor = await actor_of(dep, ann), await actor_of(dep, bob)
    contact = await dep.records.as_actor(ann_actor).create("contact", {"last_name": "Kaya"})
    mine = await dep.records.as_actor(ann_actor).create(
        "activity", {"kind": "note", "subject": "Ann's note", "contact": contact["id"]})
    await dep.records.create("activity", {"kind": "note", "subject": "Bob's note", "contact": contact["id"],
                                          "owner_id": bob.id})
    items = (await dep.timeline.timeline("contact", contact["id"], actor=ann_actor)).items
    assert [i.id for i in items if i.source == "activity"] == [mine["id"]]
    with pytest.raises(NotFound):  # Bob may not read Ann's contact: as if it did not exist
        await dep.timeline.timeline("contact", contact["id"], actor=bob_actor)
    # A role that may not read activities at all still sees the record's history.
    role = crmcore.Role(name="no_activities", label="No activities", entities={
        "*": {"read": crmcore.Scope.ALL}, "activity": {"read": crmcore.Scope.NONE}})
    await dep.auth.save_role(role, actor=crmcore.SYSTEM)
    viewer = await make_user(dep, role="no_activities")
    items = (await dep.timeline.timeline("contact", contact["id"], actor=await actor_of(dep, viewer))).items
    assert [i.source for i in items] == ["history"]


def test_timeline_over_http(crm_client):
    client = crm_client(extra_plugins=[CallsPlugin])
    contact = client.post("/api/contact", json={"last_name": "Kaya"}).json()
    for n in range(3):
        assert client.post("/api/activity", json={"kind": "note", "subject": f"Note {n}",
                                                  "contact": contact["id"]}).status_code == 201
    CallsPlugin.calls = {}
    first = client.get(f"/api/contact/{contact['id']}/timeline", params={"limit": 2})
    assert first.status_code == 200, first.text
    body = first.json()
    assert [i["title"] for i in body["items"]] == ["Note 2", "Note 1"] and body["next_cursor"]
    rest = client.get(f"/api/contact/{contact['id']}/timeline", params={"cursor": body["next_cursor"]}).json()
    assert [i["title"] for i in rest["items"]] == ["Note 0", "Contact created"] and rest["next_cursor"] is None
    assert rest["items"][1]["source"] == "history" and rest["items"][0]["source"] == "activity"
    problem(client.get(f"/api/contact/{contact['id']}/timeline", params={"limit": 0}), 422, "limit")
    problem(client.get(f"/api/contact/{contact['id']}/timeline", params={"limit": "x"}), 422, "limit")
    problem(client.get(f"/api/contact/{contact['id']}/timeline", params={"cursor": "garbage!"}), 422, "cursor")
    problem(client.get("/api/contact/999999/timeline"), 404)
    problem(client.get("/api/nonsense/1/timeline"), 404)
    agent = crm_user(client, role="agent")
    problem(client.get(f"/api/contact/{contact['id']}/timeline", headers=agent.headers), 404)
    assert client.get(f"/api/contact/{contact['id']}/timeline", headers={"Authorization": ""}).status_code == 401


# -- notifications --------------------------------------------------------------------------------


def test_notifications_api_own_only_unread_paging_and_read(crm_client):
    client = crm_client()
    dep = client.app.state.deployment
    me, other = client.crm_user, crm_user(client, role="agent")
    notify = lambda *a, **k: client.blocking_portal.call(lambda: dep.notifications.notify(*a, **k))  # noqa: E731
    ids = [notify([me.id], f"Note {n}", "body", "/contact/1", "info")[0] for n in range(5)]
    [theirs] = notify([other.id], "For the other one")
    listed = client.get("/api/notifications", params={"limit": 2}).json()
    assert [n["title"] for n in listed["items"]] == ["Note 4", "Note 3"] and listed["unread"] == 5
    assert all(n["user_id"] == me.id and not n["read"] for n in listed["items"])
    rest = client.get("/api/notifications", params={"limit": 10, "cursor": listed["next_cursor"]}).json()
    assert [n["title"] for n in rest["items"]] == ["Note 2", "Note 1", "Note 0"] and rest["next_cursor"] is None
    read = client.post(f"/api/notifications/{ids[0]}/read")
    assert read.status_code == 200 and read.json()["read"] is True
    unread = client.get("/api/notifications", params={"unread": "true"}).json()
    assert len(unread["items"]) == 4 and unread["unread"] == 4
    problem(client.post(f"/api/notifications/{theirs}/read"), 404)  # someone else's: not found
    problem(client.post("/api/notifications/999999/read"), 404)
    assert client.post("/api/notifications/read-all").json() == {"marked": 4}
    assert client.get("/api/notifications", params={"unread": "1"}).json()["items"] == []
    theirs_listed = client.get("/api/notifications", headers=other.headers).json()
    assert [n["title"] for n in theirs_listed["items"]] == ["For the other one"] and theirs_listed["unread"] == 1
    problem(client.get("/api/notifications", params={"limit": 1000}), 422, "limit")
    problem(client.get("/api/notifications", params={"cursor": "x"}), 422, "cursor")


async def test_notify_role_and_idempotent_keys(make_deployment):
    dep = await make_deployment()
    head = await make_user(dep, role="sales_manager")
    head2 = await make_user(dep, role="sales_manager")
    await make_user(dep, role="agent")
    gone = await make_user(dep, role="sales_manager")
    await dep.auth.set_active(gone.id, False, actor=crmcore.SYSTEM)
    made = await dep.notifications.notify_role("sales_manager", "Lead waiting", key="lead:1")
    assert len(made) == 2
    assert await dep.notifications.notify_role("sales_manager", "Lead waiting", key="lead:1") == []
    for user in (head, head2):
        listed = await dep.notifications.list(await actor_of(dep, user))
        assert [n["title"] for n in listed["items"]] == ["Lead waiting"]
    with pytest.raises(crmcore.ValidationError):
        await dep.notifications.notify([head.id], "")
    with pytest.raises(crmcore.ValidationError, match="no user with id 999999"):
        await dep.notifications.notify([head.id, 999999], "To nobody")


# -- reminders through the job queue ----------------------------------------------------------


async def test_reminder_fires_once_after_the_clock_passes_it(make_deployment):
    dep = await make_deployment()
    ann = await make_user(dep, role="agent")
    owner = await make_user(dep, role="agent")
    start = dt.datetime.now(UTC).replace(microsecond=0)
    dep.clock.set(start)
    remind_at = start + dt.timedelta(hours=1)
    task = await dep.records.create("activity", {
        "kind": "task", "subject": "Call the client back", "assignee": ann.id, "owner_id": owner.id,
        "due_at": (start + dt.timedelta(hours=2)).isoformat(), "remind_at": remind_at.isoformat()})
    await dep.jobs.run_due()
    assert (await dep.notifications.list(await actor_of(dep, ann)))["items"] == []
    dep.clock.advance(minutes=61)
    await dep.jobs.run_due()
    await dep.jobs.run_due()
    items = (await dep.notifications.list(await actor_of(dep, ann)))["items"]
    assert [(n["kind"], n["title"], n["record_id"]) for n in items] == [
        ("reminder", "Reminder: Call the client back", task["id"])]
    assert items[0]["body"] == f"Due {(start + dt.timedelta(hours=2)):%Y-%m-%d %H:%M} UTC"  # the user's time zone
    await dep.records.update("user", ann.id, {"time_zone": "Europe/Istanbul"})
    istanbul = await dep.records.create("activity", {"kind": "task", "subject": "In Istanbul", "assignee": ann.id,
                                                     "due_at": "2031-05-01T12:00:00Z", "remind_at": start.isoformat()})
    await dep.jobs.run_due()
    [note] = [n for n in (await dep.notifications.list(await actor_of(dep, ann)))["items"]
              if n["record_id"] == istanbul["id"]]
    assert note["body"] == "Due 2031-05-01 15:00 +03"
    # Firing the same reminder again (a retried job, a second worker) notifies nobody twice.
    assert await dep.notifications.fire_reminder(task["id"], remind_at.isoformat()) == []
    # Without an assignee the owner is reminded.
    other = await dep.records.create("activity", {"kind": "task", "subject": "Owner's", "owner_id": owner.id,
                                                  "remind_at": (start + dt.timedelta(hours=3)).isoformat()})
    dep.clock.advance(hours=3)
    await dep.jobs.run_due()
    assert [n["record_id"] for n in (await dep.notifications.list(await actor_of(dep, owner)))["items"]] == [other["id"]]


async def test_reminders_are_moved_cancelled_and_skip_done_tasks(make_deployment):
    dep = await make_deployment()
    ann = await make_user(dep, role="agent")
    actor = await actor_of(dep, ann)
    start = dt.datetime.now(UTC).replace(microsecond=0)
    dep.clock.set(start)
    at = lambda hours: (start + dt.timedelta(hours=hours)).isoformat()  # noqa: E731
    create = lambda subject, **values: dep.records.create("activity", {  # noqa: E731
        "kind": "task", "subject": subject, "assignee": ann.id, **values})
    moved = await create("Moved", remind_at=at(1))
    done = await create("Done", remind_at=at(1))
    deleted = await create("Deleted", remind_at=at(1))
    cleared = await create("Cleared", remind_at=at(1))
    await create("Overdue", remind_at=at(-5))  # already past: fires at the next run
    await dep.records.update("activity", moved["id"], {"remind_at": at(5)})
    await dep.records.update("activity", done["id"], {"done": True})
    await dep.records.delete("activity", deleted["id"])
    await dep.records.update("activity", cleared["id"], {"remind_at": None})
    await dep.jobs.run_due()

    async def reminded() -> list[str]:
        return [n["title"] for n in (await dep.notifications.list(actor))["items"]]

    assert await reminded() == ["Reminder: Overdue"]
    dep.clock.advance(hours=2)
    await dep.jobs.run_due()
    assert await reminded() == ["Reminder: Overdue"]  # done, deleted, cleared and moved ones stay quiet
    dep.clock.advance(hours=4)
    await dep.jobs.run_due()
    assert await reminded() == ["Reminder: Moved", "Reminder: Overdue"]
    # Restoring a deleted task whose reminder is past reminds at once; marking a task done after
    # its reminder was queued but before it fired keeps it quiet.
    await dep.records.restore("activity", deleted["id"])
    late = await create("Late", remind_at=at(7))
    dep.clock.advance(hours=2)
    await dep.records.update("activity", late["id"], {"done": True})
    await dep.jobs.run_due()
    assert await reminded() == ["Reminder: Deleted", "Reminder: Moved", "Reminder: Overdue"]


# -- e-mail through a local SMTP server -----------------------------------------------------------


@pytest.fixture
def smtp_sink():
    """A real SMTP server (aiosmtpd) on 127.0.0.1 collecting the messages it receives."""
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self):
            self.messages: list[email.message.Message] = []
            self.received = threading.Event()

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(email.message_from_bytes(envelope.content))
            self.received.set()
            return "250 OK"

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.port = controller.port
    try:
        yield sink
    finally:
        controller.stop()


async def test_reminder_is_emailed_when_smtp_is_configured(make_deployment, smtp_sink):
    dep = await make_deployment(smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_from="crm@example.com",
                                smtp_starttls=False, base_url="https://crm.example.com")
    ann = await make_user(dep, role="agent", email="ann@example.com")
    start = dt.datetime.now(UTC).replace(microsecond=0)
    dep.clock.set(start)
    task = await dep.records.create("activity", {
        "kind": "task", "subject": "Send the quote", "body": "Windows for the kitchen", "assignee": ann.id,
        "remind_at": (start + dt.timedelta(minutes=15)).isoformat()})
    dep.clock.advance(minutes=16)
    await dep.jobs.run_due()  # the reminder: a notification, and an e-mail job
    await dep.jobs.run_due()  # the e-mail
    assert len(smtp_sink.messages) == 1
    message = smtp_sink.messages[0]
    assert message["To"] == "ann@example.com" and message["From"] == "crm@example.com"
    assert message["Subject"] == "Reminder: Send the quote"
    text = message.get_payload(decode=True).decode()
    assert "Windows for the kitchen" in text and f"https://crm.example.com/activity/{task['id']}" in text
    await dep.jobs.run_due()
    assert len(smtp_sink.messages) == 1  # sent once


async def test_without_smtp_nothing_is_emailed(make_deployment, smtp_sink):
    dep = await make_deployment()
    ann = await make_user(dep, role="agent")
    await dep.notifications.notify([ann.id], "Hello")
    await dep.jobs.run_due()
    assert smtp_sink.messages == [] and not await dep.notifications.send_email(1)
    assert (await dep.records.list("activity", ListQuery(count=True))).total == 0


def test_openapi_documents_timeline_notification_and_form_routes(crm_client):
    import jsonschema
    from openapi_spec_validator import validate as validate_openapi
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    client = crm_client()
    contact = client.post("/api/contact", json={"last_name": "Kaya"}).json()
    client.post("/api/activity", json={"kind": "note", "subject": "Hi", "contact": contact["id"]})
    client.blocking_portal.call(lambda: client.app.state.deployment.notifications.notify(
        [client.crm_user.id], "Hello", link="/contact/1"))
    assert client.post("/api/forms", json={"name": "lead"}).status_code == 201
    doc = client.get("/schema").json()
    validate_openapi(doc)
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))

    def check(path, method, response, status="200"):
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({"$ref": "urn:doc#" + schema["$ref"][1:]} if "$ref" in schema else schema,
                                        registry=registry).validate(response)

    check("/api/contact/{record_id}/timeline", "get", client.get(f"/api/contact/{contact['id']}/timeline").json())
    check("/api/notifications", "get", client.get("/api/notifications").json())
    assert doc["paths"]["/api/forms"]["get"]["responses"]["200"]
    submitted = client.post("/forms/lead", json={"last_name": "New"}, headers={"Authorization": ""})
    check("/forms/{name}", "post", submitted.json())
    assert doc["paths"]["/forms/{name}"]["post"]["security"] == []  # public
    assert doc["paths"]["/api/notifications"]["get"]["responses"]["401"]
    assert "429" in doc["paths"]["/forms/{name}"]["post"]["responses"]


def test_cli_timeline_and_notifications(tmp_path):
    from click.testing import CliRunner

    from cli import create_cli

    path = tmp_path / "shop"

    def crm(*args, ok=True):
        result = CliRunner().invoke(create_cli(path), ["-d", str(path), *args])
        assert "Traceback" not in result.output, result.output
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    crm("init", str(path), "--region", "TR", "--admin-email", "admin@example.com")
    crm("users", "add", "head@example.com", "--name", "Head", "--role", "sales_manager")

    async def seed():
        async with await crmcore.Deployment.open(path) as dep:
            contact = await dep.records.create("contact", {"last_name": "Kaya"})
            await dep.records.create("activity", {"kind": "call", "subject": "Called back", "contact": contact["id"]})
            return contact["id"]

    import asyncio

    contact_id = asyncio.run(seed())
    out = crm("timeline", "contact", str(contact_id))
    assert out.index("Called back") < out.index("Contact created")
    assert "does not exist" in crm("timeline", "contact", "999", ok=False)
    assert "1 notification(s) sent" in crm("notifications", "send", "--role", "sales_manager", "Lead waiting")
    assert "2 notification(s) sent" in crm("notifications", "send", "--user", "head@example.com", "--role", "admin",
                                           "Hi", "body")
    assert "--user" in crm("notifications", "send", "Nobody", ok=False)
