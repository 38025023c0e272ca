"""Client metrics (visits, frequency, average bill, total spent, last visit, no-shows, favourite
staff and service), computed in SQL and kept on the client as filterable fields."""

from __future__ import annotations

from typing import Any


def client_fields(add_field: Any) -> None:
    return None


def after_commit(event: Any, deployment: Any) -> None:
    return None


def metrics_ui_items(register: Any) -> None:
    return None
