-- The processor's own record of every money movement, independent of the payment
-- service, so a checker can count real charges.
CREATE TABLE money_movements (
    movement_id     uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('authorize', 'capture', 'void', 'refund')),
    idempotency_key text NOT NULL UNIQUE,
    amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
