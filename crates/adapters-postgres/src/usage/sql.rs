//! The rollup's SQL: the same rules as `tally_domain::usage::rollup`.
//!
//! Minutes are counted since the Unix epoch (`int8`); bit `m` of an hour's
//! mask is its minute `m`. `bits(a, b)` below is the mask of minutes
//! `a..b`: `((1 << b) - 1) # ((1 << a) - 1)` for `a < b`.

/// Recomputes what the rows starting in the hours `[$1, $2)` contribute and
/// merges it into `app_usage_hours`, noting the rows that changed in
/// `app_usage_touched` for the day rows (see [`super::days`]): minutes OR'ed into every hour a row
/// covers; sessions and requests of each recomputed start hour replaced by
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
RETURNING u.hour, u.user_id, u.access_method, u.slug_or_port
)
INSERT INTO app_usage_touched (hour, user_id, access_method, slug_or_port)
SELECT hour, user_id, access_method, slug_or_port FROM up";

/// The parts of a read, per (user, app, interval): minutes inside the
/// interval, and sessions and requests if the interval holds the start of
/// their hour. Parts with neither are dropped. Parameters: `$1` the interval
/// bounds (timestamptz[]), `$2` the same as epoch minutes (int8[]), `$3` the
/// number of intervals, `$4` the cut hours (read from the hourly rows and
/// their masks), `$5` how many intervals past its first one an hour can
/// reach (1 when no interval is shorter than an hour), `$6`..`$9` the
/// day-row segments (day, interval, first hour, end hour), whole hours
/// inside one interval each.
pub(super) const PARTS: &str = "hour_parts AS (
    SELECT p.user_id, p.access_method, p.slug_or_port, p.i, p.sessions, p.requests,
           bit_count((p.minutes & CASE WHEN p.b > p.a THEN ((1::int8 << p.b) - 1) # ((1::int8 << p.a) - 1) ELSE 0 END)::bit(64)) AS mins
    FROM (
        SELECT u.user_id, u.access_method, u.slug_or_port, u.minutes, u.wi + k.k AS i,
               CASE WHEN k.k = 0 THEN u.sessions ELSE 0 END AS sessions,
               CASE WHEN k.k = 0 THEN u.requests ELSE 0 END AS requests,
               greatest(least(($2::int8[])[u.wi + k.k] - u.hour_min, 60), 0)::int AS a,
               greatest(least(($2::int8[])[u.wi + k.k + 1] - u.hour_min, 60), 0)::int AS b
        FROM (
            SELECT h.*, (date_part('epoch', h.hour) / 60)::int8 AS hour_min,
                   width_bucket(h.hour, $1::timestamptz[]) AS wi,
                   width_bucket(h.hour + interval '59 minutes', $1::timestamptz[]) AS wj
            FROM app_usage_hours h
            WHERE h.hour = ANY($4::timestamptz[])
        ) u
        JOIN generate_series(0, $5::int) AS k(k) ON k.k <= u.wj - u.wi
        WHERE u.wi + k.k BETWEEN 1 AND $3
    ) p
), segments AS (
    SELECT * FROM unnest($6::timestamptz[], $7::int4[], $8::int4[], $9::int4[]) AS s(day, i, a, b)
)";

/// Per app and interval, and per app over the range (`i` NULL).
pub(super) fn app_usage() -> String {
    format!(
        "WITH {PARTS}, live AS (
            SELECT user_id, access_method, slug_or_port, i, mins, sessions, requests
            FROM hour_parts WHERE mins > 0 OR sessions > 0
            UNION ALL
            SELECT * FROM (
                SELECT d.user_id, d.access_method, d.slug_or_port, s.i,
                       (d.minutes[s.b + 1] - d.minutes[s.a + 1])::int8 AS mins,
                       d.sessions[s.b + 1] - d.sessions[s.a + 1] AS sessions,
                       d.requests[s.b + 1] - d.requests[s.a + 1] AS requests
                FROM segments s JOIN app_usage_days d ON d.day = s.day
            ) x WHERE mins > 0 OR sessions > 0
        ), per_user AS (
            SELECT access_method, slug_or_port, i, user_id,
                   sum(mins) AS mins, sum(sessions) AS sessions, sum(requests) AS requests
            FROM live GROUP BY access_method, slug_or_port, i, user_id
        )
        SELECT access_method, slug_or_port, i, (60 * sum(mins))::int8 AS usage_seconds,
               sum(sessions)::int8 AS sessions, sum(requests)::int8 AS requests, count(*) AS unique_users
        FROM per_user GROUP BY access_method, slug_or_port, i
        UNION ALL
        SELECT access_method, slug_or_port, NULL::int4, (60 * sum(mins))::int8,
               sum(sessions)::int8, sum(requests)::int8, count(*)
        FROM (
            SELECT access_method, slug_or_port, user_id,
                   sum(mins) AS mins, sum(sessions) AS sessions, sum(requests) AS requests
            FROM per_user GROUP BY access_method, slug_or_port, user_id
        ) t
        GROUP BY access_method, slug_or_port"
    )
}

