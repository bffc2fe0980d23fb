//! Per-replica boundary usage and the distinct ids of the current period.
//!
//! Flushes (and deletes) hold a shared transaction-level advisory lock that
//! the period switch takes exclusively, so a flush lands wholly before or
//! wholly after a switch.

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::Row as _;
use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::error::StoreError;
use tally_domain::ports::BoundaryUsageStore;
use uuid::Uuid;

use crate::PgStore;
use crate::error::map_sqlx_error;
use crate::timeconv::{floor_micros, to_i64, to_u64};

/// Advisory lock key of the current period's boundary usage ("tallybu").
const PERIOD_LOCK_KEY: i64 = 0x0074_616c_6c79_6275;

/// How a transaction holds the period lock: flushes and deletes share it,
/// the period switch holds it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PeriodLock {
    Shared,
    Exclusive,
}

/// Takes the period lock until the end of the transaction on `tx`
/// (waiting while it is held the other way).
pub(crate) async fn lock_period(tx: &mut PgConnection, how: PeriodLock) -> Result<(), StoreError> {
    let sql = match how {
        PeriodLock::Shared => "SELECT pg_advisory_xact_lock_shared($1)",
        PeriodLock::Exclusive => "SELECT pg_advisory_xact_lock($1)",
    };
    sqlx::query(sql)
        .bind(PERIOD_LOCK_KEY)
        .execute(tx)
        .await
        .map_err(map_sqlx_error)?;
    Ok(())
}

/// Adds the delta unless the replica already applied this `seq`.
const APPLY_DELTA: &str = "INSERT INTO boundary_usage_replicas AS r \
        (replica_id, allowed_requests, denied_requests, last_seq, flushed_in_period, tracked_from, tracked_to) \
    VALUES ($1, $2, $3, $4, true, $5, $6) \
    ON CONFLICT (replica_id) DO UPDATE SET \
        allowed_requests = r.allowed_requests + excluded.allowed_requests, \
        denied_requests = r.denied_requests + excluded.denied_requests, \
        last_seq = excluded.last_seq, \
        flushed_in_period = true, \
        tracked_from = LEAST(r.tracked_from, excluded.tracked_from), \
        tracked_to = GREATEST(r.tracked_to, excluded.tracked_to) \
    WHERE r.last_seq < excluded.last_seq \
    RETURNING 1";

pub(crate) const SUMMARY: &str = "SELECT \
        (SELECT count(*) FROM boundary_usage_workspaces) AS unique_workspaces, \
        (SELECT count(*) FROM boundary_usage_users) AS unique_users, \
        coalesce(sum(allowed_requests), 0)::int8 AS allowed_requests, \
        coalesce(sum(denied_requests), 0)::int8 AS denied_requests, \
        count(*) FILTER (WHERE flushed_in_period) AS replicas, \
        min(tracked_from) AS tracked_from, \
        max(tracked_to) AS tracked_to \
    FROM boundary_usage_replicas";

/// Sorted and deduplicated, so concurrent flushes insert shared ids in the
/// same order and cannot deadlock on each other.
fn sorted_ids(ids: &[Uuid]) -> Vec<Uuid> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

pub(crate) async fn summary(conn: &mut PgConnection) -> Result<BoundaryUsageSummary, StoreError> {
    let row = sqlx::query(SUMMARY)
        .fetch_one(conn)
        .await
        .map_err(map_sqlx_error)?;
    let get = |name: &str| -> Result<i64, StoreError> { row.try_get(name).map_err(map_sqlx_error) };
    Ok(BoundaryUsageSummary {
        unique_workspaces: to_u64(get("unique_workspaces")?, "unique_workspaces")?,
        unique_users: to_u64(get("unique_users")?, "unique_users")?,
        allowed_requests: to_u64(get("allowed_requests")?, "allowed_requests")?,
        denied_requests: to_u64(get("denied_requests")?, "denied_requests")?,
        replicas: to_u64(get("replicas")?, "replicas")?,
        tracked_from: row.try_get("tracked_from").map_err(map_sqlx_error)?,
        tracked_to: row.try_get("tracked_to").map_err(map_sqlx_error)?,
    })
}

#[async_trait]
impl BoundaryUsageStore for PgStore {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        let seq = to_i64(delta.seq, "seq")?;
        let allowed = to_i64(delta.allowed, "allowed")?;
        let denied = to_i64(delta.denied, "denied")?;
        if delta.tracked_to < delta.tracked_from {
            return Err(StoreError::invalid(format!(
                "tracked_to {} is before tracked_from {}",
                delta.tracked_to, delta.tracked_from
            )));
        }
        let workspaces = sorted_ids(&delta.workspace_ids);
        let users = sorted_ids(&delta.user_ids);

        let mut tx = crate::tx::begin(self.pool()).await.map_err(map_sqlx_error)?;
        lock_period(&mut tx, PeriodLock::Shared).await?;
        let applied = sqlx::query(APPLY_DELTA)
            .bind(delta.replica_id)
            .bind(allowed)
            .bind(denied)
            .bind(seq)
            .bind(floor_micros(delta.tracked_from))
            .bind(floor_micros(delta.tracked_to))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        if applied.is_none() {
            // Dropping the transaction rolls it back: nothing changed.
            return Ok(FlushOutcome::Duplicate);
        }
        if !workspaces.is_empty() {
            sqlx::query(
                "INSERT INTO boundary_usage_workspaces (workspace_id) \
                 SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
            )
            .bind(&workspaces)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        }
        if !users.is_empty() {
            sqlx::query(
                "INSERT INTO boundary_usage_users (user_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
            )
            .bind(&users)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        }
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(FlushOutcome::Applied)
    }

    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        let mut conn = self.pool().acquire().await.map_err(map_sqlx_error)?;
        summary(&mut conn).await
    }

    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        let mut tx = crate::tx::begin(self.pool()).await.map_err(map_sqlx_error)?;
        lock_period(&mut tx, PeriodLock::Shared).await?;
        let done = sqlx::query("DELETE FROM boundary_usage_replicas WHERE replica_id = $1")
            .bind(replica_id)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(done.rows_affected())
    }
}
