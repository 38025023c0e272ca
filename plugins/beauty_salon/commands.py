"""The ``crm salon`` commands."""

from __future__ import annotations

from typing import Any


def commands(cli: Any) -> None:
    return None
