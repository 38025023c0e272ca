"""Reports: saved definitions run in SQL, built-in reports, charts (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["REPORT_TABLES", "ReportService"]

#: System tables (placeholders as in storage.schema.SYSTEM_TABLES).
REPORT_TABLES: list[str] = []


class ReportService:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
