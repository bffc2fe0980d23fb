//! A small in-memory store for the tracker, snapshot and publisher unit
//! tests, holding to the semantics the conformance suite holds the real
//! stores to (written down in the `tally-adapters-memory` crate docs): each
//! (replica, seq) applied once, the period close atomic under the one mutex
//! that flushes also take, an outbox with claims and leases, unknown
//! snapshot ids ignored. Unlike the real stores it keeps times at full
//! precision. Faults can be injected: fail before applying, or apply and
//! then fail (a lost acknowledgement); and it records every applied delta
//! with its period, which no real store exposes. (The memory store itself
//! cannot stand in here: a unit test linking it would see two copies of
//! this crate's types.)

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use async_trait::async_trait;
use parking_lot::Mutex;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use crate::error::StoreError;
use crate::ports::{BoundaryUsageStore, TelemetryStore};
use crate::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
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

#[derive(Debug, Default)]
pub(crate) struct FakeStore {
    inner: Mutex<Inner>,
}

fn injected(what: &str) -> StoreError {
    StoreError::unavailable(format!("injected fault: {what}"))
}

impl FakeStore {
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
        if delta.tracked_to < delta.tracked_from {
            return Err(StoreError::invalid("tracked_to before tracked_from"));
        }
        // A replica without a row accepts any seq.
        let last = inner.applied_seq.get(&delta.replica_id).copied();
        let outcome = if last.is_some_and(|last| delta.seq <= last) {
            FlushOutcome::Duplicate
        } else {
            inner.applied_seq.insert(delta.replica_id, delta.seq);
            let row = inner.rows.entry(delta.replica_id).or_insert(Row {
                allowed: 0,
                denied: 0,
                from: delta.tracked_from,
                to: delta.tracked_to,
            });
            row.allowed += delta.allowed;
            row.denied += delta.denied;
            row.from = row.from.min(delta.tracked_from);
            row.to = row.to.max(delta.tracked_to);
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
        let rows = u64::from(inner.rows.remove(&replica_id).is_some());
        let seqs = u64::from(inner.applied_seq.remove(&replica_id).is_some());
        Ok(rows + seqs)
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
                created_at: close.now,
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
            entry.snapshot.published_at = Some(at);
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

/// The cases where this fake used to differ from the conformance suite.
#[tokio::test]
async fn agrees_with_the_conformance_suite_on_unknown_snapshots_and_reused_ids() {
    use crate::telemetry::{BOUNDARY_USAGE_EVENT, Period};
    let store = FakeStore::new();
    let (unknown, claimer) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let t0 = time::macros::datetime!(2026-11-25 10:00 UTC);
    store.mark_snapshot_published(unknown, claimer, t0).await.unwrap();
    store
        .release_snapshot_claim(unknown, claimer, "boom")
        .await
        .unwrap();
    assert_eq!(store.list_snapshots(10).await.unwrap(), vec![]);

    let close = |n: i64, id: u128| PeriodClose {
        event_type: BOUNDARY_USAGE_EVENT.into(),
        period: Period::last_ended(t0 + Duration::minutes(30 * n), Duration::minutes(30)),
        snapshot_id: Uuid::from_u128(id),
        replica_id: claimer,
        now: t0,
    };
    assert!(matches!(
        store.close_period(&close(1, 10)).await.unwrap(),
        PeriodCloseOutcome::Closed(_)
    ));
    let reused = store.close_period(&close(2, 10)).await;
    assert!(matches!(reused, Err(StoreError::Invalid { .. })), "{reused:?}");
    assert!(matches!(
        store.close_period(&close(2, 11)).await.unwrap(),
        PeriodCloseOutcome::Closed(_)
    ));

    // Someone else's claim is not given back, and no attempt is counted.
    let claimed = store
        .claim_unpublished_snapshots(claimer, t0, Duration::minutes(5), 1)
        .await
        .unwrap();
    store
        .release_snapshot_claim(claimed[0].id, unknown, "not mine")
        .await
        .unwrap();
    assert_eq!(store.last_error(claimed[0].id), None);
}
