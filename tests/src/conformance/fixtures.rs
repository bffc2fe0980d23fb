//! Small builders shared by the conformance cases.

use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::BoundaryDelta;
use tally_domain::error::{Report, StoreError};
use tally_domain::ports::{AppStatsWrite, Store, TimeRange};

use super::BoundaryPorts;
use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, Period, PeriodClose, PeriodCloseOutcome, Snapshot};
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// The start of every case's timeline.
pub(crate) const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);
/// Period length used by the telemetry cases.
pub(crate) const PERIOD: Duration = Duration::minutes(30);
/// A limit larger than any case's row count (and within PostgreSQL's `bigint`).
pub(crate) const NO_LIMIT: usize = 1_000_000;

pub(crate) fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

pub(crate) fn mins(n: i64) -> Duration {
    Duration::minutes(n)
}

/// A timestamp as the stores keep it: whole microseconds, UTC.
pub(crate) fn micros(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000)
        .unwrap()
        .to_offset(UtcOffset::UTC)
}

/// A user with one workspace and its agent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who {
    pub user: Uuid,
    pub workspace: Uuid,
    pub agent: Uuid,
}

impl Who {
    pub(crate) fn new() -> Self {
        Self {
            user: Uuid::new_v4(),
            workspace: Uuid::new_v4(),
            agent: Uuid::new_v4(),
        }
    }
}

/// A closed session with a fresh session id.
pub(crate) fn row(
    who: Who,
    method: AccessMethod,
    slug: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
    requests: u64,
) -> StatsReport {
    StatsReport {
        user_id: who.user,
        workspace_id: who.workspace,
        agent_id: who.agent,
        access_method: method,
        slug_or_port: slug.to_owned(),
        session_id: Uuid::new_v4(),
        session_started_at: start,
        session_ended_at: Some(end),
        requests,
        sessions: 1,
    }
}

/// The same row with another end time and request count.
pub(crate) fn later(row: &StatsReport, end: OffsetDateTime, requests: u64) -> StatsReport {
    StatsReport {
        session_ended_at: Some(end),
        requests,
        ..row.clone()
    }
}

/// A row as the store returns it.
pub(crate) fn stored(row: &StatsReport) -> StatsReport {
    StatsReport {
        session_started_at: micros(row.session_started_at),
        session_ended_at: row.session_ended_at.map(micros),
        ..row.clone()
    }
}

/// A write of `rows` with each workspace's latest end as its last-used time,
/// as the reporter builds it.
pub fn write_of(rows: Vec<StatsReport>, batch_size: usize) -> AppStatsWrite {
    let mut last_used: Vec<(Uuid, OffsetDateTime)> = Vec::new();
    for r in &rows {
        let end = r.session_ended_at.unwrap_or(r.session_started_at);
        match last_used.iter_mut().find(|(w, _)| *w == r.workspace_id) {
            Some((_, t)) => *t = (*t).max(end),
            None => last_used.push((r.workspace_id, end)),
        }
    }
    AppStatsWrite {
        rows,
        batch_size,
        last_used,
    }
}

pub(crate) fn all_time() -> TimeRange {
    TimeRange::new(datetime!(2000-01-01 0:00 UTC), datetime!(2100-01-01 0:00 UTC)).unwrap()
}

/// One interval of the day before and the day after [`T0`], for rollup reads.
pub(crate) fn around_t0() -> tally_domain::usage::Intervals {
    tally_domain::usage::Intervals::new(vec![T0 - Duration::DAY, T0 + Duration::DAY]).unwrap()
}

/// Every stored row, in the store's order.
pub(crate) async fn all_rows(store: &dyn Store) -> Vec<StatsReport> {
    store.app_stats(all_time(), NO_LIMIT).await.unwrap()
}

/// Rows sorted by key, for comparisons that ignore order.
pub(crate) fn by_key(mut rows: Vec<StatsReport>) -> Vec<StatsReport> {
    rows.sort_by_key(StatsReport::row_key);
    rows
}

/// Asserts `result` is `StoreError::Invalid` whose message names `field`.
pub(crate) fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str, what: &str) {
    match result {
        Err(e @ StoreError::Invalid { .. }) => {
            // The message or its cause (a database's constraint error) names it.
            let msg = Report(&e).to_string();
            assert!(msg.contains(field), "{what}: error {msg:?} should name {field:?}")
        }
        other => panic!("{what}: expected StoreError::Invalid naming {field:?}, got {other:?}"),
    }
}

pub(crate) fn delta(
    replica_id: Uuid,
    seq: u64,
    (allowed, denied): (u64, u64),
    workspace_ids: &[Uuid],
    user_ids: &[Uuid],
    (tracked_from, tracked_to): (OffsetDateTime, OffsetDateTime),
) -> BoundaryDelta {
    BoundaryDelta {
        replica_id,
        seq,
        allowed,
        denied,
        workspace_ids: workspace_ids.to_vec(),
        user_ids: user_ids.to_vec(),
        tracked_from,
        tracked_to,
    }
}

pub(crate) fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

/// The `k`-th period of the timeline: `[T0 + k * PERIOD, T0 + (k + 1) * PERIOD)`.
pub(crate) fn period(k: i64) -> Period {
    let start = T0 + PERIOD * (k as i32);
    Period {
        start,
        end: start + PERIOD,
    }
}

/// A close of the `k`-th boundary usage period by `replica`, just after it ended.
pub(crate) fn close_of(k: i64, replica: Uuid) -> PeriodClose {
    let period = period(k);
    PeriodClose {
        event_type: BOUNDARY_USAGE_EVENT.to_owned(),
        period,
        snapshot_id: Uuid::new_v4(),
        replica_id: replica,
        now: period.end + secs(1),
    }
}

/// Closes period `k` and returns its snapshot, failing if it was closed before.
pub(crate) async fn must_close<S: BoundaryPorts + ?Sized>(store: &S, k: i64) -> Snapshot {
    let close = close_of(k, Uuid::new_v4());
    match store.close_period(&close).await.unwrap() {
        PeriodCloseOutcome::Closed(snapshot) => snapshot,
        PeriodCloseOutcome::AlreadyClosed => panic!("period {k} was already closed"),
    }
}
