//! Access control: who may do what to which resource.
//!
//! The rules live in [`authorize`]; [`Authorized`] applies them around any
//! store, so every adapter gets the same enforcement. The app maps HTTP API
//! tokens to subjects.

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::appstats::StatsReport;
use crate::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use crate::error::{Forbidden, StoreError};
use crate::ports::{
    AppStatsStore, AppStatsWrite, AppUsage, BoundaryUsageStore, InsightsStore, TelemetryStore, TimeRange,
};
use crate::ports::{RowStream, UsageStore};
use crate::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};
use crate::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UserActivity,
};

/// Roles of regular (human) users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Uses workspaces; reads nothing fleet-wide.
    Member,
    /// Reads insights and snapshots.
    Auditor,
    /// Reads everything a user may read.
    Admin,
}

/// Who is acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The system subject that owns boundary usage data, and the only one
    /// that may read, update or delete it.
    BoundaryUsageTracker,
    /// The restricted system subject that writes app stats and runs outbox
    /// and lock chores.
    SystemRestricted,
    /// A workspace proxy submitting app sessions.
    WorkspaceProxy,
    /// A workspace agent submitting boundary decisions.
    WorkspaceAgent,
    /// A human with a regular role.
    User(Role),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BoundaryUsageTracker => f.write_str("system:boundary-usage-tracker"),
            Self::SystemRestricted => f.write_str("system:restricted"),
            Self::WorkspaceProxy => f.write_str("workspace-proxy"),
            Self::WorkspaceAgent => f.write_str("workspace-agent"),
            Self::User(Role::Member) => f.write_str("user:member"),
            Self::User(Role::Auditor) => f.write_str("user:auditor"),
            Self::User(Role::Admin) => f.write_str("user:admin"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Delete => "delete",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Rows of app sessions.
    WorkspaceAppStats,
    /// A workspace's last-used time.
    Workspace,
    /// Boundary decisions as agents report them (input, not stored data).
    BoundaryLog,
    /// The per-replica counters and distinct ids of the current period.
    BoundaryUsage,
    /// Published or pending telemetry snapshots.
    TelemetrySnapshot,
    /// Period locks.
    TelemetryLock,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WorkspaceAppStats => "workspace app stats",
            Self::Workspace => "workspace",
            Self::BoundaryLog => "boundary logs",
            Self::BoundaryUsage => "boundary usage",
            Self::TelemetrySnapshot => "telemetry snapshots",
            Self::TelemetryLock => "telemetry locks",
        })
    }
}

/// The access rules. Everything not listed is refused.
pub fn authorize(subject: Subject, action: Action, resource: Resource) -> Result<(), Forbidden> {
    use Action::*;
    use Resource::*;
    use Subject::*;
    let reader = matches!(subject, User(Role::Auditor | Role::Admin));
    let allowed = match resource {
        // Only the tracker, whatever the action: no user role ever.
        BoundaryUsage => subject == BoundaryUsageTracker,
        BoundaryLog => action == Create && matches!(subject, WorkspaceAgent | BoundaryUsageTracker),
        WorkspaceAppStats => match action {
            Create => matches!(subject, WorkspaceProxy | SystemRestricted),
            Read => reader || subject == SystemRestricted,
            Update | Delete => subject == SystemRestricted,
        },
        Workspace => match action {
            Read => reader || subject == SystemRestricted,
            Update => subject == SystemRestricted,
            Create | Delete => false,
        },
        TelemetrySnapshot => match action {
            // The snapshot is written by the tracker in the period switch.
            Create => subject == BoundaryUsageTracker,
            Read => reader || matches!(subject, SystemRestricted | BoundaryUsageTracker),
            Update | Delete => matches!(subject, SystemRestricted | BoundaryUsageTracker),
        },
        TelemetryLock => matches!(subject, SystemRestricted | BoundaryUsageTracker),
    };
    if allowed {
        Ok(())
    } else {
        Err(Forbidden {
            subject,
            action,
            resource,
        })
    }
}

/// A store seen through a subject: every call is checked by [`authorize`]
/// before it reaches the inner store.
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    subject: Subject,
}

impl<S> Authorized<S> {
    pub fn new(inner: S, subject: Subject) -> Self {
        Self { inner, subject }
    }

    pub fn subject(&self) -> Subject {
        self.subject
    }

