-- Outbound webhooks to customers' systems (docs/WEBHOOKS_OUT.md): the endpoints an account
-- registered, and one delivery row per (endpoint, event) with its retry schedule.

-- `secret` and `previous_secret` are sealed (crypto::Sealer); `previous_secret` still signs
-- until `previous_until` (a rotation's overlap). `cursor`: the last event-log id this endpoint
-- has been matched against; the tailer advances it by compare-and-set in the transaction that
-- inserts the deliveries. `next_seq` numbers the endpoint's deliveries in event order (what an
-- ordered endpoint is delivered by). `enabled`, `ordered`: 0 or 1.
CREATE TABLE webhook_endpoints (
    id                    TEXT PRIMARY KEY,
    account_id            TEXT NOT NULL REFERENCES accounts(id),
    url                   TEXT NOT NULL,
    description           TEXT NOT NULL,
    event_types           TEXT NOT NULL,
    enabled               BIGINT NOT NULL,
    ordered               BIGINT NOT NULL,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_until        BIGINT,
    cursor                BIGINT NOT NULL,
    next_seq              BIGINT NOT NULL DEFAULT 1,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    disabled_reason       TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_by_account ON webhook_endpoints (account_id, id);

-- One message to one endpoint. `msg_id` is the `webhook-id` header, the same on every attempt
-- and on a replay. `event_id`: the event-log id (NULL for test events and replays), unique per
-- endpoint so that tailers on several nodes never queue an event twice. `state`: due (waiting
-- for its attempt), sending (claimed), succeeded, failed (out of attempts).
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints(id),
    seq              BIGINT NOT NULL,
    event_id         BIGINT,
    msg_id           TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    claimed_at       BIGINT,
    response_status  BIGINT,
    response_body    TEXT,
    last_error       TEXT,
    replay_of        TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id);
CREATE UNIQUE INDEX webhook_deliveries_seq ON webhook_deliveries (endpoint_id, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
