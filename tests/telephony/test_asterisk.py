"""The Asterisk (AMI) provider: recorded AMI event streams become calls, ``crm telephony listen``
records them from a live AMI connection, click-to-call sends ``Originate``.

``ami/*.ami`` are recorded AMI sessions as panoramisk's testing ``Manager`` replays them: the
banner and the listener's login, Asterisk's events (``timestampevents = yes``, key: value lines,
blank-line separated), and the ``Logoff`` the replay sends, answered ``Goodbye``. The same events
are what :class:`FakeAsterisk`, an AMI server on 127.0.0.1, sends to ``crm telephony listen``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import panoramisk.utils
import pytest
from panoramisk import testing

from crmcore.deployment import load_settings, save_settings
from crmcore.testing import crm_user
from plugins.telephony.providers.asterisk import AmiConsumer

from ..conftest import crm, problem
from .conftest import _calls, _line, _tasks

AMI = Path(__file__).parent / "ami"
RECORDINGS = "https://pbx.example.com/recordings/{file}"
#: The recorded calls' times (timestampevents), 2026-11-25 09:00:00 UTC and after.
T0 = 1795597200


def _same_time(value: str, seconds: float) -> bool:
    """Whether the API's time ``value`` is ``seconds`` after T0."""
    return abs(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - (T0 + seconds)) < 0.001


def recorded_events(name: str) -> list[str]:
    """The events Asterisk sent in a recorded session (not the actions and their responses)."""
    blocks = (AMI / name).read_text().split("\n\n")
    return [block.strip("\n") for block in blocks if block.startswith("Event:")]


@pytest.fixture
def replay(monkeypatch):
    """``replay(client, *names)``: the recorded sessions replayed by panoramisk's testing Manager
    into one :class:`AmiConsumer` of the client's deployment, as the listener feeds it."""
    # panoramisk.testing switches the protocol's line ends to "\n" for good: put them back after
    monkeypatch.setattr(panoramisk.utils, "EOL", panoramisk.utils.EOL)

    def run(client, *names: str) -> None:
        async def go():
            async with AmiConsumer(client.dep) as consumer:
                for name in names:
                    manager = testing.Manager(stream=str(AMI / name), loop=asyncio.get_running_loop())
                    manager.register_event("*", consumer.receive)
                    try:
                        answer = await manager.send_action({"Action": "Logoff"})
                    finally:
                        manager.close()
                    assert answer.response == "Goodbye"
            return consumer.events

        events = client.blocking_portal.call(go)
        assert events == sum(len(recorded_events(name)) for name in names)

    return run


# -- recorded streams ---------------------------------------------------------------------------

def test_an_inbound_call_answered_by_101_is_one_call_with_the_cdr_duration_and_recording(phone_client, replay):
    client = phone_client(ami_recording_url=RECORDINGS)
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "101")
    replay(client, "inbound_answered.ami")
    [call] = _calls(client)
    assert (call["direction"], call["status"], call["user"], call["extension"]) == (
        "inbound", "answered", agent.id, "101")
    assert (call["call_id"], call["linked_id"], call["key"]) == (
        "1795597200.11", "1795597200.11", "asterisk:1795597200.11")
    assert call["from_number"] == {"e164": "+905321234567", "raw": "05321234567"}
    assert call["to_number"]["e164"] == "+902320000000"
    # the CDR's 95 billable seconds, not the 96 from the DialEnd's answer to the hang-up
    assert call["duration"] == 95
    assert _same_time(call["started_at"], 0.104231) and _same_time(call["answered_at"], 10.200312)
    assert _same_time(call["ended_at"], 106.405377)
    assert call["recording_url"] == "https://pbx.example.com/recordings/20261125-120000-05321234567-101.wav"
    lead = client.get(f"/api/contact/{call['contact']}").json()  # an unknown caller
    assert lead["phone"]["e164"] == "+905321234567" and lead["source"] == "phone call"
    assert [t["kind"] for t in _tasks(client)] == ["task"]  # fill in the card; answered: no call back


