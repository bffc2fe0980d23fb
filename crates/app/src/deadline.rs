//! A client-side deadline on every store call.
//!
//! A database behind a network blackhole (packets dropped, or a hung server)
//! never refuses: a query on an open connection waits for TCP to give up,
//! which takes many minutes. Without a deadline every loop would hang inside
//! one call, nothing flushed, `tally_store_up` still 1, nothing logged. Past
//! the deadline a call becomes [`StoreError::Unavailable`], so the usual
//! retry, backoff and backlog paths apply and the outage shows.
//!
//! Retrying after a timed-out call is safe even though the call may still
//! have applied on the server (the outcome is ambiguous): every store write
//! is idempotent. App stats merge forward, a boundary delta carries a `seq`
//! applied once, a period close is atomic (one winner per period), and
//! publishing is at-least-once with the snapshot id as idempotency key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tally_domain::StoreError;
use tally_domain::appstats::StatsReport;
use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::ports::{
    AppStatsStore, AppStatsWrite, AppUsage, BoundaryUsageStore, InsightsStore, Store, TelemetryStore,
    TimeRange,
};
use tally_domain::ports::{RowStream, UsageStore};
use tally_domain::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};
use tally_domain::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UserActivity,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A store whose every call ends within `timeout`.
#[derive(Clone)]
pub struct DeadlineStore {
    inner: Arc<dyn Store>,
    timeout: Duration,
}

impl std::fmt::Debug for DeadlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DeadlineStore {
    pub fn new(inner: Arc<dyn Store>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// Runs one store call, cut off at the deadline.
    async fn within<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        within(self.timeout, call, fut).await
    }
}

/// Runs `fut`; past `timeout` it is dropped (cancelling the query) and the
/// call fails as [`StoreError::Unavailable`] naming it.
pub async fn within<T>(
    timeout: Duration,
    call: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        // Not logged here: every caller logs the error it gets, once.
        Err(_) => Err(StoreError::Unavailable(format!(
            "store call {call} timed out after {}",
            humantime::format_duration(timeout)
        ))),
    }
}

#[async_trait]
impl AppStatsStore for DeadlineStore {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        self.within("write_app_stats", self.inner.write_app_stats(write))
            .await
    }
}

#[async_trait]
impl BoundaryUsageStore for DeadlineStore {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        self.within("flush_boundary_usage", self.inner.flush_boundary_usage(delta))
            .await
    }

    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        self.within("boundary_usage_summary", self.inner.boundary_usage_summary())
            .await
    }

    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        self.within(
            "delete_boundary_usage_by_replica",
            self.inner.delete_boundary_usage_by_replica(replica_id),
        )
        .await
    }
}

#[async_trait]
impl TelemetryStore for DeadlineStore {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        self.within("close_period", self.inner.close_period(close)).await
    }

    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        self.within(
            "claim_unpublished_snapshots",
            self.inner.claim_unpublished_snapshots(claimer, now, lease, limit),
        )
        .await
    }

    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.within(
            "mark_snapshot_published",
            self.inner.mark_snapshot_published(snapshot_id, claimer, at),
        )
        .await
    }

    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        self.within(
            "release_snapshot_claim",
            self.inner.release_snapshot_claim(snapshot_id, claimer, error),
        )
        .await
    }

    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        self.within("list_snapshots", self.inner.list_snapshots(limit))
            .await
    }

    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.within("prune_telemetry_locks", self.inner.prune_telemetry_locks(before))
            .await
    }
}

#[async_trait]
impl InsightsStore for DeadlineStore {
    async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError> {
        self.within("app_usage", self.inner.app_usage(range)).await
    }

    async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError> {
        self.within("app_stats", self.inner.app_stats(range, limit)).await
    }

    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
        self.within(
            "workspace_last_used",
            self.inner.workspace_last_used(workspace_id),
        )
        .await
    }
}

