CREATE TABLE riders (
    rider_id       uuid PRIMARY KEY,
    name           text NOT NULL,
    payment_method text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Stripe-style idempotency keys for RequestRide, scoped per rider. recovery_point says
-- how far a request got, so a retry after a crash finishes the work instead of redoing it.
CREATE TABLE idempotency_keys (
    rider_id        uuid NOT NULL REFERENCES riders (rider_id),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint     text NOT NULL,
    ride_id         uuid NOT NULL,
    recovery_point  text NOT NULL CHECK (recovery_point IN ('started', 'ride_claimed', 'finished')),
    response        bytea,
    locked_until_ms bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rider_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- At most one live ride per rider: the primary key is the guarantee.
CREATE TABLE live_rides (
    rider_id   uuid PRIMARY KEY REFERENCES riders (rider_id),
    ride_id    uuid NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
