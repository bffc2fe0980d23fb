-- tally's schema. Every table rejects rows the domain calls impossible.

-- Last time each workspace was used; moved forward only.
CREATE TABLE workspaces (
    id uuid PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);

-- One row per app session (or per rolled-up minute of short sessions).
-- The key is the (user, agent, session) the upsert is guarded on; there is no
-- surrogate id and no foreign key, so a row costs one heap tuple and one
-- btree entry. fillfactor leaves room for HOT updates of open sessions'
-- request counts.
CREATE TABLE workspace_app_stats (
    user_id uuid NOT NULL,
    agent_id uuid NOT NULL,
    session_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    access_method text NOT NULL,
    slug_or_port text NOT NULL,
    session_started_at timestamptz NOT NULL,
    session_ended_at timestamptz NOT NULL,
    requests bigint NOT NULL,
    CONSTRAINT workspace_app_stats_pkey PRIMARY KEY (user_id, agent_id, session_id),
    CONSTRAINT workspace_app_stats_access_method_check
        CHECK (access_method IN ('path', 'subdomain', 'terminal')),
    CONSTRAINT workspace_app_stats_slug_or_port_check CHECK (octet_length(slug_or_port) <= 1024),
    CONSTRAINT workspace_app_stats_requests_check CHECK (requests >= 0),
    CONSTRAINT workspace_app_stats_session_check CHECK (session_ended_at >= session_started_at)
) WITH (fillfactor = 90);

-- Insights ask for sessions overlapping [from, to): started_at < to AND
-- ended_at >= from. Neither bound alone is selective (a btree on either
-- column reads everything before `to` or after `from`), but rows arrive in
-- time order, so a BRIN index on both columns keeps only the page ranges
-- near the window, and costs next to nothing on insert (new pages are
-- summarized later: autosummarize has autovacuum do it as ranges fill).
CREATE INDEX workspace_app_stats_time_brin ON workspace_app_stats
    USING brin (session_started_at, session_ended_at) WITH (pages_per_range = 32, autosummarize = on);

-- Boundary usage of the current period, one row per replica. last_seq
-- survives period resets so a retried delta is never applied twice.
CREATE TABLE boundary_usage_replicas (
    replica_id uuid PRIMARY KEY,
    allowed_requests bigint NOT NULL DEFAULT 0 CHECK (allowed_requests >= 0),
    denied_requests bigint NOT NULL DEFAULT 0 CHECK (denied_requests >= 0),
    last_seq bigint NOT NULL CHECK (last_seq >= 0),
    flushed_in_period boolean NOT NULL DEFAULT false,
    tracked_from timestamptz,
    tracked_to timestamptz,
    CONSTRAINT boundary_usage_replicas_tracked_both CHECK ((tracked_from IS NULL) = (tracked_to IS NULL)),
    CONSTRAINT boundary_usage_replicas_tracked_order CHECK (tracked_to >= tracked_from)
);

-- Distinct ids seen in the current period by any replica: the primary key
-- deduplicates, so unique counts are exact across replicas.
CREATE TABLE boundary_usage_workspaces (
    workspace_id uuid PRIMARY KEY
);

CREATE TABLE boundary_usage_users (
    user_id uuid PRIMARY KEY
);

-- Who closed which period.
CREATE TABLE telemetry_locks (
    event_type text NOT NULL,
    period_ending_at timestamptz NOT NULL,
    PRIMARY KEY (event_type, period_ending_at)
);

-- The snapshot outbox: written with the lock and the reset, published later.
CREATE TABLE telemetry_snapshots (
    id uuid PRIMARY KEY,
    event_type text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    unique_workspaces bigint NOT NULL CHECK (unique_workspaces >= 0),
    unique_users bigint NOT NULL CHECK (unique_users >= 0),
    allowed_requests bigint NOT NULL CHECK (allowed_requests >= 0),
    denied_requests bigint NOT NULL CHECK (denied_requests >= 0),
    replicas bigint NOT NULL CHECK (replicas >= 0),
    tracked_from timestamptz,
    tracked_to timestamptz,
    created_at timestamptz NOT NULL,
    published_at timestamptz,
    publish_attempts integer NOT NULL DEFAULT 0 CHECK (publish_attempts >= 0),
    claimed_by uuid,
    claimed_until timestamptz,
    last_error text,
    CONSTRAINT telemetry_snapshots_period_check CHECK (period_end > period_start)
);

CREATE INDEX telemetry_snapshots_period_end_idx ON telemetry_snapshots (period_end);
CREATE INDEX telemetry_snapshots_unpublished_idx ON telemetry_snapshots (period_end) WHERE published_at IS NULL;
