//! The snapshot step and the publisher: call shapes against mocks, the
//! lock and outbox rules against the fake store, and publishing exactly once
//! under a flaky sink as a property.

use std::collections::HashMap;

use mockall::predicate::eq;
use parking_lot::Mutex;
use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::publisher::{DEFAULT_CLAIM_LEASE, PublishRound, publish_pending};
use super::snapshot::snapshot_step;
use super::{BOUNDARY_USAGE_EVENT, Period, PeriodCloseOutcome, Snapshot};
use crate::boundary::BoundaryUsageSummary;
use crate::boundary::tests::fake_store::{FakeStore, Fault};
use crate::boundary::tests::{id, next_period, t0, tracker};
use crate::clock::{Clock, ManualClock};
use crate::error::StoreError;
use crate::ports::{MockSnapshotSink, MockTelemetryStore, SinkError, SnapshotSink, TelemetryStore};

const INTERVAL: Duration = Duration::minutes(30);

fn snapshot(n: u128, period: Period) -> Snapshot {
    Snapshot {
        id: id(n),
        event_type: BOUNDARY_USAGE_EVENT.to_owned(),
        period_start: period.start,
        period_end: period.end,
        usage: BoundaryUsageSummary::default(),
        created_at: period.end,
        published_at: None,
        publish_attempts: 0,
    }
}

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
        .returning(|_| Err(StoreError::Unavailable("down".into())));
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
    let round = publish_pending(&store, &sink, claimer, now, DEFAULT_CLAIM_LEASE, 10)
        .await
        .unwrap();
    assert_eq!(
        round,
        PublishRound {
            published: 2,
            failed: 1
        }
    );
}

#[tokio::test]
async fn a_store_error_ends_the_round() {
    let mut store = MockTelemetryStore::new();
    store
        .expect_claim_unpublished_snapshots()
        .times(1)
        .returning(|_, _, _, _| Err(StoreError::Unavailable("down".into())));
    let mut sink = MockSnapshotSink::new();
    sink.expect_publish().never();
    assert!(
        publish_pending(&store, &sink, id(1), t0(), DEFAULT_CLAIM_LEASE, 10)
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
        .returning(|_, _, _| Err(StoreError::Unavailable("down".into())));
    let mut sink = MockSnapshotSink::new();
    sink.expect_publish().times(1).returning(|_| Ok(()));
    publish_pending(&store, &sink, id(1), t0(), DEFAULT_CLAIM_LEASE, 10)
        .await
        .unwrap_err();
}

#[tokio::test]
async fn a_zero_limit_does_nothing() {
    let mut store = MockTelemetryStore::new();
    store.expect_claim_unpublished_snapshots().never();
    let sink = MockSnapshotSink::new();
    let round = publish_pending(&store, &sink, id(1), t0(), DEFAULT_CLAIM_LEASE, 0)
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
    let during = publish_pending(
        &store,
        &sink,
        id(2),
        now + Duration::seconds(30),
        DEFAULT_CLAIM_LEASE,
        10,
    )
    .await
    .unwrap();
    assert_eq!(during, PublishRound::default(), "the lease still holds");
    let after = now + DEFAULT_CLAIM_LEASE;
    let round = publish_pending(&store, &sink, id(2), after, DEFAULT_CLAIM_LEASE, 10)
        .await
        .unwrap();
    assert_eq!(round.published, 1);
    assert_eq!(sink.successes(), HashMap::from([(snap.id, 1)]));
    let listed = store.list_snapshots(10).await.unwrap();
    assert_eq!(listed[0].published_at, Some(after));
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

async fn publish_until_done(
    snapshots: usize,
    failures: Vec<bool>,
    limits: Vec<usize>,
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let mut ids = Vec::new();
    for _ in 0..snapshots {
        ids.push(next_period(&store, &clock).await.id);
    }
    let failures_scripted = failures.iter().filter(|f| **f).count();
    let sink = RecordingSink::failing(failures);
    let mut now: OffsetDateTime = clock.now();
    let (mut published, mut failed) = (0, 0);
    // Every failure costs at most one extra round.
    for round in 0..(snapshots + failures_scripted + 1) {
        let limit = limits[round % limits.len()];
        let claimer = id(1 + (round % 2) as u128);
        let r = publish_pending(&store, &sink, claimer, now, DEFAULT_CLAIM_LEASE, limit)
            .await
            .unwrap();
        published += r.published;
        failed += r.failed;
        now += Duration::seconds(1);
    }
    let successes = sink.successes();
    prop_assert_eq!(published, snapshots);
    prop_assert_eq!(successes.len(), snapshots);
    for sid in &ids {
        prop_assert_eq!(successes.get(sid), Some(&1), "published exactly once");
    }
    let listed = store.list_snapshots(usize::MAX).await.unwrap();
    prop_assert!(listed.iter().all(|s| s.published_at.is_some()));
    let attempts: u32 = listed.iter().map(|s| s.publish_attempts).sum();
    prop_assert_eq!(attempts as usize, failed);
    prop_assert!(failed <= failures_scripted);
    for s in listed.iter().filter(|s| s.publish_attempts > 0) {
        prop_assert!(store.last_error(s.id).unwrap().contains("injected sink outage"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn with_a_flaky_sink_every_snapshot_is_published_exactly_once(
        snapshots in 0usize..8,
        failures in prop::collection::vec(any::<bool>(), 0..30),
        limits in prop::collection::vec(1usize..4, 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(publish_until_done(snapshots, failures, limits))?;
    }
}
