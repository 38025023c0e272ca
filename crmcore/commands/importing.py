"""The `crm` commands of importing (being written)."""

from __future__ import annotations

from typing import Any


def register(cli: Any) -> None:
    """Add this part's command group to the `crm` group."""
