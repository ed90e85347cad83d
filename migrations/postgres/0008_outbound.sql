-- Outbound delivery (docs/OUTBOUND.md): the delivery record behind every reply sent through a
-- provider, the account's saved replies, and the WhatsApp templates an inbox may send.

-- A client's `Idempotency-Key` for a reply: the same key within an account is the same reply.
ALTER TABLE messages ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX messages_idempotency ON messages (account_id, idempotency_key);

-- One row per outbound message that goes through a provider. `state`:
--   queued   a DeliverOutbound job is (or is about to be) in the queue
--   sending  a worker claimed it and is calling the provider
--   retry    the last attempt failed transiently (or pacing deferred it); due at next_attempt_at
--   sent     the provider accepted it
--   dead     given up (a permanent error or the last attempt): the dead-letter list
-- The sweep moves due `retry` rows (and stale `queued`/`sending` ones) back to `queued`.
CREATE TABLE outbound_deliveries (
    message_id       TEXT PRIMARY KEY REFERENCES messages(id),
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    inbox_id         TEXT NOT NULL REFERENCES inboxes(id),
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    -- The provider request's inputs (recipient, content, threading), JSON.
    request          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    claimed_at       BIGINT,
    last_code        TEXT,
    last_reason      TEXT,
    replays          BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX outbound_due ON outbound_deliveries (state, next_attempt_at);
CREATE INDEX outbound_dead ON outbound_deliveries (account_id, state, updated_at);

-- Saved replies; `body` may hold `{{variables}}` filled in when used.
CREATE TABLE canned_responses (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    short_code  TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX canned_short_code ON canned_responses (account_id, short_code);

-- The message templates an inbox may send (as approved on the provider's side): how many body
-- parameters each takes is checked before anything is queued.
CREATE TABLE message_templates (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    inbox_id    TEXT NOT NULL REFERENCES inboxes(id),
    name        TEXT NOT NULL,
    language    TEXT NOT NULL,
    parameters  BIGINT NOT NULL,
    body        TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX message_templates_key ON message_templates (inbox_id, name, language);

SELECT switchboard_account_wall(t)
FROM unnest(ARRAY['outbound_deliveries', 'canned_responses', 'message_templates']) AS t;
