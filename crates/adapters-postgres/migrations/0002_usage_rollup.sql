-- The usage rollup, session counts on raw rows, and raw rows indexed only by
-- what an update never changes. The figures are defined in docs/insights.md.

-- How many sessions a row stands for (a rolled-up row of short sessions
-- stands for many). Existing rows are one session each.
ALTER TABLE workspace_app_stats
    ADD COLUMN sessions bigint NOT NULL DEFAULT 1,
    ADD CONSTRAINT workspace_app_stats_sessions_check CHECK (sessions >= 1);

-- An open session's row is rewritten at every flush with a later end. An
-- update can only be HOT (a new row version on the same page, no index
-- entries) if no indexed column changes, so raw rows are indexed only by
-- columns an update never changes: the key, and the start. Reads no longer
-- need the end: insights come from the rollup, and the rollup and the
-- export find raw rows by start hour.
DROP INDEX workspace_app_stats_time_brin;
CREATE INDEX workspace_app_stats_started_brin ON workspace_app_stats
    USING brin (session_started_at) WITH (pages_per_range = 32, autosummarize = on);

-- One row per (hour, user, app): bit m of `minutes` is the minute m of the
-- hour, set when any of the user's sessions of the app covered it;
-- `sessions` and `requests` are those of the sessions that started in the
-- hour. Keyed by hour first: every read is a range of hours.
CREATE TABLE app_usage_hours (
    hour timestamptz NOT NULL,
    user_id uuid NOT NULL,
    access_method text NOT NULL,
    slug_or_port text NOT NULL,
    minutes bigint NOT NULL,
    sessions bigint NOT NULL,
    requests bigint NOT NULL,
    CONSTRAINT app_usage_hours_pkey PRIMARY KEY (hour, user_id, access_method, slug_or_port),
    CONSTRAINT app_usage_hours_hour_check CHECK (extract(epoch FROM hour) % 3600 = 0),
    CONSTRAINT app_usage_hours_minutes_check CHECK (minutes >= 0 AND minutes < (1::bigint << 60)),
    CONSTRAINT app_usage_hours_counts_check CHECK (sessions >= 0 AND requests >= 0)
);

-- Start hours written to since the last tick, one row per write and hour,
-- appended in the write's transaction. No key: writers never wait for each
-- other or for a tick, and the tick deletes what it read.
CREATE TABLE app_usage_dirty_hours (
    start_hour timestamptz NOT NULL
);

-- Start hours before `frozen_before` have had their raw rows purged: their
-- rollup is final.
CREATE TABLE app_usage_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    frozen_before timestamptz
);
INSERT INTO app_usage_state DEFAULT VALUES;
