"""The auth system tables (created with the other system tables, on every backend).

Same placeholders as storage.schema.SYSTEM_TABLES: {serial}, {bool}, {false}, {true}.
"""

AUTH_TABLES: list[str] = []
