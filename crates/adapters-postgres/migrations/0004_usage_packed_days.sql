-- Packed day rows of the usage rollup: one row per (UTC day, app) and one
-- per UTC day, so a read over 90 days fetches about a thousand rows instead
-- of one per user, app and day. Their byte layout is
-- `tally_domain::usage::packed` (little-endian, fixed-size entries); the
-- tick rebuilds a day's rows from its hourly rows whenever any of them
-- changed.

-- Users numbered densely from 0, so that distinct users are bitsets. Kept
-- for good: an ordinal is never reused.
CREATE TABLE app_usage_users (
    user_id uuid PRIMARY KEY,
    ordinal int4 NOT NULL UNIQUE CHECK (ordinal >= 0)
);

-- `figures`: per quarter hour the covered minutes summed over users, per
-- hour the sessions and requests of the sessions that started in it.
-- `users`: (ordinal, 96-bit quarter-hour activity) of every active user.
CREATE TABLE app_usage_app_days (
    day timestamptz NOT NULL,
    access_method text NOT NULL,
    slug_or_port text NOT NULL,
    figures bytea NOT NULL,
    users bytea NOT NULL,
    CONSTRAINT app_usage_app_days_pkey PRIMARY KEY (day, access_method, slug_or_port),
    CONSTRAINT app_usage_app_days_day_check CHECK (extract(epoch FROM day) % 86400 = 0)
);

-- `users`: activity over all apps, as above; `totals`: per user the day's
-- distinct minutes over all apps, sessions and requests.
CREATE TABLE app_usage_fleet_days (
    day timestamptz PRIMARY KEY,
    users bytea NOT NULL,
    totals bytea NOT NULL,
    CONSTRAINT app_usage_fleet_days_day_check CHECK (extract(epoch FROM day) % 86400 = 0)
);

-- Masks compress poorly and are read whole: stored out of line without
-- compression, a read copies them as they are.
ALTER TABLE app_usage_app_days ALTER COLUMN users SET STORAGE EXTERNAL;
ALTER TABLE app_usage_fleet_days ALTER COLUMN users SET STORAGE EXTERNAL;
ALTER TABLE app_usage_fleet_days ALTER COLUMN totals SET STORAGE EXTERNAL;

-- UTC days whose packed rows the next tick rebuilds.
CREATE TABLE app_usage_packed_dirty (
    day timestamptz NOT NULL
);

-- The packed rows replace the (day, user, app) rows for every read.
DROP TABLE app_usage_days;

-- Existing hourly rows get their packed rows at the next tick.
INSERT INTO app_usage_packed_dirty (day)
SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM app_usage_hours;
