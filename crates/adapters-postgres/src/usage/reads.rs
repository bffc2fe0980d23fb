//! The insights reads: app usage and active users from the packed day rows
//! (and the hourly rows of hours a bound cuts off the quarter grid), user
//! activity from the fleet days' totals for whole UTC days and the (day,
//! user) rows and hourly rows for the days its range cuts. The figures are
//! combined in Rust by `tally_domain::usage::packed`.
//!
//! A read of more than one statement runs in one read-only repeatable-read
//! transaction, so all of it sees the rollup as of the same tick.

use std::cmp::Reverse;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row as _};
use tally_domain::error::StoreError;
use tally_domain::ports::TimeRange;
use tally_domain::usage::minutes::{HourUsage, hour_of, hour_start, minute_of};
use tally_domain::usage::packed::{self, AppDayRef, CutRow, FleetDay, ReadPlan, UsersRef};
use tally_domain::usage::{ActiveUsers, AppUsageSeries, Intervals, UserActivity};
use time::OffsetDateTime;
use uuid::Uuid;

use super::days;
use crate::error::map_sqlx_error;
use crate::timeconv::to_u64;

/// Hourly rows of the cut hours `$1` with their users' ordinals.
const CUT_ROWS: &str =
    "SELECT u.ordinal, h.access_method, h.slug_or_port, h.hour, h.minutes, h.sessions, h.requests
FROM app_usage_hours h JOIN app_usage_users u USING (user_id)
WHERE h.hour = ANY($1::timestamptz[])";

/// Per user (ordinal), over the parts of a range that are not whole UTC
/// days: the cut hours from the hourly rows (masks OR'ed per user and hour),
/// whole hours from the (day, user) rows. `$1`, `$2`: the range in epoch
/// minutes, `$3`: the cut hours, `$4`..`$6`: the day-row segments (day,
/// first hour, end hour).
const USER_PARTS: &str = "WITH r AS (
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
        FROM unnest($4::timestamptz[], $5::int4[], $6::int4[]) AS g(day, a, b)
        JOIN app_usage_user_days d ON d.day = g.day
    ) x WHERE mins > 0 OR s > 0
)
SELECT u.ordinal, sum(mins)::int8 AS mins, sum(s)::int8 AS sessions, sum(req)::int8 AS requests
FROM parts JOIN app_usage_users u USING (user_id)
GROUP BY u.ordinal";

fn decode(e: impl std::fmt::Display) -> StoreError {
    StoreError::other(format!("a packed day row cannot be read: {e}"))
}

fn int(row: &PgRow, i: usize) -> Result<u64, StoreError> {
    to_u64(row.try_get(i).map_err(map_sqlx_error)?, "count")
}

fn ordinal(row: &PgRow) -> Result<u32, StoreError> {
    let v: i32 = row.try_get(0).map_err(map_sqlx_error)?;
    u32::try_from(v).map_err(decode)
}

fn day_number(t: OffsetDateTime) -> i64 {
    hour_of(t).div_euclid(24)
}

fn plan_days(plan: &ReadPlan) -> Vec<OffsetDateTime> {
    plan.day_numbers().map(|d| hour_start(24 * d)).collect()
}

/// A read-only transaction seeing one snapshot.
async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pool.begin().await.map_err(map_sqlx_error)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
    Ok(tx)
}

async fn cut_rows(conn: &mut PgConnection, hours: &[i64]) -> Result<Vec<CutRow>, StoreError> {
    let hours: Vec<OffsetDateTime> = hours.iter().map(|&h| hour_start(h)).collect();
    let rows = sqlx::query(CUT_ROWS)
        .bind(&hours)
        .fetch_all(conn)
        .await
        .map_err(map_sqlx_error)?;
    rows.iter()
        .map(|row| {
            let method: &str = row.try_get(1).map_err(map_sqlx_error)?;
            let hour: OffsetDateTime = row.try_get(3).map_err(map_sqlx_error)?;
            Ok(CutRow {
                ordinal: ordinal(row)?,
                app: (
                    method.parse().map_err(decode)?,
                    row.try_get(2).map_err(map_sqlx_error)?,
                ),
                hour: hour_of(hour),
                usage: HourUsage {
                    minutes: int(row, 4)?,
                    sessions: int(row, 5)?,
                    requests: int(row, 6)?,
                },
            })
        })
        .collect()
}

