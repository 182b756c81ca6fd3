-- The processor's own record of every charge and every money movement, independent of
-- the payment service, so a checker can count real charges. The CHECKs restate the
-- domain's money rules so that no bug can store captured > authorized or refunded > captured.
CREATE TABLE charges (
    charge_id        uuid PRIMARY KEY,
    status           text NOT NULL CHECK (status IN ('authorized', 'captured', 'voided', 'declined')),
    payment_method   text NOT NULL,
    description      text NOT NULL,
    authorized_cents bigint NOT NULL CHECK (authorized_cents >= 0),
    captured_cents   bigint NOT NULL,
    refunded_cents   bigint NOT NULL,
    decline_reason   text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (captured_cents BETWEEN 0 AND authorized_cents),
    CHECK (refunded_cents BETWEEN 0 AND captured_cents)
);

-- One row per accepted money call; UNIQUE (kind, idempotency_key): one key never moves money twice.
CREATE TABLE money_movements (
    movement_id     uuid PRIMARY KEY,
    charge_id       uuid NOT NULL REFERENCES charges (charge_id),
    kind            text NOT NULL CHECK (kind IN ('authorize', 'capture', 'void', 'refund')),
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    idempotency_key text NOT NULL,
    description     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, idempotency_key)
);
CREATE INDEX money_movements_charge ON money_movements (charge_id);
CREATE INDEX money_movements_description ON money_movements (description);
