"""Appointment reminders, on SQLite and PostgreSQL, with the controllable clock: rules made over
the API only (the core's date trigger on ``starts_at`` and the action
``beauty_salon.send_reminder``) remind 24 h and 2 h before, at that time and not before, once;
a reschedule moves them, a cancel drops them; a provider plugin gets the rendered text and the
client's normalised phone; without one, the client is e-mailed through a real SMTP server."""

from __future__ import annotations

import datetime as dt
from email.header import decode_header, make_header

import pytest

import crmcore
from crmcore import hookimpl

from ..test_timeline import smtp_sink  # noqa: F401 (a fixture: a local aiosmtpd server)
from .conftest import NOW, at, ok, problem

TOMORROW = (NOW + dt.timedelta(days=1)).date()  # NOW is Monday 09:00 in Berlin
TEXT = ("Hello {{ record.client_name }}, see you {{ record.starts_at }} for {{ record.services }} "
        "with {{ record.staff_name }}.")


class Sms:
    """A messaging provider, as a third party writes one: it takes messages with a phone."""

    PLUGIN = crmcore.PluginInfo(name="sms_test", version="1.0", description="messages in a list")

    def __init__(self, fail: int = 0):
        self.sent: list = []
        self.fail = fail

    @hookimpl
    async def beauty_salon_send_message(self, message):
        if message.phone is None:
            return None
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the SMS gateway is down")
        self.sent.append(message)
        return f"sms-{len(self.sent)}"


def _rules(s, *offsets: str, condition=None) -> None:
    for offset in offsets:
        ok(s.client.post("/api/automation/rules", json={
            "name": f"reminder{offset}", "entity": "beauty_salon_appointment", "condition": condition,
            "trigger": {"type": "date", "field": "starts_at", "offset": offset},
            "actions": [{"type": "beauty_salon.send_reminder", "text": TEXT,
                         "subject": "Your appointment {{ record.starts_at }}"}]}), 201)
    # A new date rule times the appointments already there in a job, run now as a worker would
    # (left until their time, it would time an appointment whose firing is running again).
    _run(s, s.client.dep.clock.now())


def _run(s, until: dt.datetime) -> None:
    """Move the clock and run every job due by then."""
    s.client.dep.clock.set(until)
    while s.client.blocking_portal.call(s.client.dep.jobs.run_due):
        pass


def plain(text: str) -> str:
    """Babel puts a narrow no-break space before PM."""
    return text.replace("\u202f", " ")


