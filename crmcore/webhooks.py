"""Outgoing webhooks: subscriptions, signed deliveries, the delivery log (being written)."""

WEBHOOK_TABLES: list[str] = []
