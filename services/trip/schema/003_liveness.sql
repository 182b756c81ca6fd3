-- Liveness (docs/saga.md, "Liveness"): what the checker needs to prove that no transition
-- came from a stale sweeper, and what the reaper needs to age out processed messages.
-- The sweeper epoch a StepTimedOut carried, and the epoch in force when the orchestrator
-- applied it (read under a share lock of sweeper_epoch, in the same transaction); both
-- NULL for entries not caused by a timeout. Applied only when they are equal.
ALTER TABLE saga_log ADD COLUMN sweeper_epoch bigint, ADD COLUMN epoch_in_force bigint;
CREATE INDEX processed_messages_age ON processed_messages (processed_at);
