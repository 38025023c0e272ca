"""HTTP routes of pipelines (being written)."""

ROUTES: list = []
