//! The usage rollup, its reads, the raw export and retention.
//!
//! Writes mark the start hours they touch (`app_usage_dirty_hours`, in the
//! write's transaction); a tick rolls those hours up again from the raw rows
//! ([`sql::ROLL_UP`]) and then the day rows of the hourly rows that changed
//! ([`days`]); reads answer from the day rows and, for hours an interval
//! bound cuts, from `app_usage_hours`. Ticks and
//! purges hold one transaction-level advisory lock, so one replica at a time
//! does either.

mod days;
mod retention;
mod sql;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::error::StoreError;
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::minutes::minute_of;
use tally_domain::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UsageFigures,
    UserActivity, sort_app_series,
};
use time::{Duration, OffsetDateTime};

use crate::PgStore;
use crate::error::map_sqlx_error;
use crate::timeconv::{ceil_micros, limit, to_u64};

/// The advisory lock of ticks and purges ("tallyus").
pub(crate) const USAGE_LOCK_KEY: i64 = 0x0074_616c_6c79_7573;

/// Start hours rolled up per statement at most, so a long catch-up stays a
/// series of bounded statements.
const HOURS_PER_STATEMENT: i64 = 24;

/// Takes the usage lock for the transaction, if no one holds it.
pub(super) async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(USAGE_LOCK_KEY)
        .fetch_one(conn)
        .await
}

/// Rolls up every marked start hour that is not final; the caller holds the
/// usage lock in the same transaction.
pub(super) async fn roll_up(conn: &mut PgConnection) -> Result<TickOutcome, sqlx::Error> {
    // Markers committed after this statement's snapshot stay for the next
    // tick; the rows they mark may be rolled up now too, which is harmless.
    let hours: Vec<OffsetDateTime> = sqlx::query_scalar(
        "WITH taken AS (DELETE FROM app_usage_dirty_hours RETURNING start_hour) \
         SELECT DISTINCT start_hour FROM taken \
         WHERE start_hour >= coalesce((SELECT frozen_before FROM app_usage_state), '-infinity') \
         ORDER BY start_hour",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut outcome = TickOutcome {
        start_hours: hours.len() as u64,
        ..TickOutcome::default()
    };
    // The planner's row estimates for the per-row hour series are far off,
    // which made it compile the statement (seconds) for milliseconds of work.
    sqlx::query("SET LOCAL jit = off").execute(&mut *conn).await?;
    // Runs of consecutive hours, each one range scan of the start index.
    for (from, to) in runs(&hours) {
        let done = sqlx::query(sql::ROLL_UP)
            .bind(from)
            .bind(to)
            .execute(&mut *conn)
            .await?;
        outcome.rows_changed += done.rows_affected();
    }
    days::recompute(conn).await?;
    Ok(outcome)
}

/// Sorted distinct hours as ranges `[from, to)` of consecutive hours, each
/// at most [`HOURS_PER_STATEMENT`] long.
fn runs(hours: &[OffsetDateTime]) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut out: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::new();
    for &h in hours {
        match out.last_mut() {
            Some((from, to)) if *to == h && h - *from < Duration::hours(HOURS_PER_STATEMENT) => {
                *to = h + Duration::HOUR
            }
            _ => out.push((h, h + Duration::HOUR)),
        }
    }
    out
}

fn int(row: &PgRow, name: &str) -> Result<u64, StoreError> {
    to_u64(row.try_get(name).map_err(map_sqlx_error)?, name)
}

fn access_method(row: &PgRow) -> Result<AccessMethod, StoreError> {
    let s: &str = row.try_get("access_method").map_err(map_sqlx_error)?;
    s.parse().map_err(StoreError::other)
}

/// The parameters of [`sql::PARTS`].
struct Bounds {
    times: Vec<OffsetDateTime>,
    minutes: Vec<i64>,
    count: i32,
    plan: days::Plan,
    /// Intervals past its first that one hour can reach.
    reach: i32,
}

impl Bounds {
    fn of(intervals: &Intervals) -> Result<Self, StoreError> {
        Ok(Self {
            times: intervals.bounds().to_vec(),
            minutes: intervals.bounds().iter().map(|&b| minute_of(b)).collect(),
            count: i32::try_from(intervals.len())
                .map_err(|_| StoreError::invalid(format!("too many intervals: {}", intervals.len())))?,
            plan: days::Plan::of(intervals),
            reach: Self::reach(intervals),
        })
    }

    /// An hour whose start lies in interval `i` reaches at most the
    /// intervals that begin within the next 59 minutes.
    fn reach(intervals: &Intervals) -> i32 {
        let shortest = intervals
            .iter()
            .map(|r| r.to - r.from)
            .min()
            .unwrap_or(Duration::HOUR);
        let minutes = shortest.whole_minutes().max(1);
        i32::try_from(59 / minutes + 1).unwrap_or(60)
    }

    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.times)
            .bind(&self.minutes)
            .bind(self.count)
            .bind(&self.plan.cut_hours)
            .bind(self.reach)
            .bind(&self.plan.days)
            .bind(&self.plan.intervals)
            .bind(&self.plan.from_hours)
            .bind(&self.plan.to_hours)
    }
}

