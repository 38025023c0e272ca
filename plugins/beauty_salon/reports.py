"""The salon's reports: commissions per staff member and period, utilisation."""

from __future__ import annotations

from typing import Any


def reports(register: Any, deployment: Any) -> None:
    return None
