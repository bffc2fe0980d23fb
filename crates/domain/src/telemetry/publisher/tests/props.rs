//! Publishing under a flaky sink, as a property: over enough rounds, with
//! two claimers taking turns, every snapshot is delivered exactly once and
//! every failed delivery is counted and recorded.

use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use super::{RecordingSink, at};
use crate::clock::{Clock, ManualClock};
use crate::ports::TelemetryStore;
use crate::telemetry::publisher::{DEFAULT_CLAIM_LEASE, Delivered, publish_pending};
use crate::testing::fake_store::FakeStore;
use crate::testing::fixtures::{id, next_period, t0};

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
    let mut delivered = [Delivered::default(), Delivered::default()];
    // Every failure costs at most one extra round.
    for round in 0..(snapshots + failures_scripted + 1) {
        let limit = limits[round % limits.len()];
        let claimer = id(1 + (round % 2) as u128);
        let r = publish_pending(
            &store,
            &sink,
            claimer,
            &at(now),
            DEFAULT_CLAIM_LEASE,
            limit,
            &mut delivered[round % 2],
        )
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
