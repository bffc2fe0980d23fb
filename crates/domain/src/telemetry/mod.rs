//! Telemetry periods, the snapshot step and the outbox publisher.

pub mod publisher;
pub mod snapshot;

#[cfg(test)]
mod step_tests;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::boundary::BoundaryUsageSummary;

/// Lock event type of the boundary usage snapshot.
pub const BOUNDARY_USAGE_EVENT: &str = "boundary_usage";
/// Default telemetry period.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::minutes(30);

/// Rounds `t` down to a multiple of `step` counted from the Unix epoch. For
/// steps that divide a day this is Go's `Time.Truncate`.
///
/// # Panics
/// If `step` is not positive.
pub fn truncate(t: OffsetDateTime, step: Duration) -> OffsetDateTime {
    let step_ns = step.whole_nanoseconds();
    assert!(step_ns > 0, "truncation step must be positive, got {step}");
    let ns = t.unix_timestamp_nanos();
    let floored = ns - ns.rem_euclid(step_ns);
    OffsetDateTime::from_unix_timestamp_nanos(floored).expect("floor of a valid time is valid")
}

/// One telemetry period `[start, end)`, aligned to multiples of its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    /// First instant of the period.
    pub start: OffsetDateTime,
    /// First instant after it.
    pub end: OffsetDateTime,
}

impl Period {
    /// The latest period that has ended at or before `now`.
    pub fn last_ended(now: OffsetDateTime, interval: Duration) -> Self {
        let end = truncate(now, interval);
        Self {
            start: end - interval,
            end,
        }
    }

    /// The period `now` falls in.
    pub fn containing(now: OffsetDateTime, interval: Duration) -> Self {
        let start = truncate(now, interval);
        Self {
            start,
            end: start + interval,
        }
    }
}

/// A request to close a period: see [`crate::ports::TelemetryStore::close_period`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodClose {
    /// What is aggregated (the lock's event type, [`BOUNDARY_USAGE_EVENT`]).
    pub event_type: String,
    /// The period to close.
    pub period: Period,
    /// Id the snapshot gets if this close wins the lock.
    pub snapshot_id: Uuid,
    /// The replica taking the lock.
    pub replica_id: Uuid,
    /// When the close happens (the snapshot's `created_at`).
    pub now: OffsetDateTime,
}

/// What [`crate::ports::TelemetryStore::close_period`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeriodCloseOutcome {
    /// This replica took the lock; the snapshot is in the outbox.
    Closed(Snapshot),
    /// The lock for this period or a later one was already taken.
    AlreadyClosed,
}

/// One published (or to-be-published) aggregate of a period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// The snapshot's id, also the sink's idempotency key.
    pub id: Uuid,
    /// What is aggregated ([`BOUNDARY_USAGE_EVENT`]).
    pub event_type: String,
    /// Start of the period (included).
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    /// End of the period (excluded).
    #[serde(with = "time::serde::rfc3339")]
    pub period_end: OffsetDateTime,
    /// The period's totals across all replicas.
    #[serde(flatten)]
    pub usage: BoundaryUsageSummary,
    /// When the period was closed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its delivery succeeded; `null` until then.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub published_at: Option<OffsetDateTime>,
    /// Failed delivery attempts so far.
    pub publish_attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    #[test]
    fn periods_are_aligned_to_the_interval() {
        let now = datetime!(2026-11-25 10:47:12.5 UTC);
        let last = Period::last_ended(now, Duration::minutes(30));
        assert_eq!(last.start, datetime!(2026-11-25 10:00 UTC));
        assert_eq!(last.end, datetime!(2026-11-25 10:30 UTC));
        let current = Period::containing(now, Duration::minutes(30));
        assert_eq!(current.start, last.end);
        assert_eq!(current.end, datetime!(2026-11-25 11:00 UTC));
    }

    #[test]
    fn truncate_matches_go_for_times_before_the_epoch_too() {
        assert_eq!(
            truncate(datetime!(1969-12-31 23:59:30 UTC), Duration::minutes(1)),
            datetime!(1969-12-31 23:59 UTC)
        );
        assert_eq!(
            truncate(datetime!(2026-11-25 10:00 UTC), Duration::minutes(1)),
            datetime!(2026-11-25 10:00 UTC)
        );
    }

    proptest! {
        #[test]
        fn truncate_is_a_floor_to_a_multiple(secs in -1_000_000_000i64..4_000_000_000, nanos in 0u32..1_000_000_000, step_secs in 1i64..100_000) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap() + Duration::nanoseconds(nanos.into());
            let step = Duration::seconds(step_secs);
            let floor = truncate(t, step);
            prop_assert!(floor <= t);
            prop_assert!(t - floor < step);
            prop_assert_eq!(floor.unix_timestamp_nanos() % step.whole_nanoseconds(), 0);
            prop_assert_eq!(truncate(floor, step), floor);
        }

        #[test]
        fn last_ended_period_ends_at_or_before_now(secs in 0i64..4_000_000_000, step_secs in 1i64..10_000) {
            let now = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let interval = Duration::seconds(step_secs);
            let p = Period::last_ended(now, interval);
            prop_assert!(p.end <= now && now < p.end + interval);
            prop_assert_eq!(p.end - p.start, interval);
        }
    }
}
