//! Fixtures shared by the domain's unit tests: ids, the start time, a
//! tracker on a manual clock, closing a period on the fake store.

use std::sync::Arc;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::fake_store::FakeStore;
use crate::boundary::BoundaryUsageSummary;
use crate::boundary::tracker::BoundaryTracker;
use crate::clock::{Clock, ManualClock};
use crate::telemetry::snapshot::snapshot_step;
use crate::telemetry::{BOUNDARY_USAGE_EVENT, Period, Snapshot};

/// The snapshot interval of the tests.
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

/// An unpublished, empty snapshot of `period`, as a mocked store returns it.
pub(crate) fn snapshot(n: u128, period: Period) -> Snapshot {
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
