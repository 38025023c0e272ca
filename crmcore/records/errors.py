"""Errors of the records service; the API turns them into problem+json responses."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["FieldError", "ValidationError", "NotFound", "Conflict", "Forbidden"]


class FieldError(msgspec.Struct):
    """What was wrong with one field, and what is accepted."""

    field: str
    code: str
    message: str


class ValidationError(Exception):
    """The input was refused; nothing was written."""

    def __init__(self, errors: list[FieldError]):
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class NotFound(Exception):
    def __init__(self, entity: str, record_id: Any):
        super().__init__(f"{entity} {record_id} does not exist")
        self.entity = entity
        self.record_id = record_id


class Forbidden(Exception):
    """The actor's role does not allow this; ``errors`` name the fields when fields are the reason.
    Records the actor may not read are NotFound instead, so their existence does not leak."""

    def __init__(self, message: str, errors: list[FieldError] | None = None):
        super().__init__(message)
        self.errors = errors or []


class Conflict(Exception):
    """A stale update: the record changed since the version the client read."""

    def __init__(self, entity: str, record_id: Any, expected: int, current: dict[str, Any], changed: list[str]):
        super().__init__(
            f"{entity} {record_id} was changed by someone else (you had version {expected}, "
            f"it is now {current.get('version')})"
        )
        self.entity = entity
        self.record_id = record_id
        self.expected = expected
        self.current = current
        self.changed = changed
