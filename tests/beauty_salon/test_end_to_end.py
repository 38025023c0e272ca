"""Issue 9's "done means", through HTTP: booked online -> confirmed by the link -> the reminder
fires at its time (the controllable clock) through a messaging provider -> arrived ->
completed -> the client's metrics on their card; a taken and an out-of-hours start refused."""

from __future__ import annotations

import datetime as dt

from lxml import html

from .conftest import at, ok, problem
from .test_online import ANON, TUESDAY, manage_link, visit
from .test_reminders import Sms, _before, _rules, _run, plain


def test_booked_online_reminded_arrived_completed_and_counted(salon):
    sms = Sms()
    s = salon(extra_plugins=[sms])
    _rules(s, "-24h")
    start = at(TUESDAY, "10:00")
    link = manage_link(visit(s, start))  # a visitor, not signed in, books a cut with anyone
    [booked] = ok(s.client.get("/api/beauty_salon_appointment"))["items"]
    client = booked["client"]
    assert (booked["status"], booked["source"]) == ("booked", "online")

    # the same start again: taken (the only staff member doing cuts then is Anna's, booked)
    again = visit(s, start, staff=s.anna, phone="0170 1111111", name="Other Person", email="")
    assert again.status_code == 409 and "just been taken" in again.text
    free = ok(s.client.get("/api/beauty_salon/availability", params={
        "service": s.cut["id"], "staff": s.anna["id"], "from": TUESDAY.isoformat(), "to": TUESDAY.isoformat()}))
    assert start not in str(free) and at(TUESDAY, "11:00") in str(free)  # the taken start is not offered
    refused = problem(s.client.post("/api/beauty_salon/appointments", json={
        "client": client, "staff": s.anna["id"], "services": [s.cut["id"]], "starts_at": at(TUESDAY, "22:00")}))
    assert "starts_at" in refused

    confirmed = s.client.post(link, data={"action": "confirm"}, headers=ANON)
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert ok(s.client.get(f"/api/beauty_salon_appointment/{booked['id']}"))["status"] == "confirmed"

    _run(s, _before(start, 24, 1))
    assert sms.sent == []
    _run(s, _before(start, 24))
    [reminder] = sms.sent
    assert reminder.phone == "+4915123456789" and "Deniz Aydın" in plain(reminder.text)

    _run(s, dt.datetime.fromisoformat(start))
    current = ok(s.client.get(f"/api/beauty_salon_appointment/{booked['id']}"))
    for status in ("arrived", "completed"):
        current = ok(s.client.patch(f"/api/beauty_salon_appointment/{booked['id']}",
                                    json={"status": status, "version": current["version"]}))
    contact = ok(s.client.get(f"/api/contact/{client}"))
    assert (contact["salon_visits"], contact["salon_no_shows"]) == (1, 0)
    assert contact["salon_total_spent"]["amount"] == current["price"]["amount"]
    card = html.fromstring(s.client.get(f"/contact/{client}", headers={"accept": "text/html"}).text)
    assert card.xpath("//*[@data-testid='salon-metrics']//*[@data-testid='salon_visits']/text()") == ["1"]
