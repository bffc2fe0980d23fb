//! A small in-memory store of the boundary and period ports, for the
//! tracker, snapshot and publisher unit tests.
//!
//! How it behaves is not written here: the store conformance suite
//! (`tally-tests`, run against this fake as well as the real stores) states
//! it, and this fake passes the cases of the ports it implements. Beyond
//! them it injects faults (fail before applying, or apply and then fail: a
//! lost acknowledgement) and records every applied delta with its period,
//! which no real store exposes. Like the real stores, it keeps times to the
//! microsecond (floored).
//!
//! (The memory store cannot stand in inside the domain's unit tests: a unit
//! test linking it would see two copies of this crate's types.)

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use async_trait::async_trait;
use parking_lot::Mutex;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use crate::error::StoreError;
use crate::ports::{BoundaryUsageStore, TelemetryStore};
use crate::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};

/// How an injected fault fails a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails and changes nothing.
    FailBefore,
    /// The call applies, then the caller gets an error anyway.
    LostAck,
}

/// One replica's counters in the current period.
#[derive(Debug, Clone, Copy)]
struct Row {
    allowed: u64,
    denied: u64,
    from: OffsetDateTime,
    to: OffsetDateTime,
}

#[derive(Debug)]
struct Outboxed {
    snapshot: Snapshot,
    claimed_by: Option<Uuid>,
    claim_until: Option<OffsetDateTime>,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    rows: BTreeMap<Uuid, Row>,
    workspaces: BTreeSet<Uuid>,
    users: BTreeSet<Uuid>,
    /// Highest applied seq per replica; outlives period resets, since a lost
    /// acknowledgement may be retried after the period closed.
    applied_seq: HashMap<Uuid, u64>,
    /// Number of closes so far: the index of the current period.
    generation: usize,
    applied: Vec<(usize, BoundaryDelta)>,
    locks: BTreeSet<(String, OffsetDateTime)>,
    outbox: Vec<Outboxed>,
    flush_faults: VecDeque<Fault>,
    close_faults: VecDeque<Fault>,
    claim_faults: VecDeque<Fault>,
    mark_faults: VecDeque<Fault>,
}

impl Inner {
    fn summary(&self) -> BoundaryUsageSummary {
        BoundaryUsageSummary {
            unique_workspaces: self.workspaces.len() as u64,
            unique_users: self.users.len() as u64,
            allowed_requests: self.rows.values().map(|r| r.allowed).sum(),
            denied_requests: self.rows.values().map(|r| r.denied).sum(),
            replicas: self.rows.len() as u64,
            tracked_from: self.rows.values().map(|r| r.from).min(),
            tracked_to: self.rows.values().map(|r| r.to).max(),
        }
    }
}

/// The fake store; see the module docs.
#[derive(Debug, Default)]
pub struct FakeStore {
    inner: Mutex<Inner>,
}

/// A time as the stores keep it: floored to the microsecond.
fn micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .expect("a nanosecond below 10^9")
}

/// `a + b`, refused when a counter would pass what a PostgreSQL `bigint` holds.
fn add_counter(a: u64, b: u64, field: &str) -> Result<u64, StoreError> {
    a.checked_add(b)
        .filter(|&sum| sum <= i64::MAX as u64)
        .ok_or_else(|| StoreError::invalid(format!("{field}: counter would exceed i64::MAX")))
}

fn injected(what: &str) -> StoreError {
    StoreError::unavailable(format!("injected fault: {what}"))
}

