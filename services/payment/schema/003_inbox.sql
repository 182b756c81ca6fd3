-- The inbox (services/blocks/inbox.py) keeps every record a handled command sent, as
-- (topic, envelope) pairs, the same shape as trip's processed_messages.
ALTER TABLE handled_commands
    ADD COLUMN topics text[] NOT NULL DEFAULT '{}',
    ADD COLUMN envelopes bytea[] NOT NULL DEFAULT '{}';
UPDATE handled_commands SET topics = ARRAY['trip.replies'], envelopes = ARRAY[reply] WHERE reply <> '';
ALTER TABLE handled_commands DROP COLUMN reply;
