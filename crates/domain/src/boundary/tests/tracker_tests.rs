//! One rule per test. Those marked "naive" fail on a naive tracker that
//! sums per-replica unique counts or loses data around a period reset or a
//! failed flush (docs/rules.md#exactly-once, docs/rules.md#unique-counts).

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use time::Duration;

use super::fake_store::{FakeStore, Fault};
use super::{id, next_period, t0, tracker};
use crate::boundary::tracker::{BoundaryTracker, PendingUsage, TrackerFlush};
use crate::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use crate::clock::ManualClock;
use crate::error::StoreError;
use crate::ports::{BoundaryUsageStore, MockBoundaryUsageStore};

/// Delegates to a fake store, running a hook first: stands for what other
/// tasks do while a flush waits on the database.
struct Hooked<'a> {
    store: &'a FakeStore,
    hook: Box<dyn Fn() + Send + Sync + 'a>,
}

#[async_trait]
impl BoundaryUsageStore for Hooked<'_> {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        (self.hook)();
        self.store.flush_boundary_usage(delta).await
    }
    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        self.store.boundary_usage_summary().await
    }
    async fn delete_boundary_usage_by_replica(&self, replica_id: uuid::Uuid) -> Result<u64, StoreError> {
        self.store.delete_boundary_usage_by_replica(replica_id).await
    }
}

fn counts(d: &BoundaryDelta) -> (u64, u64, u64) {
    (d.seq, d.allowed, d.denied)
}

#[tokio::test]
async fn nothing_tracked_writes_nothing() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let mut store = MockBoundaryUsageStore::new();
    store.expect_flush_boundary_usage().never();
    assert_eq!(t.flush(&store).await.unwrap(), TrackerFlush::Nothing);
    assert_eq!(t.pending(), PendingUsage::default());
}

#[tokio::test]
async fn a_delta_carries_counts_distinct_ids_and_the_interval_since_the_last_flush() {
    let clock = ManualClock::new(t0());
    let t = tracker(7, &clock);
    clock.advance(Duration::seconds(10));
    t.track(id(20), id(1), 3, 1);
    t.track(id(10), id(1), 2, 0);
    t.track(id(20), id(1), 1, 1);
    clock.advance(Duration::seconds(5));

    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut store = MockBoundaryUsageStore::new();
    let log = sent.clone();
    store.expect_flush_boundary_usage().times(2).returning(move |d| {
        log.lock().push(d.clone());
        Ok(FlushOutcome::Applied)
    });
    assert_eq!(
        t.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Applied)
    );
    clock.advance(Duration::seconds(30));
    t.track(id(30), id(2), 5, 5);
    t.flush(&store).await.unwrap();

    let sent = sent.lock();
    let first = &sent[0];
    assert_eq!(first.replica_id, id(7));
    assert_eq!(counts(first), (1, 6, 2));
    assert_eq!(first.workspace_ids, vec![id(10), id(20)], "distinct and sorted");
    assert_eq!(first.user_ids, vec![id(1)]);
    assert_eq!(first.tracked_from, t0(), "from tracker creation");
    assert_eq!(first.tracked_to, t0() + Duration::seconds(15));
    // Only what was tracked since the acknowledged flush, from where it ended.
    let second = &sent[1];
    assert_eq!(counts(second), (2, 5, 5));
    assert_eq!(second.workspace_ids, vec![id(30)]);
    assert_eq!(second.user_ids, vec![id(2)]);
    assert_eq!(second.tracked_from, first.tracked_to);
    assert_eq!(second.tracked_to, t0() + Duration::seconds(45));
}

