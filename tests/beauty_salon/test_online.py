"""The public online booking page, through HTTP without logging in: the client found by a phone
typed another way, the honeypot, the rate limit, a taken start, and the secret manage link
(confirm, cancel and move before the cut-off, refused after it, unknown tokens)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest

from ..test_timeline import smtp_sink  # noqa: F401 (a fixture: a local aiosmtpd server)
from .conftest import at, ok

#: Within the page's two weeks from NOW (Monday 2027-02-01, 09:00 in Berlin).
TUESDAY = dt.date(2027, 2, 2)
WEDNESDAY = dt.date(2027, 2, 3)
LINK = re.compile(r'id="manage-link" href="[^"]*(/book/a/[A-Za-z0-9_-]+)"')


#: A visitor's request: no credentials (the client's own are the admin's).
ANON = {"Authorization": ""}


@pytest.fixture
def shop(salon):
    return salon()


def visit(shop, start: str, *, service=None, staff=None, **details):
    form = {"service": str((service or shop.cut)["id"]), "staff": str(staff["id"]) if staff else "", "slot": start,
            "name": "Deniz Aydın", "phone": "0151 2345 6789", "email": "deniz@example.com", "note": "", "_gotcha": "",
            **details}
    return shop.client.post("/book", data=form, headers=ANON)


def appointments(shop) -> list[dict]:
    return ok(shop.client.get("/api/beauty_salon_appointment?sort=id"))["items"]


def contacts(shop, phone: str) -> list[dict]:
    return ok(shop.client.get("/api/contact", params={"phone": phone}))["items"]


def manage_link(answer) -> str:
    assert answer.status_code == 200, answer.text
    return LINK.search(answer.text).group(1)


def test_the_page_offers_online_services_and_their_free_times(shop):
    shop.make("service", name="Bridal make-up", duration=120, price={"amount": "200.00", "currency": "EUR"}, online=False)
    page = shop.client.get("/book", headers=ANON)
    assert page.status_code == 200 and "Cut" in page.text and "Bridal" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    times = shop.client.get("/book", headers=ANON, params={"service": shop.cut["id"], "day": TUESDAY.isoformat()}).text
    assert f'value="{at(TUESDAY, "09:00")}"' in times and f'value="{at(TUESDAY, "13:00")}"' not in times


def test_a_booking_creates_the_client_and_a_phone_typed_otherwise_finds_them(shop):
    thanks = visit(shop, at(TUESDAY, "10:00"))
    assert "Thank you" in thanks.text and manage_link(thanks)
    [booked] = appointments(shop)
    assert (booked["status"], booked["source"], booked["staff"]) == ("booked", "online", shop.anna["id"])
    [client] = contacts(shop, "+4915123456789")
    assert (client["first_name"], client["last_name"], client["source"]) == ("Deniz", "Aydın", "online")
    assert booked["client"] == client["id"]

    manage_link(visit(shop, at(TUESDAY, "11:00"), phone="+49 151 23456789", email="", staff=shop.ben))
    second = appointments(shop)[1]
    assert (second["client"], second["staff"]) == (client["id"], shop.ben["id"])
    assert len(contacts(shop, "+4915123456789")) == 1


def test_the_link_is_emailed_when_the_salon_has_an_smtp_server(salon, smtp_sink):  # noqa: F811
    shop = salon(smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_from="salon@example.com", smtp_starttls=False,
                 base_url="https://salon.example.com")
    thanks = visit(shop, at(TUESDAY, "10:00"))
    path = manage_link(thanks)
    assert "We sent the link to your e-mail" in thanks.text
    [message] = smtp_sink.messages
    assert (message["To"], message["From"]) == ("deniz@example.com", "salon@example.com")
    assert f"https://salon.example.com{path}" in message.get_payload(decode=True).decode()
    assert shop.client.get(path, headers=ANON).status_code == 200


def test_a_phone_that_is_no_number_is_refused_naming_it(shop):
    answer = visit(shop, at(TUESDAY, "10:00"), phone="call me")
    assert answer.status_code == 422 and 'class="field-error"' in answer.text
    assert appointments(shop) == []


def test_a_filled_honeypot_books_nothing(shop):
    answer = visit(shop, at(TUESDAY, "10:00"), _gotcha="http://spam.example")
    assert answer.status_code == 200 and "manage-link" not in answer.text
    assert appointments(shop) == [] and contacts(shop, "+4915123456789") == []


def test_too_many_bookings_from_one_address_get_429(shop):
    for _ in range(5):
        assert visit(shop, at(TUESDAY, "10:00"), _gotcha="x").status_code == 200
    refused = visit(shop, at(TUESDAY, "10:00"))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "Too many bookings" in refused.text and appointments(shop) == []


def test_an_address_books_at_most_five_times_an_hour(shop):
    for hour in ("09:00", "10:00", "11:00", "14:00", "15:00"):
        manage_link(visit(shop, at(TUESDAY, hour)))
        shop.client.dep.clock.advance(minutes=5)  # slower than the form's per-minute limit
    refused = visit(shop, at(TUESDAY, "16:00"))
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 40 * 60
    assert len(appointments(shop)) == 5
    shop.client.dep.clock.advance(minutes=40)  # the first booking is over an hour ago
    manage_link(visit(shop, at(TUESDAY, "16:00")))


def test_a_start_taken_meanwhile_offers_the_next_ones(shop):
    ok(shop.book(at(TUESDAY, "10:00"), staff=shop.ben), 201)  # the only chair, for the page's "anyone" too
    answer = visit(shop, at(TUESDAY, "10:00"))
    assert answer.status_code == 409 and "just been taken" in answer.text
    assert f'value="{at(TUESDAY, "11:00")}"' in answer.text  # after the cut and its cleaning up
    assert len(appointments(shop)) == 1


def test_the_link_confirms_the_appointment(shop):
    path = manage_link(visit(shop, at(TUESDAY, "10:00")))
    [booked] = appointments(shop)
    assert booked["online_token"] == hashlib.sha256(path.rsplit("/", 1)[1].encode()).hexdigest()
    page = shop.client.get(path, headers=ANON)
    assert page.status_code == 200 and 'id="confirm"' in page.text and "Cut" in page.text
    assert appointments(shop)[0]["status"] == "booked"  # opening the link (a mail scanner) confirms nothing
    confirmed = shop.client.post(path, headers=ANON, data={"action": "confirm"})
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert appointments(shop)[0]["status"] == "confirmed"


def test_cancel_and_move_before_the_cutoff(shop):
    path = manage_link(visit(shop, at(WEDNESDAY, "10:00")))
    moved = shop.client.post(path, headers=ANON, data={"action": "reschedule", "slot": at(WEDNESDAY, "15:00")})
    assert moved.status_code == 200 and "moved" in moved.text
    starts = appointments(shop)[0]["starts_at"].replace("Z", "+00:00")
    assert dt.datetime.fromisoformat(starts) == dt.datetime.fromisoformat(at(WEDNESDAY, "15:00"))
    cancelled = shop.client.post(path, headers=ANON, data={"action": "cancel"})
    assert cancelled.status_code == 200 and "cancelled" in cancelled.text
    booked = appointments(shop)[0]
    assert (booked["status"], booked["cancel_reason"]) == ("cancelled", "cancelled online by the client")


def test_after_the_cutoff_the_visitor_is_asked_to_call(shop):
    path = manage_link(visit(shop, at(WEDNESDAY, "10:00")))
    shop.client.dep.clock.set(dt.datetime.fromisoformat(at(WEDNESDAY, "10:00")) - dt.timedelta(hours=23))
    assert "call the salon" in shop.client.get(path, headers=ANON).text
    for action in ({"action": "cancel"}, {"action": "reschedule", "slot": at(WEDNESDAY, "15:00")}):
        refused = shop.client.post(path, headers=ANON, data=action)
        assert refused.status_code == 403 and "call the salon" in refused.text
    assert appointments(shop)[0]["status"] == "booked"
    assert shop.client.post(path, headers=ANON, data={"action": "confirm"}).status_code == 200  # confirming is still welcome
    assert appointments(shop)[0]["status"] == "confirmed"


def test_an_unknown_token_is_404(shop):
    manage_link(visit(shop, at(TUESDAY, "10:00")))
    unknown = shop.client.get("/book/a/" + "x" * 43, headers=ANON)
    assert unknown.status_code == 404 and "Link not found" in unknown.text
    assert shop.client.post("/book/a/short", headers=ANON, data={"action": "cancel"}).status_code == 404
