"""The staff's calendar feeds: read back by a second iCalendar parser (vobject) and saved into a
real CalDAV server (Radicale, started here on loopback) through the ``caldav`` client."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import socket
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import caldav
import httpx
import icalendar
import pytest
import vobject

from crmcore.testing import crm_user
from plugins.beauty_salon.entities import WEEKDAYS

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
#: The appointments are booked then, and the feed read at NOW: winter in Berlin (UTC+1).
BOOKED_ON = dt.datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
NOW = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)


def ok(answer, status: int = 200):
    assert answer.status_code == status, answer.text
    return answer.json()


def berlin(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=BERLIN)


@pytest.fixture
def studio(crm_client):
    """An admin's client of a salon in Berlin, its clock at BOOKED_ON, with ``client.staff(name)``
    (who works around the clock), ``client.contact(first, last)``, ``client.book(staff, contact,
    start, [services], status=)`` (through the booking route) and ``client.mark(appointment,
    *statuses, **values)`` (status moves through the generic API)."""
    client = crm_client(plugins=["beauty_salon"], timezone="Europe/Berlin", name="studio-test", in_process_worker=False)
    client.app.state.deployment.clock.set(BOOKED_ON)
    services = {name: ok(client.post("/api/beauty_salon_service", json={
        "name": name, "duration": minutes, "price": {"amount": "40.00", "currency": "EUR"}}), 201)["id"]
        for name, minutes in (("Haircut", 45), ("Colour", 75))}

    def staff(name):
        record = ok(client.post("/api/beauty_salon_staff", json={"name": name}), 201)
        for weekday in WEEKDAYS:
            ok(client.post("/api/beauty_salon_working_hours", json={
                "staff": record["id"], "weekday": weekday, "start_time": "00:00", "end_time": "23:59"}), 201)
        return record

    def contact(first, last):
        return ok(client.post("/api/contact", json={"first_name": first, "last_name": last, "phone": "+49 30 1234567",
                                                    "email": f"{first.lower()}@example.com"}), 201)

    def book(staff, contact, start, names, status="booked"):
        return ok(client.post("/api/beauty_salon/appointments", json={
            "client": contact["id"], "staff": staff["id"], "starts_at": start.isoformat(), "status": status,
            "services": [services[name] for name in names]}), 201)

    def mark(appointment, *statuses, **values):
        for status in statuses:
            version = ok(client.get(f"/api/beauty_salon_appointment/{appointment['id']}"))["version"]
            ok(client.patch(f"/api/beauty_salon_appointment/{appointment['id']}",
                            json={"status": status, "version": version, **values}))

    client.staff, client.contact, client.book, client.mark = staff, contact, book, mark
    return client


def new_feed(client, staff) -> str:
    """The path of a new feed URL for ``staff``."""
    url = ok(client.post(f"/api/beauty_salon/staff/{staff['id']}/feed"))["url"]
    assert re.fullmatch(r"https?://[^/]+/beauty_salon/feeds/[A-Za-z0-9_-]{43}\.ics", url), url
    return url[url.index("/beauty_salon/"):]


@pytest.fixture
def week(studio):
    """Anna's appointments, booked ahead, then the clock moved to NOW: a winter and a summer one
    ahead and one done ten days ago, that hold; a cancelled and a missed one, one more than a year
    ahead, one done 40 days ago; Ben's one. ``(client, Anna's feed path, [winter, summer, recent])``."""
    anna, ben = studio.staff("Anna Schmidt"), studio.staff("Ben Weber")
    ayse, jonas = studio.contact("Ayşe", "Yılmaz"), studio.contact("Jonas", "Becker")
    winter = studio.book(anna, ayse, berlin(2027, 2, 10, 10, 0), ["Haircut", "Colour"], status="confirmed")
    summer = studio.book(anna, jonas, berlin(2027, 7, 15, 10, 0), ["Haircut"])
    cancelled = studio.book(anna, jonas, berlin(2027, 2, 11, 10, 0), ["Haircut"])
    missed = studio.book(anna, jonas, berlin(2027, 2, 12, 10, 0), ["Haircut"])
    studio.book(anna, jonas, berlin(2028, 3, 1, 10, 0), ["Haircut"])
    recent = studio.book(anna, ayse, berlin(2027, 1, 5, 10, 0), ["Haircut"])
    old = studio.book(anna, ayse, berlin(2026, 12, 6, 10, 0), ["Haircut"])
    studio.book(ben, ayse, berlin(2027, 2, 10, 10, 0), ["Colour"])
    studio.app.state.deployment.clock.set(NOW)
    studio.mark(cancelled, "cancelled", cancel_reason="ill")
    studio.mark(missed, "no_show")
    for done in (recent, old):
        studio.mark(done, "arrived", "completed")
    return studio, new_feed(studio, anna), [winter, summer, recent]


def version(client, appointment) -> int:
    return ok(client.get(f"/api/beauty_salon_appointment/{appointment['id']}"))["version"]


def fetch(client, path: str, **headers):
    return client.get(path, headers={"Authorization": "", **headers})


def test_feed_reads_back_in_vobject(week):
    client, path, (winter, summer, recent) = week
    answer = fetch(client, path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/calendar")
    calendar = vobject.readOne(answer.text)
    assert calendar.prodid.value.startswith("-//crmcore//")
    assert calendar.contents["x-wr-calname"][0].value == "Anna Schmidt – studio-test"
    assert calendar.contents["x-wr-timezone"][0].value == "Europe/Berlin"
    events = {event.uid.value: event for event in calendar.vevent_list}
    assert sorted(events) == sorted(f"appointment-{a['id']}@studio-test" for a in (winter, summer, recent))

    first, second = events[f"appointment-{winter['id']}@studio-test"], events[f"appointment-{summer['id']}@studio-test"]
    # 10:00 in Berlin is 09:00 UTC in winter and 08:00 UTC in summer.
    assert first.dtstart.value.astimezone(UTC) == dt.datetime(2027, 2, 10, 9, 0, tzinfo=UTC)
    assert first.dtend.value.astimezone(UTC) == dt.datetime(2027, 2, 10, 11, 0, tzinfo=UTC)
    assert second.dtstart.value.astimezone(UTC) == dt.datetime(2027, 7, 15, 8, 0, tzinfo=UTC)
    assert second.dtend.value.astimezone(UTC) == dt.datetime(2027, 7, 15, 8, 45, tzinfo=UTC)

    assert first.summary.value == "Haircut, Colour – Ayşe Yılmaz"
    assert second.summary.value == "Haircut – Jonas Becker"
    assert "Ayşe Yılmaz" in first.description.value and "Haircut, Colour" in first.description.value
    assert (first.status.value, second.status.value) == ("CONFIRMED", "TENTATIVE")
    assert first.sequence.value == str(version(client, winter) - 1)
    assert first.dtstamp.value.tzinfo is not None and first.contents["last-modified"][0].value.tzinfo is not None
    # The phone calendar gets names and services, not how to reach the client.
    assert "example.com" not in answer.text and "1234567" not in answer.text


def test_a_change_shows_with_a_new_etag_and_sequence(week):
    client, path, (winter, summer, recent) = week
    first = fetch(client, path)
    etag = first.headers["etag"]
    assert fetch(client, path, **{"If-None-Match": etag}).status_code == 304
    assert fetch(client, path, **{"If-None-Match": '"something-else"'}).status_code == 200

    before = version(client, summer)
    client.mark(summer, "confirmed")
    changed = fetch(client, path, **{"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    event = next(e for e in vobject.readOne(changed.text).vevent_list
                 if e.uid.value == f"appointment-{summer['id']}@studio-test")
    assert (event.status.value, event.sequence.value) == ("CONFIRMED", str(before))

    client.mark(winter, "cancelled", cancel_reason="ill")
    uids = [e.uid.value for e in vobject.readOne(fetch(client, path).text).vevent_list]
    assert uids == [f"appointment-{a['id']}@studio-test" for a in (recent, summer)]


def test_only_the_latest_secret_opens_the_feed(studio):
    anna = studio.staff("Anna Schmidt")
    assert fetch(studio, "/beauty_salon/feeds/.ics").status_code == 404
    old = new_feed(studio, anna)
    assert fetch(studio, old).status_code == 200
    new = new_feed(studio, anna)
    assert new != old
    assert fetch(studio, new).status_code == 200
    gone = fetch(studio, old)
    assert gone.status_code == 404 and "Anna" not in gone.text
    assert fetch(studio, new.removesuffix(".ics")).status_code == 404
    assert fetch(studio, "/beauty_salon/feeds/" + "x" * 43 + ".ics").status_code == 404
    # The record keeps the secret's digest: reading it (or its history) gives no working URL.
    record = ok(studio.get(f"/api/beauty_salon_staff/{anna['id']}"))
    secret = new.removeprefix("/beauty_salon/feeds/").removesuffix(".ics")
    assert record["feed_token"] == hashlib.sha256(secret.encode()).hexdigest()
    assert fetch(studio, f"/beauty_salon/feeds/{record['feed_token']}.ics").status_code == 404
    # A guessable secret set by hand opens nothing.
    ok(studio.patch(f"/api/beauty_salon_staff/{anna['id']}", json={
        "feed_token": hashlib.sha256(b"anna").hexdigest(), "version": record["version"]}))
    assert fetch(studio, "/beauty_salon/feeds/anna.ics").status_code == 404


def test_a_staff_member_who_left_loses_the_feed(studio):
    anna = studio.staff("Anna Schmidt")
    path = new_feed(studio, anna)
    assert fetch(studio, path).status_code == 200
    record = ok(studio.get(f"/api/beauty_salon_staff/{anna['id']}"))
    ok(studio.patch(f"/api/beauty_salon_staff/{anna['id']}", json={"active": False, "version": record["version"]}))
    assert fetch(studio, path).status_code == 404


def test_making_a_feed_needs_edit_rights_on_the_staff_record(studio):
    anna = studio.staff("Anna Schmidt")
    reader = crm_user(studio, role="read_only")
    assert studio.post(f"/api/beauty_salon/staff/{anna['id']}/feed", headers=reader.headers).status_code == 403
    assert studio.post(f"/api/beauty_salon/staff/{anna['id']}/feed", headers={"Authorization": ""}).status_code == 401
    assert studio.post("/api/beauty_salon/staff/999999/feed").status_code == 404
    assert ok(studio.get(f"/api/beauty_salon_staff/{anna['id']}"))["feed_token"] is None


def test_the_staff_records_calendar_feed_page(studio):
    anna = studio.staff("Anna Schmidt")
    card = studio.get(f"/beauty_salon_staff/{anna['id']}", headers={"Accept": "text/html"})
    assert card.status_code == 200
    assert "/beauty_salon/feed?entity=beauty_salon_staff&amp;id=" in card.text
    page = studio.get(f"/beauty_salon/feed?entity=beauty_salon_staff&id={anna['id']}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "data-no-feed" in page.text and 'name="_csrf"' in page.text

    made = studio.post("/beauty_salon/feed", data={"id": str(anna["id"])}, headers={"Accept": "text/html"})
    assert made.status_code == 200
    path = re.search(r'value="https?://[^/"]+(/beauty_salon/feeds/[A-Za-z0-9_-]{43}\.ics)"', made.text)[1]
    assert fetch(studio, path).status_code == 200
    again = studio.get(f"/beauty_salon/feed?id={anna['id']}", headers={"Accept": "text/html"})
    assert "data-feed-exists" in again.text and path not in again.text
    remade = studio.post("/beauty_salon/feed", data={"id": str(anna["id"])}, headers={"Accept": "text/html"})
    assert path not in remade.text and fetch(studio, path).status_code == 404
    reader = crm_user(studio, role="read_only")
    seen = studio.get(f"/beauty_salon/feed?id={anna['id']}", headers={"Accept": "text/html", **reader.headers})
    assert seen.status_code == 200 and 'action="/beauty_salon/feed"' not in seen.text


# -- a real CalDAV server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    """A Radicale server on a free loopback port, storing into a temporary folder, any login
    accepted; its URL. Stopped at the end of the module."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("radicale")
    server = subprocess.Popen([
        sys.executable, "-m", "radicale", "--server-hosts", f"127.0.0.1:{port}",
        "--storage-filesystem-folder", str(folder / "collections"), "--auth-type", "none",
        "--rights-type", "owner_only", "--logging-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("Radicale did not start: " + server.stdout.read().decode()) from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(10)


def test_each_event_saves_into_a_caldav_server(week, radicale, crm_backend):
    client, path, (winter, summer, recent) = week
    feed = icalendar.Calendar.from_ical(fetch(client, path).content)
    zones = feed.walk("VTIMEZONE")
    dav = caldav.DAVClient(url=radicale, username=f"anna-{crm_backend.name}", password="x", require_tls=False,
                           enable_rfc6764=False)
    calendar = dav.principal().make_calendar(name="Anna")
    for event in feed.walk("VEVENT"):
        single = icalendar.Calendar()
        single.add("prodid", feed["PRODID"])
        single.add("version", "2.0")
        for zone in zones:
            single.add_component(zone)
        single.add_component(event)
        calendar.save_event(single.to_ical().decode())

    stored = {str(e.icalendar_component["UID"]): e.icalendar_component["DTSTART"].dt for e in calendar.events()}
    assert stored.keys() == {f"appointment-{a['id']}@studio-test" for a in (winter, summer, recent)}
    assert stored[f"appointment-{winter['id']}@studio-test"] == dt.datetime(2027, 2, 10, 9, 0, tzinfo=UTC)
    assert stored[f"appointment-{summer['id']}@studio-test"] == dt.datetime(2027, 7, 15, 8, 0, tzinfo=UTC)
    assert str(calendar.event_by_uid(f"appointment-{summer['id']}@studio-test").icalendar_component["SUMMARY"]) \
        == "Haircut – Jonas Becker"
