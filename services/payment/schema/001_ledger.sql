-- Double-entry ledger: every movement is a set of entries that sum to zero per ride.
CREATE TABLE ledger_entries (
    entry_id     bigserial PRIMARY KEY,
    ride_id      uuid NOT NULL,
    account      text NOT NULL,
    amount_cents bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_ride ON ledger_entries (ride_id);
