//! Fixtures shared by the domain's unit tests: ids, the start time, an app
//! session report, a tracker on a manual clock, closing a period on the fake
//! store.

use std::sync::Arc;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::fake_store::FakeStore;
use crate::appstats::{AccessMethod, StatsReport};
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

/// Session `n` of one user's `code-server` by path, one session's row.
pub(crate) fn report(
    n: u128,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    requests: u64,
) -> StatsReport {
    StatsReport {
        user_id: Uuid::from_u128(1),
        workspace_id: Uuid::from_u128(2),
        agent_id: Uuid::from_u128(3),
        access_method: AccessMethod::Path,
        slug_or_port: "code-server".into(),
        session_id: Uuid::from_u128(0x100 + n),
        session_started_at: start,
        session_ended_at: end,
        requests,
        sessions: 1,
    }
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
