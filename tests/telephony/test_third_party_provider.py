"""A provider from another plugin, through the telephony plugin's own hook: its webhook logs
calls like the built-in ones, and it places click-to-call calls when the settings pick it."""

from __future__ import annotations

from crmcore import Forbidden, PluginInfo, hookimpl
from plugins.telephony.calls import CallEvent
from plugins.telephony.providers import Provider

from ..conftest import problem
from .conftest import _calls


class Acme(Provider):
    name = "acme"
    label = "Acme Cloud PBX"
    #: The calls placed, for the test to see.
    placed: list[dict] = []

    async def webhook(self, deployment, request, body, settings):
        if request.headers.get("x-acme-key") != settings.get("acme_key"):
            raise Forbidden("wrong Acme key")
        data = self.json(body)
        return [CallEvent(provider=self.name, kind=data["type"], call_id=data["id"], from_number=data["from"],
                          status=data.get("status"))]

    def can_call(self, settings):
        return bool(settings.get("acme_key"))

    async def originate(self, deployment, *, extension, user_phone, number, settings):
        self.placed.append({"extension": extension, "number": number})
        return {"call_id": f"acme-{len(self.placed)}"}


class AcmePlugin:
    PLUGIN = PluginInfo(name="acme", version="1", requires=["telephony"])

    @staticmethod
    @hookimpl(specname="telephony_register_providers")
    def providers(register):
        register(Acme())


def test_a_plugins_provider_logs_calls_and_places_them(phone_client):
    Acme.placed.clear()
    client = phone_client(extra_plugins=[AcmePlugin], acme_key="k1", provider="acme")
    names = {p["name"]: p for p in client.get("/api/telephony/providers").json()}
    assert names["acme"] == {"name": "acme", "label": "Acme Cloud PBX", "places_calls": True, "selected": True}
    problem(client.post("/api/telephony/webhooks/acme", json={"type": "ended", "id": "a1", "from": "+905321112233"},
                        headers={"x-acme-key": "nope"}), 403)
    answer = client.post("/api/telephony/webhooks/acme", headers={"x-acme-key": "k1"},
                         json={"type": "ended", "id": "a1", "from": "+905321112233", "status": "missed"})
    assert answer.status_code == 200, answer.text
    [call] = _calls(client)
    assert (call["provider"], call["status"], call["from_number"]["e164"]) == ("acme", "missed", "+905321112233")
    placed = client.post("/api/telephony/calls", json={"number": "0532 111 22 33"}).json()
    assert placed == {"placed": True, "provider": "acme", "number": "+905321112233", "call_id": "acme-1"}
    assert Acme.placed[-1]["number"] == "+905321112233"
