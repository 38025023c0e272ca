"""The invoicing plugin in the web UI: panels on client cards, invoices on timelines."""

from __future__ import annotations

from typing import Any


def ui_items(register: Any, deployment: Any) -> None:
    return None


def timeline_items(entity: str, record_id: int, before: Any, limit: int, actor: Any, deployment: Any) -> list:
    return []