impl FakeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `flush_boundary_usage` call fails this way.
    pub fn fail_next_flush(&self, fault: Fault) {
        self.inner.lock().flush_faults.push_back(fault);
    }

    /// Drops faults no call consumed (a flush with nothing to send).
    pub fn clear_faults(&self) {
        let mut inner = self.inner.lock();
        inner.flush_faults.clear();
        inner.close_faults.clear();
    }

    /// The next `close_period` call fails this way.
    pub fn fail_next_close(&self, fault: Fault) {
        self.inner.lock().close_faults.push_back(fault);
    }

    /// The next `claim_unpublished_snapshots` call fails this way.
    pub fn fail_next_claim(&self, fault: Fault) {
        self.inner.lock().claim_faults.push_back(fault);
    }

    /// The next `mark_snapshot_published` call fails this way.
    pub fn fail_next_mark(&self, fault: Fault) {
        self.inner.lock().mark_faults.push_back(fault);
    }

    /// Who holds a claim on the snapshot, and until when.
    pub fn claim_of(&self, snapshot_id: Uuid) -> Option<(Uuid, OffsetDateTime)> {
        let inner = self.inner.lock();
        let o = inner.outbox.iter().find(|o| o.snapshot.id == snapshot_id)?;
        o.claimed_by.zip(o.claim_until)
    }

    /// Every delta applied, with the index of the period it landed in.
    pub fn applied(&self) -> Vec<(usize, BoundaryDelta)> {
        self.inner.lock().applied.clone()
    }

    /// Every snapshot written, oldest first; the i-th closed period i.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.inner
            .lock()
            .outbox
            .iter()
            .map(|o| o.snapshot.clone())
            .collect()
    }

    /// The error the last release of the snapshot's claim recorded.
    pub fn last_error(&self, snapshot_id: Uuid) -> Option<String> {
        let inner = self.inner.lock();
        inner
            .outbox
            .iter()
            .find(|o| o.snapshot.id == snapshot_id)
            .and_then(|o| o.last_error.clone())
    }
}

#[async_trait]
impl BoundaryUsageStore for FakeStore {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        let mut inner = self.inner.lock();
        let fault = inner.flush_faults.pop_front();
        if fault == Some(Fault::FailBefore) {
            return Err(injected("flush failed before applying"));
        }
        let limit = i64::MAX as u64;
        if delta.seq > limit || delta.allowed > limit || delta.denied > limit {
            return Err(StoreError::invalid("seq, allowed or denied above i64::MAX"));
        }
        let (from, to) = (micros(delta.tracked_from), micros(delta.tracked_to));
        if to < from {
            return Err(StoreError::invalid("tracked_to before tracked_from"));
        }
        // A replica without a row accepts any seq.
        let last = inner.applied_seq.get(&delta.replica_id).copied();
        let outcome = if last.is_some_and(|last| delta.seq <= last) {
            FlushOutcome::Duplicate
        } else {
            let row = inner.rows.get(&delta.replica_id).copied();
            let (allowed, denied) = row.map_or((0, 0), |r| (r.allowed, r.denied));
            let allowed = add_counter(allowed, delta.allowed, "allowed")?;
            let denied = add_counter(denied, delta.denied, "denied")?;
            inner.applied_seq.insert(delta.replica_id, delta.seq);
            inner.rows.insert(
                delta.replica_id,
                Row {
                    allowed,
                    denied,
                    from: row.map_or(from, |r| r.from.min(from)),
                    to: row.map_or(to, |r| r.to.max(to)),
                },
            );
            inner.workspaces.extend(delta.workspace_ids.iter().copied());
            inner.users.extend(delta.user_ids.iter().copied());
            let generation = inner.generation;
            inner.applied.push((generation, delta.clone()));
            FlushOutcome::Applied
        };
        match fault {
            Some(Fault::LostAck) => Err(injected("acknowledgement lost")),
            _ => Ok(outcome),
        }
    }

    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        Ok(self.inner.lock().summary())
    }

    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock();
        // A replica's counters and its seq are one row, as in the real stores.
        let row = inner.rows.remove(&replica_id).is_some();
        let seq = inner.applied_seq.remove(&replica_id).is_some();
        Ok(u64::from(row || seq))
    }
}