def test_a_missed_call_gets_a_call_back_task_that_an_answered_call_from_101_closes(phone_client, replay):
    client = phone_client()
    owner = crm_user(client, role="agent")
    _line(client, owner.id, "101")
    kaya = client.post("/api/contact", json={"last_name": "Kaya", "mobile": "+90 533 111 22 33",
                                             "owner_id": owner.id}).json()
    replay(client, "inbound_missed.ami")
    [missed] = _calls(client)
    assert (missed["direction"], missed["status"], missed["duration"], missed["called_back"]) == (
        "inbound", "missed", 0, False)
    assert (missed["contact"], missed["user"], missed["extension"]) == (kaya["id"], owner.id, "101")
    [task] = _tasks(client, kind="call")
    assert (task["assignee"], task["contact"], task["done"], missed["callback_task"]) == (
        owner.id, kaya["id"], False, task["id"])
    assert _same_time(task["due_at"], 620.902741 + 1800)  # 30 minutes after the caller hung up

    replay(client, "outbound_callback.ami")
    back = {c["call_id"]: c for c in _calls(client)}["1795599000.31"]
    assert (back["direction"], back["status"], back["duration"], back["extension"], back["user"]) == (
        "outbound", "answered", 42, "101", owner.id)
    assert back["contact"] == kaya["id"] and back["to_number"]["e164"] == "+905331112233"
    assert client.get(f"/api/activity/{task['id']}").json()["done"] is True
    assert client.get(f"/api/telephony_call/{missed['id']}").json()["called_back"] is True
    assert len(_tasks(client, kind="call")) == 1


def test_a_transferred_call_is_one_record_of_both_legs(phone_client, replay):
    client = phone_client()
    first, second = crm_user(client, role="agent"), crm_user(client, role="agent")
    _line(client, first.id, "101")
    _line(client, second.id, "102")
    replay(client, "transfer.ami")
    [call] = _calls(client)
    assert (call["linked_id"], call["status"], call["direction"]) == ("1795600800.41", "answered", "inbound")
    assert call["duration"] == 30 + 60  # both CDRs of the Linkedid
    assert (call["extension"], call["user"]) == ("101", first.id)  # who took the call first
    assert _same_time(call["ended_at"], 3700.50188)


def test_a_stream_replayed_changes_nothing(phone_client, replay):
    client = phone_client(ami_recording_url=RECORDINGS)
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "101")
    streams = ("inbound_answered.ami", "inbound_missed.ami", "transfer.ami")
    replay(client, *streams, *streams)  # every event twice, the second while the calls wait for their CDRs
    calls, tasks = _calls(client), _tasks(client)
    assert [(c["status"], c["duration"]) for c in calls] == [("answered", 95), ("missed", 0), ("answered", 90)]
    assert [t["kind"] for t in tasks] == ["task", "task", "call"]  # two leads to fill in, one call back
    contacts = client.get("/api/contact", params={"sort": "id"}).json()["items"]
    replay(client, *streams)  # the listener restarted and heard them again
    assert _calls(client) == calls  # the same records, not even re-written (same versions)
    assert _tasks(client) == tasks
    assert client.get("/api/contact", params={"sort": "id"}).json()["items"] == contacts


def test_without_waiting_for_cdrs_the_hang_up_ends_the_call_and_the_cdr_adds_nothing_twice(phone_client, replay):
    client = phone_client(ami_cdr_wait=0, ami_recording_url=RECORDINGS)
    agent = crm_user(client, role="agent")
    _line(client, agent.id, "101")
    replay(client, "inbound_missed.ami", "inbound_answered.ami")
    missed, answered = _calls(client)
    assert (missed["status"], missed["duration"]) == ("missed", 0)
    assert len(_tasks(client, kind="call")) == 1  # the Hangup and the Cdr both ended it: one call back
    # ended at the hang-up: the duration runs from the answer; the later CDR still brings its recording
    assert (answered["status"], answered["duration"]) == ("answered", 96)
    assert answered["recording_url"].endswith("20261125-120000-05321234567-101.wav")


# -- a fake Asterisk ----------------------------------------------------------------------------

