"""Web UI pages: document templates and configuration bundles. Being written."""

from __future__ import annotations

from typing import Any

__all__ = ["ROUTES"]

ROUTES: list[Any] = []
