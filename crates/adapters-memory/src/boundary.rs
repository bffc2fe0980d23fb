//! Boundary usage, period locks and the snapshot outbox, under one lock.

use std::cmp::Reverse;

use async_trait::async_trait;
use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::error::StoreError;
use tally_domain::ports::{BoundaryUsageStore, TelemetryStore};
use tally_domain::telemetry::{PeriodClose, PeriodCloseOutcome, Snapshot};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::budget::BOUNDARY_ID_BYTES;
use crate::{Map, MemoryStore, PG_BIGINT_MAX, Set, pg_time, pg_time_ceil};

#[derive(Debug, Default)]
pub(crate) struct TelemetryState {
    replicas: Map<Uuid, ReplicaRow>,
    /// Distinct ids of the current period, across replicas.
    workspaces: Set<Uuid>,
    users: Set<Uuid>,
    /// Period ends locked per event type, with the replica that took each.
    locks: Map<String, Map<OffsetDateTime, Uuid>>,
    outbox: Map<Uuid, OutboxEntry>,
}

#[derive(Debug, Clone, Copy)]
struct ReplicaRow {
    allowed: u64,
    denied: u64,
    last_seq: u64,
    /// Tracking range of the deltas applied in the current period; `None`
    /// when the replica has applied none since the last close.
    tracked: Option<(OffsetDateTime, OffsetDateTime)>,
}

#[derive(Debug)]
struct OutboxEntry {
    snapshot: Snapshot,
    claimed_by: Option<Uuid>,
    claimed_until: Option<OffsetDateTime>,
    last_error: Option<String>,
}

fn validate_delta(delta: &BoundaryDelta) -> Result<(), StoreError> {
    let too_big = |field: &str| {
        Err(StoreError::invalid(format!(
            "boundary delta of replica {}: {field}: larger than 9223372036854775807",
            delta.replica_id
        )))
    };
    if delta.seq > PG_BIGINT_MAX {
        return too_big("seq");
    }
    if delta.allowed > PG_BIGINT_MAX {
        return too_big("allowed");
    }
    if delta.denied > PG_BIGINT_MAX {
        return too_big("denied");
    }
    if pg_time(delta.tracked_to) < pg_time(delta.tracked_from) {
        return Err(StoreError::invalid(format!(
            "boundary delta of replica {}: tracked_to: must not be before tracked_from",
            delta.replica_id
        )));
    }
    Ok(())
}

/// `a + b` if it fits a PostgreSQL `bigint`.
fn add_counter(a: u64, b: u64, field: &str, replica: Uuid) -> Result<u64, StoreError> {
    a.checked_add(b)
        .filter(|&sum| sum <= PG_BIGINT_MAX)
        .ok_or_else(|| {
            StoreError::invalid(format!(
                "boundary usage of replica {replica}: {field}: counter would exceed 9223372036854775807"
            ))
        })
}

impl TelemetryState {
    fn summary(&self) -> BoundaryUsageSummary {
        let mut summary = BoundaryUsageSummary {
            unique_workspaces: self.workspaces.len() as u64,
            unique_users: self.users.len() as u64,
            ..BoundaryUsageSummary::default()
        };
        for row in self.replicas.values() {
            // Counters fit i64 each; the sum over replicas may not, as in SQL's numeric sum.
            summary.allowed_requests = summary.allowed_requests.saturating_add(row.allowed);
            summary.denied_requests = summary.denied_requests.saturating_add(row.denied);
            if let Some((from, to)) = row.tracked {
                summary.replicas += 1;
                summary.tracked_from = Some(summary.tracked_from.map_or(from, |f| f.min(from)));
                summary.tracked_to = Some(summary.tracked_to.map_or(to, |t| t.max(to)));
            }
        }
        summary
    }