/// Distinct users per interval, and over the range (`i` NULL).
pub(super) fn active_users() -> String {
    format!(
        "WITH {PARTS}, live AS (
            SELECT user_id, i FROM hour_parts WHERE mins > 0 OR sessions > 0
            UNION
            SELECT d.user_id, s.i
            FROM segments s JOIN app_usage_user_days d ON d.day = s.day
            WHERE d.minutes[s.b + 1] > d.minutes[s.a + 1] OR d.sessions[s.b + 1] > d.sessions[s.a + 1]
        )
        SELECT i, count(*) AS users FROM live GROUP BY i
        UNION ALL
        SELECT NULL::int4, count(*) FROM (SELECT DISTINCT user_id FROM live) t"
    )
}

/// Per user over one range, all apps merged: the cut hours from the hourly
/// rows (masks OR'ed per user and hour), the whole hours from the user day
/// rows. `$1`, `$2`: the range in epoch minutes, `$3`: the cut hours, `$4`:
/// the limit, `$5`..`$7`: the day-row segments (day, first hour, end hour).
pub(super) const USER_ACTIVITY: &str = "WITH r AS (
    SELECT h.user_id, h.hour,
           h.minutes & CASE WHEN b > a THEN ((1::int8 << b) - 1) # ((1::int8 << a) - 1) ELSE 0 END AS m,
           CASE WHEN h.hour_min >= $1 THEN h.sessions ELSE 0 END AS s,
           CASE WHEN h.hour_min >= $1 THEN h.requests ELSE 0 END AS req
    FROM (
        SELECT x.*, (date_part('epoch', x.hour) / 60)::int8 AS hour_min,
               greatest(least($1 - (date_part('epoch', x.hour) / 60)::int8, 60), 0)::int AS a,
               greatest(least($2 - (date_part('epoch', x.hour) / 60)::int8, 60), 0)::int AS b
        FROM app_usage_hours x
        WHERE x.hour = ANY($3::timestamptz[])
    ) h
), parts AS (
    SELECT user_id, bit_count(bit_or(m)::bit(64)) AS mins, sum(s) AS s, sum(req) AS req
    FROM r WHERE m <> 0 OR s > 0
    GROUP BY user_id, hour
    UNION ALL
    SELECT * FROM (
        SELECT d.user_id, (d.minutes[g.b + 1] - d.minutes[g.a + 1])::int8 AS mins,
               d.sessions[g.b + 1] - d.sessions[g.a + 1] AS s,
               d.requests[g.b + 1] - d.requests[g.a + 1] AS req
        FROM unnest($5::timestamptz[], $6::int4[], $7::int4[]) AS g(day, a, b)
        JOIN app_usage_user_days d ON d.day = g.day
    ) x WHERE mins > 0 OR s > 0
)
SELECT user_id, (60 * sum(mins))::int8 AS usage_seconds, sum(s)::int8 AS sessions, sum(req)::int8 AS requests
FROM parts
GROUP BY user_id
ORDER BY usage_seconds DESC, user_id
LIMIT $4";

/// Raw rows whose session started in `[$1, $2)`, as the export sends them.
pub(super) const STARTED_IN: &str = "SELECT user_id, workspace_id, agent_id, access_method, slug_or_port, \
        session_id, session_started_at, session_ended_at, requests, sessions \
    FROM workspace_app_stats \
    WHERE session_started_at >= $1 AND session_started_at < $2 \
    ORDER BY session_started_at, user_id, agent_id, session_id";
