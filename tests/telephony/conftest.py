"""Helpers of the telephony plugin's tests: a deployment with the plugin on, its API client, and
signed posts to the generic PBX webhook."""

from __future__ import annotations

import json
import time

import pytest

from plugins.telephony.providers.generic import sign

SECRET = "pbx-secret"
WEBHOOK = "/api/telephony/webhooks/generic"


def signed(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    return {"x-telephony-timestamp": stamp, "x-telephony-signature": sign(secret, stamp, body),
            "content-type": "application/json"}


def _line(client, user_id: int, extension: str) -> None:
    """Give the user an extension (a telephony_line)."""
    answer = client.post("/api/telephony_line", json={"user": user_id, "extension": extension})
    assert answer.status_code == 201, answer.text


def _calls(client) -> list[dict]:
    return client.get("/api/telephony_call", params={"sort": "id", "limit": 100}).json()["items"]


def _tasks(client, **filters) -> list[dict]:
    return client.get("/api/activity", params={"sort": "id", **filters}).json()["items"]


class Pbx:
    """Posts call events to the generic webhook as a PBX would."""

    def __init__(self, client):
        self.client = client

    def post(self, event: dict | list, *, at: int | None = None, **headers):
        body = json.dumps({"events": event} if isinstance(event, list) else event).encode()
        return self.client.post(WEBHOOK, content=body, headers={**signed(body, at=at), **headers})

    def send(self, _retry: bool = False, **event):
        """Post an event; ``_retry``: as the PBX's retry of it (signed a second later, so not a replay)."""
        answer = self.post(event, at=int(time.time()) + 1 if _retry else None)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def phone_client(crm_client):
    """``make(**settings)``: an admin's client of a deployment with telephony on (region TR)."""

    def make(region: str = "TR", extra_plugins=(), **plugin_settings):
        settings = {"webhook_secret": SECRET, **plugin_settings}
        client = crm_client(plugins=["telephony"], region=region, in_process_worker=False,
                            plugin={"telephony": settings}, extra_plugins=extra_plugins)
        client.pbx = Pbx(client)
        client.dep = client.app.state.deployment
        return client

    return make
