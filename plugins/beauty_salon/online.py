"""The public online booking page."""

from __future__ import annotations

from typing import Any

ONLINE_ROUTES: list = []


def online_ui_items(register: Any) -> None:
    return None
