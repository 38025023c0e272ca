"""Activities on any record, the record timeline, notifications, web-form lead capture (being written)."""

TIMELINE_TABLES: list[str] = []
