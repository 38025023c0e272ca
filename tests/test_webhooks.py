"""Outgoing webhooks on SQLite and PostgreSQL, delivered to a real HTTP receiver on 127.0.0.1
that verifies every request with the Standard Webhooks reference library: matching events,
retries with backoff (the clock is advanced, never slept), dead deliveries, redelivery, the
delivery log, the API (permissions, 422s, OpenAPI) and the ``crm webhooks`` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import threading
import time

import pytest
from click.testing import CliRunner
from openapi_spec_validator import validate as validate_openapi
from standardwebhooks import Webhook, WebhookVerificationError

import crmcore
import crmcore.webhooks
from cli import create_cli
from crmcore.testing import crm_user

UTC = dt.timezone.utc


class Receiver:
    """An HTTP server in a thread: answers with ``answers`` in turn (then 200) and keeps every
    request with the result of verifying its signature against ``secret``."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.answers: list[int] = []
        self.delay = 0.0
        self.requests: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verified = Webhook(receiver.secret).verify(body, headers)
                except (WebhookVerificationError, Exception) as exc:
                    verified = f"not verified: {exc!r}"
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.requests.append({"headers": headers, "body": body, "verified": verified, "status": status})
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow receiver (the client's timeout is under test)
                answer = json.dumps({"ok": status < 300, "note": "x" * 600}).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the client gave up (timeout)
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/crm"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


async def _drain(dep) -> int:
    total = 0
    while ran := await dep.jobs.run_due():
        total += ran
    return total


async def test_a_write_is_delivered_signed_to_matching_subscriptions(make_deployment, receiver):
    dep = await make_deployment()
    hook = await dep.webhooks.create(receiver.url, ["contact.created", "deal.*"], description="ERP")
    assert hook["secret"].startswith("whsec_") and hook["active"] and hook["entities"] == []
    receiver.secret = hook["secret"]
    others = await dep.webhooks.create(receiver.url, ["*.deleted"], entities=["company"])

    contact = await dep.records.create("contact", {"first_name": "Ayşe", "last_name": "Yılmaz", "phone": "+90 532 111 22 33"})
    await dep.records.update("contact", contact["id"], {"job_title": "Buyer"})  # contact.updated: nobody wants it
    deal = await dep.records.create("deal", {"name": "Windows", "amount": "1200.50", "contact": contact["id"]})
    await dep.records.delete("contact", contact["id"])  # *.deleted, but only for companies
    assert receiver.requests == []  # sent by jobs, never inside the write
    assert await _drain(dep) == 2

    # one run delivers concurrently: in any order
    first, second = sorted(receiver.requests, key=lambda r: json.loads(r["body"])["type"])
    assert isinstance(first["verified"], dict), first["verified"]
    assert first["verified"]["type"] == "contact.created"
    data = first["verified"]["data"]
    assert data["entity"] == "contact" and data["action"] == "create" and data["id"] == contact["id"]
    assert data["record"]["last_name"] == "Yılmaz" and data["changes"]["last_name"] == [None, "Yılmaz"]
    assert second["verified"]["type"] == "deal.created" and second["verified"]["data"]["record"]["name"] == "Windows"
    headers = first["headers"]
    assert headers["webhook-id"].startswith("msg_") and headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60

    # a tampered body does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(first["body"].replace("Yılmaz", "Kaya"), headers)

    deliveries = await dep.webhooks.deliveries(webhook_id=hook["id"])
    assert [d["event"] for d in deliveries] == ["deal.created", "contact.created"]
    assert all(d["status"] == "delivered" and d["attempts"] == 1 and d["response_status"] == 200 for d in deliveries)
    detail = await dep.webhooks.delivery(deliveries[1]["id"])
    [attempt] = detail["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["error"] is None and attempt["duration_ms"] >= 0
    assert len(attempt["response"]) == crmcore.webhooks.SNIPPET
    assert detail["payload"]["data"]["id"] == contact["id"] and detail["msg_id"] == headers["webhook-id"]
    assert await dep.webhooks.deliveries(webhook_id=others["id"]) == []

    # a company deletion reaches the second subscription; the first does not want it
    company = await dep.records.create("company", {"name": "Acme"})
    await dep.records.delete("company", company["id"])
    assert await _drain(dep) == 1
    assert json.loads(receiver.requests[-1]["body"])["type"] == "company.deleted"
    assert deal["id"]


async def test_a_failing_receiver_is_retried_with_backoff_until_it_takes_it(make_deployment, receiver):
    dep = await make_deployment()
    dep.clock.set(dt.datetime(2030, 1, 1, tzinfo=UTC))
    hook = await dep.webhooks.create(receiver.url, ["*"])
    receiver.secret = hook["secret"]
    receiver.answers = [500, 503]
    await dep.records.create("company", {"name": "Flaky Ltd"})
    assert await dep.jobs.run_due() == 1
    [delivery] = await dep.webhooks.deliveries()
    assert delivery["status"] == "retrying" and delivery["attempts"] == 1 and delivery["response_status"] == 500
    assert delivery["last_error"] == "the receiver answered 500"
    [job] = await dep.jobs.list(kind="webhook.deliver")
    assert job.status == "pending" and job.run_at == dep.clock.now() + dt.timedelta(seconds=30)

    assert await dep.jobs.run_due() == 0  # not before its time
    dep.clock.advance(seconds=30)
    assert await dep.jobs.run_due() == 1
    dep.clock.advance(seconds=59)
    assert await dep.jobs.run_due() == 0
    dep.clock.advance(seconds=1)
    assert await dep.jobs.run_due() == 1
    detail = await dep.webhooks.delivery(delivery["id"])
    assert detail["status"] == "delivered" and detail["attempts"] == 3
    assert [(a["attempt"], a["status_code"]) for a in detail["attempt_log"]] == [(1, 500), (2, 503), (3, 200)]
    assert '"ok": false' in detail["attempt_log"][0]["response"]
    # every attempt is the same message: one webhook-id, one body, each signed anew
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert len({r["body"] for r in receiver.requests}) == 1
    assert all(isinstance(r["verified"], dict) for r in receiver.requests)


async def test_dead_after_the_last_attempt_then_redelivered(make_deployment, receiver):
    dep = await make_deployment()
    dep.clock.set(dt.datetime(2030, 1, 1, tzinfo=UTC))
    hook = await dep.webhooks.create(receiver.url, ["contact.created"])
    receiver.secret = hook["secret"]
    receiver.answers = [503] * crmcore.webhooks.MAX_ATTEMPTS
    await dep.records.create("contact", {"last_name": "Never"})
    for _ in range(crmcore.webhooks.MAX_ATTEMPTS):
        assert await dep.jobs.run_due() == 1
        dep.clock.advance(hours=1)
    assert await dep.jobs.run_due() == 0
    [delivery] = await dep.webhooks.deliveries(status="dead")
    assert delivery["attempts"] == crmcore.webhooks.MAX_ATTEMPTS
    assert [j.status for j in await dep.jobs.list(kind="webhook.deliver")] == ["dead"]

    again = await dep.webhooks.redeliver(delivery["id"])
    assert again["status"] == "pending"
    assert await dep.jobs.run_due() == 1
    detail = await dep.webhooks.delivery(delivery["id"])
    assert detail["status"] == "delivered" and detail["attempts"] == crmcore.webhooks.MAX_ATTEMPTS + 1
    assert receiver.requests[-1]["headers"]["webhook-id"] == receiver.requests[0]["headers"]["webhook-id"]
    assert isinstance(receiver.requests[-1]["verified"], dict)


async def test_timeouts_and_unreachable_receivers_are_logged_and_retried(make_deployment, receiver, monkeypatch):
    monkeypatch.setattr(crmcore.webhooks, "TIMEOUT", 0.2)
    dep = await make_deployment()
    dep.clock.set(dt.datetime(2030, 1, 1, tzinfo=UTC))
    hook = await dep.webhooks.create(receiver.url, ["contact.created"])
    receiver.secret = hook["secret"]
    receiver.delay = 0.6
    closed = Receiver()
    closed.close()  # nothing listens there any more
    await dep.webhooks.create(closed.url, ["contact.created"])
    await dep.records.create("contact", {"last_name": "Slow"})
    assert await dep.jobs.run_due() == 2
    errors = sorted([(await dep.webhooks.delivery(d["id"]))["attempt_log"][0]["error"]
                     for d in await dep.webhooks.deliveries()])
    assert errors[0].startswith("ConnectError") and errors[1] == "no answer within 0.2 seconds"
    assert {d["status"] for d in await dep.webhooks.deliveries()} == {"retrying"}


async def test_subscriptions_change_and_removal_cancels_queued_deliveries(make_deployment, receiver):
    dep = await make_deployment()
    hook = await dep.webhooks.create(receiver.url, ["contact.created"])
    await dep.records.create("contact", {"last_name": "Queued"})
    await dep.webhooks.update(hook["id"], active=False)
    await dep.records.create("contact", {"last_name": "Unsent"})  # inactive: no delivery
    assert len(await dep.webhooks.deliveries()) == 1
    assert await _drain(dep) == 1  # the queued one finds its subscription off: cancelled, not sent
    assert receiver.requests == [] and (await dep.webhooks.deliveries())[0]["status"] == "cancelled"

    rotated = await dep.webhooks.update(hook["id"], active=True, events=["contact.*"], rotate_secret=True)
    assert rotated["secret"] != hook["secret"] and rotated["events"] == ["contact.*"]
    await dep.records.create("contact", {"last_name": "Waiting"})
    await dep.webhooks.delete(hook["id"])
    assert (await dep.webhooks.deliveries())[0]["status"] == "cancelled"
    assert await _drain(dep) == 0 and receiver.requests == []
    with pytest.raises(crmcore.NotFound):
        await dep.webhooks.get(hook["id"])
    with pytest.raises(crmcore.ValidationError):  # its subscription is gone
        await dep.webhooks.redeliver((await dep.webhooks.deliveries())[0]["id"])

    with pytest.raises(crmcore.ValidationError) as exc:
        await dep.webhooks.create("ftp://example.com", ["contact.created"])
    assert exc.value.errors[0].field == "url"
    for events in ([], ["contact"], ["nosuch.created"], ["Contact.Created"], "contact.created"):
        with pytest.raises(crmcore.ValidationError) as exc:
            await dep.webhooks.create(receiver.url, events)
        assert exc.value.errors[0].field == "events"
    with pytest.raises(crmcore.ValidationError) as exc:
        await dep.webhooks.create(receiver.url, ["*"], entities=["nosuch"])
    assert exc.value.errors[0].field == "entities"


async def test_410_gone_turns_the_subscription_off(make_deployment, receiver):
    dep = await make_deployment()
    hook = await dep.webhooks.create(receiver.url, ["contact.created"])
    receiver.secret = hook["secret"]
    receiver.answers = [410]
    await dep.records.create("contact", {"last_name": "Gone"})
    assert await dep.jobs.run_due() == 1
    [delivery] = await dep.webhooks.deliveries()
    assert delivery["status"] == "cancelled" and delivery["response_status"] == 410
    assert "410 Gone" in delivery["last_error"]
    assert (await dep.webhooks.get(hook["id"]))["active"] is False
    assert [j.status for j in await dep.jobs.list(kind="webhook.deliver")] == ["done"]  # not retried
    await dep.records.create("contact", {"last_name": "Not sent"})
    assert await dep.jobs.run_due() == 0 and len(receiver.requests) == 1


async def test_deliveries_commit_with_their_write_or_not_at_all(make_deployment, monkeypatch):
    """Deliveries are queued inside the write's transaction (a crash right after the commit
    loses none); a write that cannot queue them is not made either, like one without its audit
    entry. A receiver that fails never fails a write: sending happens later, in a job."""
    dep = await make_deployment()
    await dep.webhooks.create("https://example.invalid/hook", ["*"])
    queue = dep.webhooks.on_write

    async def broken(event):
        await queue(event)
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(dep.webhooks, "on_write", broken)
    with pytest.raises(RuntimeError):
        await dep.records.create("contact", {"last_name": "Not saved"})
    from crmcore.records.query import ListQuery

    assert (await dep.records.list("contact", ListQuery())).items == []
    assert await dep.webhooks.deliveries() == [] and await dep.jobs.list(kind="webhook.deliver") == []
    monkeypatch.setattr(dep.webhooks, "on_write", queue)
    contact = await dep.records.create("contact", {"last_name": "Saved"})
    [delivery] = await dep.webhooks.deliveries()
    assert delivery["record_id"] == contact["id"] and delivery["status"] == "pending"


# -- over HTTP ------------------------------------------------------------------------------------


def test_webhooks_api(crm_client, receiver):
    client = crm_client(in_process_worker=False)  # the test runs the jobs
    dep = client.app.state.deployment
    created = client.post("/api/webhooks", json={"url": receiver.url, "events": ["contact.created"],
                                                  "description": "ERP"})
    assert created.status_code == 201, created.text
    hook = created.json()
    receiver.secret = hook["secret"]
    assert client.get("/api/webhooks").json() == [{k: v for k, v in hook.items() if k != "secret"}]
    assert client.get(f"/api/webhooks/{hook['id']}").json()["secret"] == hook["secret"]

    assert client.post("/api/contact", json={"last_name": "Over HTTP"}).status_code == 201
    assert client.blocking_portal.call(dep.jobs.run_due) == 1
    assert receiver.requests[0]["verified"]["data"]["record"]["last_name"] == "Over HTTP"
    [delivery] = client.get(f"/api/webhooks/{hook['id']}/deliveries").json()
    assert delivery["status"] == "delivered" and client.get("/api/webhooks/deliveries?status=delivered").json() == [delivery]
    detail = client.get(f"/api/webhooks/deliveries/{delivery['id']}").json()
    assert detail["attempt_log"][0]["status_code"] == 200
    redelivered = client.post(f"/api/webhooks/deliveries/{delivery['id']}/redeliver")
    assert redelivered.status_code == 202 and redelivered.json()["status"] == "pending"
    assert client.blocking_portal.call(dep.jobs.run_due) == 1 and len(receiver.requests) == 2

    jobs = client.get("/api/jobs?status=done").json()
    assert [j["kind"] for j in jobs] == ["webhook.deliver"] * 2 and client.get(f"/api/jobs/{jobs[0]['id']}").json()["status"] == "done"
    assert client.post(f"/api/jobs/{jobs[0]['id']}/retry").status_code == 202

    patched = client.patch(f"/api/webhooks/{hook['id']}", json={"active": False, "rotate_secret": True}).json()
    assert patched["active"] is False and patched["secret"] != hook["secret"]

    # bad input: 422 naming the field
    for body, field in [({"url": "not a url", "events": ["*"]}, "url"), ({"url": receiver.url, "events": []}, "events"),
                        ({"url": receiver.url, "events": ["nope.created"]}, "events"),
                        ({"url": receiver.url, "events": ["*"], "entities": ["nope"]}, "entities"),
                        ({"url": receiver.url, "events": ["*"], "secret": "x"}, "secret"),
                        ({"events": ["*"]}, "url")]:
        answer = client.post("/api/webhooks", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["errors"][0]["field"] == field, (body, answer.json())
    assert client.post("/api/webhooks", content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert client.patch(f"/api/webhooks/{hook['id']}", json={"colour": "red"}).json()["errors"][0]["field"] == "colour"
    assert client.get("/api/webhooks/deliveries?status=lost").json()["errors"][0]["field"] == "status"
    assert client.get("/api/jobs?limit=0").json()["errors"][0]["field"] == "limit"
    assert client.get("/api/webhooks/999").status_code == 404
    assert client.get("/api/webhooks/deliveries/999").status_code == 404
    assert client.get("/api/jobs/999").status_code == 404

    # permissions: agents and anonymous callers are refused everywhere
    agent = crm_user(client, role="agent")
    for method, url in [("GET", "/api/webhooks"), ("POST", "/api/webhooks"), ("GET", f"/api/webhooks/{hook['id']}"),
                        ("PATCH", f"/api/webhooks/{hook['id']}"), ("DELETE", f"/api/webhooks/{hook['id']}"),
                        ("GET", "/api/webhooks/deliveries"), ("GET", f"/api/webhooks/deliveries/{delivery['id']}"),
                        ("POST", f"/api/webhooks/deliveries/{delivery['id']}/redeliver"), ("GET", "/api/jobs"),
                        ("POST", f"/api/jobs/{jobs[0]['id']}/retry")]:
        kwargs = {"json": {"url": receiver.url, "events": ["*"]}} if method in ("POST", "PATCH") else {}
        assert client.request(method, url, headers=agent.headers, **kwargs).status_code == 403, url
        anonymous = client.request(method, url, headers={"Authorization": ""}, **kwargs)
        assert anonymous.status_code == 401, url

    assert client.delete(f"/api/webhooks/{hook['id']}").status_code == 204
    assert client.get(f"/api/webhooks/{hook['id']}").status_code == 404

    doc = client.get("/schema").json()
    validate_openapi(doc)
    assert {"/api/webhooks", "/api/webhooks/{webhook_id}", "/api/webhooks/deliveries/{delivery_id}/redeliver",
            "/api/jobs"} <= set(doc["paths"])
    assert "WebhookWithSecret" in doc["components"]["schemas"]
    assert "manage_integrations" in client.get("/api/auth/me").json()["grants"]


def test_the_server_runs_jobs_in_process(crm_client, receiver):
    client = crm_client()  # in_process_worker on, as crm serve runs it
    hook = client.post("/api/webhooks", json={"url": receiver.url, "events": ["company.created"]}).json()
    receiver.secret = hook["secret"]
    assert client.post("/api/company", json={"name": "Sent by the server"}).status_code == 201
    for _ in range(500):  # wait for the worker, not for a time
        if receiver.requests:
            break
        time.sleep(0.01)
    assert receiver.requests and receiver.requests[0]["verified"]["data"]["record"]["name"] == "Sent by the server"


# -- the commands ---------------------------------------------------------------------------------


def _crm(path, *args, ok=True):
    result = CliRunner().invoke(create_cli(str(path)), ["-d", str(path), *map(str, args)])
    assert "Traceback" not in result.output, result.output
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_crm_webhooks_commands(tmp_path, crm_backend, receiver):
    path = tmp_path / "acme"
    crmcore.init_deployment(path, database_url=crm_backend.database_url)
    assert "No webhooks yet" in _crm(path, "webhooks", "list")
    out = _crm(path, "webhooks", "add", receiver.url, "--event", "contact.created", "--event", "deal.*",
               "--description", "ERP")
    hook_id = out.split()[2]
    receiver.secret = out.split("Signing secret (verify deliveries with it): ")[1].strip()
    assert receiver.secret.startswith("whsec_")
    listing = _crm(path, "webhooks", "list")
    assert receiver.url in listing and "contact.created, deal.*" in listing and "ERP" in listing
    assert "events" in _crm(path, "webhooks", "add", receiver.url, "--event", "bogus", ok=False)

    async def write():
        async with await crmcore.Deployment.open(path) as dep:
            await dep.records.create("contact", {"last_name": "From the CLI"})
    asyncio.run(write())
    receiver.answers = [500]
    assert "Ran 1 job" in _crm(path, "worker", "--once")
    log = _crm(path, "webhooks", "deliveries", "--status", "retrying")
    assert "contact.created" in log and "500" in log
    delivery_id = log.splitlines()[2].split()[0]
    assert f"Delivery {delivery_id} is queued again" in _crm(path, "webhooks", "redeliver", delivery_id)
    assert "Ran 1 job" in _crm(path, "worker", "--once")
    assert "delivered" in _crm(path, "webhooks", "deliveries", "--webhook", hook_id)
    assert all(isinstance(r["verified"], dict) for r in receiver.requests) and len(receiver.requests) == 2
    assert "does not exist" in _crm(path, "webhooks", "redeliver", "999", ok=False)
    assert f"Removed webhook {hook_id}" in _crm(path, "webhooks", "remove", hook_id)
    assert "does not exist" in _crm(path, "webhooks", "remove", hook_id, ok=False)
