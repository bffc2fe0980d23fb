//! The snapshot step and the publisher: call shapes against mocks, the
//! lock and outbox rules against the fake store, and publishing exactly once
//! under a flaky sink as a property.

mod publisher;
mod snapshot;

use time::Duration;

use super::{BOUNDARY_USAGE_EVENT, Period, Snapshot};
use crate::boundary::BoundaryUsageSummary;
use crate::boundary::tests::id;

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
