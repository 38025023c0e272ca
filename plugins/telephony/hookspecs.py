"""The telephony plugin's own hook: call providers. Other plugins add providers by implementing it
(a carrier's API, another PBX) exactly like the built-in ones do.

A provider turns what a PBX or a cloud service sends into :class:`plugins.telephony.calls.CallEvent`
values and, when it can, places calls. See :class:`plugins.telephony.providers.Provider`.
"""

from __future__ import annotations

from crmcore.hookspecs import hookspec


@hookspec
def telephony_register_providers(register, deployment):
    """Declare call providers.

    :param register: ``register(provider: Provider)``; ``provider.name`` is its key in URLs
        (``/api/telephony/webhooks/<name>``) and in the ``[plugin.telephony]`` settings
        (``provider = "<name>"`` picks the one that places calls). A name already taken is refused.
    :param deployment: the :class:`crmcore.Deployment`.

    Example::

        from plugins.telephony.calls import CallEvent
        from plugins.telephony.providers import Provider, WebhookAnswer

        class Acme(Provider):
            name = "acme"
            label = "Acme Cloud PBX"

            async def webhook(self, deployment, request, body, settings):
                self.verify_hmac(body, request.headers.get("x-acme-signature"), settings["acme_secret"])
                data = self.json(body)
                return WebhookAnswer(events=[CallEvent(provider="acme", kind=data["type"], call_id=data["id"],
                                                       direction="inbound", from_number=data["from"],
                                                       to_number=data["to"])])

        @hookimpl
        def telephony_register_providers(register):
            register(Acme())
    """
