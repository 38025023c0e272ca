"""The web UI's own system tables (created with the others by the schema manager)."""

# Placeholders as in storage.schema.SYSTEM_TABLES. Times are ISO 8601 text in UTC.
WEB_TABLES: list[str] = [
    # A saved list view (a segment): filter, search, sort and columns of an entity's list, as
    # JSON; a user's own, or shared with everyone who may read the entity ("shared").
    """CREATE TABLE IF NOT EXISTS crm_saved_view (
        "id" {serial_kept}, "user_id" BIGINT NOT NULL, "entity" TEXT NOT NULL, "name" TEXT NOT NULL,
        "shared" {bool} NOT NULL DEFAULT {false}, "definition" TEXT NOT NULL, "created_at" TEXT NOT NULL,
        "updated_at" TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS crm_saved_view_user ON crm_saved_view ("entity", "user_id")""",
    # A user's preferences of the UI, by key (``columns:contact`` -> the list's columns, in order).
    """CREATE TABLE IF NOT EXISTS crm_user_pref (
        "user_id" BIGINT NOT NULL, "key" TEXT NOT NULL, "value" TEXT NOT NULL, "updated_at" TEXT NOT NULL,
        PRIMARY KEY ("user_id", "key"))""",
]
