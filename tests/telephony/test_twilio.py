"""The Twilio provider through HTTP, with requests signed as Twilio signs them: an inbound call's
TwiML and status callbacks, unanswered calls (fallback number, voicemail, missed), bad
signatures, retries, and click-to-call through Twilio's REST client (answered by a fake HTTP
client, never the internet)."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator

from crmcore.testing import crm_user
from plugins.telephony.providers.twilio import TwilioProvider

from ..conftest import problem

TOKEN = "twilio-auth-token"
SID = "AC0123456789abcdef0123456789abcdef"
OUR_NUMBER = "+902320000000"
HOOK = "https://testserver.local/api/telephony/webhooks/twilio"
CALLER = "+905321234567"


class Twilio:
    """Posts to the webhook as Twilio does: form parameters, signed with the auth token over the
    URL it calls (``url``: a public address reaches the test app as a proxy would pass it on)."""

    def __init__(self, client, token: str = TOKEN):
        self.client = client
        self.token = token

    def post(self, url: str = HOOK, *, signed_url: str | None = None, token: str | None = None, **params):
        signature = RequestValidator(token or self.token).compute_signature(signed_url or url, params)
        parts = urlsplit(url)
        return self.client.post(parts.path + (f"?{parts.query}" if parts.query else ""), data=params,
                                headers={"X-Twilio-Signature": signature})

    def send(self, url: str = HOOK, **params) -> ET.Element:
        """The TwiML answered."""
        answer = self.post(url, **params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/xml")
        twiml = ET.fromstring(answer.content)
        assert twiml.tag == "Response"
        return twiml


def _call(sid: str = "CA1", status: str = "ringing", **params) -> dict:
    """Parameters Twilio sends about the caller's leg of an inbound call."""
    return {"CallSid": sid, "AccountSid": SID, "From": CALLER, "To": OUR_NUMBER, "Caller": CALLER,
            "Called": OUR_NUMBER, "CallStatus": status, "Direction": "inbound", "ApiVersion": "2010-04-01",
            "ForwardedFrom": "", **params}


def _leg(sid: str, parent: str, status: str, to: str, **params) -> dict:
    """Parameters of a child leg Twilio dialled."""
    return {"CallSid": sid, "ParentCallSid": parent, "AccountSid": SID, "From": CALLER, "To": to,
            "CallStatus": status, "Direction": "outbound-dial", "Timestamp": "Wed, 25 Nov 2026 10:00:00 +0000",
            **params}


def _step(url: str) -> str:
    return parse_qs(urlsplit(url).query)["step"][0]


def _calls(client) -> list[dict]:
    return client.get("/api/telephony_call", params={"sort": "id", "limit": 100}).json()["items"]


def _tasks(client, **filters) -> list[dict]:
    return client.get("/api/activity", params={"sort": "id", **filters}).json()["items"]


def _line(client, user_id: int, extension: str) -> None:
    answer = client.post("/api/telephony_line", json={"user": user_id, "extension": extension})
    assert answer.status_code == 201, answer.text


def _customer(client, owner_id: int, phone: str = "0532 123 45 67") -> dict:
    answer = client.post("/api/contact", json={"last_name": "Kaya", "phone": phone, "owner_id": owner_id})
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture
def twilio_client(phone_client):
    def make(**settings):
        client = phone_client(twilio_auth_token=TOKEN, **settings)
        client.twilio = Twilio(client)
        return client

    return make