#[tokio::test]
async fn a_failed_flush_keeps_its_delta_with_the_same_seq_and_resends_it_first() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    t.track(id(10), id(1), 3, 1);
    store.fail_next_flush(Fault::FailBefore);
    assert!(t.flush(&store).await.unwrap_err().is_retryable());
    t.track(id(11), id(1), 2, 2);
    assert_eq!(
        t.pending(),
        PendingUsage {
            allowed: 5,
            denied: 3,
            workspaces: 2,
            users: 1
        }
    );

    store.fail_next_flush(Fault::FailBefore);
    t.flush(&store).await.unwrap_err();
    t.flush(&store).await.unwrap();

    let applied: Vec<_> = store.applied().into_iter().map(|(_, d)| d).collect();
    assert_eq!(applied.len(), 2);
    assert_eq!(counts(&applied[0]), (1, 3, 1), "the kept delta, unchanged");
    assert_eq!(applied[0].workspace_ids, vec![id(10)]);
    assert_eq!(counts(&applied[1]), (2, 2, 2), "what was tracked meanwhile");
    assert_eq!(applied[1].workspace_ids, vec![id(11)]);
    assert_eq!(applied[1].tracked_from, applied[0].tracked_to);
    assert_eq!(t.pending(), PendingUsage::default());
}

/// Naive: usage tracked while a flush is failing is lost.
#[tokio::test]
async fn usage_tracked_during_a_failed_flush_is_not_lost() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    let during = Hooked {
        store: &store,
        hook: Box::new(|| t.track(id(11), id(2), 4, 4)),
    };
    t.track(id(10), id(1), 1, 1);
    store.fail_next_flush(Fault::FailBefore);
    t.flush(&during).await.unwrap_err();
    t.flush(&store).await.unwrap();
    let snapshot = next_period(&store, &clock).await;
    assert_eq!(snapshot.usage.allowed_requests, 5);
    assert_eq!(snapshot.usage.denied_requests, 5);
    assert_eq!(snapshot.usage.unique_workspaces, 2);
    assert_eq!(snapshot.usage.unique_users, 2);
}

#[tokio::test]
async fn usage_tracked_during_a_successful_flush_goes_in_the_next_delta() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    let hooked = Hooked {
        store: &store,
        hook: Box::new(|| t.track(id(11), id(2), 4, 0)),
    };
    t.track(id(10), id(1), 1, 0);
    t.flush(&hooked).await.unwrap();
    assert_eq!(t.pending().allowed, 4);
    t.flush(&store).await.unwrap();
    let applied: Vec<_> = store.applied().into_iter().map(|(_, d)| counts(&d)).collect();
    assert_eq!(applied, vec![(1, 1, 0), (2, 4, 0)]);
}

/// Naive: a flush that committed but whose answer was lost is applied again.
#[tokio::test]
async fn a_lost_acknowledgement_is_not_counted_twice() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    t.track(id(10), id(1), 3, 1);
    store.fail_next_flush(Fault::LostAck);
    t.flush(&store).await.unwrap_err();
    assert_eq!(t.pending().allowed, 3, "unacknowledged, so still pending");
    assert_eq!(
        t.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Duplicate)
    );
    t.track(id(10), id(1), 1, 0);
    assert_eq!(
        t.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Applied)
    );
    let summary = store.boundary_usage_summary().await.unwrap();
    assert_eq!((summary.allowed_requests, summary.denied_requests), (4, 1));
    let seqs: Vec<u64> = store.applied().iter().map(|(_, d)| d.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[tokio::test]
async fn a_lost_acknowledgement_retried_after_the_period_closed_still_counts_once() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    t.track(id(10), id(1), 3, 1);
    store.fail_next_flush(Fault::LostAck);
    t.flush(&store).await.unwrap_err();
    let first = next_period(&store, &clock).await;
    assert_eq!(first.usage.allowed_requests, 3);
    assert_eq!(
        t.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Duplicate)
    );
    let second = next_period(&store, &clock).await;
    assert_eq!(second.usage.allowed_requests, 0);
}

