-- Identity, access control and audit: branches, teams, users and their sessions, custom roles,
-- and the append-only audit log. Same conventions as 0001 (ms timestamps, JSON as TEXT).

CREATE TABLE branches (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    active      BIGINT NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX branches_name ON branches (account_id, name);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    branch_id   TEXT REFERENCES branches(id),
    active      BIGINT NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX teams_name ON teams (account_id, name);

-- Custom roles: a name and a JSON object of permission -> scope. Built-in roles live in code
-- (src/access.rs) and are referred to by name; custom ones by id (rol_…).
CREATE TABLE roles (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    grants       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (account_id, name);

-- Emails are stored lowercased and are unique across accounts, so sign-in needs no account.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    email          TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL,
    branch_id      TEXT REFERENCES branches(id),
    active         BIGINT NOT NULL DEFAULT 1,
    failed_logins  BIGINT NOT NULL DEFAULT 0,
    locked_until   BIGINT,
    -- TOTP secret sealed with the configured key; enabled once a first code is verified.
    totp_secret    TEXT,
    totp_enabled   BIGINT NOT NULL DEFAULT 0,
    last_login_at  BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX users_account ON users (account_id, id);

CREATE TABLE team_members (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    team_id     TEXT NOT NULL REFERENCES teams(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

-- A sign-in session: the family of refresh tokens one login starts. Access tokens name their
-- session (`sid`), so revoking it ends them on the next request.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    ip           TEXT,
    user_agent   TEXT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    revoked_why  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Refresh tokens, stored as SHA-256. A token is used once; presenting a used one again
-- revokes its whole session (reuse means it was stolen).
CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE backup_codes (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    code_hash   TEXT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Append-only: the triggers below refuse UPDATE and DELETE. Ids are ULIDs, so id order is
-- time order. `account_id` is NULL only for failed logins with an unknown email.
CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,
    account_id      TEXT REFERENCES accounts(id),
    actor_type      TEXT NOT NULL,
    actor_id        TEXT,
    action          TEXT NOT NULL,
    entity_type     TEXT NOT NULL,
    entity_id       TEXT,
    before          TEXT,
    after           TEXT,
    ip              TEXT,
    user_agent      TEXT,
    correlation_id  TEXT,
    at              BIGINT NOT NULL
);
CREATE INDEX audit_log_account ON audit_log (account_id, id);
CREATE INDEX audit_log_entity ON audit_log (account_id, entity_type, entity_id);

ALTER TABLE inboxes ADD COLUMN team_id TEXT REFERENCES teams(id);
ALTER TABLE inboxes ADD COLUMN branch_id TEXT REFERENCES branches(id);
ALTER TABLE inboxes ADD COLUMN whatsapp_app TEXT;
-- Provider secrets (JSON), sealed with the configured key; never returned by the API.
ALTER TABLE inboxes ADD COLUMN credentials TEXT;
ALTER TABLE inboxes ADD COLUMN credentials_hint TEXT;
-- 'config' (declared in the config file, which wins at start) or 'api'.
ALTER TABLE inboxes ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'config';
ALTER TABLE inboxes ADD COLUMN active BIGINT NOT NULL DEFAULT 1;

ALTER TABLE conversations ADD COLUMN branch_id TEXT;
CREATE INDEX conversations_assignee ON conversations (account_id, assignee_id);
CREATE INDEX conversations_team ON conversations (account_id, team_id);

ALTER TABLE messages ADD COLUMN author_id TEXT;
ALTER TABLE contacts ADD COLUMN erased_at BIGINT;
ALTER TABLE api_keys ADD COLUMN created_by TEXT;

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Row-level security: the second wall behind the application's own account filter. Requests
-- run with `switchboard.account_id` set for their transaction (Store::scoped); a row of another
-- account is then invisible even to a query that forgot its WHERE clause. Background work
-- (intake, workers) runs with the setting unset and sees every account. FORCE applies the
-- policy to the tables' owner too; PostgreSQL superusers always bypass RLS, so production
-- should connect as an ordinary role (README).
-- `switchboard_account_wall(table)` puts a table behind the wall; later migrations call it for
-- their own tables.
CREATE FUNCTION switchboard_account_wall(t TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format($p$CREATE POLICY account_wall ON %I USING (
        coalesce(current_setting('switchboard.account_id', true), '') = ''
        OR account_id = current_setting('switchboard.account_id', true))$p$, t);
END
$$;
SELECT switchboard_account_wall(t) FROM unnest(ARRAY['inboxes', 'api_keys', 'inbound_events',
    'contacts', 'contact_identities', 'conversations', 'messages', 'message_status_events',
    'webchat_sessions', 'branches', 'teams', 'roles', 'users', 'team_members', 'sessions',
    'refresh_tokens', 'backup_codes', 'audit_log']) AS t;
