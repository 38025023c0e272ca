"""Real SIP calls end to end: SIPp callers call extension 101 through Kamailio, which reports
each call to the generic webhook of a live server (signed in kamailio.cfg itself); the calls,
leads, tasks, timelines and screen-pops are then read through the API.

The server is the web app under uvicorn on a free port of 127.0.0.1, in a thread of the test
process; Kamailio and SIPp run as processes beside it (tests/telephony/sip/, see its README).
Missing Kamailio or SIPp fails the test with the apt-get line that installs them.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import socket
import threading
from typing import Any

import httpx
import pytest

import crmcore
from crmcore.deployment import load_settings, save_settings
from crmcore.testing import CrmUser, ServedApp, make_user, serve_app

from .sip.lab import SipLab, missing

pytestmark = pytest.mark.timeout(120)

KNOWN = "+905321234567"
STRANGER = "+905339998877"


class Server:
    """The app served on 127.0.0.1: ``url``, ``api`` (an admin's httpx client), ``user(role=)``."""

    def __init__(self, served: ServedApp, secret: str):
        self.served, self.url, self.app, self.secret = served, served.url, served.app, secret
        self.api: httpx.Client | None = None

    def run(self, coroutine) -> Any:
        """Await ``coroutine`` on the server's loop (where the deployment's connections live)."""
        return self.served.run(coroutine)

    def user(self, **options: Any) -> CrmUser:
        return self.run(make_user(self.app.state.deployment, **options))


@pytest.fixture
def server(tmp_path, crm_database_url):
    """The app of a deployment with telephony on (region TR, the generic webhook's secret)."""
    path = tmp_path / "crm"
    crmcore.init_deployment(path, region="TR")
    settings = load_settings(path)
    settings.plugins = [*settings.plugins, "telephony"]
    settings.in_process_worker = False
    settings.plugin = {"telephony": {"webhook_secret": secrets.token_hex(16)}}
    save_settings(path, settings)
    # A screen-pop stream left open (by a failed test) never ends by itself: cut it after a moment.
    with serve_app(path, database_url=crm_database_url, timeout_graceful_shutdown=2) as served:
        result = Server(served, settings.plugin["telephony"]["webhook_secret"])
        admin = result.user(role="admin")
        with httpx.Client(base_url=served.url, headers=admin.headers, timeout=30) as api:
            result.api = api
            yield result


@pytest.fixture
def sip_installed():
    """Fails, never skips, without Kamailio or SIPp: CI installs them (.ci/run)."""
    problem = missing()
    if problem:
        pytest.fail(problem)


@pytest.fixture
def lab(sip_installed, server, tmp_path):
    """Kamailio reporting to the server's generic webhook; stopped at the end, even on failure."""
    sip = SipLab(tmp_path / "sip", webhook_url=server.url + "/api/telephony/webhooks/generic", secret=server.secret)
    try:
        yield sip
    finally:
        sip.stop()


class ScreenPops:
    """A user's screen-pop stream (``GET /api/telephony/live``), read in a thread."""

    def __init__(self, server: Server, user: CrmUser):
        self.server, self.user = server, user
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ready = threading.Event()
        self._socket: socket.socket | None = None
        self._client = httpx.Client(base_url=server.url, headers=user.headers, timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._read, daemon=True)

    def open(self) -> None:
        """Opens the stream; returns once the server has it listening for the user's calls."""
        self._thread.start()
        assert self._ready.wait(30), "the screen-pop stream did not open"  # listening before "ready"

    def _read(self) -> None:
        kind = None
        try:
            with self._client.stream("GET", "/api/telephony/live") as response:
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                        if kind == "ready":
                            self._ready.set()
                    elif line.startswith("data:") and kind == "call":
                        self.events.put(json.loads(line.split(":", 1)[1]))
        except httpx.HTTPError:
            pass  # closed

    def next(self) -> dict[str, Any]:
        """The next screen-pop (they come while the phone rings, before the call ends)."""
        try:
            return self.events.get(timeout=10)
        except queue.Empty:
            raise AssertionError(f"no screen-pop for user {self.user.id} within 10 s") from None

    def close(self) -> None:
        """Hangs up the stream (the server sees the browser leave) and ends the reader."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(10)
        self._client.close()


@pytest.fixture
def screen_pops(server):
    """``screen_pops(user)``: that user's open screen-pop stream; closed at the end."""
    opened: list[ScreenPops] = []

    def open_for(user: CrmUser) -> ScreenPops:
        stream = ScreenPops(server, user)
        opened.append(stream)
        stream.open()
        return stream

    try:
        yield open_for
    finally:
        for stream in opened:
            stream.close()


def _items(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    answer = api.get(path, params={"limit": 100, "sort": "id", **params})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def _record_id(api: httpx.Client, call_id: str) -> int:
    """The id of the call record of this SIP Call-ID."""
    [call] = _items(api, "/api/telephony_call", call_id=call_id)
    return call["id"]


def test_sip_calls_through_kamailio_become_calls_leads_tasks_and_screen_pops(server, lab, screen_pops):
    api = server.api
    owner = server.user(role="agent")
    answer = api.post("/api/telephony_line", json={"user": owner.id, "extension": "101"})
    assert answer.status_code == 201, answer.text
    answer = api.post("/api/contact", json={"first_name": "Ayşe", "last_name": "Kaya", "phone": "0532 123 45 67",
                                            "owner_id": owner.id})
    assert answer.status_code == 201, answer.text
    contact = answer.json()
    pops = screen_pops(owner)

    # The client calls and talks for two seconds; calls again and hangs up while it rings; calls
    # a third time while 101 is busy. A stranger calls and talks briefly.
    answered = lab.call("answered", phone="uas_answer.xml", caller="uac_answered.xml", number=KNOWN, pause_ms=2000)
    pop = pops.next()
    assert (pop["type"], pop["call"], pop["number"], pop["extension"]) == (
        "ringing", _record_id(api, answered), KNOWN, "101")
    assert pop["record"] == {"entity": "contact", "id": contact["id"], "title": "Ayşe Kaya",
                             "url": f"/contact/{contact['id']}", "new": False}
    missed = lab.call("missed", phone="uas_ring.xml", caller="uac_cancel.xml", number=KNOWN, pause_ms=1000)
    assert pops.next()["call"] == _record_id(api, missed)
    busy = lab.call("busy", phone="uas_busy.xml", caller="uac_busy.xml", number=KNOWN)
    stranger = lab.call("stranger", phone="uas_answer.xml", caller="uac_answered.xml", number=STRANGER, pause_ms=200)
    stranger_pop = pops.next()  # the busy phone never rang
    assert "webhook failed" not in lab.kamailio_log(), lab.report("kamailio")

    calls = {call["call_id"]: call for call in _items(api, "/api/telephony_call")}
    assert sorted(calls) == sorted([answered, missed, busy, stranger]), lab.report("kamailio")
    for call in calls.values():
        assert (call["provider"], call["direction"], call["extension"], call["user"]) == (
            "generic", "inbound", "101", owner.id), call
        assert call["started_at"] and call["ended_at"], call

    talked = calls[answered]
    assert (talked["status"], talked["contact"], talked["from_number"]["e164"]) == ("answered", contact["id"], KNOWN)
    assert 2 <= talked["duration"] <= 2 + 10, talked  # held two seconds by the caller
    assert talked["answered_at"] is not None and talked["callback_task"] is None

    for call_id, status in ((missed, "missed"), (busy, "busy")):
        call = calls[call_id]
        assert (call["status"], call["duration"], call["contact"], call["answered_at"]) == (
            status, 0, contact["id"], None), call
        task = api.get(f"/api/activity/{call['callback_task']}").json()
        assert (task["kind"], task["assignee"], task["contact"], task["done"]) == (
            "call", owner.id, contact["id"], False), task
        assert KNOWN in task["subject"]

    timeline = api.get(f"/api/contact/{contact['id']}/timeline").json()["items"]
    shown = {item["id"]: item["data"]["status"] for item in timeline if item["source"] == "telephony"}
    assert shown == {calls[answered]["id"]: "answered", calls[missed]["id"]: "missed", calls[busy]["id"]: "busy"}

    # The stranger: a lead for the extension's user, a task to fill in its card, the call on it.
    first = calls[stranger]
    assert first["status"] == "answered" and first["contact"] != contact["id"] and first["callback_task"] is None
    lead = api.get(f"/api/contact/{first['contact']}").json()
    assert (lead["phone"]["e164"], lead["source"], lead["owner_id"]) == (STRANGER, "phone call", owner.id)
    [fill_in] = _items(api, "/api/activity", kind="task")
    assert (fill_in["contact"], fill_in["assignee"], fill_in["done"]) == (lead["id"], owner.id, False)
    assert STRANGER in fill_in["subject"]
    assert stranger_pop["call"] == first["id"]
    assert stranger_pop["record"] == {"entity": "contact", "id": lead["id"], "title": lead["last_name"],
                                      "url": f"/contact/{lead['id']}", "new": True}
    lead_timeline = api.get(f"/api/contact/{lead['id']}/timeline").json()["items"]
    shown = [(item["id"], item["data"]["status"]) for item in lead_timeline if item["source"] == "telephony"]
    assert shown == [(first["id"], "answered")]

    # Two call-back tasks, one fill-in task, two contacts: nothing twice.
    assert len(_items(api, "/api/activity", kind="call")) == 2
    assert api.get("/api/contact", params={"count": 1}).json()["total"] == 2