#[async_trait]
impl TelemetryStore for FakeStore {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        let mut inner = self.inner.lock();
        let fault = inner.close_faults.pop_front();
        if fault == Some(Fault::FailBefore) {
            return Err(injected("close failed before applying"));
        }
        if close.period.start >= close.period.end {
            return Err(StoreError::invalid("period start is not before its end"));
        }
        if inner.outbox.iter().any(|o| o.snapshot.id == close.snapshot_id) {
            return Err(StoreError::invalid(format!(
                "snapshot id {} already in the outbox",
                close.snapshot_id
            )));
        }
        let taken = inner
            .locks
            .iter()
            .any(|(event, end)| *event == close.event_type && *end >= close.period.end);
        let outcome = if taken {
            PeriodCloseOutcome::AlreadyClosed
        } else {
            inner.locks.insert((close.event_type.clone(), close.period.end));
            let snapshot = Snapshot {
                id: close.snapshot_id,
                event_type: close.event_type.clone(),
                period_start: close.period.start,
                period_end: close.period.end,
                usage: inner.summary(),
                created_at: micros(close.now),
                published_at: None,
                publish_attempts: 0,
            };
            inner.rows.clear();
            inner.workspaces.clear();
            inner.users.clear();
            inner.generation += 1;
            inner.outbox.push(Outboxed {
                snapshot: snapshot.clone(),
                claimed_by: None,
                claim_until: None,
                last_error: None,
            });
            PeriodCloseOutcome::Closed(snapshot)
        };
        match fault {
            Some(Fault::LostAck) => Err(injected("acknowledgement lost")),
            _ => Ok(outcome),
        }
    }

    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let mut inner = self.inner.lock();
        let fault = inner.claim_faults.pop_front();
        if fault == Some(Fault::FailBefore) {
            return Err(injected("claim failed before applying"));
        }
        let mut free: Vec<&mut Outboxed> = inner
            .outbox
            .iter_mut()
            .filter(|o| {
                o.snapshot.published_at.is_none()
                    && (o.claim_until.is_none_or(|until| until <= now) || o.claimed_by == Some(claimer))
            })
            .collect();
        free.sort_by_key(|o| (o.snapshot.period_end, o.snapshot.id));
        let claimed = free
            .into_iter()
            .take(limit)
            .map(|o| {
                o.claimed_by = Some(claimer);
                o.claim_until = Some(now + lease);
                o.snapshot.clone()
            })
            .collect();
        match fault {
            Some(Fault::LostAck) => Err(injected("acknowledgement lost")),
            _ => Ok(claimed),
        }
    }

    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        _claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        let fault = inner.mark_faults.pop_front();
        if fault == Some(Fault::FailBefore) {
            return Err(injected("mark failed before applying"));
        }
        // An unknown snapshot is ignored.
        let Some(entry) = inner.outbox.iter_mut().find(|o| o.snapshot.id == snapshot_id) else {
            return Ok(());
        };
        if entry.snapshot.published_at.is_none() {
            entry.snapshot.published_at = Some(micros(at));
        }
        entry.claimed_by = None;
        entry.claim_until = None;
        match fault {
            Some(Fault::LostAck) => Err(injected("acknowledgement lost")),
            _ => Ok(()),
        }
    }

    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        // Only the holder of the claim gives it back; for anyone else, or an
        // unknown snapshot, nothing changes.
        let Some(entry) = inner
            .outbox
            .iter_mut()
            .find(|o| o.snapshot.id == snapshot_id && o.claimed_by == Some(claimer))
        else {
            return Ok(());
        };
        entry.claimed_by = None;
        entry.claim_until = None;
        entry.snapshot.publish_attempts += 1;
        entry.last_error = Some(error.to_owned());
        Ok(())
    }

    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        let inner = self.inner.lock();
        let mut all: Vec<Snapshot> = inner.outbox.iter().map(|o| o.snapshot.clone()).collect();
        all.sort_by_key(|s| std::cmp::Reverse((s.period_end, s.id)));
        all.truncate(limit);
        Ok(all)
    }

    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock();
        let n = inner.locks.len();
        inner.locks.retain(|(_, end)| *end >= before);
        Ok((n - inner.locks.len()) as u64)
    }
}
