//! The usage rollup, its reads, the raw export and retention.
//!
//! Writes mark the start hours they touch (`app_usage_dirty_hours`, in the
//! write's transaction); a tick rolls those hours up again from the raw rows
//! ([`sql::ROLL_UP`]) and then the packed day rows of the days whose hourly
//! rows changed ([`packed`]); reads ([`reads`]) answer from the packed rows
//! and, for hours an interval bound cuts off the quarter grid, from
//! `app_usage_hours`. Ticks and
//! purges hold one transaction-level advisory lock, so one replica at a time
//! does either.

mod packed;
mod reads;
mod retention;
mod sql;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::error::StoreError;
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UserActivity,
};
use time::{Duration, OffsetDateTime};

use crate::PgStore;
use crate::error::map_sqlx_error;
use crate::timeconv::{ceil_micros, to_u64};

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
        let changed: i64 = sqlx::query_scalar(sql::ROLL_UP)
            .bind(from)
            .bind(to)
            .fetch_one(&mut *conn)
            .await?;
        outcome.rows_changed += changed as u64;
    }
    packed::rebuild_marked(conn).await?;
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
        let mut tx = crate::tx::begin(self.pool()).await.map_err(map_sqlx_error)?;
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
        reads::app_usage(self.pool(), intervals).await
    }

    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        reads::active_users(self.pool(), intervals).await
    }

    async fn user_activity(&self, range: TimeRange, max: usize) -> Result<Vec<UserActivity>, StoreError> {
        reads::user_activity(self.pool(), range, max).await
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
