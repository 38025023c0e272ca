"""HTTP routes of the beauty salon plugin."""

from __future__ import annotations

ROUTES: list = []
