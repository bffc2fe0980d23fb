//! The background loops: flush, snapshot and publish rounds against mocks.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::*;
use mockall::Sequence;
use tally_domain::boundary::FlushOutcome;
use tally_domain::clock::ManualClock;
use tally_domain::ports::{MockSnapshotSink, MockStore, SinkError};
use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, PeriodCloseOutcome};
use time::macros::datetime;

mod publish;

pub(super) const NOW: time::OffsetDateTime = datetime!(2026-11-25 10:30:00.5 UTC);

fn snapshot() -> Snapshot {
    Snapshot {
        id: Uuid::new_v4(),
        event_type: BOUNDARY_USAGE_EVENT.into(),
        period_start: datetime!(2026-11-25 10:00 UTC),
        period_end: datetime!(2026-11-25 10:30 UTC),
        usage: Default::default(),
        created_at: NOW,
        published_at: None,
        publish_attempts: 0,
    }
}

/// The loops' settings in these tests: 30-minute periods, the tracker
/// flushed every 10 s, the outbox every 5 s, locks kept a week.
pub(crate) fn settings(replica_id: Uuid) -> LoopSettings {
    LoopSettings {
        replica_id,
        snapshot_interval: Duration::from_secs(1800),
        tracker_flush_interval: Duration::from_secs(10),
        publish_interval: Duration::from_secs(5),
        lock_retention: Duration::from_secs(7 * 86400),
        usage_rollup_interval: Duration::from_secs(300),
        purge_interval: Duration::from_secs(600),
        retention: tally_domain::usage::RetentionPolicy::default(),
    }
}

pub(super) fn background(store: MockStore, sink: MockSnapshotSink) -> Background {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
    let replica_id = Uuid::new_v4();
    Background::new(
        settings(replica_id),
        Arc::new(store),
        Arc::new(BoundaryTracker::new(replica_id, clock.clone())),
        Arc::new(sink),
        clock,
    )
}

#[tokio::test]
async fn snapshot_step_flushes_own_usage_first_then_closes_the_ended_period() {
    let mut store = MockStore::new();
    let mut seq = Sequence::new();
    store
        .expect_flush_boundary_usage()
        .withf(|d| d.allowed == 3 && d.denied == 1)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(FlushOutcome::Applied));
    store
        .expect_close_period()
        .withf(|c| {
            c.event_type == BOUNDARY_USAGE_EVENT
                && c.period.end == datetime!(2026-11-25 10:30 UTC)
                && c.period.start == datetime!(2026-11-25 10:00 UTC)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(PeriodCloseOutcome::Closed(snapshot())));
    let bg = background(store, MockSnapshotSink::new());
    bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 3, 1);
    let closed = bg.snapshot_once().await.unwrap();
    assert_eq!(closed.unwrap().period_end, datetime!(2026-11-25 10:30 UTC));
    assert_eq!(bg.tracker.pending().allowed, 0);
}

#[tokio::test]
async fn a_period_another_replica_closed_is_not_an_error() {
    let mut store = MockStore::new();
    store
        .expect_close_period()
        .returning(|_| Ok(PeriodCloseOutcome::AlreadyClosed));
    let bg = background(store, MockSnapshotSink::new());
    assert_eq!(bg.snapshot_once().await.unwrap(), None);
}

#[tokio::test]
async fn a_failed_tracker_flush_keeps_the_usage_and_the_step_still_runs() {
    let mut store = MockStore::new();
    store
        .expect_flush_boundary_usage()
        .returning(|_| Err(StoreError::unavailable("down")));
    store
        .expect_close_period()
        .returning(|_| Ok(PeriodCloseOutcome::AlreadyClosed));
    let bg = background(store, MockSnapshotSink::new());
    bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 2, 0);
    assert_eq!(bg.snapshot_once().await.unwrap(), None);
    assert_eq!(bg.tracker.pending().allowed, 2);
}

#[tokio::test]
async fn published_snapshots_are_marked_and_failed_ones_released() {
    let (ok, bad) = (snapshot(), snapshot());
    let (ok_id, bad_id) = (ok.id, bad.id);
    let mut store = MockStore::new();
    store
        .expect_claim_unpublished_snapshots()
        .times(1)
        .returning(move |_, now, _, _| {
            assert_eq!(now, NOW);
            Ok(vec![ok.clone(), bad.clone()])
        });
    store
        .expect_mark_snapshot_published()
        .withf(move |id, _, _| *id == ok_id)
        .times(1)
        .returning(|_, _, _| Ok(()));
    store
        .expect_release_snapshot_claim()
        .withf(move |id, _, e| *id == bad_id && e.contains("503"))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let mut sink = MockSnapshotSink::new();
    sink.expect_publish().returning(move |s| {
        if s.id == bad_id {
            Err(SinkError("answered 503".into()))
        } else {
            Ok(())
        }
    });
    let round = background(store, sink).publish_once().await.unwrap();
    assert_eq!(
        round,
        PublishRound {
            published: 1,
            failed: 1,
            deferred: 0
        }
    );
}

