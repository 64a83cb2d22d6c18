-- Rows written in the same transaction as a command's events.

-- The first response to an Idempotency-Key, replayed for retries.
CREATE TABLE idempotency_records (
    team_id uuid NOT NULL,
    idempotency_key text NOT NULL,
    request_fingerprint text NOT NULL,
    status_code integer NOT NULL,
    response jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, idempotency_key)
);
CREATE INDEX idempotency_records_created_at_idx ON idempotency_records (created_at);

-- Which team a key id belongs to: the one lookup authentication needs before
-- it can load the team (the source of truth for keys, roles and revocation).
CREATE TABLE api_key_index (
    key_id text PRIMARY KEY,
    team_id uuid NOT NULL
);

-- Webhook signing secrets are needed in clear to sign, so they never enter the
-- event store (events are exported, replayed and audited); events carry only
-- the secret's id and fingerprint.
CREATE TABLE webhook_secrets (
    secret_id text PRIMARY KEY,
    endpoint_id uuid NOT NULL,
    team_id uuid NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_secrets_endpoint_idx ON webhook_secrets (endpoint_id);
