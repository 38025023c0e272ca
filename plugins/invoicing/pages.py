"""The invoicing plugin's web pages and the report routes behind them."""

from __future__ import annotations

from typing import Any

PAGES: list = []


def page_ui_items(register: Any) -> None:
    return None
