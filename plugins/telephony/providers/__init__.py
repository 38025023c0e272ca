"""Call providers behind one interface: what a PBX or a cloud service sends becomes
:class:`~plugins.telephony.calls.CallEvent` values; click-to-call goes out through the one the
settings name.

Built in: ``generic`` (any PBX posting signed JSON, see :mod:`.generic`), ``twilio`` and
``asterisk``. Others come from plugins through the ``telephony_register_providers`` hook
(:mod:`plugins.telephony.hookspecs`).

Settings (``[plugin.telephony]`` in crm.toml) are read by each provider; ``provider`` names
the one that places calls (none: click-to-call is a plain ``tel:`` link).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from crmcore import FieldError, Forbidden, PluginError, ValidationError

from ..calls import CallEvent, Ingested

if TYPE_CHECKING:
    from crmcore import Deployment

__all__ = ["Provider", "providers_of", "MAX_WEBHOOK_BODY", "NotConfigured"]

#: The largest webhook body taken (a call event is a few hundred bytes).
MAX_WEBHOOK_BODY = 64 * 1024


class NotConfigured(HTTPException):
    """The provider has no settings on this deployment: answered 404, as if it were not there."""

    status_code = 404


class Provider:
    """A call provider. Subclasses set ``name`` and ``label`` and implement what they can."""

    name = ""
    label = ""

    async def webhook(self, deployment: Deployment, request: Request, body: bytes,
                      settings: dict[str, Any]) -> list[CallEvent]:
        """The events of one webhook request, once its signature is checked: raise
        :class:`crmcore.Forbidden` (403, nothing changes) for a missing or wrong signature,
        :class:`crmcore.ValidationError` (422) for a bad payload, :class:`NotConfigured` when the
        deployment has no settings for this provider."""
        raise NotConfigured(detail=f"the {self.name} provider takes no webhooks")

    def answer(self, request: Request, results: list[Ingested]) -> Response | dict[str, Any]:
        """What the provider wants back once the events are applied (default: JSON with the
        route, i.e. the extension to ring first, and the calls)."""
        route = next((r.route for r in results if r.route), None)
        return {"route": route, "calls": [r.call["id"] for r in results]}

    def can_call(self, settings: dict[str, Any]) -> bool:
        """Whether :meth:`originate` works with these settings."""
        return False

    async def originate(self, deployment: Deployment, *, extension: str | None, user_phone: str | None,
                        number: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Place a call from the user's extension (or phone) to ``number`` (E.164); what the
        provider said (its call id...). Raise ValidationError naming what is missing."""
        raise ValidationError([FieldError("provider", "unsupported", f"the {self.name} provider cannot place calls")])

    # -- helpers for subclasses -------------------------------------------------------------

    @staticmethod
    def json(body: bytes, type_: Any = dict) -> Any:
        """The body as JSON (of ``type_``); a ValidationError naming the field otherwise."""
        try:
            return msgspec.json.decode(body, type=type_)
        except msgspec.ValidationError as exc:
            message = str(exc)
            at = re.search(r" - at `\$\.?([^`]*)`$", message)
            path = at.group(1) if at else ""
            named = re.search(r"(?:missing required|unknown) field `([^`]+)`", message)
            if named:
                path = f"{path}.{named.group(1)}" if path else named.group(1)
            raise ValidationError([FieldError(path or "body", "invalid", message)]) from None
        except msgspec.DecodeError as exc:
            raise ValidationError([FieldError("body", "invalid_json", f"the body is not JSON: {exc}")]) from None

    @staticmethod
    def verify_hmac(message: bytes, signature: str | None, secret: str) -> None:
        """Forbidden unless ``signature`` is ``sha256=<hex HMAC-SHA256 of message with secret>``."""
        if not signature:
            raise Forbidden("the request is not signed")
        expected = "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.strip()):
            raise Forbidden("the request's signature is wrong")


def providers_of(deployment: Deployment) -> dict[str, Provider]:
    """Every provider the enabled plugins declare, by name."""
    found: dict[str, Provider] = {}

    def register(provider: Provider) -> None:
        if not isinstance(provider, Provider) or not provider.name:
            raise PluginError(f"a telephony provider is a Provider with a name, not {provider!r}")
        if provider.name in found:
            raise PluginError(f"telephony provider {provider.name!r} is declared twice")
        found[provider.name] = provider

    deployment.pm.hook.telephony_register_providers(register=register, deployment=deployment)
    return found