/// Naive: each replica's unique count is summed, so one workspace seen by
/// three replicas counts three times.
#[tokio::test]
async fn uniques_are_counted_once_across_replicas() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    for replica in 1..=3 {
        let t = tracker(replica, &clock);
        t.track(id(10), id(1), 1, 0);
        t.track(id(11 + replica), id(1), 1, 0);
        t.flush(&store).await.unwrap();
    }
    let snapshot = next_period(&store, &clock).await;
    assert_eq!(snapshot.usage.unique_workspaces, 4);
    assert_eq!(snapshot.usage.unique_users, 1);
    assert_eq!(snapshot.usage.allowed_requests, 6);
    assert_eq!(snapshot.usage.replicas, 3);
}

/// Naive: on the first flush after a reset the replica drops what it had
/// tracked since its last flush before the reset.
#[tokio::test]
async fn usage_tracked_between_the_last_flush_and_a_period_reset_lands_in_the_next_period() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    t.track(id(10), id(1), 2, 0);
    t.flush(&store).await.unwrap();
    t.track(id(11), id(2), 5, 1);
    let first = next_period(&store, &clock).await;
    t.flush(&store).await.unwrap();
    let second = next_period(&store, &clock).await;
    assert_eq!(
        (first.usage.allowed_requests, first.usage.unique_workspaces),
        (2, 1)
    );
    assert_eq!(
        (
            second.usage.allowed_requests,
            second.usage.denied_requests,
            second.usage.unique_workspaces
        ),
        (5, 1, 1)
    );
    assert_eq!(second.usage.tracked_from, first.usage.tracked_to);
}

#[tokio::test]
async fn seqs_start_at_one_and_grow_by_one_per_new_delta() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    for round in 0..5u64 {
        t.track(id(10), id(1), round, 0);
        if round == 2 {
            store.fail_next_flush(Fault::FailBefore);
            t.flush(&store).await.unwrap_err();
        }
        t.flush(&store).await.unwrap();
        // Nothing tracked: no delta, no seq used up.
        assert_eq!(t.flush(&store).await.unwrap(), TrackerFlush::Nothing);
    }
    let seqs: Vec<u64> = store.applied().iter().map(|(_, d)| d.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn the_resent_delta_is_acknowledged_even_if_nothing_new_was_tracked() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    t.track(id(10), id(1), 1, 0);
    store.fail_next_flush(Fault::FailBefore);
    t.flush(&store).await.unwrap_err();
    assert_eq!(
        t.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Applied)
    );
    assert_eq!(t.flush(&store).await.unwrap(), TrackerFlush::Nothing);
}

#[tokio::test]
async fn pending_counts_the_unacknowledged_delta_and_new_usage_with_ids_once() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = FakeStore::new();
    t.track(id(10), id(1), 1, 2);
    store.fail_next_flush(Fault::FailBefore);
    t.flush(&store).await.unwrap_err();
    t.track(id(10), id(1), 1, 0);
    t.track(id(11), id(1), 1, 0);
    assert_eq!(
        t.pending(),
        PendingUsage {
            allowed: 3,
            denied: 2,
            workspaces: 2,
            users: 1
        }
    );
}

#[tokio::test]
async fn a_restarted_replica_starting_above_old_seqs_is_not_taken_for_a_duplicate() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let before = tracker(1, &clock);
    for _ in 0..3 {
        before.track(id(10), id(1), 1, 0);
        before.flush(&store).await.unwrap();
    }
    drop(before);

    // Same replica id, numbered from 1 again: the store ignores it.
    let naive = tracker(1, &clock);
    naive.track(id(10), id(1), 7, 0);
    assert_eq!(
        naive.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Duplicate)
    );

    let resumed = BoundaryTracker::new(id(1), Arc::new(clock.clone())).starting_at_seq(1_000);
    resumed.track(id(10), id(1), 7, 0);
    assert_eq!(
        resumed.flush(&store).await.unwrap(),
        TrackerFlush::Flushed(FlushOutcome::Applied)
    );
    let seqs: Vec<u64> = store.applied().iter().map(|(_, d)| d.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 1_000]);
}