    /// Deletes published snapshots whose period ended before `before`, at
    /// most `max_batch` of period ends past the oldest of them.
    pub(crate) fn purge_published(&mut self, before: OffsetDateTime, max_batch: Duration) -> u64 {
        let published_end = |e: &OutboxEntry| e.snapshot.published_at.map(|_| e.snapshot.period_end);
        let Some(oldest) = self.outbox.values().filter_map(published_end).min() else {
            return 0;
        };
        let cut = pg_time_ceil(before).min(oldest + max_batch);
        let len = self.outbox.len();
        self.outbox
            .retain(|_, e| published_end(e).is_none_or(|end| end >= cut));
        (len - self.outbox.len()) as u64
    }

    /// The bytes the distinct ids of the current period are charged.
    fn id_bytes(&self) -> u64 {
        BOUNDARY_ID_BYTES * (self.workspaces.len() + self.users.len()) as u64
    }

    /// Ids of `delta` the period does not hold yet (each counted once).
    fn new_ids(&self, delta: &BoundaryDelta) -> u64 {
        let workspaces: Set<Uuid> = delta
            .workspace_ids
            .iter()
            .filter(|id| !self.workspaces.contains(*id))
            .copied()
            .collect();
        let users: Set<Uuid> = delta
            .user_ids
            .iter()
            .filter(|id| !self.users.contains(*id))
            .copied()
            .collect();
        (workspaces.len() + users.len()) as u64
    }

    fn reset_period(&mut self) {
        for row in self.replicas.values_mut() {
            row.allowed = 0;
            row.denied = 0;
            row.tracked = None;
        }
        self.workspaces.clear();
        self.users.clear();
    }
}

#[async_trait]
impl BoundaryUsageStore for MemoryStore {
    async fn flush_boundary_usage(&self, delta: &BoundaryDelta) -> Result<FlushOutcome, StoreError> {
        validate_delta(delta)?;
        let (from, to) = (pg_time(delta.tracked_from), pg_time(delta.tracked_to));
        let mut state = self.telemetry.lock();
        let row = state.replicas.get(&delta.replica_id).copied();
        let updated = match row {
            Some(row) if delta.seq <= row.last_seq => return Ok(FlushOutcome::Duplicate),
            Some(row) => ReplicaRow {
                allowed: add_counter(row.allowed, delta.allowed, "allowed", delta.replica_id)?,
                denied: add_counter(row.denied, delta.denied, "denied", delta.replica_id)?,
                last_seq: delta.seq,
                tracked: Some(row.tracked.map_or((from, to), |(f, t)| (f.min(from), t.max(to)))),
            },
            None => ReplicaRow {
                allowed: delta.allowed,
                denied: delta.denied,
                last_seq: delta.seq,
                tracked: Some((from, to)),
            },
        };
        // Only the period's distinct ids grow with the load; the rest is a
        // row per replica.
        let new_ids = state.new_ids(delta);
        self.budget.take(new_ids * BOUNDARY_ID_BYTES, 0, || {
            format!("a boundary delta with {new_ids} new ids")
        })?;
        state.replicas.insert(delta.replica_id, updated);
        state.workspaces.extend(delta.workspace_ids.iter().copied());
        state.users.extend(delta.user_ids.iter().copied());
        Ok(FlushOutcome::Applied)
    }

    async fn boundary_usage_summary(&self) -> Result<BoundaryUsageSummary, StoreError> {
        Ok(self.telemetry.lock().summary())
    }

    async fn delete_boundary_usage_by_replica(&self, replica_id: Uuid) -> Result<u64, StoreError> {
        Ok(u64::from(
            self.telemetry.lock().replicas.remove(&replica_id).is_some(),
        ))
    }
}

