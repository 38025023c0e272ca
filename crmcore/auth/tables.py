"""The auth system tables (created with the other system tables, on every backend).

Same placeholders as storage.schema.SYSTEM_TABLES: {serial}, {bool}, {false}, {true}.
Times are TEXT, ISO 8601 in UTC with microseconds (fixed width, so they compare and sort as text),
like ``crm_audit.at``. Secrets are never stored: only SHA-256 hashes of session ids and tokens,
argon2 hashes of passwords.
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
    # A user's login: role (a built-in name or a crm_role row) and argon2id password hash (NULL:
    # no password yet, the user cannot log in). The user record itself is an ordinary record.
    """CREATE TABLE IF NOT EXISTS crm_user_auth (
        "user_id" BIGINT PRIMARY KEY, "role" TEXT NOT NULL, "password_hash" TEXT,
        "password_changed_at" TEXT, "created_at" TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS crm_user_auth_role ON crm_user_auth ("role")""",
    # Role definitions an admin saved (a Role as JSON). Built-in roles live in code until changed.
    """CREATE TABLE IF NOT EXISTS crm_role (
        "name" TEXT PRIMARY KEY, "definition" TEXT NOT NULL, "updated_at" TEXT NOT NULL)""",
    # Login sessions, by the SHA-256 of the cookie's token.
    """CREATE TABLE IF NOT EXISTS crm_session (
        "token_hash" TEXT PRIMARY KEY, "csrf_token" TEXT NOT NULL, "user_id" BIGINT NOT NULL,
        "created_at" TEXT NOT NULL, "expires_at" TEXT NOT NULL, "last_seen_at" TEXT NOT NULL,
        "ip" TEXT, "user_agent" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_session_user ON crm_session ("user_id")""",
    """CREATE INDEX IF NOT EXISTS crm_session_expires ON crm_session ("expires_at")""",
    # Personal API tokens, by the SHA-256 of the token; "prefix" is shown to tell them apart.
    """CREATE TABLE IF NOT EXISTS crm_api_token (
        "id" {serial}, "user_id" BIGINT NOT NULL, "name" TEXT NOT NULL, "token_hash" TEXT NOT NULL UNIQUE,
        "prefix" TEXT NOT NULL, "read_only" {bool} NOT NULL DEFAULT {false}, "created_at" TEXT NOT NULL,
        "expires_at" TEXT, "last_used_at" TEXT, "revoked_at" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_api_token_user ON crm_api_token ("user_id", "id")""",
    # One-time password reset tokens, by their SHA-256.
    """CREATE TABLE IF NOT EXISTS crm_password_reset (
        "token_hash" TEXT PRIMARY KEY, "user_id" BIGINT NOT NULL, "created_at" TEXT NOT NULL,
        "expires_at" TEXT NOT NULL, "used_at" TEXT)""",
    """CREATE INDEX IF NOT EXISTS crm_password_reset_user ON crm_password_reset ("user_id")""",
    # The security log: logins, failures, permission changes, token use. "email" is lower-cased
    # (the rate limits count failures per address); "detail" is a JSON object.
    """CREATE TABLE IF NOT EXISTS crm_security_log (
        "id" {serial}, "at" TEXT NOT NULL, "event" TEXT NOT NULL, "user_id" BIGINT, "actor_id" BIGINT,
        "email" TEXT, "ip" TEXT, "detail" TEXT)""",
    # Rate limits: recent failures of one account / one address.
    """CREATE INDEX IF NOT EXISTS crm_security_log_email ON crm_security_log ("email", "event", "at")""",
    """CREATE INDEX IF NOT EXISTS crm_security_log_ip ON crm_security_log ("ip", "event", "at")""",
    # The admin's queries: newest first, by event or by user.
    """CREATE INDEX IF NOT EXISTS crm_security_log_event ON crm_security_log ("event", "id")""",
    """CREATE INDEX IF NOT EXISTS crm_security_log_user ON crm_security_log ("user_id", "id")""",
]
