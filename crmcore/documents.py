"""Documents from templates (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["DOCUMENT_TABLES", "DocumentService"]

#: System tables (placeholders as in storage.schema.SYSTEM_TABLES).
DOCUMENT_TABLES: list[str] = []


class DocumentService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