def _before(start: str, hours: int, minutes: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(start) - dt.timedelta(hours=hours, minutes=minutes)


@pytest.fixture
def sms():
    return Sms()


def test_reminders_fire_24h_and_2h_before_and_follow_a_reschedule(salon, sms):
    s = salon(extra_plugins=[sms])
    ok(s.client.patch(f"/api/contact/{s.client_id}", json={"mobile": "0151 2345 6789", "email": "clara@example.com"}))
    _rules(s, "-24h", "-2h")
    start = at(TOMORROW, "15:00")
    booked = ok(s.book(start, s.cut, s.nails, staff=s.anna), 201)
    _run(s, _before(start, 24, 1))
    assert sms.sent == []  # a minute early: nothing
    _run(s, _before(start, 24))
    [first] = sms.sent
    assert plain(first.text) == "Hello Clara Kunde, see you Feb 2, 2027 3:00 PM for Cut, Nails with Anna."
    assert first.phone == "+4915123456789" and first.email == "clara@example.com"
    assert plain(first.subject) == "Your appointment Feb 2, 2027 3:00 PM" and first.name == "Clara Kunde"
    assert (first.appointment, first.client, first.rule) == (booked["id"], s.client_id, "reminder-24h")
    assert first.starts_at == dt.datetime.fromisoformat(start).astimezone(dt.UTC)
    _run(s, _before(start, 2, 1))
    assert len(sms.sent) == 1
    # Moved an hour later before the 2-hour reminder: it comes at 14:00, not 13:00.
    later = at(TOMORROW, "16:00")
    ok(s.client.patch(f"/api/beauty_salon/appointments/{booked['id']}", json={"version": booked["version"],
                                                                              "starts_at": later}))
    _run(s, _before(later, 2, 1))
    assert len(sms.sent) == 1
    _run(s, _before(later, 2))
    assert [plain(m.text) for m in sms.sent[1:]] == ["Hello Clara Kunde, see you Feb 2, 2027 4:00 PM for Cut, Nails with Anna."]
    _run(s, dt.datetime.fromisoformat(later) + dt.timedelta(days=2))
    assert len(sms.sent) == 2  # each reminder once
    firings = ok(s.client.get("/api/automation/firings"))
    assert sorted(f["outcome"] for f in firings) == ["done", "done"]


def test_a_moved_24h_reminder_goes_at_the_new_time(salon, sms):
    s = salon(extra_plugins=[sms])
    ok(s.client.patch(f"/api/contact/{s.client_id}", json={"phone": "+49 30 1234567"}))
    _rules(s, "-24h")
    start, later = at(TOMORROW, "15:00"), at(TOMORROW + dt.timedelta(days=1), "10:00")
    booked = ok(s.book(start, staff=s.anna), 201)
    ok(s.client.patch(f"/api/beauty_salon/appointments/{booked['id']}", json={"version": booked["version"],
                                                                              "starts_at": later}))
    _run(s, _before(start, 24))
    assert sms.sent == []  # the old time is not reminded of
    _run(s, _before(later, 24))
    assert [m.phone for m in sms.sent] == ["+49301234567"]


def test_cancelled_appointments_are_not_reminded(salon, sms):
    s = salon(extra_plugins=[sms])
    ok(s.client.patch(f"/api/contact/{s.client_id}", json={"mobile": "0151 2345 6789"}))
    _rules(s, "-24h")
    _rules(s, "-2h", condition={"field": "status", "op": "in", "value": ["booked", "confirmed"]})
    start, later = at(TOMORROW, "15:00"), at(TOMORROW, "16:00")
    cancelled = ok(s.book(start, staff=s.anna), 201)
    booked = ok(s.book(later, s.nails, staff=s.ben), 201)
    ok(s.client.patch(f"/api/beauty_salon_appointment/{cancelled['id']}", json={"status": "cancelled",
                                                                                 "cancel_reason": "ill"}))
    s.client.dep.clock.set(_before(later, 24))
    assert s.client.blocking_portal.call(s.client.dep.jobs.run_due) == 2  # the firings: one sending queued
    # Cancelled after its sending was queued, before it ran: not sent either.
    ok(s.client.patch(f"/api/beauty_salon_appointment/{booked['id']}", json={"status": "cancelled",
                                                                              "cancel_reason": "moved away"}))
    _run(s, dt.datetime.fromisoformat(later) + dt.timedelta(days=1))
    assert sms.sent == []
    # Each rule fired for each appointment; only the one not yet cancelled then queued a message.
    # The 2-hour rule's condition skips them; the 24-hour one's action does.
    firings = {(f["rule"], f["record_id"]): f for f in ok(s.client.get("/api/automation/firings"))}
    assert [firings[("reminder-2h", a["id"])]["outcome"] for a in (cancelled, booked)] == ["skipped", "skipped"]
    assert firings[("reminder-24h", cancelled["id"])]["results"] == [{"skipped": "the appointment is cancelled"}]
    assert firings[("reminder-24h", booked["id"])]["results"][0]["phone"] == "+4915123456789"


def test_a_failing_provider_is_retried_and_never_fails_the_rule(salon):
    sms = Sms(fail=1)
    s = salon(extra_plugins=[sms])
    ok(s.client.patch(f"/api/contact/{s.client_id}", json={"mobile": "0151 2345 6789"}))
    _rules(s, "-2h")
    start = at(TOMORROW, "15:00")
    ok(s.book(start, staff=s.anna), 201)
    _run(s, _before(start, 2))
    assert sms.sent == []
    assert [f["outcome"] for f in ok(s.client.get("/api/automation/firings"))] == ["done"]
    _run(s, _before(start, 2) + dt.timedelta(minutes=1))  # the retry, 30 s later
    assert len(sms.sent) == 1


def test_without_a_provider_the_client_is_emailed(salon, smtp_sink):  # noqa: F811
    s = salon(smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_from="salon@example.com", smtp_starttls=False)
    ok(s.client.patch(f"/api/contact/{s.client_id}", json={"email": "clara@example.com"}))
    _rules(s, "-24h")
    start = at(TOMORROW, "15:00")
    ok(s.book(start, staff=s.anna), 201)
    _run(s, _before(start, 24))
    [message] = smtp_sink.messages
    assert message["To"] == "clara@example.com" and message["From"] == "salon@example.com"
    assert plain(str(make_header(decode_header(message["Subject"])))) == "Your appointment Feb 2, 2027 3:00 PM"
    assert plain(message.get_payload(decode=True).decode()).strip() == \
        "Hello Clara Kunde, see you Feb 2, 2027 3:00 PM for Cut with Anna."


def test_a_message_nobody_can_send_is_a_failed_job_and_an_unreachable_client_a_failed_firing(salon):
    s = salon()
    _rules(s, "-24h")
    start = at(TOMORROW, "15:00")
    ok(s.book(start, staff=s.anna), 201)
    _run(s, _before(start, 24))
    [firing] = ok(s.client.get("/api/automation/firings"))
    assert firing["outcome"] == "failed" and "neither a phone number nor an e-mail" in firing["error"]
    ok(s.client.patch(f"/api/contact/{s.client_id}", json={"email": "clara@example.com"}))
    later = ok(s.book(at(TOMORROW, "16:00"), s.nails, staff=s.ben), 201)
    _run(s, _before(at(TOMORROW, "16:00"), 24))
    [job] = s.client.blocking_portal.call(lambda: s.client.dep.jobs.list(kind="beauty_salon.send_message"))
    assert job.payload["appointment"] == later["id"] and "no SMTP server" in job.last_error


def test_the_action_is_checked_when_the_rule_is_saved(salon):
    s = salon()

    def refused(action, entity="beauty_salon_appointment"):
        return problem(s.client.post("/api/automation/rules", json={
            "name": "r", "entity": entity, "trigger": {"type": "created"},
            "actions": [{"type": "beauty_salon.send_reminder", **action}]}))

    assert refused({}) == {"actions[0].text": "required"}
    assert refused({"text": "Hi {{ record.client_name"}) == {"actions[0].text": "invalid"}
    assert refused({"text": "Hi", "subject": ""}) == {"actions[0].subject": "invalid"}
    assert refused({"text": "Hi", "to": "x"}) == {"actions[0].to": "unknown_field"}
    assert refused({"text": "Hi"}, entity="contact") == {"actions[0]": "invalid"}