/// The plan of a read, within the hours that hold rollup rows when the
/// range is longer than a year (two index lookups): a range of centuries
/// plans only the days that have data.
async fn plan_of(pool: &PgPool, intervals: &Intervals) -> Result<ReadPlan, StoreError> {
    let range = intervals.range();
    if range.to - range.from <= time::Duration::days(400) {
        return Ok(ReadPlan::of(intervals));
    }
    let (first, last): (Option<OffsetDateTime>, Option<OffsetDateTime>) =
        sqlx::query_as("SELECT min(hour), max(hour) FROM app_usage_hours")
            .fetch_one(pool)
            .await
            .map_err(map_sqlx_error)?;
    // Hours added after this look-up are outside what the read sees, as if
    // it ran before the tick that added them.
    let span = first.zip(last).map(|(a, b)| (hour_of(a), hour_of(b)));
    Ok(ReadPlan::within(intervals, Some(span.unwrap_or((0, -1)))))
}

/// The packed rows of the plan's days (`sql` binds them as `$1`) and the
/// hourly rows of its cut hours; with cut hours, both from one snapshot.
async fn days_and_cut_hours(
    pool: &PgPool,
    plan: &ReadPlan,
    sql: &'static str,
) -> Result<(Vec<PgRow>, Vec<CutRow>), StoreError> {
    let query = sqlx::query(sql).bind(plan_days(plan));
    if plan.cut_hours.is_empty() {
        return Ok((query.fetch_all(pool).await.map_err(map_sqlx_error)?, Vec::new()));
    }
    let mut tx = snapshot(pool).await?;
    let rows = query.fetch_all(&mut *tx).await.map_err(map_sqlx_error)?;
    let cut = cut_rows(&mut tx, &plan.cut_hours).await?;
    tx.commit().await.map_err(map_sqlx_error)?;
    Ok((rows, cut))
}

pub(super) async fn app_usage(
    pool: &PgPool,
    intervals: &Intervals,
) -> Result<Vec<AppUsageSeries>, StoreError> {
    let plan = plan_of(pool, intervals).await?;
    let (rows, cut) = days_and_cut_hours(
        pool,
        &plan,
        "SELECT day, access_method, slug_or_port, figures, users FROM app_usage_app_days \
         WHERE day = ANY($1::timestamptz[])",
    )
    .await?;
    let mut days = Vec::with_capacity(rows.len());
    for row in &rows {
        let day: OffsetDateTime = row.try_get(0).map_err(map_sqlx_error)?;
        let method: &str = row.try_get(1).map_err(map_sqlx_error)?;
        let slug: String = row.try_get(2).map_err(map_sqlx_error)?;
        let packed = AppDayRef::new(
            row.try_get(3).map_err(map_sqlx_error)?,
            row.try_get(4).map_err(map_sqlx_error)?,
        )
        .map_err(decode)?;
        days.push((day_number(day), (method.parse().map_err(decode)?, slug), packed));
    }
    Ok(packed::app_usage(&plan, intervals, days, cut))
}

pub(super) async fn active_users(pool: &PgPool, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
    let plan = plan_of(pool, intervals).await?;
    let (rows, cut) = days_and_cut_hours(
        pool,
        &plan,
        "SELECT day, users FROM app_usage_fleet_days WHERE day = ANY($1::timestamptz[])",
    )
    .await?;
    let mut days = Vec::with_capacity(rows.len());
    for row in &rows {
        let day: OffsetDateTime = row.try_get(0).map_err(map_sqlx_error)?;
        let users = UsersRef::new(row.try_get(1).map_err(map_sqlx_error)?).map_err(decode)?;
        days.push((day_number(day), users));
    }
    Ok(packed::active_users(&plan, intervals, days, cut))
}

