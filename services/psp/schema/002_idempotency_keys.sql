-- Idempotency keys, scoped per operation. A key is claimed (response NULL) in its own short
-- transaction, then completed together with the charge and its movement. `owner` names the
-- request holding the claim: one that takes over a claim abandoned by a crash replaces it,
-- so the abandoned request can no longer complete.
CREATE TABLE idempotency_keys (
    operation       text NOT NULL CHECK (operation IN ('authorize', 'capture', 'void', 'refund')),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     text NOT NULL,
    owner           uuid NOT NULL,
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    response        bytea,
    completed_at    timestamptz,
    PRIMARY KEY (operation, idempotency_key)
);
