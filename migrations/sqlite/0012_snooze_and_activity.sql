-- Snoozing (`POST /v1/conversations/{id}/snooze`): a snoozed conversation keeps its assignee and
-- wakes (`open`) at `snoozed_until`, or at once when the customer writes. The sweep that wakes
-- them reads this partial index only.
ALTER TABLE conversations ADD COLUMN snoozed_until BIGINT;
CREATE INDEX conversations_snoozed ON conversations (snoozed_until) WHERE status = 'snoozed';

-- `GET /v1/conversations?sort=last_activity` pages by the latest message time, newest first.
CREATE INDEX conversations_activity ON conversations (account_id, last_message_at, id);
