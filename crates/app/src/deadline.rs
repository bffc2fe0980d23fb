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
use std::time::Duration;

use tally_domain::error::StoreError;
use tally_domain::ports::{CallInfo, Layer, Layered};

/// The layer that ends every store call within its timeout.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Duration);

/// A store whose every call ends within a timeout.
pub type DeadlineStore<S> = Layered<S, Deadline>;

impl Layer for Deadline {
    async fn around<T, F>(&self, info: &'static CallInfo, call: F) -> Result<T, StoreError>
    where
        T: Send,
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        within(self.0, info.name, call).await
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
        Err(_) => Err(StoreError::unavailable(format!(
            "store call {call} timed out after {}",
            humantime::format_duration(timeout)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use std::sync::Arc;
    use tally_domain::boundary::BoundaryDelta;
    use tally_domain::ports::{
        AppStatsStore, AppStatsWrite, BoundaryUsageStore, InsightsStore, MockStore, TelemetryStore, TimeRange,
    };
    use time::OffsetDateTime;
    use uuid::Uuid;

    /// A layer that never lets a call answer: every call stays pending, as
    /// behind a network blackhole. The mock under it is never called.
    struct Blackhole;

    impl Layer for Blackhole {
        async fn around<T, F>(&self, _: &'static CallInfo, _: F) -> Result<T, StoreError>
        where
            T: Send,
            F: Future<Output = Result<T, StoreError>> + Send,
        {
            pending().await
        }
    }

    fn silent(timeout: Duration) -> DeadlineStore<Layered<MockStore, Blackhole>> {
        Layered::new(Layered::new(MockStore::new(), Blackhole), Deadline(timeout))
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
        assert_timed_out(store.app_stats(range, 1).await.unwrap_err(), "app_stats");
        assert_timed_out(
            store
                .prune_telemetry_locks(OffsetDateTime::UNIX_EPOCH)
                .await
                .unwrap_err(),
            "prune_telemetry_locks",
        );
        // A raw export reads an hour at a time, each read bounded.
        let export = TimeRange {
            from: OffsetDateTime::UNIX_EPOCH,
            to: OffsetDateTime::UNIX_EPOCH + time::Duration::hours(3),
        };
        let mut rows = tally_domain::usage::export::export_app_stats(&store, export);
        assert_timed_out(
            futures::StreamExt::next(&mut rows).await.unwrap().unwrap_err(),
            "app_stats_started_in",
        );
        assert!(futures::StreamExt::next(&mut rows).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_and_errors_within_the_deadline_pass_through() {
        let mut mock = MockStore::new();
        mock.expect_prune_telemetry_locks().times(1).returning(|_| Ok(4));
        mock.expect_list_snapshots()
            .times(1)
            .returning(|_| Err(StoreError::invalid("no")));
        let store = Layered::new(mock, Deadline(Duration::from_secs(2)));
        assert_eq!(
            store
                .prune_telemetry_locks(OffsetDateTime::UNIX_EPOCH)
                .await
                .unwrap(),
            4
        );
        assert!(matches!(
            store.list_snapshots(1).await,
            Err(StoreError::Invalid { .. })
        ));
    }

    /// The loops see a blackholed database as unavailable, in bounded time,
    /// and keep what they could not write for the next flush.
    #[tokio::test(start_paused = true)]
    async fn a_tracker_flush_into_a_blackhole_fails_at_the_deadline_and_keeps_the_usage() {
        use crate::loops::{Background, LoopSettings};
        use tally_domain::boundary::tracker::BoundaryTracker;
        use tally_domain::clock::{Clock, ManualClock};
        use tally_domain::ports::MockSnapshotSink;

        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let replica_id = Uuid::new_v4();
        let bg = Background::new(
            LoopSettings {
                lock_retention: Duration::from_secs(86400),
                ..crate::loops::tests::settings(replica_id)
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
