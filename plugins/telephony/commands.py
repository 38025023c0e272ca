"""``crm telephony ...`` commands. Being written."""

from __future__ import annotations

from typing import Any


def register(cli: Any) -> None:
    """Add the telephony commands to the ``crm`` command line."""
