//! The publisher: marks and releases against mocks, lease expiry on the
//! fake store, and exactly-once publishing under a flaky sink.

use std::collections::HashMap;

use mockall::predicate::eq;
use parking_lot::Mutex;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::clock::{Clock, ManualClock};
use crate::error::StoreError;
use crate::ports::{MockSnapshotSink, MockTelemetryStore, SinkError, SnapshotSink, TelemetryStore};
use crate::telemetry::publisher::{DEFAULT_CLAIM_LEASE, Delivered, PublishRound, publish_pending};
use crate::telemetry::{Period, Snapshot};
use crate::testing::fake_store::{FakeStore, Fault};
use crate::testing::fixtures::{INTERVAL, snapshot};
use crate::testing::fixtures::{id, next_period, t0};

mod props;

#[tokio::test]
async fn published_snapshots_are_marked_and_failed_ones_released_with_the_error() {
    let now = t0();
    let claimer = id(5);
    let period = Period::last_ended(now, INTERVAL);
    let mut store = MockTelemetryStore::new();
    store
        .expect_claim_unpublished_snapshots()
        .with(eq(claimer), eq(now), eq(DEFAULT_CLAIM_LEASE), eq(10))
        .times(1)
        .returning(move |_, _, _, _| {
            Ok(vec![
                snapshot(1, period),
                snapshot(2, period),
                snapshot(3, period),
            ])
        });
    let mut sink = MockSnapshotSink::new();
    sink.expect_publish().times(3).returning(|s| {
        if s.id == id(2) {
            Err(SinkError("HTTP 500".into()))
        } else {
            Ok(())
        }
    });
    for n in [1, 3] {
        store
            .expect_mark_snapshot_published()
            .with(eq(id(n)), eq(claimer), eq(now))
            .times(1)
            .returning(|_, _, _| Ok(()));
    }
    store
        .expect_release_snapshot_claim()
        .withf(move |sid, c, err| *sid == id(2) && *c == claimer && err.contains("HTTP 500"))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let round = fresh_round(&store, &sink, claimer, &at(now)).await.unwrap();
    assert_eq!(
        round,
        PublishRound {
            published: 2,
            failed: 1,
            deferred: 0
        }
    );
}

#[tokio::test]
async fn a_store_error_ends_the_round() {
    let mut store = MockTelemetryStore::new();
    store
        .expect_claim_unpublished_snapshots()
        .times(1)
        .returning(|_, _, _, _| Err(StoreError::unavailable("down")));
    let mut sink = MockSnapshotSink::new();
    sink.expect_publish().never();
    assert!(
        fresh_round(&store, &sink, id(1), &at(t0()))
            .await
            .unwrap_err()
            .is_retryable()
    );

    let period = Period::last_ended(t0(), INTERVAL);
    let mut store = MockTelemetryStore::new();
    store
        .expect_claim_unpublished_snapshots()
        .returning(move |_, _, _, _| Ok(vec![snapshot(1, period), snapshot(2, period)]));
    store
        .expect_mark_snapshot_published()
        .times(1)
        .returning(|_, _, _| Err(StoreError::unavailable("down")));
    let mut sink = MockSnapshotSink::new();
    sink.expect_publish().times(1).returning(|_| Ok(()));
    fresh_round(&store, &sink, id(1), &at(t0())).await.unwrap_err();
}

