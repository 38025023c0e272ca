"""The beauty salon's own hook: messaging providers. Other plugins send the salon's client
messages (appointment reminders) by SMS, WhatsApp or any channel by implementing it; when none
takes a message it goes by e-mail through the deployment's SMTP server.

The message is a :class:`plugins.beauty_salon.reminders.Message`.
"""

from __future__ import annotations

from crmcore.hookspecs import hookspec


@hookspec
def beauty_salon_send_message(message, deployment):
    """Send a message to a salon's client, or leave it to another provider.

    Providers are asked one after another (the plugin registered last first) until one answers;
    the call runs in a durable job, outside any write's transaction.

    :param message: a :class:`plugins.beauty_salon.reminders.Message`: ``text`` (rendered from
        the rule's sandboxed template), ``subject``, the client's ``phone`` (E.164: their mobile,
        else their phone; None when they have neither), ``email``, ``name`` and ``client`` id, the
        ``appointment`` id and its ``starts_at`` (UTC), the ``rule`` that sent it, and ``key``:
        the same for every attempt at this message, for the provider to drop a repeat.
    :param deployment: the :class:`crmcore.Deployment` (``deployment.plugin_settings("acme")``
        for the provider's own settings).
    :return: anything but None when the provider sent it (an id, True; it is logged), None to
        leave it to the next provider (and in the end to e-mail); may be an awaitable. Raise when
        sending failed: the job is retried with backoff, and after its last attempt it is dead
        (``crm jobs list --status dead``), never a failure of the rule or of any write.

    Example::

        import httpx
        from crmcore import hookimpl

        @hookimpl
        async def beauty_salon_send_message(message, deployment):
            if message.phone is None:
                return None  # nothing to send an SMS to: e-mail it
            settings = deployment.plugin_settings("acme_sms")
            async with httpx.AsyncClient() as client:
                answer = await client.post("https://sms.acme.example/send", json={
                    "to": message.phone, "text": message.text, "idempotency_key": message.key},
                    headers={"authorization": f"Bearer {settings['token']}"})
                answer.raise_for_status()  # retried later
            return answer.json()["id"]
    """
