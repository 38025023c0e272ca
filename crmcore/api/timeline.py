"""HTTP routes of timeline, notifications and web forms (being written)."""

ROUTES: list = []
