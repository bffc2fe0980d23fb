//! Publishing after a network freeze, through the store deadline. A call
//! the replica gave up on may still apply once the network heals (its bytes
//! were only held back), or may never reach the database; either way the
//! next round must not wait for the claim lease. And one replica runs one
//! round at a time, since a round takes back the replica's own claims.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex as SyncMutex;
use tally_adapters_memory::MemoryStore;
use tally_domain::clock::ManualClock;
use tally_domain::ports::{CallInfo, Layer, Layered, SinkError};
use tally_domain::telemetry::PeriodClose;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::deadline::{Deadline, DeadlineStore};
use crate::loops::*;

const STORE_TIMEOUT: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_secs(1800);
const NOW: OffsetDateTime = datetime!(2026-11-25 10:30:00.5 UTC);

/// A network in front of the store that can freeze the outbox calls.
#[derive(Debug, Default)]
struct Freeze {
    /// A claim runs on the database; its answer never comes back.
    claims_unanswered: AtomicBool,
    /// A mark never reaches the database.
    marks_lost: AtomicBool,
}

impl Freeze {
    fn thaw(&self) {
        self.claims_unanswered.store(false, Ordering::SeqCst);
        self.marks_lost.store(false, Ordering::SeqCst);
    }
}

impl Layer for Freeze {
    async fn around<T, F>(&self, info: &'static CallInfo, call: F) -> Result<T, StoreError>
    where
        T: Send,
        F: std::future::Future<Output = Result<T, StoreError>> + Send,
    {
        match info.name {
            "claim_unpublished_snapshots" => {
                let claimed = call.await;
                if self.claims_unanswered.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                claimed
            }
            "mark_snapshot_published" if self.marks_lost.load(Ordering::SeqCst) => {
                std::future::pending().await
            }
            _ => call.await,
        }
    }
}

type Freezable = Layered<MemoryStore, Freeze>;

/// Records each delivery; while `hold` is set, a delivery waits for
/// `release` (a slow sink).
#[derive(Debug, Default)]
struct Sink {
    delivered: SyncMutex<Vec<Uuid>>,
    hold: AtomicBool,
    entered: AtomicUsize,
    release: tokio::sync::Notify,
}

#[async_trait]
impl SnapshotSink for Sink {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        if self.hold.load(Ordering::SeqCst) {
            self.release.notified().await;
        }
        self.delivered.lock().push(snapshot.id);
        Ok(())
    }
}

struct Harness {
    store: Arc<Freezable>,
    sink: Arc<Sink>,
    clock: ManualClock,
    bg: Background,
}

impl Harness {
    fn new() -> Self {
        let store = Arc::new(Layered::new(MemoryStore::default(), Freeze::default()));
        let sink = Arc::new(Sink::default());
        let clock = ManualClock::new(NOW);
        let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let replica_id = Uuid::new_v4();
        let bg = Background::new(
            LoopSettings {
                snapshot_interval: INTERVAL,
                ..super::settings(replica_id)
            },
            Arc::new(DeadlineStore::new(store.clone(), Deadline(STORE_TIMEOUT))),
            Arc::new(BoundaryTracker::new(replica_id, shared_clock.clone())),
            sink.clone(),
            shared_clock,
        );
        Self {
            store,
            sink,
            clock,
            bg,
        }
    }

    /// Closes the period that just ended, then moves into the next one.
    async fn close(&self) -> Snapshot {
        let snapshot = self.bg.snapshot_once().await.unwrap().unwrap();
        self.clock.advance(to_time(INTERVAL));
        snapshot
    }

    fn delivered(&self) -> Vec<Uuid> {
        self.sink.delivered.lock().clone()
    }

    async fn all_published(&self) -> bool {
        let listed = self.store.inner().list_snapshots(100).await.unwrap();
        listed.iter().all(|s| s.published_at.is_some())
    }
}

