"""The telephony plugin in a real browser: a call ringing at the agent's extension pops up the
caller's card, the card shows its calls with the recording, a phone number click goes through
click-to-call (a tel: link when no phone system places calls)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import login, plugin_site, shot

SECRET = "browser-pbx-secret"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for result in plugin_site(tmp_path_factory, ["telephony"], region="TR", timezone="Europe/Istanbul",
                              plugin={"telephony": {"webhook_secret": SECRET}}):

        async def phones(dep):
            await dep.records.update("contact", result.ids["contacts"][0], {"phone": "0532 123 45 67"})
            await dep.records.create("telephony_line", {"user": result.ids["agent"], "extension": "101"})

        result.run(phones)
        yield result


def _post_event(site, event: dict) -> httpx.Response:
    from plugins.telephony.providers.generic import sign

    body = json.dumps(event).encode()
    stamp = str(int(time.time()))
    return httpx.post(site.url("/api/telephony/webhooks/generic"), content=body, timeout=10, headers={
        "content-type": "application/json", "x-telephony-timestamp": stamp,
        "x-telephony-signature": sign(SECRET, stamp, body)})


def test_a_ringing_call_pops_up_the_callers_card(page, site):
    login(page, site, "agent", "/contact")
    page.wait_for_selector("html[data-telephony-live=on]")  # the live stream is open
    answer = _post_event(site, {"event": "ringing", "call_id": "ui-1", "from": "+90 532 123 45 67", "extension": "101"})
    assert answer.status_code == 200, answer.text
    pop = page.get_by_test_id("screen-pop")
    pop.wait_for(state="visible")
    assert "0532 123 45 67" in pop.inner_text() or "+90 532 123 45 67" in pop.inner_text()
    shot(page, "telephony-screen-pop")
    card = page.get_by_test_id("screen-pop-card")
    assert card.inner_text().strip() == "Ayşe Yılmaz"
    with page.expect_navigation():
        card.click()
    assert page.url.endswith(f"/contact/{site.ids['contacts'][0]}")
    _post_event(site, {"event": "ended", "call_id": "ui-1", "status": "answered", "duration": 61,
                       "recording_url": site.url("/static/plugins/telephony/telephony.css")})
    page.reload()
    panel = page.get_by_test_id("calls-panel")
    assert "answered" in panel.inner_text() and "1:01" in panel.inner_text()
    assert page.locator("[data-testid=calls-panel] audio").count() == 1
    shot(page, "telephony-calls-panel")


def test_a_phone_number_click_asks_the_phone_system_then_dials_by_hand(page, site):
    contact = site.ids["contacts"][0]
    login(page, site, "agent", f"/contact/{contact}")
    link = page.locator('a[href^="tel:"]').first
    with page.expect_response("**/api/telephony/calls") as placed:
        link.click()
    answer = placed.value
    assert answer.ok and answer.json() == {"placed": False, "tel": "tel:+905321234567", "number": "+905321234567"}