    fn check(&self, needs: &[(Action, Resource)]) -> Result<(), StoreError> {
        for &(action, resource) in needs {
            authorize(self.subject, action, resource)?;
        }
        Ok(())
    }
}

#[async_trait]
impl<S: AppStatsStore> AppStatsStore for Authorized<S> {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        self.check(&[
            (Action::Create, Resource::WorkspaceAppStats),
            (Action::Update, Resource::WorkspaceAppStats),
            (Action::Update, Resource::Workspace),
        ])?;
        self.inner.write_app_stats(write).await
    }
}

#[async_trait]
impl<S: BoundaryUsageStore> BoundaryUsageStore for Authorized<S> {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        self.check(&[(Action::Update, Resource::BoundaryUsage)])?;
        self.inner.flush_boundary_usage(delta).await
    }

    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        self.check(&[(Action::Read, Resource::BoundaryUsage)])?;
        self.inner.boundary_usage_summary().await
    }

    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        self.check(&[(Action::Delete, Resource::BoundaryUsage)])?;
        self.inner.delete_boundary_usage_by_replica(replica_id).await
    }
}

#[async_trait]
impl<S: TelemetryStore> TelemetryStore for Authorized<S> {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        self.check(&[
            (Action::Create, Resource::TelemetryLock),
            (Action::Read, Resource::BoundaryUsage),
            (Action::Delete, Resource::BoundaryUsage),
            (Action::Create, Resource::TelemetrySnapshot),
        ])?;
        self.inner.close_period(close).await
    }

    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        self.check(&[(Action::Update, Resource::TelemetrySnapshot)])?;
        self.inner
            .claim_unpublished_snapshots(claimer, now, lease, limit)
            .await
    }

    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check(&[(Action::Update, Resource::TelemetrySnapshot)])?;
        self.inner.mark_snapshot_published(snapshot_id, claimer, at).await
    }

    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        self.check(&[(Action::Update, Resource::TelemetrySnapshot)])?;
        self.inner
            .release_snapshot_claim(snapshot_id, claimer, error)
            .await
    }

    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        self.check(&[(Action::Read, Resource::TelemetrySnapshot)])?;
        self.inner.list_snapshots(limit).await
    }

    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.check(&[(Action::Delete, Resource::TelemetryLock)])?;
        self.inner.prune_telemetry_locks(before).await
    }
}

#[async_trait]
impl<S: InsightsStore> InsightsStore for Authorized<S> {
    async fn app_usage(&self, range: TimeRange) -> Result<Vec<AppUsage>, StoreError> {
        self.check(&[(Action::Read, Resource::WorkspaceAppStats)])?;
        self.inner.app_usage(range).await
    }

    async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError> {
        self.check(&[(Action::Read, Resource::WorkspaceAppStats)])?;
        self.inner.app_stats(range, limit).await
    }

    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
        self.check(&[(Action::Read, Resource::Workspace)])?;
        self.inner.workspace_last_used(workspace_id).await
    }
}

#[async_trait]
impl<S: UsageStore> UsageStore for Authorized<S> {
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
        self.check(&[
            (Action::Read, Resource::WorkspaceAppStats),
            (Action::Update, Resource::WorkspaceAppStats),
        ])?;
        self.inner.tick_usage_rollup().await
    }

    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
        self.check(&[(Action::Read, Resource::WorkspaceAppStats)])?;
        self.inner.app_usage_by_interval(intervals).await
    }

    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        self.check(&[(Action::Read, Resource::WorkspaceAppStats)])?;
        self.inner.active_users(intervals).await
    }

    async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError> {
        self.check(&[(Action::Read, Resource::WorkspaceAppStats)])?;
        self.inner.user_activity(range, limit).await
    }

    fn export_app_stats(&self, range: TimeRange) -> RowStream {
        match self.check(&[(Action::Read, Resource::WorkspaceAppStats)]) {
            Ok(()) => self.inner.export_app_stats(range),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError> {
        self.check(&[
            (Action::Read, Resource::WorkspaceAppStats),
            (Action::Update, Resource::WorkspaceAppStats),
            (Action::Delete, Resource::WorkspaceAppStats),
            (Action::Delete, Resource::TelemetrySnapshot),
        ])?;
        self.inner.purge_expired(now, policy).await
    }
}

#[cfg(test)]
mod tests;
