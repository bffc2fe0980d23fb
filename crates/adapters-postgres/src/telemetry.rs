//! The period switch, period locks and the snapshot outbox.

use async_trait::async_trait;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use tally_domain::boundary::BoundaryUsageSummary;
use tally_domain::error::StoreError;
use tally_domain::ports::TelemetryStore;
use tally_domain::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::PgStore;
use crate::boundary::{PeriodLock, lock_period, summary};
use crate::error::map_sqlx_error;
use crate::timeconv::{floor_micros, limit, to_i64, to_u64};

const SNAPSHOT_COLUMNS: &str = "id, event_type, period_start, period_end, unique_workspaces, unique_users, \
    allowed_requests, denied_requests, replicas, tracked_from, tracked_to, created_at, published_at, publish_attempts";

fn snapshot_from_row(row: &PgRow) -> Result<Snapshot, StoreError> {
    let int = |name: &str| -> Result<u64, StoreError> {
        let v: i64 = row.try_get(name).map_err(map_sqlx_error)?;
        to_u64(v, name)
    };
    let attempts: i32 = row.try_get("publish_attempts").map_err(map_sqlx_error)?;
    Ok(Snapshot {
        id: row.try_get("id").map_err(map_sqlx_error)?,
        event_type: row.try_get("event_type").map_err(map_sqlx_error)?,
        period_start: row.try_get("period_start").map_err(map_sqlx_error)?,
        period_end: row.try_get("period_end").map_err(map_sqlx_error)?,
        usage: BoundaryUsageSummary {
            unique_workspaces: int("unique_workspaces")?,
            unique_users: int("unique_users")?,
            allowed_requests: int("allowed_requests")?,
            denied_requests: int("denied_requests")?,
            replicas: int("replicas")?,
            tracked_from: row.try_get("tracked_from").map_err(map_sqlx_error)?,
            tracked_to: row.try_get("tracked_to").map_err(map_sqlx_error)?,
        },
        created_at: row.try_get("created_at").map_err(map_sqlx_error)?,
        published_at: row.try_get("published_at").map_err(map_sqlx_error)?,
        publish_attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

#[async_trait]
impl TelemetryStore for PgStore {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        let start = floor_micros(close.period.start);
        let end = floor_micros(close.period.end);
        if end <= start {
            return Err(StoreError::invalid(format!(
                "period end {} is not after its start {}",
                close.period.end, close.period.start
            )));
        }
        let mut tx = crate::tx::begin(self.pool()).await.map_err(map_sqlx_error)?;
        // Waits for in-flight flushes and holds new ones off until commit.
        lock_period(&mut tx, PeriodLock::Exclusive).await?;
        let taken = sqlx::query(
            "SELECT 1 FROM telemetry_locks WHERE event_type = $1 AND period_ending_at >= $2 LIMIT 1",
        )
        .bind(&close.event_type)
        .bind(end)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        if taken.is_some() {
            return Ok(PeriodCloseOutcome::AlreadyClosed);
        }
        sqlx::query("INSERT INTO telemetry_locks (event_type, period_ending_at) VALUES ($1, $2)")
            .bind(&close.event_type)
            .bind(end)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        let usage = summary(&mut tx).await?;
        // Reset the period; last_seq stays so retried deltas stay duplicates.
        sqlx::query(
            "UPDATE boundary_usage_replicas SET allowed_requests = 0, denied_requests = 0, \
                 flushed_in_period = false, tracked_from = NULL, tracked_to = NULL \
             WHERE flushed_in_period OR allowed_requests <> 0 OR denied_requests <> 0 OR tracked_from IS NOT NULL",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        for table in ["boundary_usage_workspaces", "boundary_usage_users"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx_error)?;
        }
        let snapshot = Snapshot {
            id: close.snapshot_id,
            event_type: close.event_type.clone(),
            period_start: start,
            period_end: end,
            usage,
            created_at: floor_micros(close.now),
            published_at: None,
            publish_attempts: 0,
        };
        let u = &snapshot.usage;
        sqlx::query(&format!(
            "INSERT INTO telemetry_snapshots ({SNAPSHOT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, 0)"
        ))
        .bind(snapshot.id)
        .bind(&snapshot.event_type)
        .bind(start)
        .bind(end)
        .bind(to_i64(u.unique_workspaces, "unique_workspaces")?)
        .bind(to_i64(u.unique_users, "unique_users")?)
        .bind(to_i64(u.allowed_requests, "allowed_requests")?)
        .bind(to_i64(u.denied_requests, "denied_requests")?)
        .bind(to_i64(u.replicas, "replicas")?)
        .bind(u.tracked_from)
        .bind(u.tracked_to)
        .bind(snapshot.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(PeriodCloseOutcome::Closed(snapshot))
    }

    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let now = floor_micros(now);
        let until = floor_micros(now + lease);
        let rows = sqlx::query(&format!(
            "WITH c AS ( \
                SELECT id FROM telemetry_snapshots \
                WHERE published_at IS NULL \
                  AND (claimed_until IS NULL OR claimed_until <= $2 OR claimed_by = $1) \
                ORDER BY period_end, id LIMIT $4 \
                FOR UPDATE SKIP LOCKED) \
             UPDATE telemetry_snapshots s SET claimed_by = $1, claimed_until = $3 \
             FROM c WHERE s.id = c.id \
             RETURNING {}",
            SNAPSHOT_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(claimer)
        .bind(now)
        .bind(until)
        .bind(limit(max))
        .fetch_all(self.pool())
        .await
        .map_err(map_sqlx_error)?;
        let mut snapshots = rows
            .iter()
            .map(snapshot_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        snapshots.sort_by_key(|s| (s.period_end, s.id));
        Ok(snapshots)
    }

    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        _claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE telemetry_snapshots \
             SET published_at = COALESCE(published_at, $2), claimed_by = NULL, claimed_until = NULL \
             WHERE id = $1",
        )
        .bind(snapshot_id)
        .bind(floor_micros(at))
        .execute(self.pool())
        .await
        .map_err(map_sqlx_error)?;
        Ok(())
    }

    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE telemetry_snapshots \
             SET claimed_by = NULL, claimed_until = NULL, publish_attempts = publish_attempts + 1, last_error = $3 \
             WHERE id = $1 AND claimed_by = $2",
        )
        .bind(snapshot_id)
        .bind(claimer)
        .bind(error)
        .execute(self.pool())
        .await
        .map_err(map_sqlx_error)?;
        Ok(())
    }

    async fn list_snapshots(&self, max: usize) -> Result<Vec<Snapshot>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM telemetry_snapshots ORDER BY period_end DESC, id DESC LIMIT $1"
        ))
        .bind(limit(max))
        .fetch_all(self.pool())
        .await
        .map_err(map_sqlx_error)?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        // Stored ends are whole microseconds: `< before` is `< ceil(before)`.
        let done = sqlx::query("DELETE FROM telemetry_locks WHERE period_ending_at < $1")
            .bind(crate::timeconv::ceil_micros(before))
            .execute(self.pool())
            .await
            .map_err(map_sqlx_error)?;
        Ok(done.rows_affected())
    }
}
