-- Routing rules (docs/ROUTING-DESIGN.md, "Rules and steps"): the first rule of the account, by
-- `position`, whose match expression is true for a conversation decides its steps. The match
-- expression and every step's target are compiled against the schema before a row is written,
-- so a stored rule always compiled when it was saved. `match_expr` is the rule's `match` (the
-- word is an operator in SQLite). `steps` is a JSON array of
-- `{"target": "…", "priority": 0–100, "timeout_secs": n | null}`; only the last may be null.
CREATE TABLE routing_rules (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id),
    position            BIGINT NOT NULL,
    name                TEXT NOT NULL,
    match_expr          TEXT NOT NULL,
    steps               TEXT NOT NULL,
    mode                TEXT NOT NULL CHECK (mode IN ('auto', 'offer')),
    offer_timeout_secs  BIGINT NOT NULL CHECK (offer_timeout_secs > 0),
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX routing_rules_order ON routing_rules (account_id, position, id);

-- Row-level security, as for the tables of 0002.
SELECT switchboard_account_wall('routing_rules');
