//! The per-replica boundary usage tracker of SPEC §3.
//!
//! CONTRACT (stub, to be implemented): public API below is fixed; bodies are not.

use std::sync::Arc;

use uuid::Uuid;

use super::FlushOutcome;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::ports::BoundaryUsageStore;

/// What is tracked but not yet acknowledged by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingUsage {
    pub allowed: u64,
    pub denied: u64,
    pub workspaces: usize,
    pub users: usize,
}

/// Result of one tracker flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerFlush {
    /// Nothing was tracked; nothing was written.
    Nothing,
    /// The delta was acknowledged (applied now, or found already applied).
    Flushed(FlushOutcome),
}

#[derive(Debug)]
pub struct BoundaryTracker {
    replica_id: Uuid,
    clock: Arc<dyn Clock>,
}

impl BoundaryTracker {
    pub fn new(replica_id: Uuid, clock: Arc<dyn Clock>) -> Self {
        Self { replica_id, clock }
    }

    pub fn replica_id(&self) -> Uuid {
        self.replica_id
    }

    /// Counts one batch of an agent's boundary decisions. Callable from many
    /// threads at once; never waits on I/O.
    pub fn track(&self, workspace_id: Uuid, owner_id: Uuid, allowed: u64, denied: u64) {
        let _ = (workspace_id, owner_id, allowed, denied, &self.clock);
        todo!("issue 2: track")
    }

    /// Sends the deltas since the last acknowledged flush. On failure they
    /// are kept (same `seq`) and resent first by the next flush.
    pub async fn flush<S: BoundaryUsageStore + ?Sized>(&self, store: &S) -> Result<TrackerFlush, StoreError> {
        let _ = store;
        todo!("issue 2: tracker flush")
    }

    pub fn pending(&self) -> PendingUsage {
        todo!("issue 2: pending")
    }
}