#[async_trait]
impl UsageStore for DeadlineStore {
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
        self.within("tick_usage_rollup", self.inner.tick_usage_rollup())
            .await
    }

    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
        self.within(
            "app_usage_by_interval",
            self.inner.app_usage_by_interval(intervals),
        )
        .await
    }

    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        self.within("active_users", self.inner.active_users(intervals))
            .await
    }

    async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError> {
        self.within("user_activity", self.inner.user_activity(range, limit))
            .await
    }

    /// Each next row within the deadline; the stream ends after a timeout.
    fn export_app_stats(&self, range: TimeRange) -> RowStream {
        let timeout = self.timeout;
        let rows = self.inner.export_app_stats(range);
        Box::pin(futures::stream::unfold(Some(rows), move |rows| async move {
            let mut rows = rows?;
            let next = within(timeout, "export_app_stats", async {
                Ok(futures::StreamExt::next(&mut rows).await)
            })
            .await;
            match next {
                Ok(Some(item)) => Some((item, Some(rows))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError> {
        self.within("purge_expired", self.inner.purge_expired(now, policy))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use tally_domain::ports::MockStore;

    /// A store that never answers: every call stays pending, as behind a
    /// network blackhole.
    struct Silent;

    #[async_trait]
    impl AppStatsStore for Silent {
        async fn write_app_stats(&self, _: &AppStatsWrite) -> Result<(), StoreError> {
            pending().await
        }
    }

    #[async_trait]
    impl BoundaryUsageStore for Silent {
        async fn flush_boundary_usage(&self, _: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
            pending().await
        }
        async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
            pending().await
        }
        async fn delete_boundary_usage_by_replica(&self, _: Uuid) -> Result<u64, StoreError> {
            pending().await
        }
    }

    #[async_trait]
    impl TelemetryStore for Silent {
        async fn close_period(&self, _: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
            pending().await
        }
        async fn claim_unpublished_snapshots(
            &self,
            _: Uuid,
            _: OffsetDateTime,
            _: time::Duration,
            _: usize,
        ) -> Result<Vec<Snapshot>, StoreError> {
            pending().await
        }
        async fn mark_snapshot_published(
            &self,
            _: Uuid,
            _: Uuid,
            _: OffsetDateTime,
        ) -> Result<(), StoreError> {
            pending().await
        }
        async fn release_snapshot_claim(&self, _: Uuid, _: Uuid, _: &str) -> Result<(), StoreError> {
            pending().await
        }
        async fn list_snapshots(&self, _: usize) -> Result<Vec<Snapshot>, StoreError> {
            pending().await
        }
        async fn prune_telemetry_locks(&self, _: OffsetDateTime) -> Result<u64, StoreError> {
            pending().await
        }
    }

    #[async_trait]
    impl InsightsStore for Silent {
        async fn app_usage(&self, _: TimeRange) -> Result<Vec<AppUsage>, StoreError> {
            pending().await
        }
        async fn app_stats(&self, _: TimeRange, _: usize) -> Result<Vec<StatsReport>, StoreError> {
            pending().await
        }
        async fn workspace_last_used(&self, _: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
            pending().await
        }
    }

    #[async_trait]
    impl UsageStore for Silent {
        async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
            pending().await
        }
        async fn app_usage_by_interval(&self, _: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
            pending().await
        }
        async fn active_users(&self, _: &Intervals) -> Result<ActiveUsers, StoreError> {
            pending().await
        }
        async fn user_activity(&self, _: TimeRange, _: usize) -> Result<Vec<UserActivity>, StoreError> {
            pending().await
        }
        fn export_app_stats(&self, _: TimeRange) -> RowStream {
            Box::pin(futures::stream::pending())
        }
        async fn purge_expired(
            &self,
            _: OffsetDateTime,
            _: &RetentionPolicy,
        ) -> Result<PurgeOutcome, StoreError> {
            pending().await
        }
    }

    fn silent(timeout: Duration) -> DeadlineStore {
        DeadlineStore::new(Arc::new(Silent), timeout)
    }

    fn assert_timed_out(err: StoreError, call: &str) {
        assert!(err.is_retryable(), "{err}");
        assert_eq!(
            err.to_string(),
            format!("store unavailable: store call {call} timed out after 2s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_is_unavailable_at_the_deadline() {
        let store = silent(Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let delta = BoundaryDelta {
            replica_id: Uuid::nil(),
            seq: 1,
            allowed: 1,
            denied: 0,
            workspace_ids: vec![],
            user_ids: vec![],
            tracked_from: OffsetDateTime::UNIX_EPOCH,
            tracked_to: OffsetDateTime::UNIX_EPOCH,
        };
        let err = store.flush_boundary_usage(&delta).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_timed_out(err, "flush_boundary_usage");

        let err = store
            .write_app_stats(&AppStatsWrite::default())
            .await
            .unwrap_err();
        assert_timed_out(err, "write_app_stats");
        let close = store.claim_unpublished_snapshots(
            Uuid::nil(),
            OffsetDateTime::UNIX_EPOCH,
            time::Duration::SECOND,
            1,
        );
        assert_timed_out(close.await.unwrap_err(), "claim_unpublished_snapshots");
        let range = TimeRange {
            from: OffsetDateTime::UNIX_EPOCH,
            to: OffsetDateTime::UNIX_EPOCH,
        };
        assert_timed_out(store.app_usage(range).await.unwrap_err(), "app_usage");
        assert_timed_out(
            store
                .prune_telemetry_locks(OffsetDateTime::UNIX_EPOCH)
                .await
                .unwrap_err(),
            "prune_telemetry_locks",
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_and_errors_within_the_deadline_pass_through() {
        let mut mock = MockStore::new();
        mock.expect_prune_telemetry_locks().times(1).returning(|_| Ok(4));
        mock.expect_list_snapshots()
            .times(1)
            .returning(|_| Err(StoreError::Invalid("no".into())));
        let store = DeadlineStore::new(Arc::new(mock), Duration::from_secs(2));
        assert_eq!(
            store
                .prune_telemetry_locks(OffsetDateTime::UNIX_EPOCH)
                .await
                .unwrap(),
            4
        );
        assert!(matches!(
            store.list_snapshots(1).await,
            Err(StoreError::Invalid(_))
        ));
    }

    /// The loops see a blackholed database as unavailable, in bounded time,
    /// and keep what they could not write for the next flush.
    #[tokio::test(start_paused = true)]
    async fn a_tracker_flush_into_a_blackhole_fails_at_the_deadline_and_keeps_the_usage() {
        use crate::loops::{Background, LoopSettings};
        use tally_domain::boundary::tracker::BoundaryTracker;
        use tally_domain::ports::MockSnapshotSink;
        use tally_domain::{Clock, ManualClock};

        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let replica_id = Uuid::new_v4();
        let bg = Background::new(
            LoopSettings {
                replica_id,
                snapshot_interval: Duration::from_secs(1800),
                tracker_flush_interval: Duration::from_secs(10),
                publish_interval: Duration::from_secs(5),
                lock_retention: Duration::from_secs(86400),
                usage_rollup_interval: Duration::from_secs(300),
                purge_interval: Duration::from_secs(600),
                retention: tally_domain::usage::RetentionPolicy::default(),
            },
            Arc::new(silent(Duration::from_secs(2))),
            Arc::new(BoundaryTracker::new(replica_id, clock.clone())),
            Arc::new(MockSnapshotSink::new()),
            clock,
        );
        bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 3, 1);
        let started = tokio::time::Instant::now();
        assert_timed_out(bg.flush_tracker().await.unwrap_err(), "flush_boundary_usage");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(
            (bg.tracker.pending().allowed, bg.tracker.pending().denied),
            (3, 1)
        );
        assert_timed_out(
            bg.publish_once().await.unwrap_err(),
            "claim_unpublished_snapshots",
        );
        assert_timed_out(bg.prune_once().await.unwrap_err(), "prune_telemetry_locks");
    }
}
