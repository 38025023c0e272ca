"""HTTP routes of configuration bundles (export, diff, apply). Being written."""

from __future__ import annotations

from typing import Any

__all__ = ["ROUTES", "SCHEMA_TYPES", "openapi_paths"]

ROUTES: list[Any] = []
SCHEMA_TYPES: list[Any] = []


def openapi_paths(problem: Any) -> dict[str, Any]:
    return {}