class FakeAsterisk:
    """An Asterisk Manager Interface on 127.0.0.1, in a thread of its own: the banner, Login
    (``crm``/``s3cret``), Ping, Originate (Success, or Error with ``originate_error``), Logoff.

    After each accepted login with events on, it sends the next of ``sessions`` (lists of
    recorded events) and then hangs up, except after the last one when ``hold_last``."""

    def __init__(self, *sessions: list[str], hold_last: bool = False, originate_error: str | None = None):
        self.sessions = list(sessions)
        self.hold_last = hold_last
        self.originate_error = originate_error
        #: Every action received, its headers as sent.
        self.actions: list[dict[str, str]] = []
        self.logins = 0
        self._writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> FakeAsterisk:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def close():
            self.server.close()
            for writer in self._writers:
                writer.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def named(self, action: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action", "").lower() == action.lower()]

    @staticmethod
    def _send(writer: asyncio.StreamWriter, *lines: str) -> None:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode()
                action = dict(line.split(": ", 1) for line in block.strip().split("\r\n") if ": " in line)
                self.actions.append(action)
                name, reply_to = action.get("Action", "").lower(), f"ActionID: {action.get('ActionID', '')}"
                if name == "login":
                    if (action.get("Username"), action.get("Secret")) != ("crm", "s3cret"):
                        self._send(writer, "Response: Error", reply_to, "Message: Authentication failed")
                        break
                    self._send(writer, "Response: Success", reply_to, "Message: Authentication accepted")
                    self.logins += 1
                    if action.get("Events", "on") != "off" and self.sessions:
                        events = self.sessions.pop(0)
                        for event in events:
                            self._send(writer, *event.split("\n"))
                        await writer.drain()
                        if self.sessions or not self.hold_last:
                            break  # a dropped connection
                elif name == "originate":
                    if self.originate_error:
                        self._send(writer, "Response: Error", reply_to, f"Message: {self.originate_error}")
                    else:
                        self._send(writer, "Response: Success", reply_to, "Message: Originate successfully queued")
                elif name == "ping":
                    self._send(writer, "Response: Success", reply_to, "Ping: Pong", f"Timestamp: {time.time():.6f}")
                elif name == "logoff":
                    self._send(writer, "Response: Goodbye", reply_to, "Message: Thanks for all the fish.")
                    break
                else:
                    self._send(writer, "Response: Error", reply_to, "Message: Invalid/unknown command")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _ami(server: FakeAsterisk, **settings) -> dict:
    return {"ami_host": "127.0.0.1", "ami_port": server.port, "ami_username": "crm", "ami_secret": "s3cret",
            **settings}


# -- click-to-call ------------------------------------------------------------------------------

def test_click_to_call_rings_the_users_phone_then_dials_the_number(phone_client):
    with FakeAsterisk() as pbx:
        client = phone_client(provider="asterisk", **_ami(pbx))
        agent = crm_user(client, role="agent")
        _line(client, agent.id, "101")
        answer = client.post("/api/telephony/calls", json={"number": "0532 123 45 67"}, headers=agent.headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"placed": True, "provider": "asterisk", "number": "+905321234567",
                                 "channel": "PJSIP/101", "exten": "+905321234567"}
        assert [a["Action"].lower() for a in pbx.actions] == ["login", "originate", "logoff"]
        login, originate = pbx.actions[0], pbx.actions[1]
        assert (login["Username"], login["Secret"], login["Events"]) == ("crm", "s3cret", "off")
        assert {k: originate[k] for k in ("Channel", "Context", "Exten", "Priority", "Async")} == {
            "Channel": "PJSIP/101", "Context": "from-internal", "Exten": "+905321234567", "Priority": "1",
            "Async": "true"}
        assert originate["CallerID"] == '"+905321234567" <101>'  # the phone shows whom it will call
        providers = {p["name"]: p for p in client.get("/api/telephony/providers").json()}
        assert providers["asterisk"]["places_calls"] is True and providers["asterisk"]["selected"] is True


def test_click_to_call_follows_the_channel_context_and_number_format_settings(phone_client):
    with FakeAsterisk() as pbx:
        client = phone_client(provider="asterisk", **_ami(pbx, ami_channel="SIP/{extension}", ami_context="crm-out",
                                                          ami_number_format="national"))
        _line(client, client.crm_user.id, "205")
        answer = client.post("/api/telephony/calls", json={"number": "+90 532 123 45 67"})
        assert answer.status_code == 200, answer.text
        [originate] = pbx.named("originate")
        assert (originate["Channel"], originate["Context"], originate["Exten"]) == ("SIP/205", "crm-out", "05321234567")


def test_click_to_call_errors_name_what_is_wrong_and_place_nothing(phone_client):
    with FakeAsterisk(originate_error="Extension does not exist.") as pbx:
        client = phone_client(provider="asterisk", **_ami(pbx))
        body = {"number": "0532 123 45 67"}
        problem(client.post("/api/telephony/calls", json=body), 422, "extension")  # the admin has no line
        assert pbx.actions == []
        _line(client, client.crm_user.id, "101")
        refused = problem(client.post("/api/telephony/calls", json=body), 422, "provider")
        assert "Extension does not exist." in refused["errors"][0]["message"]
        assert [a["Action"].lower() for a in pbx.actions] == ["login", "originate", "logoff"]

        wrong = phone_client(provider="asterisk", **_ami(pbx, ami_secret="guess"))
        _line(wrong, wrong.crm_user.id, "101")
        denied = problem(wrong.post("/api/telephony/calls", json=body), 422, "provider")
        assert "Authentication failed" in denied["errors"][0]["message"]
        assert len(pbx.named("originate")) == 1

        bad = phone_client(provider="asterisk", **_ami(pbx, ami_channel="PJSIP/desk"))
        _line(bad, bad.crm_user.id, "101")
        problem(bad.post("/api/telephony/calls", json=body), 422, "ami_channel")
        port = pbx.port
    gone = phone_client(provider="asterisk", ami_host="127.0.0.1", ami_port=port, ami_username="crm",
                        ami_secret="s3cret")
    _line(gone, gone.crm_user.id, "101")
    unreachable = problem(gone.post("/api/telephony/calls", json=body), 422, "provider")
    assert "cannot reach Asterisk" in unreachable["errors"][0]["message"]
    # without the AMI settings, Asterisk places no calls: the browser dials the tel: link
    plain = phone_client(provider="asterisk")
    assert plain.post("/api/telephony/calls", json=body).json()["placed"] is False


# -- crm telephony listen -----------------------------------------------------------------------

@pytest.fixture
def database_env(crm_backend, monkeypatch):
    """The environment a command needs to open a client's deployment on the test's database."""
    env = {k: v for k, v in os.environ.items() if k != "CRM_DATABASE_URL"}
    if crm_backend.database_url:
        monkeypatch.setenv("CRM_DATABASE_URL", crm_backend.database_url)
        env["CRM_DATABASE_URL"] = crm_backend.database_url
    return env


def test_crm_telephony_listen_logs_in_and_records_the_calls_it_hears(phone_client, database_env):
    events = recorded_events("inbound_answered.ami")
    with FakeAsterisk(events) as pbx:
        client = phone_client(ami_recording_url=RECORDINGS, **_ami(pbx))
        agent = crm_user(client, role="agent")
        _line(client, agent.id, "101")
        output = crm("telephony", "listen", "--once", deployment=client.dep.path).output
        [login] = pbx.actions
        assert (login["Action"], login["Username"], login["Events"]) == ("Login", "crm", "call,cdr")
    assert f"logged in to Asterisk at 127.0.0.1:{pbx.port} as crm" in output
    assert f"Stopped: {len(events)} AMI events read, 1 call recorded" in output
    [call] = _calls(client)
    assert (call["status"], call["duration"], call["user"]) == ("answered", 95, agent.id)
    assert call["recording_url"].endswith("-101.wav")


def _configure(path: Path, **plugin_settings) -> None:
    """Set [plugin.telephony] in the deployment's crm.toml, as an admin would."""
    current = load_settings(path)
    current.plugin = {**current.plugin, "telephony": plugin_settings}
    save_settings(path, current)


def test_crm_telephony_listen_says_why_it_cannot_listen(phone_client, database_env):
    path = phone_client().dep.path
    assert "ami_host" in crm("telephony", "listen", deployment=path, ok=False).output
    with FakeAsterisk() as pbx:
        _configure(path, **_ami(pbx, ami_secret="guess"))
        refused = crm("telephony", "listen", deployment=path, ok=False).output
        assert "refused the login of 'crm': Authentication failed" in refused
        _configure(path, **_ami(pbx, ami_port="fifty"))
        assert "ami_port" in crm("telephony", "listen", deployment=path, ok=False).output
        _configure(path, **_ami(pbx))
    gone = crm("telephony", "listen", "--once", deployment=path, ok=False).output
    assert f"cannot reach Asterisk at 127.0.0.1:{pbx.port}" in gone


def test_crm_telephony_listen_reconnects_after_a_drop_and_stops_on_a_signal(phone_client, database_env):
    events = recorded_events("inbound_answered.ami")
    first_hangup = next(i for i, e in enumerate(events) if e.startswith("Event: Hangup"))
    with FakeAsterisk(events[:first_hangup], events[first_hangup:], hold_last=True) as pbx:
        client = phone_client(ami_reconnect=1, ami_cdr_wait=0.2, **_ami(pbx))
        agent = crm_user(client, role="agent")
        _line(client, agent.id, "101")
        crm_bin = Path(sys.executable).parent / "crm"
        listener = subprocess.Popen([str(crm_bin), "-d", str(client.dep.path), "telephony", "listen"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=database_env)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and [c["status"] for c in _calls(client)] != ["answered"]:
                time.sleep(0.05)  # waiting for the other process, not timing it
            [call] = _calls(client)  # its end came on the second connection
            assert (call["status"], call["duration"]) == ("answered", 95)
        finally:
            listener.send_signal(signal.SIGINT)
            output, _ = listener.communicate(timeout=30)
        assert pbx.logins == 2
    assert listener.returncode == 0, output
    assert "lost the connection to Asterisk" in output and output.count("logged in to Asterisk") == 2
    assert f"Stopped: {len(events)} AMI events read, 1 call recorded" in output and "Traceback" not in output
