-- The inbound spine: accounts, inboxes, API keys, the raw inbound event log, and the
-- contact > conversation > message model. Timestamps are Unix milliseconds (BIGINT) and JSON is
-- TEXT so that one SQL text serves PostgreSQL and SQLite (see src/store/mod.rs).

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE inboxes (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    slug          TEXT NOT NULL UNIQUE,
    channel       TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- WhatsApp phone_number_id, Twilio number (E.164), or NULL for web chat.
    provider_ref  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX inboxes_provider_ref ON inboxes (channel, provider_ref);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);

-- Every signed provider request, kept raw before it is acknowledged. `event_key` identifies the
-- provider event(s) in it; the unique key makes a redelivery a no-op.
CREATE TABLE inbound_events (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    channel       TEXT NOT NULL,
    source        TEXT NOT NULL,
    inbox_id      TEXT REFERENCES inboxes(id),
    event_key     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    body          BYTEA NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    received_at   BIGINT NOT NULL,
    -- Last time the recovery sweep queued this event again (NULL: only the intake's push).
    queued_at     BIGINT,
    processed_at  BIGINT
);
CREATE UNIQUE INDEX inbound_events_key ON inbound_events (source, event_key);
CREATE INDEX inbound_events_status ON inbound_events (account_id, status, id);

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT,
    phone       TEXT,
    email       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE contact_identities (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    contact_id  TEXT NOT NULL REFERENCES contacts(id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, kind, value)
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

CREATE TABLE conversations (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    inbox_id         TEXT NOT NULL REFERENCES inboxes(id),
    contact_id       TEXT NOT NULL REFERENCES contacts(id),
    channel          TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    assignee_id      TEXT,
    team_id          TEXT,
    last_message_at  BIGINT NOT NULL,
    last_inbound_at  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    resolved_at      BIGINT
);
-- One open conversation per contact per inbox, whichever worker or node gets there first.
CREATE UNIQUE INDEX conversations_one_open ON conversations (inbox_id, contact_id) WHERE status <> 'resolved';
CREATE INDEX conversations_account ON conversations (account_id, id);

CREATE TABLE messages (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts(id),
    conversation_id      TEXT NOT NULL REFERENCES conversations(id),
    inbox_id             TEXT NOT NULL REFERENCES inboxes(id),
    direction            TEXT NOT NULL,
    content_type         TEXT NOT NULL,
    content              TEXT NOT NULL,
    provider_message_id  TEXT,
    reply_to             TEXT,
    forwarded            BIGINT NOT NULL DEFAULT 0,
    status               TEXT NOT NULL,
    status_rank          BIGINT NOT NULL,
    error                TEXT,
    sent_at              BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    inbound_event_id     TEXT REFERENCES inbound_events(id),
    raw                  TEXT
);
-- The final word on duplicates: one message per provider id per inbox and direction.
CREATE UNIQUE INDEX messages_provider_id ON messages (inbox_id, direction, provider_message_id);
CREATE INDEX messages_conversation ON messages (conversation_id, sent_at, id);

-- Provider delivery reports, one row per (message, provider status); applied to outbound
-- messages monotonically (status_rank only grows).
CREATE TABLE message_status_events (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts(id),
    channel              TEXT NOT NULL,
    provider_message_id  TEXT NOT NULL,
    provider_status      TEXT NOT NULL,
    status               TEXT,
    at                   BIGINT NOT NULL,
    errors               TEXT NOT NULL,
    inbound_event_id     TEXT REFERENCES inbound_events(id),
    created_at           BIGINT NOT NULL
);
CREATE UNIQUE INDEX message_status_events_key ON message_status_events (channel, provider_message_id, provider_status);

-- Web-chat visitor sessions. The token is random and stored only as its SHA-256.
CREATE TABLE webchat_sessions (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    inbox_id     TEXT NOT NULL REFERENCES inboxes(id),
    visitor_id   TEXT NOT NULL,
    identifier   TEXT,
    name         TEXT,
    email        TEXT,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
