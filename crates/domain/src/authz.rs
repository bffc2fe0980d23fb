//! Access control: who may do what to which resource.
//!
//! The rules live in [`authorize`]; [`Authorized`] applies them around any
//! store, so every adapter gets the same enforcement. The app maps HTTP API
//! tokens to subjects.

use std::future::Future;

use crate::error::{Forbidden, StoreError};
use crate::ports::{CallInfo, Layer, Layered};

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

/// What a subject does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Adds new data.
    Create,
    /// Reads data.
    Read,
    /// Changes data that exists.
    Update,
    /// Removes data.
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

/// What is acted on.
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

/// A store seen through a subject: every call is checked by [`authorize`],
/// against the needs its port declares, before it reaches the inner store.
pub type Authorized<S> = Layered<S, Subject>;

impl<S> Authorized<S> {
    /// The subject every call is checked for.
    pub fn subject(&self) -> Subject {
        *self.layer()
    }
}

impl Subject {
    fn check(self, needs: &[(Action, Resource)]) -> Result<(), StoreError> {
        for &(action, resource) in needs {
            authorize(self, action, resource)?;
        }
        Ok(())
    }
}

impl Layer for Subject {
    async fn around<T, F>(&self, info: &'static CallInfo, call: F) -> Result<T, StoreError>
    where
        T: Send,
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        self.check(info.needs)?;
        call.await
    }
}

#[cfg(test)]
mod tests;
