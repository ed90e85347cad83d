-- The assignment engine (docs/ROUTING-DESIGN.md): where each conversation stands in routing,
-- the offers made to agents, who is excluded from a conversation, the assignment history and
-- the decision traces. Same conventions as 0001 (ms timestamps, JSON as TEXT).

-- `routing_state`: `waiting` (in the queue), `offered` (an offer is pending; the agent's slot is
-- held), `assigned`, or `idle` (resolved, or never routed). `queued_at` is the queue position,
-- kept when a conversation returns to the queue. `route_step` is the step last traced while
-- waiting, so a waiting conversation is traced once per step, not once per pass.
ALTER TABLE conversations ADD COLUMN routing_state TEXT NOT NULL DEFAULT 'idle'
    CHECK (routing_state IN ('waiting', 'offered', 'assigned', 'idle'));
ALTER TABLE conversations ADD COLUMN queued_at BIGINT;
ALTER TABLE conversations ADD COLUMN assigned_at BIGINT;
ALTER TABLE conversations ADD COLUMN route_step BIGINT;
-- What rules read besides the inbox and the contact: labels (a JSON array of strings) and the
-- conversation's language, set over REST (`PATCH /v1/conversations/{id}`).
ALTER TABLE conversations ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE conversations ADD COLUMN language TEXT;
-- The text of the first customer message stored (for `keyword()`), kept on the row so that
-- reading the queue needs no per-conversation lookup into `messages`. Erasure clears it.
ALTER TABLE conversations ADD COLUMN first_message TEXT;
UPDATE conversations SET
    routing_state = CASE WHEN status = 'resolved' THEN 'idle'
                         WHEN assignee_id IS NOT NULL THEN 'assigned' ELSE 'waiting' END,
    queued_at = created_at,
    assigned_at = CASE WHEN assignee_id IS NOT NULL THEN updated_at END;
CREATE INDEX conversations_routing ON conversations (account_id, routing_state, queued_at);

-- Contact attributes rules can read (`conv.contact.vip`), a JSON object.
ALTER TABLE contacts ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
-- The contact's last agent and when they were assigned (affinity), kept on the contact so that
-- reading the queue needs no search through the assignment history.
ALTER TABLE contacts ADD COLUMN last_agent_id TEXT;
ALTER TABLE contacts ADD COLUMN last_agent_at BIGINT;

-- When the agent was last given a conversation on the channel: "least recently assigned".
ALTER TABLE agent_load ADD COLUMN last_assigned_at BIGINT NOT NULL DEFAULT 0;

CREATE TABLE offers (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    agent_id         TEXT NOT NULL REFERENCES users(id),
    channel          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'declined', 'expired', 'withdrawn')),
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    decided_at       BIGINT
);
CREATE UNIQUE INDEX offers_one_pending ON offers (conversation_id) WHERE state = 'pending';
CREATE INDEX offers_agent ON offers (agent_id, state);
CREATE INDEX offers_due ON offers (account_id, state, expires_at);

-- The live slot count is the engine's to keep: recount it from what exists now.
UPDATE agent_load SET active = (
    SELECT count(*) FROM conversations c
    WHERE c.assignee_id = agent_load.user_id AND c.channel = agent_load.channel
      AND c.routing_state = 'assigned');

-- Agents the engine must not route a conversation to again: they declined it, let an offer
-- lapse, did not reply in time, or were taken off it.
CREATE TABLE routing_exclusions (
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    agent_id         TEXT NOT NULL REFERENCES users(id),
    reason           TEXT NOT NULL,
    at               BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, agent_id)
);

-- Who held each conversation, from when to when, and why.
CREATE TABLE assignments (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    contact_id       TEXT NOT NULL REFERENCES contacts(id),
    agent_id         TEXT NOT NULL REFERENCES users(id),
    reason           TEXT NOT NULL,
    by_user_id       TEXT,
    at               BIGINT NOT NULL,
    ended_at         BIGINT,
    end_reason       TEXT
);
CREATE INDEX assignments_conversation ON assignments (conversation_id, at);

-- Every routing decision and outcome, with the engine's reasons (a JSON document).
CREATE TABLE routing_traces (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    at               BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    trace            TEXT NOT NULL
);
CREATE INDEX routing_traces_conversation ON routing_traces (conversation_id, at, id);

