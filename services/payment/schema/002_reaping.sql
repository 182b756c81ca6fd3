-- Handled commands are reaped once Kafka can no longer redeliver them (docs/saga.md).
CREATE INDEX handled_commands_age ON handled_commands (handled_at);
