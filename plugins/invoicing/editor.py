"""The web editor of quotes and invoices (draft lines, live totals)."""

from __future__ import annotations

from typing import Any

EDITOR_ROUTES: list = []


def editor_ui_items(register: Any) -> None:
    return None
