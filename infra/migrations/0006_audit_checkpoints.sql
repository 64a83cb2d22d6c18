-- Signed checkpoints of the audit ledger's hash chain (projections/audit_ledger.py).
-- Outside the projection schemas on purpose: rebuilding the ledger never
-- replaces a checkpoint, so a changed log cannot be re-chained unnoticed.
-- Rows are only ever inserted.
CREATE TABLE audit_checkpoints (
    count bigint PRIMARY KEY CHECK (count > 0),
    position bigint NOT NULL,
    chain_hash bytea NOT NULL CHECK (length(chain_hash) = 32),
    -- the interval in force: the next checkpoint is due within this many events
    every bigint NOT NULL CHECK (every > 0),
    key_id text NOT NULL,
    signature bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
