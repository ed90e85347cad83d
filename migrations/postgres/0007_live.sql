-- Live consoles (docs/LIVE.md): the event log consoles resume from, single-use WebSocket
-- tickets for browsers, and the open consoles behind agents' presence.

-- One row per account: the last event id given out (ids are taken under this row's lock, so an
-- id commits only after every smaller one has) and the last id pruned by retention.
CREATE TABLE event_heads (
    account_id      TEXT PRIMARY KEY REFERENCES accounts(id),
    last_id         BIGINT NOT NULL,
    pruned_through  BIGINT NOT NULL DEFAULT 0
);

-- The event log. Besides the frame's `kind` and `data` (JSON), each row keeps who may see it as
-- it was when it happened: the conversation's contact, inbox, team, branch and assignee, and
-- the agent it is about (an offer's agent, a presence's user, a previous assignee).
CREATE TABLE events (
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    id               BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    data             TEXT NOT NULL,
    conversation_id  TEXT,
    contact_id       TEXT,
    inbox_id         TEXT,
    team_id          TEXT,
    branch_id        TEXT,
    assignee_id      TEXT,
    agent_id         TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX events_age ON events (account_id, created_at);
CREATE INDEX events_contact ON events (contact_id);

CREATE TABLE ws_tickets (
    hash        TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    session_id  TEXT NOT NULL,
    token_exp   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Open agent consoles, one row per socket, refreshed by their node every ping period.
CREATE TABLE consoles (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    node_id     TEXT NOT NULL,
    opened_at   BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL
);
CREATE INDEX consoles_user ON consoles (account_id, user_id);
CREATE INDEX consoles_node ON consoles (node_id);

SELECT switchboard_account_wall(t)
FROM unnest(ARRAY['event_heads', 'events', 'ws_tickets', 'consoles']) AS t;
