//! The insights reads, from the packed day rows and the hourly rows of hours
//! a bound cuts off the quarter grid: app usage from the app days, active
//! users from the fleet days' activity, user activity from the fleet days'
//! totals for the UTC days its range covers whole and their detail for the
//! (at most two) days it cuts. The figures are combined in Rust by
//! `tally_domain::usage::packed`.
//!
//! A read of more than one statement runs in one read-only repeatable-read
//! transaction, so all of it sees the rollup as of the same tick.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row as _};
use tally_domain::error::StoreError;
use tally_domain::ports::TimeRange;
use tally_domain::usage::minutes::{HourUsage, hour_of, hour_start};
use tally_domain::usage::packed::{
    self, AppDayRef, CutRow, DetailRef, FleetDayPart, ReadPlan, TotalsRef, UsersRef,
};
use tally_domain::usage::{ActiveUsers, AppUsageSeries, Intervals, UserActivity};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::map_sqlx_error;
use crate::timeconv::to_u64;

/// Hourly rows of the cut hours `$1` with their users' ordinals.
const CUT_ROWS: &str =
    "SELECT u.ordinal, h.access_method, h.slug_or_port, h.hour, h.minutes, h.sessions, h.requests
FROM app_usage_hours h JOIN app_usage_users u USING (user_id)
WHERE h.hour = ANY($1::timestamptz[])";

/// The fleet days of a user-activity read: the totals of the days `$1` (it
/// covers them whole), the detail of the days `$2` (it cuts them; NULL for
/// a day packed before fleet days had detail).
const ACTIVITY_DAYS: &str = "SELECT day, users, totals, NULL::bytea FROM app_usage_fleet_days
WHERE day = ANY($1::timestamptz[])
UNION ALL
SELECT day, users, NULL::bytea, detail FROM app_usage_fleet_days WHERE day = ANY($2::timestamptz[])";

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
    crate::tx::begin_with(pool, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(map_sqlx_error)
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

pub(super) async fn user_activity(
    pool: &PgPool,
    range: TimeRange,
    max: usize,
) -> Result<Vec<UserActivity>, StoreError> {
    let whole = Intervals::single(range).map_err(|e| StoreError::invalid(format!("range: {e}")))?;
    let plan = plan_of(pool, &whole).await?;
    let (full, cut): (Vec<i64>, Vec<i64>) = plan.day_numbers().partition(|&d| plan.covers_whole(d));
    let at =
        |days: Vec<i64>| -> Vec<OffsetDateTime> { days.into_iter().map(|d| hour_start(24 * d)).collect() };
    let mut tx = snapshot(pool).await?;
    let rows = sqlx::query(ACTIVITY_DAYS)
        .bind(at(full))
        .bind(at(cut))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
    let mut hours = plan.cut_hours.clone();
    let mut days = Vec::with_capacity(rows.len());
    for row in &rows {
        let day = day_number(row.try_get(0).map_err(map_sqlx_error)?);
        let users = UsersRef::new(row.try_get(1).map_err(map_sqlx_error)?).map_err(decode)?;
        let totals: Option<&[u8]> = row.try_get(2).map_err(map_sqlx_error)?;
        let detail: Option<&[u8]> = row.try_get(3).map_err(map_sqlx_error)?;
        let part = match (totals, detail) {
            (Some(t), _) => FleetDayPart::Totals(TotalsRef::new(users, t).map_err(decode)?),
            (None, Some(d)) => FleetDayPart::Detail(DetailRef::new(users, d)),
            // Until the tick after the migration rebuilds it: the day's
            // hours inside the range from the hourly rows.
            (None, None) => {
                hours.extend(plan.hours_of(day));
                continue;
            }
        };
        days.push((day, part));
    }
    let cut = if hours.is_empty() {
        Vec::new()
    } else {
        cut_rows(&mut tx, &hours).await?
    };
    let contenders = packed::user_activity(&plan, &whole, days, cut)
        .map_err(decode)?
        .contenders(max);
    let ordinals: Vec<i32> = contenders.iter().map(|&(o, _)| o as i32).collect();
    let names: Vec<(i32, Uuid)> = if ordinals.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT ordinal, user_id FROM app_usage_users WHERE ordinal = ANY($1)")
            .bind(&ordinals)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx_error)?
    };
    tx.commit().await.map_err(map_sqlx_error)?;
    let names: std::collections::HashMap<i32, Uuid> = names.into_iter().collect();
    packed::top_named(contenders, max, |o| names.get(&(o as i32)).copied()).map_err(decode)
}
