//! The per-replica boundary usage tracker (docs/rules.md#boundary-usage).
//!
//! `track` adds to striped in-memory state and never waits on I/O. `flush`
//! turns what was tracked into a numbered [`BoundaryDelta`]. A delta is kept,
//! with its `seq`, until the store acknowledges it, and the store applies a
//! `seq` once. So a failed flush loses nothing and a flush whose
//! acknowledgement was lost counts once: every tracked request lands in
//! exactly one acknowledged delta.

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::shards::{IdSet, Stripes, Usage};
use super::{BoundaryDelta, FlushOutcome};
use crate::clock::Clock;
use crate::error::StoreError;
use crate::ports::BoundaryUsageStore;

/// What is tracked but not yet acknowledged by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingUsage {
    /// Allowed requests not yet acknowledged.
    pub allowed: u64,
    /// Denied requests not yet acknowledged.
    pub denied: u64,
    /// Distinct workspaces among them.
    pub workspaces: usize,
    /// Distinct owners among them.
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

/// Flush bookkeeping, changed only by the flush holding `flushing`.
#[derive(Debug)]
struct FlushState {
    /// `seq` of the next new delta. Starts at 1 (or where told) and only
    /// grows, so a replica id must belong to one tracker at a time.
    next_seq: u64,
    /// End of the last acknowledged delta, or when the tracker was created.
    acked_to: OffsetDateTime,
    /// A delta sent but not acknowledged: resent as is before anything new.
    unacked: Option<BoundaryDelta>,
}

/// One replica's boundary usage between flushes: many tasks `track`, one
/// loop `flush`es to a [`BoundaryUsageStore`].
pub struct BoundaryTracker {
    replica_id: Uuid,
    clock: Arc<dyn Clock>,
    stripes: Stripes,
    /// Serializes flushes; held across the store call.
    flushing: tokio::sync::Mutex<()>,
    /// Held only briefly, never across an await, so `pending` never waits
    /// for the store.
    state: parking_lot::Mutex<FlushState>,
}

impl std::fmt::Debug for BoundaryTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("BoundaryTracker")
            .field("replica_id", &self.replica_id)
            .field("next_seq", &state.next_seq)
            .field("acked_to", &state.acked_to)
            .field("unacked_seq", &state.unacked.as_ref().map(|d| d.seq))
            .finish_non_exhaustive()
    }
}

impl BoundaryTracker {
    /// A tracker for `replica_id` whose first delta starts now on `clock` and
    /// has `seq` 1.
    pub fn new(replica_id: Uuid, clock: Arc<dyn Clock>) -> Self {
        let created = clock.now();
        Self {
            replica_id,
            clock,
            stripes: Stripes::default(),
            flushing: tokio::sync::Mutex::new(()),
            state: parking_lot::Mutex::new(FlushState {
                next_seq: 1,
                acked_to: created,
                unacked: None,
            }),
        }
    }

    /// Numbers this tracker's deltas from `first_seq` instead of 1. A
    /// process that reuses a replica id after a restart must start above
    /// every seq its predecessor sent, or the store would take its deltas
    /// for duplicates; the time of start in microseconds is such a number.
    pub fn starting_at_seq(self, first_seq: u64) -> Self {
        self.state.lock().next_seq = first_seq.max(1);
        self
    }

    /// The replica its deltas are keyed by.
    pub fn replica_id(&self) -> Uuid {
        self.replica_id
    }

    /// Counts one batch of an agent's boundary decisions. Callable from many
    /// threads at once; never waits on I/O.
    pub fn track(&self, workspace_id: Uuid, owner_id: Uuid, allowed: u64, denied: u64) {
        self.stripes.track(workspace_id, owner_id, allowed, denied);
    }

    /// Sends the deltas since the last acknowledged flush. On failure they
    /// are kept (same `seq`) and resent first by the next flush.
    ///
    /// Flushes are serialized. Cancel-safe: a flush dropped while waiting on
    /// the store leaves its delta unacknowledged, to be resent.
    pub async fn flush<S: BoundaryUsageStore + ?Sized>(&self, store: &S) -> Result<TrackerFlush, StoreError> {
        let _serial = self.flushing.lock().await;
        let mut result = TrackerFlush::Nothing;

        let resend = self.state.lock().unacked.clone();
        if let Some(delta) = resend {
            // Errors leave the delta where it is; nothing new is drained.
            let outcome = store.flush_boundary_usage(&delta).await?;
            self.acknowledge(&delta);
            result = TrackerFlush::Flushed(outcome);
        }

        // Drained under the state lock (`pending` sees the usage either in
        // the stripes or in `unacked`), and no await until the delta is parked
        // in `unacked`, so a cancelled flush cannot drop drained usage.
        let delta = {
            let mut state = self.state.lock();
            let usage = self.stripes.drain();
            if usage.is_empty() {
                return Ok(result);
            }
            let delta = BoundaryDelta {
                replica_id: self.replica_id,
                seq: state.next_seq,
                allowed: usage.allowed,
                denied: usage.denied,
                workspace_ids: sorted_ids(usage.workspaces),
                user_ids: sorted_ids(usage.users),
                tracked_from: state.acked_to,
                // A clock stepping back must not make an inverted range.
                tracked_to: self.clock.now().max(state.acked_to),
            };
            state.next_seq += 1;
            state.unacked = Some(delta.clone());
            delta
        };
        let outcome = store.flush_boundary_usage(&delta).await?;
        self.acknowledge(&delta);
        Ok(TrackerFlush::Flushed(outcome))
    }

    fn acknowledge(&self, delta: &BoundaryDelta) {
        let mut state = self.state.lock();
        debug_assert_eq!(state.unacked.as_ref().map(|d| d.seq), Some(delta.seq));
        state.unacked = None;
        state.acked_to = delta.tracked_to;
    }

    /// Everything tracked and not yet acknowledged: the unacknowledged delta
    /// plus what was tracked since, ids counted once across both. Copies the
    /// id sets, so it costs O(distinct ids): for metrics, not for hot paths.
    pub fn pending(&self) -> PendingUsage {
        // State first, then stripes: the order `flush` takes them in.
        let state = self.state.lock();
        let mut usage: Usage = self.stripes.peek();
        if let Some(delta) = &state.unacked {
            usage.allowed = usage.allowed.saturating_add(delta.allowed);
            usage.denied = usage.denied.saturating_add(delta.denied);
            usage
                .workspaces
                .extend(delta.workspace_ids.iter().map(|id| id.as_u128()));
            usage.users.extend(delta.user_ids.iter().map(|id| id.as_u128()));
        }
        PendingUsage {
            allowed: usage.allowed,
            denied: usage.denied,
            workspaces: usage.workspaces.len(),
            users: usage.users.len(),
        }
    }
}

/// Sorted, so concurrent inserts of overlapping ids take row locks in the
/// same order (no deadlocks in the database) and deltas are reproducible.
fn sorted_ids(set: IdSet) -> Vec<Uuid> {
    let mut ids: Vec<u128> = set.into_iter().collect();
    ids.sort_unstable();
    ids.into_iter().map(Uuid::from_u128).collect()
}
