//! The ports: what the domain needs from the outside world.
//!
//! Every store method is atomic: it either applies whole or not at all, so a
//! failed call can be retried as is. Adapters live in other crates; the
//! conformance suite in `tests/` holds them to identical behaviour.

use std::sync::Arc;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::appstats::{AccessMethod, StatsReport};
use crate::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use crate::error::StoreError;
use crate::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};
use crate::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UserActivity,
};

/// Raw app stat rows, streamed.
pub type RowStream = futures::stream::BoxStream<'static, Result<StatsReport, StoreError>>;

/// One atomic write of app stat rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppStatsWrite {
    /// Rows to upsert, each with an end time, and no two with the same
    /// (user, agent, session): PostgreSQL cannot upsert a key twice in one
    /// statement, so every store refuses such a write whole as
    /// [`StoreError::Invalid`]. The reporter merges duplicates first.
    pub rows: Vec<StatsReport>,
    /// How many rows go into one statement.
    pub batch_size: usize,
    /// Every workspace the rows touch, once, with the time it was last used.
    /// Stores move `last_used_at` forward only, never backwards.
    pub last_used: Vec<(Uuid, OffsetDateTime)>,
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl TimeRange {
    /// Refuses empty and inverted ranges.
    pub fn new(from: OffsetDateTime, to: OffsetDateTime) -> Result<Self, String> {
        if from < to {
            Ok(Self { from, to })
        } else {
            Err(format!("empty time range: from {from} is not before to {to}"))
        }
    }

    /// Whether a session `[start, end]` counts in this range: it started
    /// before the range ends and had not ended before it began.
    pub fn overlaps(&self, start: OffsetDateTime, end: OffsetDateTime) -> bool {
        start < self.to && end >= self.from
    }

    /// The part of `[start, end]` inside the range (zero when none).
    pub fn clipped(&self, start: OffsetDateTime, end: OffsetDateTime) -> Duration {
        let d = end.min(self.to) - start.max(self.from);
        d.max(Duration::ZERO)
    }
}

/// Usage of one app over a time range.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AppUsage {
    pub access_method: AccessMethod,
    pub slug_or_port: String,
    pub unique_users: u64,
    pub sessions: u64,
    pub requests: u64,
    /// Session time inside the range, summed in whole microseconds (the
    /// stores' precision) so every adapter returns the same number.
    pub session_micros: u64,
}

/// App stats rows and workspaces' last-used time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AppStatsStore: Send + Sync {
    /// Upserts `write.rows` in batches of `write.batch_size` by (user, agent,
    /// session), an existing row merged with [`StatsReport::merge_forward`]
    /// (end time and requests each move forward on their own), and moves
    /// each workspace's last-used time forward, all in one transaction.
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError>;
}

/// Per-replica boundary usage counters and the distinct ids of the period.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BoundaryUsageStore: Send + Sync {
    /// Adds a replica's delta to the current period: counters increased,
    /// distinct ids inserted once. A delta whose `seq` the replica already
    /// applied is a duplicate and changes nothing.
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError>;

    /// Totals of the current (not yet closed) period.
    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError>;

    /// Forgets a replica that is gone: its counters and its flush sequence.
    /// Returns how many rows went.
    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError>;
}

/// Period locks and the snapshot outbox.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TelemetryStore: Send + Sync {
    /// In one atomic step: take the lock for (`event_type`, period end), read
    /// the current period's totals, reset them, and write the snapshot to the
    /// outbox. A flush racing with it lands wholly before or wholly after.
    /// Returns [`PeriodCloseOutcome::AlreadyClosed`] when the lock for this
    /// period or a later one is already taken.
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError>;

    /// Claims up to `limit` unpublished snapshots whose claim is free or has
    /// expired, for `lease`, oldest period first. A claim keeps two replicas
    /// from publishing the same snapshot at once.
    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError>;

    /// Marks a claimed snapshot published. Idempotent.
    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Gives a claim back after a failed publish, recording the error and
    /// counting the attempt, so it is retried later.
    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Snapshots, newest period first, published or not.
    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError>;

    /// Deletes locks of periods that ended before `before`. Returns how many.
    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// Read side for operators.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InsightsStore: Send + Sync {
    /// Usage per app (access method, slug or port) of the sessions that
    /// overlap `range` (see [`TimeRange::overlaps`]), session time clipped to
    /// it; most users first, then most session time, then by method and slug.
    async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError>;

    /// Stored rows of sessions that overlap `range`, oldest start first, then
    /// by session id; at most `limit`.
    async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError>;

    /// A workspace's last-used time, `None` if it was never used.
    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError>;
}

/// The usage rollup, the reads it answers, the raw export and retention.
/// The figures are defined in docs/insights.md.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Rolls up again every start hour that a write committed before the
    /// call touched (except hours whose raw rows were purged: those are
    /// final), so the reads below then equal the figures computed from the
    /// stored rows. One caller at a time across replicas: while another
    /// holds the rollup this returns at once with `skipped`.
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError>;

    /// Per app (access method, slug or port): usage seconds, sessions,
    /// requests and unique users over the range and per interval, from the
    /// rollup; ordered by [`crate::usage::sort_app_series`]. Apps without
    /// usage in the range are left out.
    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError>;

    /// Distinct users with any usage over the range and per interval.
    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError>;

    /// Usage per user over `range` (whole minutes, else
    /// [`StoreError::Invalid`]), all apps merged, most usage first, then by
    /// user id; at most `limit`.
    async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError>;

    /// Every stored raw row whose session started in `range`, as stored,
    /// by start hour (oldest first) and within an hour by start, then key.
    /// Rows are read an hour at a time, so a long export holds no
    /// transaction open and needs memory for one hour only.
    fn export_app_stats(&self, range: TimeRange) -> RowStream;

    /// One bounded round of retention at `now`: raw rows whose session
    /// started before `now - policy.app_stats` (by whole start hours, after
    /// a tick, so nothing is deleted before it is rolled up; those hours are
    /// final from then on), rollup rows of hours before `now -
    /// policy.usage`, and published snapshots whose period ended before
    /// `now - policy.snapshots`; at most `policy.max_batch` of data of each.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError>;
}

