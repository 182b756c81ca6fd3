-- How many times the current step's command has been re-sent on a timeout (services/trip/
-- saga.py, resend_wait_ms): each re-send waits twice as long as the one before, so a
-- participant that is only slow is not buried in copies of what it has not read yet.
ALTER TABLE rides ADD COLUMN resends integer NOT NULL DEFAULT 0;
