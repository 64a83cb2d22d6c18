-- The event store, in the exact shape the eventsourcing library's PostgreSQL
-- recorder expects (table "<application name>_events" and the composite type
-- it inserts through). notification_id is Chronik's global position.
CREATE TABLE chronik_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);

CREATE UNIQUE INDEX chronik_events_notification_id_idx
    ON chronik_events (notification_id ASC);

CREATE TYPE stored_event_uuid AS (
    originator_id uuid,
    originator_version bigint,
    topic text,
    state bytea
);
