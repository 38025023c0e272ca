"""The invoicing plugin's reports."""

from __future__ import annotations

from typing import Any


def reports(register: Any) -> None:
    return None