def test_an_inbound_call_rings_the_owner_and_is_logged_answered(twilio_client):
    client = twilio_client()
    owner = crm_user(client, role="agent")
    _line(client, owner.id, "201")
    contact = _customer(client, owner.id)

    twiml = client.twilio.send(**_call())
    [dial] = twiml
    [ring] = dial
    assert (dial.tag, ring.tag, ring.text) == ("Dial", "Client", "201")  # the owner's extension
    assert _step(dial.get("action")) == "dialled" and _step(ring.get("statusCallback")) == "agent"
    assert set(ring.get("statusCallbackEvent").split()) >= {"ringing", "answered", "completed"}
    [call] = _calls(client)
    assert (call["status"], call["contact"], call["direction"]) == ("ringing", contact["id"], "inbound")

    # Twilio reports the extension's leg to the statusCallback it was given
    leg = ring.get("statusCallback")
    ended = {"CallDuration": "125", "Timestamp": "Wed, 25 Nov 2026 10:02:05 +0000"}
    for status, extra in (("initiated", {}), ("ringing", {}), ("in-progress", {}), ("completed", ended),
                          ("completed", ended)):  # the last delivered twice
        assert list(client.twilio.send(leg, **_leg("CA2", "CA1", status, "client:201", **extra))) == []
    # then the <Dial>'s action, and the number's own "call status changes"
    after = client.twilio.send(dial.get("action"), **_call(status="in-progress", DialCallStatus="completed",
                                                             DialCallSid="CA2", DialCallDuration="125"))
    assert [t.tag for t in after] == ["Hangup"]
    assert list(client.twilio.send(**_call(status="completed", CallDuration="140"))) == []

    [call] = _calls(client)  # the legs of one call are one record
    assert (call["status"], call["duration"], call["user"], call["extension"], call["contact"]) == (
        "answered", 125, owner.id, "201", contact["id"])
    assert call["answered_at"].startswith("2026-11-25T10:00:00") and call["from_number"]["e164"] == CALLER
    assert _tasks(client) == []
    assert client.get("/api/contact", params={"count": 1}).json()["total"] == 1


def test_an_unknown_caller_rings_the_default_extension_over_sip(twilio_client):
    client = twilio_client(twilio_dial="sip:{extension}@pbx.example.com", twilio_default_extension="100")
    desk = crm_user(client, role="agent")
    _line(client, desk.id, "100")
    [dial] = client.twilio.send(**_call("CA7", From="+905559998877", Caller="+905559998877"))
    [ring] = dial
    assert (ring.tag, ring.text) == ("Sip", "sip:100@pbx.example.com")
    client.twilio.send(ring.get("statusCallback"), **_leg("CA8", "CA7", "ringing", "sip:100@pbx.example.com",
                                                           From="+905559998877"))
    [call] = _calls(client)
    assert (call["user"], call["extension"], call["status"]) == (desk.id, "100", "ringing")
    lead = client.get(f"/api/contact/{call['contact']}").json()
    assert lead["phone"]["e164"] == "+905559998877" and lead["source"] == "phone call"


def test_an_unanswered_call_is_missed_once_with_a_call_back_task(twilio_client):
    client = twilio_client(twilio_unavailable_message="Nobody is here.", twilio_language="en-GB")
    owner = crm_user(client, role="agent")
    _line(client, owner.id, "301")
    contact = _customer(client, owner.id)
    first = client.twilio.send(**_call())
    [dial] = first
    [ring] = dial
    again = client.twilio.send(**_call())  # Twilio asked twice: the same answer, still one call
    assert ET.tostring(again) == ET.tostring(first) and len(_calls(client)) == 1
    for status in ("ringing", "no-answer"):
        client.twilio.send(ring.get("statusCallback"), **_leg("CA2", "CA1", status, "client:301"))
    assert _calls(client)[0]["status"] == "ringing"  # the extension not answering does not end the call
    for _ in range(2):  # the <Dial>'s action delivered twice
        say, hangup = client.twilio.send(dial.get("action"), **_call(status="in-progress", DialCallStatus="no-answer",
                                                                      DialCallSid="CA2"))
        assert (say.tag, say.text, say.get("language"), hangup.tag) == ("Say", "Nobody is here.", "en-GB", "Hangup")
    client.twilio.send(**_call(status="completed", CallDuration="25"))
    [call] = _calls(client)
    assert (call["status"], call["duration"], call["contact"]) == ("missed", 0, contact["id"])
    [task] = _tasks(client, kind="call")
    assert task["assignee"] == owner.id and task["contact"] == contact["id"] and call["callback_task"] == task["id"]