fn figures(row: &PgRow) -> Result<UsageFigures, StoreError> {
    Ok(UsageFigures {
        usage_seconds: int(row, "usage_seconds")?,
        sessions: int(row, "sessions")?,
        requests: int(row, "requests")?,
        unique_users: int(row, "unique_users")?,
    })
}

fn stats_report(row: &PgRow) -> Result<StatsReport, StoreError> {
    let get = |e| map_sqlx_error(e);
    Ok(StatsReport {
        user_id: row.try_get("user_id").map_err(get)?,
        workspace_id: row.try_get("workspace_id").map_err(get)?,
        agent_id: row.try_get("agent_id").map_err(get)?,
        access_method: access_method(row)?,
        slug_or_port: row.try_get("slug_or_port").map_err(get)?,
        session_id: row.try_get("session_id").map_err(get)?,
        session_started_at: row.try_get("session_started_at").map_err(get)?,
        session_ended_at: Some(row.try_get("session_ended_at").map_err(get)?),
        requests: int(row, "requests")?,
        sessions: int(row, "sessions")?,
    })
}

#[async_trait]
impl UsageStore for PgStore {
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
        let mut tx = self.pool().begin().await.map_err(map_sqlx_error)?;
        if !try_lock(&mut tx).await.map_err(map_sqlx_error)? {
            return Ok(TickOutcome {
                skipped: true,
                ..TickOutcome::default()
            });
        }
        let outcome = roll_up(&mut tx).await.map_err(map_sqlx_error)?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(outcome)
    }

    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
        let bounds = Bounds::of(intervals)?;
        let text = sql::app_usage();
        let rows = bounds
            .bind(sqlx::query(&text))
            .fetch_all(self.pool())
            .await
            .map_err(map_sqlx_error)?;
        let mut apps: std::collections::HashMap<(AccessMethod, String), AppUsageSeries> = Default::default();
        for row in &rows {
            let method = access_method(row)?;
            let slug: String = row.try_get("slug_or_port").map_err(map_sqlx_error)?;
            let series = apps
                .entry((method, slug.clone()))
                .or_insert_with(|| AppUsageSeries {
                    access_method: method,
                    slug_or_port: slug,
                    total: UsageFigures::default(),
                    intervals: vec![UsageFigures::default(); intervals.len()],
                });
            let i: Option<i32> = row.try_get("i").map_err(map_sqlx_error)?;
            match i {
                None => series.total = figures(row)?,
                Some(i) => series.intervals[(i - 1) as usize] = figures(row)?,
            }
        }
        let mut series: Vec<AppUsageSeries> = apps.into_values().collect();
        sort_app_series(&mut series);
        Ok(series)
    }

    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        let bounds = Bounds::of(intervals)?;
        let text = sql::active_users();
        let rows = bounds
            .bind(sqlx::query(&text))
            .fetch_all(self.pool())
            .await
            .map_err(map_sqlx_error)?;
        let mut out = ActiveUsers {
            total: 0,
            intervals: vec![0; intervals.len()],
        };
        for row in &rows {
            let i: Option<i32> = row.try_get("i").map_err(map_sqlx_error)?;
            let users = int(row, "users")?;
            match i {
                None => out.total = users,
                Some(i) => out.intervals[(i - 1) as usize] = users,
            }
        }
        Ok(out)
    }

    async fn user_activity(&self, range: TimeRange, max: usize) -> Result<Vec<UserActivity>, StoreError> {
        let whole = Intervals::single(range).map_err(|e| StoreError::invalid(format!("range: {e}")))?;
        let plan = days::Plan::of(&whole);
        let rows = sqlx::query(sql::USER_ACTIVITY)
            .bind(minute_of(range.from))
            .bind(minute_of(range.to))
            .bind(&plan.cut_hours)
            .bind(limit(max))
            .bind(&plan.days)
            .bind(&plan.from_hours)
            .bind(&plan.to_hours)
            .fetch_all(self.pool())
            .await
            .map_err(map_sqlx_error)?;
        rows.iter()
            .map(|row| {
                Ok(UserActivity {
                    user_id: row.try_get("user_id").map_err(map_sqlx_error)?,
                    usage_seconds: int(row, "usage_seconds")?,
                    sessions: int(row, "sessions")?,
                    requests: int(row, "requests")?,
                })
            })
            .collect()
    }

    async fn app_stats_started_in(&self, range: TimeRange) -> Result<Vec<StatsReport>, StoreError> {
        let rows = sqlx::query(sql::STARTED_IN)
            .bind(ceil_micros(range.from))
            .bind(ceil_micros(range.to))
            .fetch_all(self.pool())
            .await
            .map_err(map_sqlx_error)?;
        rows.iter().map(stats_report).collect()
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError> {
        retention::purge(self.pool(), now, policy)
            .await
            .map_err(map_sqlx_error)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn consecutive_hours_make_one_run_of_at_most_a_day() {
        let h = |n: i64| datetime!(2026-11-25 0:00 UTC) + Duration::hours(n);
        let hours: Vec<_> = [0, 1, 2, 5, 7, 8].into_iter().chain(10..40).map(h).collect();
        assert_eq!(
            runs(&hours),
            vec![
                (h(0), h(3)),
                (h(5), h(6)),
                (h(7), h(9)),
                (h(10), h(34)),
                (h(34), h(40))
            ]
        );
        assert_eq!(runs(&[]), vec![]);
    }
}
