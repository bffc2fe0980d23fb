//! Whole runs over a store that fails now and then.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use indicatif::ProgressBar;
use tally_adapters_memory::MemoryStore;
use tally_domain::StoreError;
use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::ports::{
    AppStatsStore, AppStatsWrite, AppUsage, BoundaryUsageStore, InsightsStore, Store, TelemetryStore,
    TimeRange,
};
use tally_domain::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{simulate, small};

/// How a failing write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing applied: a refused connection.
    Before,
    /// Applied, but the answer is lost: a timeout after commit.
    After,
}

/// A memory store whose writes fail every `every`-th call.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    every: u64,
    failure: Failure,
    calls: AtomicU64,
}

impl Flaky {
    fn new(every: u64, failure: Failure) -> Self {
        Self {
            inner: MemoryStore::new(),
            every,
            failure,
            calls: AtomicU64::new(0),
        }
    }

    async fn write<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let fails = (self.calls.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.every);
        if fails && self.failure == Failure::Before {
            return Err(StoreError::Unavailable("injected: connection refused".into()));
        }
        let result = op.await;
        if fails {
            return Err(StoreError::Unavailable("injected: timed out after commit".into()));
        }
        result
    }
}

#[async_trait]
impl AppStatsStore for Flaky {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        self.write(self.inner.write_app_stats(write)).await
    }
}

#[async_trait]
impl BoundaryUsageStore for Flaky {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        self.write(self.inner.flush_boundary_usage(delta)).await
    }
    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        self.inner.boundary_usage_summary().await
    }
    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        self.inner.delete_boundary_usage_by_replica(replica_id).await
    }
}

#[async_trait]
impl TelemetryStore for Flaky {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        self.write(self.inner.close_period(close)).await
    }
    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        self.inner
            .claim_unpublished_snapshots(claimer, now, lease, limit)
            .await
    }
    async fn mark_snapshot_published(
        &self,
        id: Uuid,
        claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.inner.mark_snapshot_published(id, claimer, at).await
    }
    async fn release_snapshot_claim(&self, id: Uuid, claimer: Uuid, error: &str) -> Result<(), StoreError> {
        self.inner.release_snapshot_claim(id, claimer, error).await
    }
    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        self.inner.list_snapshots(limit).await
    }
    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.prune_telemetry_locks(before).await
    }
}

#[async_trait]
impl InsightsStore for Flaky {
    async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError> {
        self.inner.app_usage(range).await
    }
    async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError> {
        self.inner.app_stats(range, limit).await
    }
    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
        self.inner.workspace_last_used(workspace_id).await
    }
}

#[async_trait]
impl UsageStore for Flaky {
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
        self.inner.tick_usage_rollup().await
    }
    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
        self.inner.app_usage_by_interval(intervals).await
    }
    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        self.inner.active_users(intervals).await
    }
    async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError> {
        self.inner.user_activity(range, limit).await
    }
    fn export_app_stats(&self, range: TimeRange) -> RowStream {
        self.inner.export_app_stats(range)
    }
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError> {
        self.inner.purge_expired(now, policy).await
    }
}

use tally_domain::StatsReport;
use tally_domain::ports::{RowStream, UsageStore};
use tally_domain::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UserActivity,
};

#[tokio::test]
async fn refused_writes_are_retried_and_everything_is_conserved_exactly() {
    let store: Arc<dyn Store> = Arc::new(Flaky::new(7, Failure::Before));
    let outcome = simulate(&small(11), store, &ProgressBar::hidden()).await.unwrap();
    let verdict = outcome.conservation();
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let f = outcome.faults;
    assert!(f.collector_flushes > 0 && f.tracker_flushes > 0, "{f:?}");
    assert_eq!((f.unrecovered, f.acks_lost), (0, 0));
    assert!(
        verdict.line.contains("uniques exact in 4/4 periods"),
        "{}",
        verdict.line
    );
}

#[tokio::test]
async fn lost_acknowledgements_change_no_total() {
    let store: Arc<dyn Store> = Arc::new(Flaky::new(5, Failure::After));
    let outcome = simulate(&small(12), store, &ProgressBar::hidden()).await.unwrap();
    let verdict = outcome.conservation();
    // Writes are idempotent and deltas numbered: replays count once.
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    assert!(outcome.faults.acks_lost > 0, "{:?}", outcome.faults);
    assert_eq!(outcome.published.len(), 4);
}
