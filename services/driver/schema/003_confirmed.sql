-- The pivot, as the driver service learns it: trip's ConfirmDriver sets this once the
-- saga has taken the driver's acceptance. RespondToOffer answers "accepted" only then,
-- and "withdrawn" if the reservation was released instead, so the app sees the truth.
ALTER TABLE drivers ADD COLUMN confirmed boolean NOT NULL DEFAULT false;
CREATE INDEX handled_commands_age ON handled_commands (handled_at);
