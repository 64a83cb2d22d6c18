-- Fan-out: the relay's position, and webhook deliveries with their attempts.

-- How far each relay has published the event feed to JetStream. Advanced only
-- after the server acknowledged every message up to it.
CREATE TABLE relay_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    published bigint NOT NULL DEFAULT 0,
    last_error text,
    last_error_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A rotated-out secret keeps signing until valid_until (NULL: the current one).
ALTER TABLE webhook_secrets ADD COLUMN valid_until timestamptz;

-- One delivery per (endpoint, event). The body is stored as sent, so every
-- attempt carries the same bytes under the same webhook-id (evt_<position>).
-- next_attempt_at is the due time while pending; a claim pushes it forward by
-- a lease, so a worker killed mid-send leaves the delivery due again later.
-- attempts counts every attempt ever made (it numbers webhook_attempts);
-- round_start is attempts when the current round began (a resend or recovery
-- starts a new round, and the retry schedule counts from there).
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    team_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    position bigint NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
    attempts integer NOT NULL DEFAULT 0,
    round_start integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (endpoint_id, position)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_team_idx ON webhook_deliveries (team_id, id DESC);

-- Every attempt, as the receiver answered it (or why it could not).
CREATE TABLE webhook_attempts (
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error text,
    response_excerpt text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Per endpoint: since when it has been failing without a success in between.
CREATE TABLE webhook_endpoint_health (
    endpoint_id uuid PRIMARY KEY,
    team_id uuid NOT NULL,
    failing_since timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_success_at timestamptz,
    last_failure_at timestamptz
);
