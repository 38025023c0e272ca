"""Twilio Programmable Voice. Being written."""

from __future__ import annotations

from . import Provider

__all__ = ["TwilioProvider"]


class TwilioProvider(Provider):
    name = "twilio"
    label = "Twilio"