/// Everything a store provides. Implemented for every type that has all parts.
pub trait Store: AppStatsStore + BoundaryUsageStore + TelemetryStore + InsightsStore + UsageStore {}

impl<T: AppStatsStore + BoundaryUsageStore + TelemetryStore + InsightsStore + UsageStore + ?Sized> Store
    for T
{
}

/// Delivers rolled-up app stats somewhere (normally the store).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Reporter: Send + Sync {
    async fn report(&self, reports: &[StatsReport]) -> Result<(), StoreError>;
}

/// A snapshot could not be delivered; it stays in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot sink failed: {0}")]
pub struct SinkError(pub String);

/// Where published snapshots go (an HTTP endpoint, the log).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SnapshotSink: Send + Sync {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError>;
}

#[cfg(any(test, feature = "mocks"))]
mockall::mock! {
    /// A whole store, for tests that need every port at once.
    pub Store {}

    #[async_trait]
    impl AppStatsStore for Store {
        async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError>;
    }

    #[async_trait]
    impl BoundaryUsageStore for Store {
        async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError>;
        async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError>;
        async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError>;
    }

    #[async_trait]
    impl TelemetryStore for Store {
        async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError>;
        async fn claim_unpublished_snapshots(
            &self,
            claimer: Uuid,
            now: OffsetDateTime,
            lease: Duration,
            limit: usize,
        ) -> Result<Vec<Snapshot>, StoreError>;
        async fn mark_snapshot_published(
            &self,
            snapshot_id: Uuid,
            claimer: Uuid,
            at: OffsetDateTime,
        ) -> Result<(), StoreError>;
        async fn release_snapshot_claim(
            &self,
            snapshot_id: Uuid,
            claimer: Uuid,
            error: &str,
        ) -> Result<(), StoreError>;
        async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError>;
        async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
    }

    #[async_trait]
    impl InsightsStore for Store {
        async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError>;
        async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError>;
        async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError>;
    }

    #[async_trait]
    impl UsageStore for Store {
        async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError>;
        async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError>;
        async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError>;
        async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError>;
        fn export_app_stats(&self, range: TimeRange) -> RowStream;
        async fn purge_expired(&self, now: OffsetDateTime, policy: &RetentionPolicy) -> Result<PurgeOutcome, StoreError>;
    }
}

// Shared handles are stores too, so wrappers and services can hold an
// `Arc<dyn Store>` or an `Arc<ConcreteStore>` alike.
#[async_trait]
impl<T: AppStatsStore + ?Sized> AppStatsStore for Arc<T> {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        (**self).write_app_stats(write).await
    }
}

#[async_trait]
impl<T: BoundaryUsageStore + ?Sized> BoundaryUsageStore for Arc<T> {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        (**self).flush_boundary_usage(delta).await
    }
    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        (**self).boundary_usage_summary().await
    }
    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        (**self).delete_boundary_usage_by_replica(replica_id).await
    }
}

#[async_trait]
impl<T: TelemetryStore + ?Sized> TelemetryStore for Arc<T> {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        (**self).close_period(close).await
    }
    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        (**self)
            .claim_unpublished_snapshots(claimer, now, lease, limit)
            .await
    }
    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        (**self).mark_snapshot_published(snapshot_id, claimer, at).await
    }
    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        (**self).release_snapshot_claim(snapshot_id, claimer, error).await
    }
    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        (**self).list_snapshots(limit).await
    }
    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        (**self).prune_telemetry_locks(before).await
    }
}

#[async_trait]
impl<T: InsightsStore + ?Sized> InsightsStore for Arc<T> {
    async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError> {
        (**self).app_usage(range).await
    }
    async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError> {
        (**self).app_stats(range, limit).await
    }
    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
        (**self).workspace_last_used(workspace_id).await
    }
}

#[async_trait]
impl<T: UsageStore + ?Sized> UsageStore for Arc<T> {
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
        (**self).tick_usage_rollup().await
    }
    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
        (**self).app_usage_by_interval(intervals).await
    }
    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        (**self).active_users(intervals).await
    }
    async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError> {
        (**self).user_activity(range, limit).await
    }
    fn export_app_stats(&self, range: TimeRange) -> RowStream {
        (**self).export_app_stats(range)
    }
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError> {
        (**self).purge_expired(now, policy).await
    }
}

#[async_trait]
impl<T: Reporter + ?Sized> Reporter for Arc<T> {
    async fn report(&self, reports: &[StatsReport]) -> Result<(), StoreError> {
        (**self).report(reports).await
    }
}

#[async_trait]
impl<T: SnapshotSink + ?Sized> SnapshotSink for Arc<T> {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError> {
        (**self).publish(snapshot).await
    }
}
