//! Tests of the boundary tracker against the port semantics, plus the fake
//! store they (and the telemetry tests) run on.

mod concurrency;
pub(crate) mod fake_store;
mod proptests;
mod tracker_tests;

use std::sync::Arc;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::clock::{Clock, ManualClock};
use crate::telemetry::Snapshot;
use crate::telemetry::snapshot::snapshot_step;

use super::tracker::BoundaryTracker;
use fake_store::FakeStore;

pub(crate) const INTERVAL: Duration = Duration::minutes(30);

pub(crate) fn t0() -> OffsetDateTime {
    datetime!(2026-11-25 10:00 UTC)
}

pub(crate) fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub(crate) fn tracker(replica: u128, clock: &ManualClock) -> Arc<BoundaryTracker> {
    Arc::new(BoundaryTracker::new(id(replica), Arc::new(clock.clone())))
}

/// Moves the clock into the next period and closes the one that ended.
pub(crate) async fn next_period(store: &FakeStore, clock: &ManualClock) -> Snapshot {
    clock.advance(INTERVAL);
    snapshot_step(store, id(999), clock.now(), INTERVAL)
        .await
        .unwrap()
        .expect("the period was not closed yet")
}