def test_a_busy_extension_goes_to_the_fallback_number_then_voicemail(twilio_client):
    client = twilio_client(twilio_fallback="+905550001122", twilio_voicemail=True, twilio_ring_seconds=15)
    owner = crm_user(client, role="agent")
    _line(client, owner.id, "401")
    _customer(client, owner.id)
    [dial] = client.twilio.send(**_call())
    assert dial.get("timeout") == "15"
    forward = client.twilio.send(dial.get("action"), **_call(status="in-progress", DialCallStatus="busy"))
    [fallback] = forward
    [number] = fallback
    assert (fallback.tag, number.tag, number.text, _step(fallback.get("action"))) == (
        "Dial", "Number", "+905550001122", "fallback")
    say, record, redirect = client.twilio.send(fallback.get("action"),
                                               **_call(status="in-progress", DialCallStatus="no-answer"))
    assert (say.tag, record.tag, redirect.tag) == ("Say", "Record", "Redirect")
    assert _step(record.get("action")) == "voicemail" == _step(redirect.text)
    recording = "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1"
    [hangup] = client.twilio.send(record.get("action"), **_call(status="in-progress", RecordingUrl=recording,
                                                                 RecordingDuration="12"))
    assert hangup.tag == "Hangup"
    [call] = _calls(client)
    assert (call["status"], call["recording_url"]) == ("voicemail", recording)
    assert len(_tasks(client, kind="call")) == 1

    # a caller who hangs up without a word: Twilio skips the action and follows the redirect
    client.twilio.send(**_call("CA9"))
    client.twilio.send(dial.get("action"), **_call("CA9", status="in-progress", DialCallStatus="no-answer"))
    client.twilio.send(fallback.get("action"), **_call("CA9", status="in-progress", DialCallStatus="no-answer"))
    client.twilio.send(redirect.text, **_call("CA9", status="in-progress"))
    assert {c["call_id"]: c["status"] for c in _calls(client)}["CA9"] == "missed"


def test_a_caller_nobody_owns_hears_the_message_and_is_missed(twilio_client):
    client = twilio_client()
    [redirect] = client.twilio.send(**_call())  # no extension to ring: what comes next is decided there
    assert redirect.tag == "Redirect" and _step(redirect.text) == "dialled"
    say, hangup = client.twilio.send(redirect.text, **_call(status="in-progress"))
    assert (say.tag, hangup.tag) == ("Say", "Hangup") and "nobody" in say.text
    [call] = _calls(client)
    assert call["status"] == "missed" and call["contact"] is not None  # a lead with a fill-in task
    assert sorted(t["kind"] for t in _tasks(client)) == ["call", "task"]


def test_a_caller_hanging_up_while_it_rings_ends_the_call_missed(twilio_client):
    client = twilio_client(twilio_voicemail=True)
    owner = crm_user(client, role="agent")
    _line(client, owner.id, "501")
    _customer(client, owner.id)
    [dial] = client.twilio.send(**_call())
    gone = client.twilio.send(dial.get("action"), **_call(status="completed", DialCallStatus="canceled"))
    assert list(gone) == []  # nothing more is offered to a caller who is gone
    assert _calls(client)[0]["status"] == "missed"


