"""Durable jobs: a queue in the database, a controllable clock, the worker (being written)."""

JOB_TABLES: list[str] = []
