CREATE TABLE drivers (
    driver_id  uuid PRIMARY KEY,
    name       text NOT NULL,
    -- The ride the driver is reserved for, and the fencing token of that reservation:
    -- every write about the reservation must carry the token that is stored here.
    ride_id    uuid,
    fence      bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotent participant: a command's effect and this record commit together; a
-- redelivered command gets the stored reply.
CREATE TABLE handled_commands (
    message_id text PRIMARY KEY,
    reply      bytea NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);