def test_requests_not_signed_by_twilio_are_refused_and_change_nothing(twilio_client, crm_client):
    client = twilio_client()
    params = _call()
    problem(client.post(HOOK, data=params), 403, detail="not signed")
    problem(client.twilio.post(token="not-the-token", **params), 403, detail="X-Twilio-Signature")
    signature = RequestValidator(TOKEN).compute_signature(HOOK, params)
    tampered = {**params, "From": "+905000000000"}
    problem(client.post(HOOK, data=tampered, headers={"X-Twilio-Signature": signature}), 403)
    added = {**params, "CallStatus": "completed", "RecordingUrl": "https://example.com/r.wav"}
    problem(client.post(HOOK, data=added, headers={"X-Twilio-Signature": signature}), 403)
    # signed for the <Dial>'s action, sent with another step
    problem(client.twilio.post(f"{HOOK}?step=voicemail", signed_url=f"{HOOK}?step=dialled", **params), 403)
    problem(client.twilio.post(HOOK, signed_url="https://crm.example.com/api/telephony/webhooks/twilio", **params), 403)
    assert _calls(client) == [] and client.get("/api/contact").json()["items"] == []
    problem(client.twilio.post(**{k: v for k, v in params.items() if k != "CallSid"}), 422, "CallSid")
    problem(client.twilio.post(**{**params, "Timestamp": "yesterday"}), 422, "Timestamp")
    unconfigured = crm_client(plugins=["telephony"], in_process_worker=False)
    problem(Twilio(unconfigured).post(**params), 404, detail="not configured")
    assert _calls(client) == []


def test_the_signed_address_is_the_one_twilio_calls_behind_a_proxy(twilio_client, crm_client):
    public = "https://crm.example.com/api/telephony/webhooks/twilio"
    client = twilio_client(twilio_webhook_url=public)
    [redirect] = client.twilio.send(public, **_call())
    assert redirect.text == f"{public}?step=dialled"  # what Twilio calls next is the public address
    client.twilio.send(redirect.text, **_call(status="in-progress"))
    problem(client.twilio.post(public, signed_url=HOOK, **_call("CA2")), 403)  # the address the CRM sees
    assert [c["status"] for c in _calls(client)] == ["missed"]

    behind = crm_client(plugins=["telephony"], in_process_worker=False, base_url="https://crm.example.com",
                        plugin={"telephony": {"twilio_auth_token": TOKEN}})
    assert Twilio(behind).post(public, **_call()).status_code == 200
    problem(Twilio(behind).post(public, signed_url=HOOK, **_call("CA3")), 403)


class FakeTwilioApi(HttpClient):
    """Answers the REST client as Twilio's API does, and keeps what it was asked."""

    def __init__(self, status: int = 201, body: dict | None = None, error: Exception | None = None):
        super().__init__(logging.getLogger(__name__), is_async=False)
        self.status = status
        self.body = body or {"sid": "CAfeed", "account_sid": SID, "status": "queued", "direction": "outbound-api"}
        self.error = error
        self.requests: list[dict] = []

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):
        self.requests.append({"method": method, "uri": uri, "data": data, "auth": auth})
        if self.error is not None:
            raise self.error
        return TwilioResponse(self.status, json.dumps(self.body))


@pytest.fixture
def twilio_api(monkeypatch):
    """``use(api)``: click-to-call talks to ``api`` instead of Twilio."""

    def use(api: FakeTwilioApi) -> FakeTwilioApi:
        monkeypatch.setattr(TwilioProvider, "http_client_factory", lambda: api)
        return api

    return use


CALLING = {"provider": "twilio", "twilio_account_sid": SID, "twilio_number": OUR_NUMBER,
           "twilio_webhook_url": "https://crm.example.com/api/telephony/webhooks/twilio"}


