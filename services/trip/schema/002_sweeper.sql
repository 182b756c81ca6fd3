-- The sweeper's leadership, fenced: the newest leader's epoch (its ZooKeeper election
-- sequence number) is stored here, and a sweeper writes only while it is still this one.
CREATE TABLE sweeper_epoch (
    id     integer PRIMARY KEY CHECK (id = 1),
    epoch  bigint NOT NULL,
    leader text NOT NULL,
    since  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sweeper_epoch (id, epoch, leader) VALUES (1, 0, '');

-- Each sweeper's last accepted sweep (a write under its epoch).
CREATE TABLE sweeper_runs (
    sweeper  text PRIMARY KEY,
    epoch    bigint NOT NULL,
    runs     bigint NOT NULL DEFAULT 1,
    last_run timestamptz NOT NULL DEFAULT now()
);

-- Writes refused because a newer leader had taken over (the fencing at work).
CREATE TABLE sweeper_rejections (
    seq           bigserial PRIMARY KEY,
    sweeper       text NOT NULL,
    epoch         bigint NOT NULL,
    current_epoch bigint NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