fn assert_timed_out(err: StoreError, call: &str) {
    assert!(
        err.to_string().contains(&format!("store call {call} timed out")),
        "{err}"
    );
}

/// The claim ran although the replica saw it time out, so the snapshot is
/// claimed by this replica for the whole lease: its next round takes the
/// claim back and publishes at once, no lease time having passed.
#[tokio::test(start_paused = true)]
async fn a_claim_that_applied_after_its_deadline_does_not_hold_up_the_next_round() {
    let h = Harness::new();
    let snapshot = h.close().await;
    h.store.layer().claims_unanswered.store(true, Ordering::SeqCst);
    assert_timed_out(
        h.bg.publish_once().await.unwrap_err(),
        "claim_unpublished_snapshots",
    );
    assert!(h.delivered().is_empty());

    h.store.layer().thaw();
    let round = h.bg.publish_once().await.unwrap();
    assert_eq!(round.published, 1);
    assert_eq!(h.delivered(), vec![snapshot.id]);
    assert!(h.all_published().await);
}

/// The sink got the first snapshot but its mark never reached the
/// database: the round ends holding both claims. The next round marks the
/// first without sending it again, then sends the second.
#[tokio::test(start_paused = true)]
async fn a_mark_lost_in_a_freeze_is_redone_by_the_next_round() {
    let h = Harness::new();
    let first = h.close().await;
    let second = h.close().await;
    h.store.layer().marks_lost.store(true, Ordering::SeqCst);
    assert_timed_out(h.bg.publish_once().await.unwrap_err(), "mark_snapshot_published");
    assert_eq!(h.delivered(), vec![first.id]);

    h.store.layer().thaw();
    let round = h.bg.publish_once().await.unwrap();
    assert_eq!(round.published, 2);
    assert_eq!(h.delivered(), vec![first.id, second.id]);
    assert!(h.all_published().await);
}

/// A second round (the shutdown's, say) waits for the one running: it
/// would otherwise take back the running round's claims and send the same
/// snapshot again.
#[tokio::test(start_paused = true)]
async fn a_replica_runs_one_publishing_round_at_a_time() {
    let h = Harness::new();
    let snapshot = h.close().await;
    h.sink.hold.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let bg = h.bg.clone();
        async move { bg.publish_once().await }
    });
    while h.sink.entered.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let second = tokio::spawn({
        let bg = h.bg.clone();
        async move { bg.publish_once().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.sink.entered.load(Ordering::SeqCst),
        1,
        "the second round sent too"
    );

    h.sink.hold.store(false, Ordering::SeqCst);
    h.sink.release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().published, 1);
    assert_eq!(second.await.unwrap().unwrap(), PublishRound::default());
    assert_eq!(h.delivered(), vec![snapshot.id]);
}

/// A close that applied after its deadline leaves a snapshot that this
/// replica's retry finds already closed: the publisher is woken all the
/// same, rather than waiting out its interval (or its backoff after an
/// outage).
#[tokio::test(start_paused = true)]
async fn a_period_found_closed_still_wakes_the_publisher() {
    let h = Harness::new();
    h.close().await;
    h.bg.publish_once().await.unwrap();
    // The wake-up that close left, as the loop would take it.
    tokio::time::timeout(Duration::ZERO, h.bg.publish_now.notified())
        .await
        .unwrap();
    // The close of the period that just ended applied, but its answer was lost.
    let period = Period::last_ended(h.clock.now(), to_time(INTERVAL));
    let close = PeriodClose {
        event_type: tally_domain::telemetry::BOUNDARY_USAGE_EVENT.into(),
        period,
        snapshot_id: Uuid::new_v4(),
        replica_id: h.bg.settings.replica_id,
        now: h.clock.now(),
    };
    h.store.inner().close_period(&close).await.unwrap();
    assert_eq!(h.bg.snapshot_once().await.unwrap(), None, "already closed");
    tokio::time::timeout(Duration::ZERO, h.bg.publish_now.notified())
        .await
        .expect("the publisher was not woken");
}
