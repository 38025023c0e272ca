"""Errors of authentication; the API turns them into problem+json responses (401, 429)."""

from __future__ import annotations

__all__ = ["Unauthenticated", "RateLimited"]


class Unauthenticated(Exception):
    """No valid credentials: a missing, wrong, revoked or expired token, session or password.
    The message says which, without telling whether an account exists."""


class RateLimited(Exception):
    """Too many failed attempts; ``retry_after`` seconds until the next one is considered."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
