//! (day, user) rows of the rollup (`app_usage_user_days`): how a tick keeps
//! them equal to the hourly rows, and how user activity splits its range
//! between them and the hourly rows. (The packed rows are [`packed`].)
//!
//! A day row holds prefix sums over the day's 24 UTC hours, so any run of
//! whole hours of a day is two array reads. User activity takes the whole
//! hours of the days its range cuts from these rows, and only the hours a
//! bound cuts from the hourly rows with their minute masks.

use sqlx::PgConnection;

use super::packed;
use tally_domain::usage::Intervals;
use tally_domain::usage::minutes::{hour_of, hour_start};
use time::{Duration, OffsetDateTime};

/// Recomputes the (day, user) rows of every touched hourly row from the
/// user's hourly rows of that day, all apps' minute masks OR'ed per hour.
const USER_DAYS: &str = "WITH keys AS (
    SELECT DISTINCT date_trunc('day', hour, 'UTC') AS day, user_id FROM app_usage_touched
), found AS (
    SELECT k.day, k.user_id, extract(hour FROM x.hour AT TIME ZONE 'UTC')::int AS h,
           bit_count(bit_or(x.minutes)::bit(64)) AS m, sum(x.sessions) AS s, sum(x.requests) AS r
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT * FROM app_usage_hours x
        WHERE x.user_id = k.user_id AND x.hour >= k.day AND x.hour < k.day + interval '1 day'
    ) x
    GROUP BY k.day, k.user_id, x.hour
), cells AS (
    SELECT k.day, k.user_id, g.h, coalesce(f.m, 0) AS m, coalesce(f.s, 0) AS s, coalesce(f.r, 0) AS r
    FROM keys k
    CROSS JOIN generate_series(0, 23) AS g(h)
    LEFT JOIN found f ON f.day = k.day AND f.user_id = k.user_id AND f.h = g.h
), cum AS (
    SELECT day, user_id, h, (sum(m) OVER w)::int4 AS m, (sum(s) OVER w)::int8 AS s, (sum(r) OVER w)::int8 AS r
    FROM cells
    WINDOW w AS (PARTITION BY day, user_id ORDER BY h)
)
INSERT INTO app_usage_user_days AS d (day, user_id, minutes, sessions, requests)
SELECT day, user_id, array_prepend(0, array_agg(m ORDER BY h)),
       array_prepend(0::int8, array_agg(s ORDER BY h)), array_prepend(0::int8, array_agg(r ORDER BY h))
FROM cum
GROUP BY day, user_id
ON CONFLICT (day, user_id) DO UPDATE SET
    minutes = excluded.minutes, sessions = excluded.sessions, requests = excluded.requests
WHERE (d.minutes, d.sessions, d.requests) <> (excluded.minutes, excluded.sessions, excluded.requests)";

/// Brings the day rows of every touched hourly row up to date (the (day,
/// user) rows, then the packed rows of their days) and forgets the touches;
/// the caller holds the usage lock.
pub(super) async fn recompute(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(USER_DAYS).execute(&mut *conn).await?;
    // Day rows left with nothing (their hourly rows were purged) go.
    sqlx::query(
        "DELETE FROM app_usage_user_days d USING (SELECT DISTINCT date_trunc('day', hour, 'UTC') AS day \
         FROM app_usage_touched) t WHERE d.day = t.day AND d.minutes[25] = 0 AND d.sessions[25] = 0",
    )
    .execute(&mut *conn)
    .await?;
    packed::rebuild_touched(conn).await?;
    sqlx::query("DELETE FROM app_usage_touched")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// After the hourly rows before `cut` were purged: day rows wholly before it
/// go, and those of the day `cut` falls in are recomputed from the hours
/// left.
pub(super) async fn purged_before(conn: &mut PgConnection, cut: OffsetDateTime) -> Result<(), sqlx::Error> {
    let day = hour_start(hour_of(cut).div_euclid(24) * 24);
    sqlx::query("DELETE FROM app_usage_user_days WHERE day < $1")
        .bind(day)
        .execute(&mut *conn)
        .await?;
    packed::delete_before(conn, day).await?;
    if day < cut {
        // Every user of the cut day is recomputed (only the day and user of
        // a touch are read for (day, user) rows), and its packed rows.
        sqlx::query(
            "INSERT INTO app_usage_touched (hour, user_id, access_method, slug_or_port) \
             SELECT day, user_id, '', '' FROM app_usage_user_days WHERE day = $1",
        )
        .bind(day)
        .execute(&mut *conn)
        .await?;
        packed::mark(conn, day).await?;
    }
    recompute(conn).await
}

/// How a read covers its range: day-row segments and cut hours.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Hours not wholly inside one interval, read from the hourly rows.
    pub cut_hours: Vec<OffsetDateTime>,
    /// Segments: UTC day, 1-based interval, whole hours `[a, b)` of the day.
    pub days: Vec<OffsetDateTime>,
    pub intervals: Vec<i32>,
    pub from_hours: Vec<i32>,
    pub to_hours: Vec<i32>,
}

impl Plan {
    pub(super) fn of(intervals: &Intervals) -> Self {
        let range = intervals.range();
        let mut plan = Plan::default();
        // Bounds are whole minutes: an hour lies wholly in interval i when its
        // first and last minute do.
        for hour in hour_of(range.from)..=hour_of(range.to - Duration::MINUTE) {
            let start = hour_start(hour);
            let i = intervals.index_of(start);
            if i.is_none() || i != intervals.index_of(start + Duration::minutes(59)) {
                plan.cut_hours.push(start);
                continue;
            }
            let i = i.unwrap_or_default() as i32 + 1;
            let (day, h) = (hour.div_euclid(24), hour.rem_euclid(24) as i32);
            let day = hour_start(day * 24);
            let extends = plan.days.last() == Some(&day)
                && plan.intervals.last() == Some(&i)
                && plan.to_hours.last() == Some(&h);
            if extends {
                *plan.to_hours.last_mut().unwrap_or(&mut 0) = h + 1;
            } else {
                plan.days.push(day);
                plan.intervals.push(i);
                plan.from_hours.push(h);
                plan.to_hours.push(h + 1);
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn whole_hours_come_from_day_rows_and_cut_hours_from_hourly_rows() {
        let t = |s: i64| datetime!(2026-11-25 0:00 UTC) + Duration::minutes(s);
        // Two intervals over 10:30 .. next day 02:00, cut at 12:15.
        let iv = Intervals::new(vec![t(630), t(735), t(1560)]).unwrap();
        let plan = Plan::of(&iv);
        assert_eq!(plan.cut_hours, vec![t(600), t(720)]);
        assert_eq!(plan.days, vec![t(0), t(0), t(1440)]);
        assert_eq!(plan.intervals, vec![1, 2, 2]);
        assert_eq!(plan.from_hours, vec![11, 13, 0]);
        assert_eq!(plan.to_hours, vec![12, 24, 2]);
    }

    #[test]
    fn days_in_a_whole_hour_offset_need_no_hourly_rows() {
        let t = |h: i64| datetime!(2026-11-25 0:00 UTC) + Duration::hours(h);
        let iv = Intervals::new(vec![t(-5), t(19), t(43)]).unwrap();
        let plan = Plan::of(&iv);
        assert!(plan.cut_hours.is_empty());
        assert_eq!(plan.intervals, vec![1, 1, 2, 2]);
        assert_eq!(plan.from_hours, vec![19, 0, 19, 0]);
        assert_eq!(plan.to_hours, vec![24, 19, 24, 19]);
    }
}
