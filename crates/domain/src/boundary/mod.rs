//! Network-boundary usage: what agents' boundaries allowed and denied.

mod shards;
pub mod tracker;

#[cfg(test)]
pub(crate) mod tests;

use time::OffsetDateTime;
use uuid::Uuid;

/// What one replica tracked since its last successful flush.
///
/// `seq` numbers a replica's deltas: a delta is retried with the same `seq`
/// until it is acknowledged, and the store applies each `seq` once, so a
/// flush whose acknowledgement was lost is not counted twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundaryDelta {
    /// The replica that tracked it.
    pub replica_id: Uuid,
    /// The replica's number of this delta: 1, 2, ... (or from where it was told to start).
    pub seq: u64,
    /// Requests the boundaries allowed.
    pub allowed: u64,
    /// Requests the boundaries denied.
    pub denied: u64,
    /// Distinct workspaces seen in this delta.
    pub workspace_ids: Vec<Uuid>,
    /// Distinct owners seen in this delta.
    pub user_ids: Vec<Uuid>,
    /// The tracking interval the delta covers.
    pub tracked_from: OffsetDateTime,
    /// End of that interval (the flush time).
    pub tracked_to: OffsetDateTime,
}

impl BoundaryDelta {
    /// Nothing was tracked: such a delta is never written.
    pub fn is_empty(&self) -> bool {
        self.allowed == 0 && self.denied == 0 && self.workspace_ids.is_empty() && self.user_ids.is_empty()
    }
}

/// Whether the store applied a delta or had already applied that `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Counted now.
    Applied,
    /// That `seq` of the replica was counted before; nothing changed.
    Duplicate,
}

/// Totals of one period across all replicas, with exact unique counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct BoundaryUsageSummary {
    /// Distinct workspaces seen by any replica.
    pub unique_workspaces: u64,
    /// Distinct workspace owners seen by any replica.
    pub unique_users: u64,
    /// Requests allowed, summed over replicas.
    pub allowed_requests: u64,
    /// Requests denied, summed over replicas.
    pub denied_requests: u64,
    /// Replicas that contributed to the period.
    pub replicas: u64,
    /// Earliest tracking time of the flushed deltas; `null` if none.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub tracked_from: Option<OffsetDateTime>,
    /// Latest tracking time of the flushed deltas; `null` if none.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub tracked_to: Option<OffsetDateTime>,
}