def test_click_to_call_rings_the_user_then_the_customer_and_closes_the_call_back(twilio_client, twilio_api):
    client = twilio_client(**CALLING)
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "601")
    contact = _customer(client, agent.id)
    # a missed call first: its call-back task waits
    client.twilio.send(CALLING["twilio_webhook_url"], **_call("CA0", status="completed"))
    [task] = _tasks(client, kind="call")
    api = twilio_api(FakeTwilioApi())

    placed = client.post("/api/telephony/calls", json={"number": "0532 123 45 67"}, headers=agent.headers)
    assert placed.status_code == 200, placed.text
    assert placed.json()["placed"] is True and placed.json()["call_id"] == "CAfeed"
    [sent] = api.requests
    assert (sent["method"], sent["uri"], sent["auth"]) == (
        "POST", f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Calls.json", (SID, TOKEN))
    assert (sent["data"]["To"], sent["data"]["From"]) == ("client:601", OUR_NUMBER)  # the agent rings first
    assert _step(sent["data"]["StatusCallback"]) == "outbound"
    twiml = ET.fromstring(sent["data"]["Twiml"])
    [dial] = twiml
    [number] = dial
    assert (dial.get("callerId"), number.text) == (OUR_NUMBER, CALLER)
    assert _step(number.get("statusCallback")) == "customer"
    call = {c["call_id"]: c for c in _calls(client)}["CAfeed"]
    assert (call["id"], call["direction"], call["contact"], call["user"]) == (
        placed.json()["call"], "outbound", contact["id"], agent.id)

    # the customer's leg reports, then the agent's
    customer = number.get("statusCallback")
    for status, extra in (("ringing", {}), ("in-progress", {}), ("completed", {"CallDuration": "42"})):
        leg = {"CallSid": "CAcust", "ParentCallSid": "CAfeed", "From": OUR_NUMBER, "To": CALLER,
               "CallStatus": status, "Direction": "outbound-dial", **extra}
        client.twilio.send(customer, **leg)
    client.twilio.send(sent["data"]["StatusCallback"], CallSid="CAfeed", From=OUR_NUMBER, To="client:601",
                       CallStatus="completed", Direction="outbound-api", CallDuration="50")
    call = client.get(f"/api/telephony_call/{call['id']}").json()
    assert (call["status"], call["duration"], call["to_number"]["e164"]) == ("answered", 42, CALLER)
    assert client.get(f"/api/activity/{task['id']}").json()["done"] is True
    assert len(_calls(client)) == 2


def test_click_to_call_rings_the_users_own_phone_when_it_has_one(twilio_client, twilio_api):
    client = twilio_client(**CALLING)
    agent = crm_user(client, role="agent")
    assert client.patch(f"/api/user/{agent.id}", json={"phone": "+90 533 444 55 66"}).status_code == 200
    api = twilio_api(FakeTwilioApi())
    assert client.post("/api/telephony/calls", json={"number": CALLER}, headers=agent.headers).status_code == 200
    assert api.requests[0]["data"]["To"] == "+905334445566"
    providers = {p["name"]: p for p in client.get("/api/telephony/providers").json()}
    assert providers["twilio"]["places_calls"] is True and providers["twilio"]["selected"] is True


def test_click_to_call_that_twilio_refuses_is_a_clear_error(twilio_client, twilio_api, crm_client):
    client = twilio_client(**CALLING)
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "701")
    twilio_api(FakeTwilioApi(400, {"code": 20003, "message": "Authenticate", "status": 401,
                                   "more_info": "https://www.twilio.com/docs/errors/20003"}))
    body = problem(client.post("/api/telephony/calls", json={"number": CALLER}, headers=agent.headers), 422, "provider")
    assert "Authenticate" in body["errors"][0]["message"] and "20003" in body["errors"][0]["message"]
    twilio_api(FakeTwilioApi(400, {"code": 21211, "message": "Invalid 'To' Phone Number: client:701", "status": 400}))
    problem(client.post("/api/telephony/calls", json={"number": CALLER}, headers=agent.headers), 422, "provider")
    twilio_api(FakeTwilioApi(error=requests.ConnectionError("connection refused")))
    problem(client.post("/api/telephony/calls", json={"number": CALLER}, headers=agent.headers), 502,
            detail="could not be reached")
    assert _calls(client) == []
    # nobody to ring first, and nowhere for Twilio to report the call
    lineless = crm_user(client, role="agent")
    problem(client.post("/api/telephony/calls", json={"number": CALLER}, headers=lineless.headers), 422, "provider")
    unreachable = twilio_client(provider="twilio", twilio_account_sid=SID, twilio_number=OUR_NUMBER)
    problem(unreachable.post("/api/telephony/calls", json={"number": CALLER}), 422, "provider")
    # not configured for calls: the browser dials the tel: link itself
    dialless = twilio_client(provider="twilio")
    assert dialless.post("/api/telephony/calls", json={"number": CALLER}).json()["placed"] is False
