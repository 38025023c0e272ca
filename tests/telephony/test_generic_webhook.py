"""The telephony plugin end to end through its generic PBX webhook: calls, leads, tasks,
screen-pops, routing, missed calls and call backs, rules, bad and repeated requests."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time

from crmcore.testing import crm_user
from plugins.telephony.calls import calls_of

from ..conftest import problem
from .conftest import WEBHOOK, _calls, _line, _tasks, signed


def test_an_unknown_caller_becomes_a_lead_with_a_task_and_pops_up_for_the_extension(phone_client):
    client = phone_client()
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "101")
    bus_events = []

    async def listen():
        async for event in calls_of(client.dep).live.listen(agent.id):
            bus_events.append(event)
            return

    task = client.blocking_portal.start_task_soon(listen)
    client.blocking_portal.call(asyncio.sleep, 0.05)
    answer = client.pbx.send(event="ringing", call_id="c1", **{"from": "0532 123 45 67"}, to="+90 232 000 00 00",
                             extension="101")
    task.result(timeout=5)
    [call] = _calls(client)
    assert answer["calls"] == [call["id"]]
    assert (call["direction"], call["status"], call["user"], call["extension"]) == ("inbound", "ringing", agent.id, "101")
    assert call["from_number"] == {"e164": "+905321234567", "raw": "0532 123 45 67"}
    lead = client.get(f"/api/contact/{call['contact']}").json()
    assert lead["phone"]["e164"] == "+905321234567" and lead["source"] == "phone call" and lead["owner_id"] == agent.id
    [fill_in] = _tasks(client, kind="task")
    assert fill_in["contact"] == lead["id"] and fill_in["assignee"] == agent.id and "0532 123 45 67" in fill_in["subject"]
    assert bus_events == [{"type": "ringing", "call": call["id"], "number": "0532 123 45 67", "extension": "101",
                           "record": {"entity": "contact", "id": lead["id"], "title": lead["last_name"],
                                      "url": f"/contact/{lead['id']}", "new": True}}]
    timeline = client.get(f"/api/contact/{lead['id']}/timeline").json()["items"]
    assert [(i["kind"], i["source"]) for i in timeline if i["kind"] == "call"] == [("call", "telephony")]


def test_a_known_caller_is_routed_to_the_owner_answered_and_logged(phone_client):
    client = phone_client(region="RU")
    owner = crm_user(client, role="agent")
    other = crm_user(client, role="agent")
    _line(client, owner.id, "201")
    _line(client, other.id, "202")
    company = client.post("/api/company", json={"name": "Vostok"}).json()
    contact = client.post("/api/contact", json={"last_name": "Ivanov", "phone": "+7 532 1234567",
                                                "company": company["id"], "owner_id": owner.id}).json()
    incoming = client.pbx.send(event="incoming", call_id="leg-1", linked_id="call-9", **{"from": "8 (532) 123-45-67"},
                               to="+7 495 000 00 00")
    assert incoming["route"] == "201"  # the caller's owner's extension rings first
    asked = client.get("/api/telephony/route", params={"number": "8 (532) 123-45-67"}).json()  # a dialplan asks
    assert asked == {"extension": "201", "user": owner.id, "record": {"entity": "contact", "id": contact["id"],
                                                                      "title": "Ivanov"}}
    text = client.get("/api/telephony/route", params={"number": "+7 532 1234567", "format": "text"})
    assert (text.text, text.headers["content-type"].split(";")[0]) == ("201", "text/plain")
    assert client.get("/api/telephony/route", params={"number": "+7 999 0000000", "format": "text"}).text == ""
    problem(client.get("/api/telephony/route", params={"number": "nobody"}), 422, "number")
    client.pbx.send(event="ringing", call_id="leg-2", linked_id="call-9", extension="202")
    client.pbx.send(event="answered", call_id="leg-2", linked_id="call-9", extension="202",
                    at="2026-11-25T10:00:00Z")
    client.pbx.send(event="ended", call_id="leg-2", linked_id="call-9", at="2026-11-25T10:02:05Z",
                    recording_url="https://pbx.example.com/rec/9.wav")
    [call] = _calls(client)  # the legs of one call are one record
    assert (call["contact"], call["company"], call["user"], call["status"], call["duration"]) == (
        contact["id"], company["id"], other.id, "answered", 125)
    assert call["from_number"]["e164"] == "+75321234567" and call["linked_id"] == "call-9"
    assert call["recording_url"] == "https://pbx.example.com/rec/9.wav"
    assert client.get("/api/contact", params={"count": 1}).json()["total"] == 1  # no lead for a known caller
    assert _tasks(client) == []
    for entity, record in (("contact", contact), ("company", company)):
        items = client.get(f"/api/{entity}/{record['id']}/timeline").json()["items"]
        [item] = [i for i in items if i["kind"] == "call"]
        assert item["data"]["recording_url"].endswith("9.wav") and item["body"] == "2:05"
    html = client.get(f"/contact/{contact['id']}", headers={"accept": "text/html"}).text
    assert 'data-testid="calls-panel"' in html and 'src="https://pbx.example.com/rec/9.wav"' in html
    assert 'data-related="telephony_call"' not in html  # the panel stands in for the core's plain list
    assert 'data-related="contact"' in client.get(f"/company/{company['id']}", headers={"accept": "text/html"}).text
    assert '<script src="/static/plugins/telephony/telephony.js" defer>' in html  # screen-pop on every page


def test_a_missed_call_makes_a_call_back_task_that_an_answered_call_back_closes(phone_client):
    client = phone_client(callback_due="45m")
    owner = crm_user(client, role="agent")
    _line(client, owner.id, "301")
    contact = client.post("/api/contact", json={"last_name": "Kaya", "mobile": "+90 533 111 22 33",
                                                "owner_id": owner.id}).json()
    for rule in ({"name": "missed", "entity": "telephony_call",
                  "trigger": {"type": "event", "event": "telephony.call.missed"},
                  "actions": [{"type": "notify", "to": "owner", "title": "Missed {{ record.caller_id }}"}]},
                 {"name": "answered", "entity": "telephony_call",
                  "trigger": {"type": "event", "event": "telephony.call.answered"},
                  "actions": [{"type": "set_field", "field": "notes", "value": "answered"}]}):
        assert client.post("/api/automation/rules", json=rule).status_code == 201
    client.pbx.send(event="ringing", call_id="m1", **{"from": "0533 111 22 33"}, extension="301",
                    at="2026-11-25T09:00:00Z")
    client.pbx.send(event="ended", call_id="m1", at="2026-11-25T09:00:30Z")
    client.pbx.send(event="ended", call_id="m1", at="2026-11-25T09:00:31Z")  # delivered twice
    [missed] = _calls(client)
    assert (missed["status"], missed["duration"], missed["called_back"]) == ("missed", 0, False)
    [task] = _tasks(client, kind="call")
    assert task["assignee"] == owner.id and task["contact"] == contact["id"] and not task["done"]
    assert task["due_at"].startswith("2026-11-25T09:45:30") and missed["callback_task"] == task["id"]
    notes = client.get("/api/notifications", headers=owner.headers).json()["items"]
    assert [n["title"] for n in notes] == ["Missed 0533 111 22 33"]
    report = client.post("/api/reports/telephony.missed_not_called_back/run", json={}).json()
    assert [(r["owner_id"], r["count"]) for r in report["rows"]] == [(owner.id, 1)]
    dashboard = client.get("/", headers={"accept": "text/html", **owner.headers}).text
    assert re.search(r'data-testid="missed-count">1<', dashboard)  # the owner's dashboard widget
    # the owner calls back and the client answers
    client.pbx.send(event="ringing", call_id="o1", direction="outbound", **{"from": "301"}, to="0533 111 22 33",
                    extension="301")
    client.pbx.send(event="answered", call_id="o1", direction="outbound", extension="301")
    back = {c["call_id"]: c for c in _calls(client)}["o1"]
    assert back["contact"] == contact["id"] and back["notes"] == "answered" and back["to_number"]["e164"] == "+905331112233"
    assert client.get(f"/api/activity/{task['id']}").json()["done"] is True
    assert client.get(f"/api/telephony_call/{missed['id']}").json()["called_back"] is True
    assert client.post("/api/reports/telephony.missed_not_called_back/run", json={}).json()["rows"] == []


def test_repeated_and_replayed_deliveries_change_nothing(phone_client):
    client = phone_client()
    body = json.dumps({"event": "ended", "call_id": "r1", "from": "+90 532 999 88 77", "status": "busy"}).encode()
    headers = signed(body)
    assert client.post(WEBHOOK, content=body, headers=headers).status_code == 200
    problem(client.post(WEBHOOK, content=body, headers=headers), 409, detail="received already")
    again = client.post(WEBHOOK, content=body, headers=signed(body, at=int(time.time()) + 1))  # the PBX retries
    assert again.status_code == 200 and again.json()["calls"] == [_calls(client)[0]["id"]]
    assert len(_calls(client)) == 1
    assert len(_tasks(client, kind="call")) == 1 and len(_tasks(client, kind="task")) == 1
    assert client.get("/api/contact", params={"count": 1}).json()["total"] == 1


def test_bad_requests_get_clear_answers_and_change_nothing(phone_client, crm_client):
    client = phone_client()
    body = json.dumps({"event": "ringing", "call_id": "b1", "from": "+90 532 999 88 77"}).encode()
    problem(client.post(WEBHOOK, content=body, headers={"content-type": "application/json"}), 403)
    wrong = signed(body, secret="not-the-secret")
    problem(client.post(WEBHOOK, content=body, headers=wrong), 403, detail="signature")
    stale = signed(body, at=int(dt.datetime.now().timestamp()) - 3600)
    problem(client.post(WEBHOOK, content=body, headers=stale), 403, detail="five minutes")
    tampered = signed(body)
    problem(client.post(WEBHOOK, content=body.replace(b"b1", b"b2"), headers=tampered), 403)
    problem(client.pbx.post({"event": "ringing"}), 422, "call_id")
    problem(client.pbx.post({"event": "exploded", "call_id": "b3"}), 422, "event")
    problem(client.pbx.post({"event": "ended", "call_id": "b3", "status": "lost"}), 422, "status")
    problem(client.pbx.post({"event": "ringing", "call_id": "b3", "colour": "red"}), 422)
    problem(client.pbx.post([{"event": "ringing", "call_id": "b4"}, {"event": "ringing"}]), 422, "events[1].call_id")
    problem(client.pbx.post({"event": "recording", "call_id": "never", "recording_url": "https://x.example/r.wav"}),
            422, "call_id")
    problem(client.pbx.post([{"event": "ringing", "call_id": "b6", "from": "+90 532 999 88 77"},
                             {"event": "recording", "call_id": "b7", "recording_url": "https://x.example/r.wav"}]),
            422, "events[1].call_id")  # refused whole: the first event is not applied either
    huge = json.dumps({"event": "ringing", "call_id": "b5", "notes": "x" * 100_000}).encode()
    problem(client.post(WEBHOOK, content=huge, headers=signed(huge)), 413)
    problem(client.post("/api/telephony/webhooks/nope", content=body, headers=signed(body)), 404)
    problem(client.post(WEBHOOK, content=b"{not json", headers=signed(b"{not json")), 422, "body")
    assert _calls(client) == [] and client.get("/api/contact").json()["items"] == []
    unconfigured = crm_client(plugins=["telephony"], in_process_worker=False)
    problem(unconfigured.post(WEBHOOK, content=body, headers=signed(body)), 404, detail="not configured")


def test_a_caller_is_found_in_any_phone_field_and_calls_are_placed_or_dialled(phone_client):
    client = phone_client()
    added = client.post("/api/meta/entities/deal/fields", json={"name": "site_phone", "type": "phone"})
    assert added.status_code == 201, added.text
    deal = client.post("/api/deal", json={"name": "Windows", "site_phone": "0232 444 55 66"}).json()
    found = client.get("/api/telephony/lookup", params={"number": "+90 232 444 55 66"}).json()
    assert [(m["entity"], m["id"], m["field"]) for m in found] == [("deal", deal["id"], "site_phone")]
    client.pbx.send(event="ended", call_id="d1", **{"from": "+902324445566"}, status="missed")
    [call] = _calls(client)
    assert call["deal"] == deal["id"] and call["contact"] is None
    problem(client.get("/api/telephony/lookup", params={"number": "call me"}), 422, "number")
    # no provider configured: the browser dials the tel: link itself
    assert client.post("/api/telephony/calls", json={"number": "0532 123 45 67"}).json() == {
        "placed": False, "tel": "tel:+905321234567", "number": "+905321234567"}
    problem(client.post("/api/telephony/calls", json={"number": "nope"}), 422, "number")
    reader = crm_user(client, role="read_only")
    problem(client.post("/api/telephony/calls", json={"number": "0532 123 45 67"}, headers=reader.headers), 403)
    providers = {p["name"]: p for p in client.get("/api/telephony/providers").json()}
    assert providers["generic"]["places_calls"] is False


def test_the_plugin_reports_run(phone_client):
    client = phone_client()
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "401")
    client.pbx.send(event="answered", call_id="p1", **{"from": "+90 532 000 00 01"}, extension="401",
                    at="2026-11-25T08:00:00Z")
    client.pbx.send(event="ended", call_id="p1", at="2026-11-25T08:01:40Z")
    client.pbx.send(event="ended", call_id="p2", **{"from": "+90 532 000 00 02"}, extension="401", status="missed")
    run = lambda name: client.post(f"/api/reports/telephony.{name}/run", json={}).json()  # noqa: E731
    assert sorted((r["status"], r["count"]) for r in run("answered_missed")["rows"]) == [("answered", 1), ("missed", 1)]
    [average] = run("average_duration")["rows"]
    assert (average["user"], float(average["avg_duration"]), average["count"]) == (agent.id, 100.0, 1)
    rows = run("calls_per_user_day")["rows"]
    assert sum(r["count"] for r in rows if r["user"] == agent.id) == 2


def test_events_of_one_call_arriving_together_make_one_call_and_one_task(phone_client):
    from plugins.telephony.calls import CallEvent

    client = phone_client()
    service = calls_of(client.dep)

    async def together():
        events = [CallEvent(provider="generic", kind="ended", call_id=f"leg-{n}", linked_id="same-call",
                            from_number="+90 532 777 66 55", status="missed") for n in range(4)]
        return await asyncio.gather(*(service.ingest(e) for e in events))

    results = client.blocking_portal.call(together)
    assert len({r.call["id"] for r in results}) == 1 and sum(r.changed for r in results) == 1
    assert len(_calls(client)) == 1 and len(_tasks(client, kind="call")) == 1
    assert client.get("/api/contact", params={"count": 1}).json()["total"] == 1


def test_a_call_pops_up_once_per_user_it_rings_for(phone_client):
    client = phone_client()
    first, second = crm_user(client, role="agent"), crm_user(client, role="agent")
    _line(client, first.id, "501")
    _line(client, second.id, "502")
    bus = calls_of(client.dep).live
    seen: dict[int, list] = {first.id: [], second.id: []}

    async def listen(user_id):
        async for event in bus.listen(user_id):
            if event.get("type") == "done":
                return
            seen[user_id].append(event["extension"])

    tasks = [client.blocking_portal.start_task_soon(listen, user) for user in seen]
    client.blocking_portal.call(asyncio.sleep, 0.05)
    try:
        client.pbx.send(event="ringing", call_id="p1", **{"from": "+90 532 111 00 00"}, extension="501")
        client.pbx.send(True, event="ringing", call_id="p1", **{"from": "+90 532 111 00 00"}, extension="501")
        client.pbx.send(event="ringing", call_id="p1", **{"from": "+90 532 111 00 00"}, extension="502")  # moved on
    finally:
        async def done():  # on the server's loop: its queues are not thread-safe
            for user in seen:
                bus.publish(user, {"type": "done"})

        client.blocking_portal.call(done)
        for task in tasks:
            task.result(timeout=5)
    assert seen == {first.id: ["501"], second.id: ["502"]}


def test_a_lead_made_before_an_extension_rang_goes_to_who_gets_the_call(phone_client):
    client = phone_client()
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "601")
    client.pbx.send(event="incoming", call_id="h1", **{"from": "+90 532 444 33 22"})  # a hunt group: no extension yet
    [call] = _calls(client)
    lead = client.get(f"/api/contact/{call['contact']}").json()
    assert lead["owner_id"] is None and call["new_caller"] is True
    client.pbx.send(event="ringing", call_id="h1", extension="601")
    assert client.get(f"/api/contact/{lead['id']}").json()["owner_id"] == agent.id
    [fill_in] = _tasks(client, kind="task")
    assert fill_in["assignee"] == agent.id and fill_in["contact"] == lead["id"]
