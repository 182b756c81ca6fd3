-- Holds placed at the psp for each ride, and what became of them.
-- DEFERRED: granted without the processor while its breaker was open (a rider in good
-- standing, within the risk limit); authorized and captured at the psp when it is back.
CREATE TABLE holds (
    ride_id          uuid PRIMARY KEY,
    rider_id         uuid NOT NULL,
    payment_method   text NOT NULL,
    charge_id        text NOT NULL,
    authorized_cents bigint NOT NULL CHECK (authorized_cents > 0),
    captured_cents   bigint NOT NULL DEFAULT 0 CHECK (captured_cents >= 0),
    status           text NOT NULL CHECK (status IN ('AUTHORIZED', 'DEFERRED', 'CAPTURED', 'VOIDED', 'WRITTEN_OFF')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (captured_cents <= authorized_cents)
);

-- Double-entry ledger: every money movement is a set of entries that sum to zero.
CREATE INDEX holds_rider ON holds (rider_id);

CREATE TABLE ledger_entries (
    entry_id     bigserial PRIMARY KEY,
    ride_id      uuid NOT NULL,
    account      text NOT NULL CHECK (account IN ('rider', 'driver', 'platform')),
    amount_cents bigint NOT NULL,
    message_id   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_ride ON ledger_entries (ride_id);

-- Idempotent participant: a command's effect and this record commit together; a
-- redelivered command gets the stored reply.
CREATE TABLE handled_commands (
    message_id text PRIMARY KEY,
    reply      bytea NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);

-- psp calls about to go out, by idempotency key: a call refused by the open circuit
-- breaker may be answered "processor unavailable" only if no attempt ever went out.
CREATE TABLE psp_attempts (
    idempotency_key text PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now()
);
