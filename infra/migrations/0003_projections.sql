-- Projections: each read model is built in generations. A generation's tables
-- live in a schema of its own (chronik_proj_<id>); readers query the views in
-- schema "reads", which point at the active generation's tables, so a rebuild
-- fills a new generation beside the live one and swaps the views atomically.
CREATE SCHEMA reads;

CREATE TABLE projection_generations (
    id serial PRIMARY KEY,
    projection text NOT NULL,
    -- The projection code's version that builds it; new code, new generation.
    version integer NOT NULL,
    state text NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    -- Tracking: the last global position applied, written in each batch's
    -- transaction together with the batch's rows.
    position bigint NOT NULL DEFAULT 0,
    applied_events bigint NOT NULL DEFAULT 0,
    -- A handler error stops this generation at the event that failed.
    stalled_position bigint,
    stalled_error text,
    stalled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at timestamptz
);
CREATE UNIQUE INDEX projection_generations_one_active_idx
    ON projection_generations (projection) WHERE state = 'active';

-- What operators did to projections (retry, skip, rebuild, switch), kept for audit.
CREATE TABLE projection_log (
    id bigserial PRIMARY KEY,
    projection text NOT NULL,
    generation integer NOT NULL,
    action text NOT NULL,
    position bigint,
    detail text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projection_log_projection_idx ON projection_log (projection, id);
