-- The trip service is the ride's system of record (docs/saga.md): one row per ride
-- holding its saga state, the saga log, and the ids of the messages already handled.
CREATE TABLE rides (
    ride_id          uuid PRIMARY KEY,
    rider_id         uuid NOT NULL,
    payment_method   text NOT NULL,
    pickup_lat       double precision NOT NULL,
    pickup_lng       double precision NOT NULL,
    dropoff_lat      double precision NOT NULL,
    dropoff_lng      double precision NOT NULL,
    fare_cents       bigint NOT NULL CHECK (fare_cents > 0),
    state            text NOT NULL,
    hold_id          text NOT NULL DEFAULT '',
    driver_id        text NOT NULL DEFAULT '',
    fence            bigint NOT NULL DEFAULT 0,
    match_attempt    integer NOT NULL DEFAULT 0,
    excluded         text[] NOT NULL DEFAULT '{}',
    cancel_requested boolean NOT NULL DEFAULT false,
    outcome          text NOT NULL DEFAULT '',
    compensations    text[] NOT NULL DEFAULT '{}',
    deadline_ms      bigint,
    trace_id         text NOT NULL DEFAULT '',
    -- W3C trace context of the ride's start: work the sweeper starts joins the ride's trace.
    traceparent      text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rides_deadline ON rides (deadline_ms) WHERE deadline_ms IS NOT NULL;

CREATE TABLE saga_log (
    seq        bigserial PRIMARY KEY,
    ride_id    uuid NOT NULL REFERENCES rides (ride_id),
    step       text NOT NULL,
    status     text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    hlc        text NOT NULL,
    -- The message that caused the entry: its id, its sender's HLC and wall-clock times.
    message_id text NOT NULL,
    message_hlc    text NOT NULL DEFAULT '',
    sender_wall_ms bigint NOT NULL DEFAULT 0,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_log_ride ON saga_log (ride_id, seq);

-- Exactly-once transitions: a message's effect on the saga and its row here commit in
-- one transaction; a redelivered message re-emits the commands stored with it.
CREATE TABLE processed_messages (
    message_id   text PRIMARY KEY,
    topics       text[] NOT NULL,
    envelopes    bytea[] NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
