"""Pipelines: stored and plugin-declared, stage moves, stage history (being written)."""

PIPELINE_TABLES: list[str] = []
