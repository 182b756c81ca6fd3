-- The trip service is the ride's system of record (SPEC section 3).
CREATE TABLE trips (
    ride_id    uuid PRIMARY KEY,
    rider_id   uuid NOT NULL,
    state      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
