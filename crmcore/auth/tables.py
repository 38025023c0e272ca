"""The auth system tables (created with the other system tables, on every backend).

Same placeholders as storage.schema.SYSTEM_TABLES: {serial}, {bool}, {false}, {true}.
"""

AUTH_TABLES: list[str] = [
    # Teams. The records service reads these two directly (team scopes, a new record's team):
    # keep the names and columns. A user's first team (lowest position) is their primary team.
    """CREATE TABLE IF NOT EXISTS crm_team (
        "id" {serial}, "name" TEXT NOT NULL UNIQUE, "created_at" TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS crm_team_member (
        "team_id" BIGINT NOT NULL, "user_id" BIGINT NOT NULL, "position" INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY ("team_id", "user_id"))""",
    """CREATE INDEX IF NOT EXISTS crm_team_member_user ON crm_team_member ("user_id", "position")""",
]
