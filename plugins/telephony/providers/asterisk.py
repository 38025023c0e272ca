"""Asterisk through its Manager Interface (AMI). Being written."""

from __future__ import annotations

from . import Provider

__all__ = ["AsteriskProvider"]


class AsteriskProvider(Provider):
    name = "asterisk"
    label = "Asterisk (AMI)"
