"""HTTP routes of jobs and webhooks (being written)."""

ROUTES: list = []
