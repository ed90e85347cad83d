-- Agents as routable resources (docs/ROUTING-DESIGN.md, "Data"): the account's skill
-- catalogue, each user's routing profile (skill and language levels, capacity per channel) and
-- presence. Same conventions as 0001 (ms timestamps). An agent is any active user; a user
-- without rows here has no skills, no languages, no capacity and reads as offline.

CREATE TABLE skills (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, name)
);

-- The foreign key to the catalogue backs the API's own check: a skill an agent holds cannot
-- be deleted, even by a deletion racing a profile change.
CREATE TABLE agent_skills (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    skill       TEXT NOT NULL,
    level       BIGINT NOT NULL CHECK (level BETWEEN 0 AND 5),
    PRIMARY KEY (user_id, skill),
    FOREIGN KEY (account_id, skill) REFERENCES skills(account_id, name)
);
CREATE INDEX agent_skills_skill ON agent_skills (account_id, skill);

CREATE TABLE agent_languages (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    lang        TEXT NOT NULL,
    level       BIGINT NOT NULL CHECK (level BETWEEN 0 AND 5),
    PRIMARY KEY (user_id, lang)
);
CREATE INDEX agent_languages_lang ON agent_languages (account_id, lang);

-- One row per agent and channel. `capacity` is set by admins (0: never routed that channel);
-- `active` is the live count the assignment commit guards with
-- `UPDATE agent_load SET active = active + 1 WHERE … AND active < capacity`. Profile changes
-- never touch `active`.
CREATE TABLE agent_load (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    channel     TEXT NOT NULL CHECK (channel IN ('whatsapp', 'sms', 'webchat')),
    capacity    BIGINT NOT NULL CHECK (capacity >= 0),
    active      BIGINT NOT NULL DEFAULT 0 CHECK (active >= 0),
    PRIMARY KEY (user_id, channel)
);
CREATE INDEX agent_load_account ON agent_load (account_id, channel);

-- The status the agent chose and their last heartbeat. A status other than `offline` whose
-- heartbeat is older than `routing.presence_timeout_secs` reads as `offline`.
CREATE TABLE presence (
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    user_id       TEXT PRIMARY KEY REFERENCES users(id),
    status        TEXT NOT NULL CHECK (status IN ('online', 'away', 'offline')),
    heartbeat_at  BIGINT NOT NULL,
    changed_at    BIGINT NOT NULL
);
CREATE INDEX presence_account ON presence (account_id, status);

-- Row-level security, as for the tables of 0002.
SELECT switchboard_account_wall(t)
FROM unnest(ARRAY['skills', 'agent_skills', 'agent_languages', 'agent_load', 'presence']) AS t;
