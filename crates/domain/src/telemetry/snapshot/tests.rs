//! The snapshot step: the call it makes, and the lock rules on the fake store.

use time::Duration;
use time::macros::datetime;

use crate::clock::ManualClock;
use crate::error::StoreError;
use crate::ports::MockTelemetryStore;
use crate::telemetry::snapshot::snapshot_step;
use crate::telemetry::{BOUNDARY_USAGE_EVENT, PeriodCloseOutcome};
use crate::testing::fake_store::{FakeStore, Fault};
use crate::testing::fixtures::{INTERVAL, snapshot};
use crate::testing::fixtures::{id, t0, tracker};

#[tokio::test]
async fn the_step_closes_the_period_that_just_ended_for_boundary_usage() {
    let now = datetime!(2026-11-25 10:47:12 UTC);
    let replica = id(42);
    let mut store = MockTelemetryStore::new();
    store
        .expect_close_period()
        .withf(move |c| {
            c.event_type == BOUNDARY_USAGE_EVENT
                && c.period.start == datetime!(2026-11-25 10:00 UTC)
                && c.period.end == datetime!(2026-11-25 10:30 UTC)
                && c.replica_id == replica
                && c.now == now
                && !c.snapshot_id.is_nil()
        })
        .times(1)
        .returning(|c| {
            Ok(PeriodCloseOutcome::Closed(snapshot(
                c.snapshot_id.as_u128(),
                c.period,
            )))
        });
    let got = snapshot_step(&store, replica, now, INTERVAL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.period_end, datetime!(2026-11-25 10:30 UTC));
}

#[tokio::test]
async fn the_step_yields_nothing_when_another_replica_closed_the_period() {
    let mut store = MockTelemetryStore::new();
    store
        .expect_close_period()
        .times(1)
        .returning(|_| Ok(PeriodCloseOutcome::AlreadyClosed));
    assert_eq!(snapshot_step(&store, id(1), t0(), INTERVAL).await.unwrap(), None);
}

#[tokio::test]
async fn the_step_passes_store_errors_on_and_refuses_a_non_positive_interval() {
    let mut store = MockTelemetryStore::new();
    store
        .expect_close_period()
        .times(1)
        .returning(|_| Err(StoreError::unavailable("down")));
    assert!(
        snapshot_step(&store, id(1), t0(), INTERVAL)
            .await
            .unwrap_err()
            .is_retryable()
    );

    let mut store = MockTelemetryStore::new();
    store.expect_close_period().never();
    let err = snapshot_step(&store, id(1), t0(), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("snapshot interval must be positive"),
        "{err}"
    );
}

#[tokio::test]
async fn one_replica_per_period_wins_and_an_older_period_is_refused() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let t = tracker(1, &clock);
    t.track(id(10), id(1), 2, 1);
    t.flush(&store).await.unwrap();
    let now = t0() + Duration::minutes(31);
    let first = snapshot_step(&store, id(1), now, INTERVAL).await.unwrap();
    let second = snapshot_step(&store, id(2), now, INTERVAL).await.unwrap();
    let first = first.expect("the first replica takes the lock");
    assert_eq!(first.usage.allowed_requests, 2);
    assert_eq!(second, None);
    // A replica with a slow clock asking for the period before.
    let late = snapshot_step(&store, id(3), now - INTERVAL, INTERVAL)
        .await
        .unwrap();
    assert_eq!(late, None);
    assert_eq!(store.snapshots().len(), 1);
}

#[tokio::test]
async fn a_close_whose_answer_was_lost_still_wrote_its_snapshot_once() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let t = tracker(1, &clock);
    t.track(id(10), id(1), 2, 1);
    t.flush(&store).await.unwrap();
    let now = t0() + Duration::minutes(30);
    store.fail_next_close(Fault::LostAck);
    snapshot_step(&store, id(1), now, INTERVAL).await.unwrap_err();
    assert_eq!(snapshot_step(&store, id(1), now, INTERVAL).await.unwrap(), None);
    let snapshots = store.snapshots();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].usage.allowed_requests, 2);
}