#[tokio::test]
async fn a_zero_limit_does_nothing() {
    let mut store = MockTelemetryStore::new();
    store.expect_claim_unpublished_snapshots().never();
    let sink = MockSnapshotSink::new();
    let round = publish_pending(
        &store,
        &sink,
        id(1),
        &at(t0()),
        DEFAULT_CLAIM_LEASE,
        0,
        &mut Delivered::default(),
    )
    .await
    .unwrap();
    assert_eq!(round, PublishRound::default());
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_replica_is_retried_after_its_lease() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let snap = next_period(&store, &clock).await;
    let now = t0() + Duration::minutes(30);
    // Replica 1 claims and dies before publishing.
    let claimed = store
        .claim_unpublished_snapshots(id(1), now, DEFAULT_CLAIM_LEASE, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let sink = RecordingSink::failing(vec![]);
    let during = fresh_round(&store, &sink, id(2), &at(now + Duration::seconds(30)))
        .await
        .unwrap();
    assert_eq!(during, PublishRound::default(), "the lease still holds");
    let after = now + DEFAULT_CLAIM_LEASE;
    let round = fresh_round(&store, &sink, id(2), &at(after)).await.unwrap();
    assert_eq!(round.published, 1);
    assert_eq!(sink.successes(), HashMap::from([(snap.id, 1)]));
    let listed = store.list_snapshots(10).await.unwrap();
    assert_eq!(listed[0].published_at, Some(after));
}

/// A claim can apply on the server although the call reported a failure
/// (the client gave up at its deadline; the held-back query ran once the
/// network healed). The claimer's next round takes that claim back at once;
/// another replica still waits for the lease.
#[tokio::test]
async fn a_claim_that_applied_but_failed_does_not_hold_up_the_next_round() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let snap = next_period(&store, &clock).await;
    let now = clock.now();
    let sink = RecordingSink::failing(vec![]);
    store.fail_next_claim(Fault::LostAck);
    fresh_round(&store, &sink, id(1), &at(now)).await.unwrap_err();
    assert_eq!(
        store.claim_of(snap.id),
        Some((id(1), now + DEFAULT_CLAIM_LEASE)),
        "the failed call's claim holds"
    );

    let soon = now + Duration::seconds(1);
    let other = fresh_round(&store, &sink, id(2), &at(soon)).await.unwrap();
    assert_eq!(
        other,
        PublishRound::default(),
        "another replica waits for the lease"
    );
    let round = fresh_round(&store, &sink, id(1), &at(soon)).await.unwrap();
    assert_eq!(round.published, 1);
    assert_eq!(sink.successes(), HashMap::from([(snap.id, 1)]));
    assert_eq!(store.claim_of(snap.id), None);
    assert_eq!(
        store.list_snapshots(10).await.unwrap()[0].published_at,
        Some(soon)
    );
}

/// A mark that fails after a delivery ends the round with the rest of its
/// batch still claimed; the claimer's next round marks the delivered one
/// without sending it again, then sends the rest. A process that starts
/// afresh (an empty `Delivered`) sends it again if the mark never applied:
/// at least once, under the same id.
#[tokio::test]
async fn a_failed_mark_leaves_the_rest_of_the_batch_to_the_next_round() {
    // (fault, the next round remembers the delivery, whether it sends it again)
    for (fault, remembered, resent) in [
        (Fault::FailBefore, true, false),
        (Fault::LostAck, true, false),
        (Fault::FailBefore, false, true),
        (Fault::LostAck, false, false),
    ] {
        let case = format!("{fault:?}, remembered: {remembered}");
        let clock = ManualClock::new(t0());
        let store = FakeStore::new();
        let first = next_period(&store, &clock).await;
        let second = next_period(&store, &clock).await;
        let now = clock.now();
        let sink = RecordingSink::failing(vec![]);
        store.fail_next_mark(fault);
        let mut delivered = Delivered::default();
        publish_pending(
            &store,
            &sink,
            id(1),
            &at(now),
            DEFAULT_CLAIM_LEASE,
            10,
            &mut delivered,
        )
        .await
        .unwrap_err();
        assert_eq!(delivered.len(), 1, "{case}");
        assert_eq!(sink.successes(), HashMap::from([(first.id, 1)]), "{case}");
        assert_eq!(store.claim_of(second.id).map(|c| c.0), Some(id(1)), "{case}");

        if !remembered {
            delivered = Delivered::default();
        }
        let soon = now + Duration::seconds(1);
        let round = publish_pending(
            &store,
            &sink,
            id(1),
            &at(soon),
            DEFAULT_CLAIM_LEASE,
            10,
            &mut delivered,
        )
        .await
        .unwrap();
        assert!(delivered.is_empty(), "{case}");
        let marked_again = usize::from(remembered || resent);
        assert_eq!(round.published, 1 + marked_again, "{case}");
        assert_eq!(
            sink.successes(),
            HashMap::from([(first.id, 1 + usize::from(resent)), (second.id, 1)]),
            "{case}"
        );
        let listed = store.list_snapshots(10).await.unwrap();
        assert!(
            listed.iter().all(|s| s.published_at.is_some()),
            "{case}: {listed:#?}"
        );
        // The published time is the first delivery's, not the mark's retry.
        let first_row = listed.iter().find(|s| s.id == first.id).unwrap();
        if !resent {
            assert_eq!(first_row.published_at, Some(now), "{case}");
        }
    }
}