#[async_trait]
impl TelemetryStore for MemoryStore {
    async fn close_period(&self, close: &PeriodClose) -> Result<PeriodCloseOutcome, StoreError> {
        let (start, end) = (pg_time(close.period.start), pg_time(close.period.end));
        if start >= end {
            return Err(StoreError::invalid(format!(
                "period: start {start} is not before end {end}"
            )));
        }
        let mut state = self.telemetry.lock();
        let taken = state
            .locks
            .get(&close.event_type)
            .is_some_and(|ends| ends.keys().any(|&locked| locked >= end));
        if taken {
            return Ok(PeriodCloseOutcome::AlreadyClosed);
        }
        if state.outbox.contains_key(&close.snapshot_id) {
            return Err(StoreError::invalid(format!(
                "snapshot_id: {} is already in the outbox",
                close.snapshot_id
            )));
        }
        let snapshot = Snapshot {
            id: close.snapshot_id,
            event_type: close.event_type.clone(),
            period_start: start,
            period_end: end,
            usage: state.summary(),
            created_at: pg_time(close.now),
            published_at: None,
            publish_attempts: 0,
        };
        state
            .locks
            .entry(close.event_type.clone())
            .or_default()
            .insert(end, close.replica_id);
        self.budget.give_back(state.id_bytes());
        state.reset_period();
        state.outbox.insert(
            snapshot.id,
            OutboxEntry {
                snapshot: snapshot.clone(),
                claimed_by: None,
                claimed_until: None,
                last_error: None,
            },
        );
        Ok(PeriodCloseOutcome::Closed(snapshot))
    }

    async fn claim_unpublished_snapshots(
        &self,
        claimer: Uuid,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let now = pg_time(now);
        let until = pg_time(now + lease);
        let mut state = self.telemetry.lock();
        let mut claimable: Vec<&mut OutboxEntry> = state
            .outbox
            .values_mut()
            .filter(|e| {
                e.snapshot.published_at.is_none()
                    && (e.claimed_until.is_none_or(|u| u <= now) || e.claimed_by == Some(claimer))
            })
            .collect();
        claimable.sort_by_key(|e| (e.snapshot.period_end, e.snapshot.id));
        claimable.truncate(limit);
        Ok(claimable
            .into_iter()
            .map(|e| {
                e.claimed_by = Some(claimer);
                e.claimed_until = Some(until);
                e.snapshot.clone()
            })
            .collect())
    }

    async fn mark_snapshot_published(
        &self,
        snapshot_id: Uuid,
        _claimer: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if let Some(entry) = self.telemetry.lock().outbox.get_mut(&snapshot_id) {
            entry.snapshot.published_at.get_or_insert(pg_time(at));
            entry.claimed_by = None;
            entry.claimed_until = None;
        }
        Ok(())
    }

    async fn release_snapshot_claim(
        &self,
        snapshot_id: Uuid,
        claimer: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.telemetry.lock();
        if let Some(entry) = state.outbox.get_mut(&snapshot_id)
            && entry.claimed_by == Some(claimer)
        {
            entry.claimed_by = None;
            entry.claimed_until = None;
            entry.snapshot.publish_attempts = entry.snapshot.publish_attempts.saturating_add(1);
            entry.last_error = Some(error.to_owned());
        }
        Ok(())
    }

    async fn list_snapshots(&self, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        let state = self.telemetry.lock();
        let mut snapshots: Vec<&Snapshot> = state.outbox.values().map(|e| &e.snapshot).collect();
        snapshots.sort_by_key(|s| Reverse((s.period_end, s.id)));
        Ok(snapshots.into_iter().take(limit).cloned().collect())
    }

    async fn prune_telemetry_locks(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        // Stored ends are whole microseconds: `< before` is `< ceil(before)`.
        let before = pg_time_ceil(before);
        let mut state = self.telemetry.lock();
        let mut pruned = 0;
        for ends in state.locks.values_mut() {
            let was = ends.len();
            ends.retain(|&end, _| end >= before);
            pruned += (was - ends.len()) as u64;
        }
        state.locks.retain(|_, ends| !ends.is_empty());
        Ok(pruned)
    }
}

impl MemoryStore {
    /// The error of the last failed publish of a snapshot, if any.
    pub fn snapshot_last_error(&self, snapshot_id: Uuid) -> Option<String> {
        self.telemetry
            .lock()
            .outbox
            .get(&snapshot_id)
            .and_then(|e| e.last_error.clone())
    }
}
