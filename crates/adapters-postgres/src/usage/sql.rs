//! The rollup's SQL: the same rules as `tally_domain::usage::rollup`.
//!
//! Minutes are counted since the Unix epoch (`int8`); bit `m` of an hour's
//! mask is its minute `m`. `bits(a, b)` below is the mask of minutes
//! `a..b`: `((1 << b) - 1) # ((1 << a) - 1)` for `a < b`.

/// Recomputes what the rows starting in the hours `[$1, $2)` contribute and
/// merges it into `app_usage_hours`, marking the UTC days of the rows that
/// changed for a rebuild of their packed rows (see [`super::packed`]), and
/// answers how many changed: minutes OR'ed into every hour a row covers; sessions and requests of each recomputed start hour replaced by
/// the sums over the rows that started in it. Rows that would not change
/// are left alone. A row covers minutes `[first, past)` with `first` its
/// start truncated to the minute and `past` its end rounded up to one
/// (never before `first`); a row covering nothing still lands in its start
/// hour, with an empty mask, for its sessions and requests.
pub(super) const ROLL_UP: &str = "WITH src AS (
    SELECT r.user_id, r.access_method, r.slug_or_port, r.sessions, r.requests,
           floor(date_part('epoch', r.session_started_at) / 3600)::int8 AS start_hour,
           floor(date_part('epoch', r.session_started_at) / 60)::int8 AS first_min,
           ceil(date_part('epoch', r.session_ended_at) / 60)::int8 AS end_min
    FROM workspace_app_stats r
    WHERE r.session_started_at >= $1 AND r.session_started_at < $2
), hours AS (
    -- The set-returning call in the select list runs as a projection,
    -- far cheaper per row than a lateral function scan.
    SELECT src.*, greatest(end_min, first_min) AS past_min,
           generate_series(first_min / 60,
               CASE WHEN end_min > first_min THEN (end_min - 1) / 60 ELSE first_min / 60 END) AS hour
    FROM src
), parts AS (
    SELECT user_id, access_method, slug_or_port, sessions, requests, start_hour, hour,
           greatest(first_min - hour * 60, 0)::int AS a,
           least(past_min - hour * 60, 60)::int AS b
    FROM hours
), agg AS (
    SELECT hour, user_id, access_method, slug_or_port,
           bit_or(CASE WHEN b > a THEN ((1::int8 << b) - 1) # ((1::int8 << a) - 1) ELSE 0 END) AS minutes,
           coalesce(sum(sessions) FILTER (WHERE hour = start_hour), 0)::int8 AS sessions,
           coalesce(sum(requests) FILTER (WHERE hour = start_hour), 0)::int8 AS requests
    FROM parts
    GROUP BY hour, user_id, access_method, slug_or_port
), up AS (
INSERT INTO app_usage_hours AS u (hour, user_id, access_method, slug_or_port, minutes, sessions, requests)
SELECT to_timestamp(hour * 3600), user_id, access_method, slug_or_port, minutes, sessions, requests FROM agg
ON CONFLICT (hour, user_id, access_method, slug_or_port) DO UPDATE SET
    minutes = u.minutes | excluded.minutes,
    sessions = CASE WHEN excluded.hour >= $1 AND excluded.hour < $2 THEN excluded.sessions ELSE u.sessions END,
    requests = CASE WHEN excluded.hour >= $1 AND excluded.hour < $2 THEN excluded.requests ELSE u.requests END
WHERE (u.minutes | excluded.minutes) <> u.minutes
   OR (excluded.hour >= $1 AND excluded.hour < $2
       AND (excluded.sessions, excluded.requests) <> (u.sessions, u.requests))
RETURNING u.hour
), marked AS (
    INSERT INTO app_usage_packed_dirty (day) SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM up
)
SELECT count(*) FROM up";

/// Raw rows whose session started in `[$1, $2)`, as the export sends them.
pub(super) const STARTED_IN: &str = "SELECT user_id, workspace_id, agent_id, access_method, slug_or_port, \
        session_id, session_started_at, session_ended_at, requests, sessions \
    FROM workspace_app_stats \
    WHERE session_started_at >= $1 AND session_started_at < $2 \
    ORDER BY session_started_at, user_id, agent_id, session_id";
