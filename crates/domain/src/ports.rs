//! The ports: what the domain needs from the outside world.
//!
//! Every store method is atomic: it either applies whole or not at all, so a
//! failed call can be retried as is. Adapters live in other crates; the
//! conformance suite in `tests/` holds them to identical behaviour.
//!
//! The store ports are declared once, in the `store_ports!` block below: each
//! method with the access it needs. The macro (`ports/declare.rs`) derives the
//! `Arc` forwarding, the mocks and the [`Layered`] impl from it, so a new
//! method is added there and in each adapter, nowhere else.

mod declare;
mod layer;

use std::sync::Arc;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::appstats::{AccessMethod, StatsReport};
use crate::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use crate::error::StoreError;
use crate::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};

pub use layer::{CallInfo, Layer, Layered};

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
    /// Start (included).
    pub from: OffsetDateTime,
    /// End (excluded).
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AppUsage {
    /// How the app was reached.
    pub access_method: AccessMethod,
    /// The app's slug or port.
    pub slug_or_port: String,
    /// Distinct users.
    pub unique_users: u64,
    /// Stored rows (a rolled-up record is one).
    pub sessions: u64,
    /// Requests summed.
    pub requests: u64,
    /// Session time inside the range, summed in whole microseconds (the
    /// stores' precision) so every adapter returns the same number.
    pub session_micros: u64,
}

declare::store_ports! {
    /// App stats rows and workspaces' last-used time.
    pub trait AppStatsStore {
        /// Upserts `write.rows` in batches of `write.batch_size` by (user, agent,
        /// session), an existing row merged with [`StatsReport::merge_forward`]
        /// (end time and requests each move forward on their own), and moves
        /// each workspace's last-used time forward, all in one transaction.
        needs(Create WorkspaceAppStats, Update WorkspaceAppStats, Update Workspace)
        async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError>;
    }

    /// Per-replica boundary usage counters and the distinct ids of the period.
    pub trait BoundaryUsageStore {
        /// Adds a replica's delta to the current period: counters increased,
        /// distinct ids inserted once. A delta whose `seq` the replica already
        /// applied is a duplicate and changes nothing.
        needs(Update BoundaryUsage)
        async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError>;

        /// Totals of the current (not yet closed) period.
        needs(Read BoundaryUsage)
        async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError>;

        /// Forgets a replica that is gone: its counters and its flush sequence.
        /// Returns how many rows went.
        needs(Delete BoundaryUsage)
        async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError>;
    }

    /// Period locks and the snapshot outbox.
    pub trait TelemetryStore {
        /// In one atomic step: take the lock for (`event_type`, period end), read
        /// the current period's totals, reset them, and write the snapshot to the
        /// outbox. A flush racing with it lands wholly before or wholly after.
        /// Returns [`PeriodCloseOutcome::AlreadyClosed`] when the lock for this
        /// period or a later one is already taken.
        needs(Create TelemetryLock, Read BoundaryUsage, Delete BoundaryUsage, Create TelemetrySnapshot)
        async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError>;

        /// Claims up to `limit` unpublished snapshots whose claim is free, has
        /// expired or is `claimer`'s own, for `lease`, oldest period first. A
        /// claim keeps two replicas from publishing the same snapshot at once;
        /// a claimer's own unexpired claim can only be left over from one of its
        /// earlier rounds (it runs one at a time), so it is taken back at once.
        needs(Update TelemetrySnapshot)
        async fn claim_unpublished_snapshots(
            &self,
            claimer: Uuid,
            now: OffsetDateTime,
            lease: Duration,
            limit: usize,
        ) -> Result<Vec<Snapshot>, StoreError>;

        /// Marks a claimed snapshot published. Idempotent.
        needs(Update TelemetrySnapshot)
        async fn mark_snapshot_published(
            &self,
            snapshot_id: Uuid,
            claimer: Uuid,
            at: OffsetDateTime,
        ) -> Result<(), StoreError>;

        /// Gives a claim back after a failed publish, recording the error and
        /// counting the attempt, so it is retried later.
        needs(Update TelemetrySnapshot)
        async fn release_snapshot_claim(
            &self,
            snapshot_id: Uuid,
            claimer: Uuid,
            error: &str,
        ) -> Result<(), StoreError>;

        /// Snapshots, newest period first, published or not.
        needs(Read TelemetrySnapshot)
        async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError>;

        /// Deletes locks of periods that ended before `before`. Returns how many.
        needs(Delete TelemetryLock)
        async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
    }

    /// Read side for operators.
    pub trait InsightsStore {
        /// Usage per app (access method, slug or port) of the sessions that
        /// overlap `range` (see [`TimeRange::overlaps`]), session time clipped to
        /// it; most users first, then most session time, then by method and slug.
        needs(Read WorkspaceAppStats)
        async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError>;

        /// Stored rows of sessions that overlap `range`, oldest start first, then
        /// by session id; at most `limit`.
        needs(Read WorkspaceAppStats)
        async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError>;

        /// A workspace's last-used time, `None` if it was never used.
        needs(Read Workspace)
        async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError>;
    }
}

/// Everything a store provides. Implemented for every type that has all parts.
pub trait Store: AppStatsStore + BoundaryUsageStore + TelemetryStore + InsightsStore {}

impl<T: AppStatsStore + BoundaryUsageStore + TelemetryStore + InsightsStore + ?Sized> Store for T {}

/// Delivers rolled-up app stats somewhere (normally the store).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Reporter: Send + Sync {
    /// Delivers the rows of one flush, all or none: on an error the
    /// collector keeps them and retries.
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
    /// Delivers one snapshot; an error leaves it in the outbox for a later
    /// round.
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError>;
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