#[tokio::test]
async fn locks_older_than_the_retention_are_pruned() {
    let mut store = MockStore::new();
    store
        .expect_prune_telemetry_locks()
        .withf(|before| *before == NOW - time::Duration::days(7))
        .times(1)
        .returning(|_| Ok(3));
    assert_eq!(
        background(store, MockSnapshotSink::new())
            .prune_once()
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn loops_stop_when_told() {
    let bg = background(MockStore::new(), MockSnapshotSink::new());
    let (tx, rx) = watch::channel(false);
    let handles = bg.spawn(&rx);
    tx.send(true).unwrap();
    for h in handles {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A mock store's outage: calls fail as unavailable while it is down,
/// and every call is counted.
#[derive(Debug, Clone)]
struct Outage {
    down: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl Outage {
    /// An outage under way.
    fn begun() -> Self {
        Self {
            down: Arc::new(AtomicBool::new(true)),
            calls: Arc::default(),
        }
    }

    /// Counts a call; it fails while the store is down, else answers `ok()`.
    fn call<T>(&self, ok: impl FnOnce() -> T) -> Result<T, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::unavailable("connection refused"))
        } else {
            Ok(ok())
        }
    }

    fn end(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// While the store fails fast, the tracker loop backs off (one call and
/// one warning per backoff step, not one per 200 ms); once it answers,
/// the kept usage is flushed and the loop returns to its interval.
#[tokio::test(start_paused = true)]
async fn the_tracker_loop_backs_off_while_the_store_fails_and_recovers() {
    let outage = Outage::begun();
    let mut store = MockStore::new();
    let o = outage.clone();
    store
        .expect_flush_boundary_usage()
        .returning(move |_| o.call(|| FlushOutcome::Applied));
    let mut bg = background(store, MockSnapshotSink::new());
    bg.jitter = false;
    bg.settings.tracker_flush_interval = Duration::from_millis(200);
    bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 5, 1);
    let (tx, mut rx) = watch::channel(false);
    let task = tokio::spawn(bg.clone().tracker_loop(rx.clone()));

    // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 + 5 ... : 7 calls in 20 s, not 100.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let failing = outage.calls();
    assert!((6..=8).contains(&failing), "{failing} calls in 20 s");
    assert_eq!(bg.tracker.pending().allowed, 5, "kept while the store fails");

    outage.end();
    tokio::time::sleep(MAX_TRACKER_BACKOFF + Duration::from_millis(10)).await;
    assert_eq!(bg.tracker.pending().allowed, 0, "flushed once the store answers");
    // Back to the interval: new usage goes out within it.
    bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 2, 0);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(bg.tracker.pending().allowed, 0);

    tx.send(true).unwrap();
    stopped(&mut rx).await;
    task.await.unwrap();
}

/// A store outage backs the publisher off to at most 30 s (not the
/// 5 min a failing sink may take), so snapshots go out soon after.
#[tokio::test(start_paused = true)]
async fn the_publisher_retries_an_unavailable_outbox_within_30_s() {
    let outage = Outage::begun();
    let mut store = MockStore::new();
    let o = outage.clone();
    store
        .expect_claim_unpublished_snapshots()
        .returning(move |_, _, _, _| o.call(Vec::new));
    let mut bg = background(store, MockSnapshotSink::new());
    bg.jitter = false;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bg.clone().publisher_loop(rx));
    tokio::time::sleep(Duration::from_secs(600)).await;
    // 5 s, then 10, 20, 30, 30...: about 22 rounds in 10 min.
    let failing = outage.calls();
    assert!((18..=24).contains(&failing), "{failing} rounds in 10 min");
    outage.end();
    tokio::time::sleep(MAX_OUTBOX_BACKOFF + Duration::from_millis(10)).await;
    assert!(outage.calls() > failing, "no round after the store came back");
    tx.send(true).unwrap();
    task.await.unwrap();
}

/// A store whose tracker flushes and period closes go through `outage`
/// (the tests below never end it, so every one fails).
fn failing(outage: &Outage) -> MockStore {
    let mut store = MockStore::new();
    let o = outage.clone();
    store
        .expect_flush_boundary_usage()
        .returning(move |_| o.call(|| FlushOutcome::Applied));
    let o = outage.clone();
    store
        .expect_close_period()
        .returning(move |_| o.call(|| PeriodCloseOutcome::AlreadyClosed));
    store
}

/// With jitter the tracker loop still backs off within its bounds: each
/// wait is in [d, 2d) for d = 0.2 s, 0.4 s ... up to 2.5 s, so 7 to 11
/// calls in 20 s, not 100.
#[tokio::test(start_paused = true)]
async fn the_jittered_tracker_loop_backs_off_within_its_bounds() {
    let outage = Outage::begun();
    let mut bg = background(failing(&outage), MockSnapshotSink::new());
    bg.settings.tracker_flush_interval = Duration::from_millis(200);
    bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 5, 1);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bg.clone().tracker_loop(rx));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let n = outage.calls();
    assert!((7..=11).contains(&n), "{n} calls in 20 s");
    tx.send(true).unwrap();
    task.await.unwrap();
}

/// A failing snapshot step is retried with backoff (0.5 s, 1, 2, 4, 8,
/// 16, 30, 30 ...) until the next period begins.
#[tokio::test(start_paused = true)]
async fn the_snapshot_step_retries_with_backoff() {
    let outage = Outage::begun();
    let mut bg = background(failing(&outage), MockSnapshotSink::new());
    bg.jitter = false;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(bg.clone().snapshot_loop(rx));
    // The manual clock stands still: the loop waits for the period end
    // (30 min less 0.5 s) on tokio's paused clock, then retries.
    tokio::time::sleep(Duration::from_secs(30 * 60 + 90)).await;
    // Nothing tracked, so each attempt is one close: at 0, 0.5, 1.5,
    // 3.5, 7.5, 15.5, 31.5 and 61.5 s after the boundary (then 91.5).
    let attempts = outage.calls();
    assert_eq!(attempts, 8, "{attempts} attempts in 90 s");
    tx.send(true).unwrap();
    task.await.unwrap();
}
