-- SLA policies (docs/ALERTS.md, "SLA"): response and resolution budgets per inbox or team, in
-- business hours (`hours`, JSON sla::HoursSpec; NULL is round the clock).
CREATE TABLE sla_policies (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts(id),
    name                 TEXT NOT NULL,
    inbox_id             TEXT,
    team_id              TEXT,
    first_response_secs  BIGINT NOT NULL,
    next_response_secs   BIGINT,
    resolution_secs      BIGINT,
    warning_secs         BIGINT NOT NULL,
    hours                TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE UNIQUE INDEX sla_policies_name ON sla_policies (account_id, name);

-- Each warning and breach of a conversation's SLA clock, once: the watcher on every worker
-- node inserts, and only the insert that lands publishes the event.
CREATE TABLE sla_events (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    policy_id        TEXT NOT NULL,
    metric           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    due_at           BIGINT NOT NULL,
    at               BIGINT NOT NULL
);
CREATE UNIQUE INDEX sla_events_once ON sla_events (conversation_id, policy_id, metric, kind, started_at);

-- Alerting (docs/ALERTS.md): counters of signals the request path sees, each alert's phase,
-- the history of firings and resolutions, and the notices sent to Slack and PagerDuty.

-- Alert rules added over REST (config rules are not stored): the rule as JSON (alerts::RuleSpec).
CREATE TABLE alert_rules (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, name)
);

-- Counts per account, signal and 10-second bucket, added to by every node (a node adds what it
-- counted since its last flush). Evaluators sum the buckets inside a rule's window.
CREATE TABLE signal_counts (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    bucket_ms   BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (account_id, name, bucket_ms)
);

-- Where each alert (a rule over one scope) stands: the lifecycle phase as JSON, and a version
-- so that evaluators on several nodes move it by compare-and-set, each transition once.
CREATE TABLE alert_states (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    rule        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    phase       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    value       DOUBLE PRECISION,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, rule, scope)
);

-- One row per alert episode: opened when it fires, closed when it resolves.
CREATE TABLE alerts (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    rule         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    severity     TEXT NOT NULL,
    summary      TEXT NOT NULL,
    dedup_key    TEXT NOT NULL,
    value        DOUBLE PRECISION,
    threshold    DOUBLE PRECISION NOT NULL,
    state        TEXT NOT NULL,
    fired_at     BIGINT NOT NULL,
    resolved_at  BIGINT
);
CREATE INDEX alerts_by_account ON alerts (account_id, id);

-- One row per notice to one destination. `state`: due (waiting for its attempt, first or
-- retry), sending (claimed), sent, broken (the destination refused it for good).
CREATE TABLE alert_deliveries (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    alert_id         TEXT NOT NULL REFERENCES alerts(id),
    destination      TEXT NOT NULL,
    transition       TEXT NOT NULL,
    notice           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    claimed_at       BIGINT,
    last_code        TEXT,
    last_reason      TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_attempt_at);
CREATE INDEX alert_deliveries_by_alert ON alert_deliveries (alert_id);
