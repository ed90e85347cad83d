-- A contact's conversations: the web-chat widget's history and the consoles' contact panel.
CREATE INDEX conversations_contact ON conversations (account_id, contact_id);
