"""Per-staff iCalendar feeds at a secret URL."""

from __future__ import annotations

from typing import Any

FEED_ROUTES: list = []


def feed_ui_items(register: Any) -> None:
    return None
