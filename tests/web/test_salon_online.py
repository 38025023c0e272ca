"""The salon's public booking page in a real browser: a visitor, not logged in, books a haircut,
sees the thank-you page, opens the manage link and confirms the appointment."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from crmcore import ListQuery
from plugins.beauty_salon.entities import APPOINTMENT, HOURS, SERVICE, STAFF, WEEKDAYS

from .conftest import plugin_site, shot


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for result in plugin_site(tmp_path_factory, ["beauty_salon"]):

        async def salon(dep):
            haircut = await dep.records.create(SERVICE, {
                "name": "Haircut", "duration": 45, "buffer_after": 15, "price": {"amount": "30.00", "currency": "EUR"}})
            anna = await dep.records.create(STAFF, {"name": "Anna"})
            for day in WEEKDAYS:  # every day, so tomorrow is open whenever the test runs
                await dep.records.create(HOURS, {"staff": anna["id"], "weekday": day, "start_time": "09:00",
                                                 "end_time": "18:00"})
            return {"haircut": haircut["id"]}

        result.ids.update(result.run(salon))
        yield result


def test_a_visitor_books_a_haircut_and_confirms_it(page, site):
    tomorrow = (dt.datetime.now(ZoneInfo("Europe/Berlin")) + dt.timedelta(days=1)).date()
    page.goto(site.url("/book"))
    with page.expect_navigation():  # choosing shows the free times at once
        page.select_option("#service", str(site.ids["haircut"]))
    with page.expect_navigation():
        page.select_option("#day", tomorrow.isoformat())
    page.locator(".slot span", has_text="10:00").first.click()
    page.fill("#name", "Deniz Aydın")
    page.fill("#phone", "0151 2345 6789")
    page.fill("#email", "deniz@example.com")
    page.fill("#note", "Short, please")
    shot(page, "salon-online-booking")
    with page.expect_navigation():
        page.click("#book button[type=submit]")
    assert "Thank you, you are booked" in page.inner_text("h1")
    assert "Haircut" in page.inner_text(".summary") and "10:00" in page.inner_text("#when")
    shot(page, "salon-online-thanks")

    with page.expect_navigation():
        page.click("#manage-link")
    assert page.inner_text("#status") == "booked"
    with page.expect_navigation():
        page.click("#confirm")
    assert page.inner_text("#status") == "confirmed" and "confirmed" in page.inner_text(".notice")
    shot(page, "salon-online-confirmed")

    async def booked(dep):
        return (await dep.records.list(APPOINTMENT, ListQuery(limit=5))).items

    [appointment] = site.run(booked)
    assert (appointment["status"], appointment["source"], appointment["notes"]) == ("confirmed", "online", "Short, please")
