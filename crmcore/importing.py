"""Import and export of records (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["IMPORT_TABLES", "ImportService"]

#: System tables (placeholders as in storage.schema.SYSTEM_TABLES).
IMPORT_TABLES: list[str] = []


class ImportService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
