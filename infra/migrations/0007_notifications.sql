-- Notifications: the in-app inbox, and email with its attempts.

-- One notification per (event, recipient): the consumer inserts with
-- ON CONFLICT DO NOTHING, so a redelivered NATS message creates nothing twice.
CREATE TABLE notifications (
    id bigserial PRIMARY KEY,
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    kind text NOT NULL,
    position bigint NOT NULL,
    event_id text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at timestamptz,
    UNIQUE (position, user_id)
);
CREATE INDEX notifications_inbox_idx ON notifications (team_id, user_id, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (team_id, user_id) WHERE read_at IS NULL;

-- Emails to send: one per notification (or per digest). Claimed with
-- FOR UPDATE SKIP LOCKED; next_attempt_at is the due time while pending and
-- is pushed forward by a lease when claimed, so a killed sender's claims
-- come due again.
CREATE TABLE email_outbox (
    id bigserial PRIMARY KEY,
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    notification_id bigint UNIQUE REFERENCES notifications (id) ON DELETE CASCADE,
    digest_day date,
    to_address text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    UNIQUE (team_id, user_id, digest_day)
);
CREATE INDEX email_outbox_due_idx ON email_outbox (next_attempt_at) WHERE status = 'pending';

CREATE TABLE email_attempts (
    email_id bigint NOT NULL REFERENCES email_outbox (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('sent', 'failed')),
    error text,
    PRIMARY KEY (email_id, attempt)
);

-- Events already in the log when notifications arrived are not notified: a new
-- durable consumer starts at the beginning of the retained stream (days of
-- events), which would flood every inbox and mailbox on the first deploy.
CREATE TABLE notification_start (position bigint NOT NULL);
INSERT INTO notification_start SELECT coalesce(max(notification_id), 0) FROM chronik_events;