/// A round of `claimer` with the default lease, room for 10 snapshots and
/// no deliveries remembered from earlier rounds.
async fn fresh_round(
    store: &(impl TelemetryStore + ?Sized),
    sink: &(impl SnapshotSink + ?Sized),
    claimer: Uuid,
    clock: &(impl Clock + ?Sized),
) -> Result<PublishRound, StoreError> {
    publish_pending(
        store,
        sink,
        claimer,
        clock,
        DEFAULT_CLAIM_LEASE,
        10,
        &mut Delivered::default(),
    )
    .await
}

fn at(now: OffsetDateTime) -> ManualClock {
    ManualClock::new(now)
}

/// A sink whose every delivery takes a quarter of the lease.
#[derive(Debug)]
struct SlowSink(ManualClock);

#[async_trait::async_trait]
impl SnapshotSink for SlowSink {
    async fn publish(&self, _: &Snapshot) -> Result<(), SinkError> {
        self.0.advance(DEFAULT_CLAIM_LEASE / 4);
        Ok(())
    }
}

#[tokio::test]
async fn a_round_stops_sending_at_half_its_lease_and_marks_each_at_its_delivery() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    for _ in 0..4 {
        next_period(&store, &clock).await;
    }
    let start = clock.now();
    let sink = SlowSink(clock.clone());
    let round = fresh_round(&store, &sink, id(1), &clock).await.unwrap();
    assert_eq!(
        round,
        PublishRound {
            published: 2,
            failed: 0,
            deferred: 2
        }
    );
    let mut marked: Vec<_> = store
        .list_snapshots(10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| s.published_at)
        .collect();
    marked.sort();
    let quarter = DEFAULT_CLAIM_LEASE / 4;
    assert_eq!(marked, vec![start + quarter, start + quarter * 2]);

    // For another replica the unsent two stay claimed until the lease
    // ends, then go out.
    let again = fresh_round(&store, &sink, id(2), &clock).await.unwrap();
    assert_eq!(again, PublishRound::default(), "still under the first lease");
    clock.set(start + DEFAULT_CLAIM_LEASE);
    let rest = fresh_round(&store, &sink, id(2), &clock).await.unwrap();
    assert_eq!(rest.published, 2);
}

/// A sink that fails by script (front first; success once it runs out)
/// and counts successful deliveries per snapshot.
#[derive(Debug)]
struct RecordingSink {
    script: Mutex<Vec<bool>>,
    delivered: Mutex<HashMap<Uuid, usize>>,
}

impl RecordingSink {
    fn failing(mut script: Vec<bool>) -> Self {
        script.reverse();
        Self {
            script: Mutex::new(script),
            delivered: Mutex::default(),
        }
    }

    fn successes(&self) -> HashMap<Uuid, usize> {
        self.delivered.lock().clone()
    }
}

#[async_trait::async_trait]
impl SnapshotSink for RecordingSink {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError> {
        if self.script.lock().pop().unwrap_or(false) {
            return Err(SinkError("injected sink outage".into()));
        }
        *self.delivered.lock().entry(snapshot.id).or_default() += 1;
        Ok(())
    }
}
