-- Snapshots of long-lived aggregates (teams), in the exact shape the
-- eventsourcing library's PostgreSQL aggregate recorder expects for an
-- application named "Chronik": table "chronik_snapshots", inserted through the
-- composite type stored_event_uuid that 0001 created. A snapshot is a cache of
-- what the events already say: rows may be deleted at any time (they are taken
-- again at the next multiple of the interval), and they are not part of the
-- global log, so they have no notification_id and no hash-chain link.
CREATE TABLE chronik_snapshots (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
