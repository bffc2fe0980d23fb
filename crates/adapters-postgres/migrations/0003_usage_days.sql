-- Day rows of the usage rollup, kept by the same tick as the hourly rows so
-- that long ranges read about one row per user (and app) and day instead of
-- one per hour. Each array has 25 entries: entry k + 1 (arrays are 1-based)
-- is the sum over the day's UTC hours 0 .. k - 1, so hours [a, b) sum to
-- `x[b + 1] - x[a + 1]`, and ranges in any whole-hour offset split a day
-- exactly. `minutes` counts distinct minutes; `sessions` and `requests` are
-- those of the sessions that started in each hour.

-- Per (UTC day, user, app).
CREATE TABLE app_usage_days (
    day timestamptz NOT NULL,
    user_id uuid NOT NULL,
    access_method text NOT NULL,
    slug_or_port text NOT NULL,
    minutes int4[] NOT NULL,
    sessions int8[] NOT NULL,
    requests int8[] NOT NULL,
    CONSTRAINT app_usage_days_pkey PRIMARY KEY (day, user_id, access_method, slug_or_port),
    CONSTRAINT app_usage_days_day_check CHECK (extract(epoch FROM day) % 86400 = 0),
    CONSTRAINT app_usage_days_arrays_check CHECK (
        cardinality(minutes) = 25 AND cardinality(sessions) = 25 AND cardinality(requests) = 25)
);

-- Per (UTC day, user), all apps merged: a minute counts once however many
-- apps touched it.
CREATE TABLE app_usage_user_days (
    day timestamptz NOT NULL,
    user_id uuid NOT NULL,
    minutes int4[] NOT NULL,
    sessions int8[] NOT NULL,
    requests int8[] NOT NULL,
    CONSTRAINT app_usage_user_days_pkey PRIMARY KEY (day, user_id),
    CONSTRAINT app_usage_user_days_day_check CHECK (extract(epoch FROM day) % 86400 = 0),
    CONSTRAINT app_usage_user_days_arrays_check CHECK (
        cardinality(minutes) = 25 AND cardinality(sessions) = 25 AND cardinality(requests) = 25)
);

-- A tick recomputes a user's day rows from that user's hourly rows of the
-- day: found by user, then hour (the key leads with the hour, for reads).
CREATE INDEX app_usage_hours_user_hour ON app_usage_hours (user_id, hour);

-- Hourly rows changed by a tick whose day rows are not yet recomputed; the
-- same tick recomputes them and empties this table, under the usage lock.
CREATE TABLE app_usage_touched (
    hour timestamptz NOT NULL,
    user_id uuid NOT NULL,
    access_method text NOT NULL,
    slug_or_port text NOT NULL
);

-- Existing hourly rows get their day rows at the next tick.
INSERT INTO app_usage_touched (hour, user_id, access_method, slug_or_port)
SELECT hour, user_id, access_method, slug_or_port FROM app_usage_hours;
