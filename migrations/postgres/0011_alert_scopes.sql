-- Alert signals finer than the account (docs/ALERTS.md, "Signals"): each counter bucket gets a
-- scope — `account` for the account's total, which every counter keeps, and `provider:…`,
-- `team:…` or `inbox:…` for the part of it one provider, team or inbox saw. The buckets
-- already counted are the account totals they were.
ALTER TABLE signal_counts ADD COLUMN scope TEXT NOT NULL DEFAULT 'account';
ALTER TABLE signal_counts ALTER COLUMN scope DROP DEFAULT;
ALTER TABLE signal_counts DROP CONSTRAINT signal_counts_pkey;
ALTER TABLE signal_counts ADD PRIMARY KEY (account_id, name, scope, bucket_ms);

-- When each counter (of each scope) last counted anything, kept for good (buckets are pruned
-- after two days): the `inbound_silence` signal reads how long an inbox has had no customer
-- message. Seeded from the conversations, so inboxes that had traffic before this migration
-- are watched at once.
CREATE TABLE signal_seen (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    last_ms     BIGINT NOT NULL,
    PRIMARY KEY (account_id, name, scope)
);
INSERT INTO signal_seen (account_id, name, scope, last_ms)
SELECT account_id, 'inbound.messages', 'inbox:' || inbox_id, MAX(last_inbound_at)
FROM conversations WHERE last_inbound_at IS NOT NULL GROUP BY account_id, inbox_id;

SELECT switchboard_account_wall('signal_seen');