/// (minutes, sessions, requests) per user ordinal.
#[derive(Default)]
struct Totals(Vec<(u64, u64, u64)>);

impl Totals {
    fn add(&mut self, ordinal: u32, minutes: u64, sessions: u64, requests: u64) {
        let i = ordinal as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, (0, 0, 0));
        }
        let t = &mut self.0[i];
        t.0 += minutes;
        t.1 = t.1.saturating_add(sessions);
        t.2 = t.2.saturating_add(requests);
    }
}

pub(super) async fn user_activity(
    pool: &PgPool,
    range: TimeRange,
    max: usize,
) -> Result<Vec<UserActivity>, StoreError> {
    let whole = Intervals::single(range).map_err(|e| StoreError::invalid(format!("range: {e}")))?;
    let plan = days::Plan::of(&whole);
    // Whole UTC days come from the fleet days' totals, the rest (segments
    // of days, cut hours) from the (day, user) and hourly rows.
    let (mut full, mut part) = (Vec::new(), days::Plan::default());
    for k in 0..plan.days.len() {
        if (plan.from_hours[k], plan.to_hours[k]) == (0, 24) {
            full.push(plan.days[k]);
        } else {
            part.days.push(plan.days[k]);
            part.from_hours.push(plan.from_hours[k]);
            part.to_hours.push(plan.to_hours[k]);
        }
    }
    let mut tx = snapshot(pool).await?;
    let mut totals = Totals::default();
    let rows =
        sqlx::query("SELECT users, totals FROM app_usage_fleet_days WHERE day = ANY($1::timestamptz[])")
            .bind(&full)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
    for row in &rows {
        let day = FleetDay::decode(
            row.try_get(0).map_err(map_sqlx_error)?,
            row.try_get(1).map_err(map_sqlx_error)?,
        )
        .map_err(decode)?;
        for u in day.users {
            totals.add(u.ordinal, u.minutes, u.sessions, u.requests);
        }
    }
    if !plan.cut_hours.is_empty() || !part.days.is_empty() {
        let rows = sqlx::query(USER_PARTS)
            .bind(minute_of(range.from))
            .bind(minute_of(range.to))
            .bind(&plan.cut_hours)
            .bind(&part.days)
            .bind(&part.from_hours)
            .bind(&part.to_hours)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        for row in &rows {
            totals.add(ordinal(row)?, int(row, 1)?, int(row, 2)?, int(row, 3)?);
        }
    }
    let mut ranked: Vec<(u32, (u64, u64, u64))> = totals
        .0
        .into_iter()
        .enumerate()
        .filter(|(_, t)| t.0 > 0 || t.1 > 0)
        .map(|(i, t)| (i as u32, t))
        .collect();
    if max == 0 || ranked.is_empty() {
        tx.commit().await.map_err(map_sqlx_error)?;
        return Ok(Vec::new());
    }
    // Ties are broken by user id: keep every user as good as the last one
    // kept, then name them.
    ranked.sort_by_key(|&(_, t)| Reverse(t.0));
    let last = ranked[max.min(ranked.len()) - 1].1.0;
    ranked.retain(|&(_, t)| t.0 >= last);
    let ordinals: Vec<i32> = ranked.iter().map(|&(o, _)| o as i32).collect();
    let names: Vec<(i32, Uuid)> =
        sqlx::query_as("SELECT ordinal, user_id FROM app_usage_users WHERE ordinal = ANY($1)")
            .bind(&ordinals)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
    tx.commit().await.map_err(map_sqlx_error)?;
    let names: std::collections::HashMap<i32, Uuid> = names.into_iter().collect();
    let users = ranked
        .into_iter()
        .map(|(o, (minutes, sessions, requests))| {
            Ok(UserActivity {
                user_id: *names
                    .get(&(o as i32))
                    .ok_or_else(|| decode(format!("user ordinal {o} is not in the dictionary")))?,
                usage_seconds: 60 * minutes,
                sessions,
                requests,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(tally_domain::usage::top_users(users, max))
}
