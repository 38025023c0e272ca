"""The "salon" edition and its demo data."""

from __future__ import annotations

from typing import Any


def editions(register: Any) -> None:
    return None
