//! App stat rows, last-used times and reads of the stored rows.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tally_domain::appstats::StatsReport;
use tally_domain::error::StoreError;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, InsightsStore, TimeRange};
use tally_domain::usage::minutes::hour_of;
use tally_domain::usage::rollup::HourlyRollup;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::budget::{LAST_USED_BYTES, raw_row_bytes, rollup_reservation};
use crate::{Map, MemoryStore, PG_BIGINT_MAX, Set, pg_time, pg_time_ceil};

pub(crate) type RowKey = (Uuid, Uuid, Uuid);

#[derive(Debug, Default)]
pub(crate) struct AppsState {
    /// Keyed by (user, agent, session); every row has an end time.
    pub(crate) rows: Map<RowKey, StatsReport>,
    /// Row keys by the hour their session started (a start never changes).
    pub(crate) by_start_hour: BTreeMap<i64, Vec<RowKey>>,
    pub(crate) rollup: HourlyRollup,
    pub(crate) last_used: Map<Uuid, OffsetDateTime>,
}

impl AppsState {
    /// What `write` adds to the store's budget, before it is applied: the
    /// new rows and workspaces, and the room reserved for the rollup rows
    /// the hours it covers anew may need.
    fn cost(&self, write: &AppStatsWrite) -> (u64, u64) {
        let (mut held, mut reserve) = (0, 0);
        for row in &write.rows {
            let end = pg_time(row.session_ended_at.unwrap_or(row.session_started_at));
            match self.rows.get(&row.row_key()) {
                // Only an end moved forward covers more hours.
                Some(stored) => {
                    let stored_end = stored.session_ended_at.unwrap_or(stored.session_started_at);
                    reserve += rollup_reservation(&stored.slug_or_port, hour_of(stored_end) + 1, end);
                }
                None => {
                    held += raw_row_bytes(row);
                    let start = pg_time(row.session_started_at);
                    reserve += rollup_reservation(&row.slug_or_port, hour_of(start), end);
                }
            }
        }
        let mut new_workspaces: Set<Uuid> = Set::default();
        for (workspace, _) in &write.last_used {
            if !self.last_used.contains_key(workspace) {
                new_workspaces.insert(*workspace);
            }
        }
        held += LAST_USED_BYTES * new_workspaces.len() as u64;
        (held, reserve)
    }
}

/// Checks the whole write before anything is applied, so a refusal leaves
/// the store untouched.
fn validate(write: &AppStatsWrite) -> Result<(), StoreError> {
    if write.batch_size == 0 {
        return Err(StoreError::invalid("batch_size: must be positive, got 0"));
    }
    let mut first_of: Map<RowKey, usize> = Map::default();
    for (i, row) in write.rows.iter().enumerate() {
        // PostgreSQL cannot upsert one key twice in a statement; refuse it
        // here too so both stores agree (the reporter merges duplicates).
        if let Some(first) = first_of.insert(row.row_key(), i) {
            let (user, agent, session) = row.row_key();
            return Err(StoreError::invalid(format!(
                "rows {first} and {i} have the same (user, agent, session) = ({user}, {agent}, {session}); \
                 merge them before writing"
            )));
        }
        let bad = |field: &str, reason: &str| {
            Err(StoreError::invalid(format!(
                "row {i} (session {}): {field}: {reason}",
                row.session_id
            )))
        };
        match row.session_ended_at {
            None => return bad("session_ended_at", "must be set on a stored row"),
            Some(end) if pg_time(end) < pg_time(row.session_started_at) => {
                return bad("session_ended_at", "must not be before session_started_at");
            }
            Some(_) => {}
        }
        if row.requests > PG_BIGINT_MAX {
            return bad("requests", "larger than 9223372036854775807");
        }
        // A row stands for at least one session (a rolled-up record for
        // every session folded into it).
        if row.sessions == 0 {
            return bad("sessions", "must be at least 1");
        }
        if row.sessions > PG_BIGINT_MAX {
            return bad("sessions", "larger than 9223372036854775807");
        }
    }
    Ok(())
}

/// The row as the store keeps it.
fn stored(row: &StatsReport) -> StatsReport {
    StatsReport {
        session_started_at: pg_time(row.session_started_at),
        session_ended_at: row.session_ended_at.map(pg_time),
        ..row.clone()
    }
}

/// What [`StatsReport::merge_forward`] reads of an incoming row, stored
/// precision, without copying the slug (the existing row keeps its own).
fn merged_columns(row: &StatsReport) -> StatsReport {
    StatsReport {
        user_id: row.user_id,
        workspace_id: row.workspace_id,
        agent_id: row.agent_id,
        access_method: row.access_method,
        slug_or_port: String::new(),
        session_id: row.session_id,
        session_started_at: pg_time(row.session_started_at),
        session_ended_at: row.session_ended_at.map(pg_time),
        requests: row.requests,
        sessions: row.sessions,
    }
}

/// The row's session as a closed interval (rows always have an end).
fn span(row: &StatsReport) -> (OffsetDateTime, OffsetDateTime) {
    let start = row.session_started_at;
    (start, row.session_ended_at.unwrap_or(start))
}

/// The range with its bounds rounded up to whole microseconds: filtering
/// stored times with it is filtering with the exact range.
fn pg_range(range: TimeRange) -> TimeRange {
    TimeRange {
        from: pg_time_ceil(range.from),
        to: pg_time_ceil(range.to),
    }
}

#[async_trait]
impl AppStatsStore for MemoryStore {
    async fn write_app_stats(&self, write: &AppStatsWrite) -> Result<(), StoreError> {
        validate(write)?;
        let mut state = self.apps.write();
        let (held, reserve) = state.cost(write);
        self.budget.take(held, reserve, || {
            format!("a write of {} app stat rows", write.rows.len())
        })?;
        // Batches only matter to PostgreSQL's statement size; applying rows
        // in order gives the same result as applying batch after batch.
        let state = &mut *state;
        state.rows.reserve(write.rows.len());
        // The start hours this write touches, for the next rollup tick (as
        // PostgreSQL's marker rows); a write spans few distinct hours.
        let mut touched: Vec<i64> = Vec::new();
        for row in &write.rows {
            // An existing row keeps its start: that is the hour to mark.
            let hour = match state.rows.entry(row.row_key()) {
                // End and requests each move forward on their own, as in
                // PostgreSQL's upsert (docs/rules.md#row-merge).
                hashbrown::hash_map::Entry::Occupied(mut existing) => {
                    existing.get_mut().merge_forward(&merged_columns(row));
                    hour_of(existing.get().session_started_at)
                }
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    let hour = hour_of(slot.insert(stored(row)).session_started_at);
                    state.by_start_hour.entry(hour).or_default().push(row.row_key());
                    hour
                }
            };
            if !touched.contains(&hour) {
                touched.push(hour);
            }
        }
        for hour in touched {
            state.rollup.mark(hour);
        }
        for &(workspace, at) in &write.last_used {
            let at = pg_time(at);
            state
                .last_used
                .entry(workspace)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        Ok(())
    }
}

#[async_trait]
impl InsightsStore for MemoryStore {
    async fn app_stats(&self, range: TimeRange, limit: usize) -> Result<Vec<StatsReport>, StoreError> {
        let range = pg_range(range);
        let mut rows: Vec<StatsReport> = {
            let state = self.apps.read();
            state
                .rows
                .values()
                .filter(|row| {
                    let (start, end) = span(row);
                    range.overlaps(start, end)
                })
                .cloned()
                .collect()
        };
        let order = |r: &StatsReport| (r.session_started_at, r.session_id, r.user_id, r.agent_id);
        if limit < rows.len() {
            // Only the first `limit` need sorting.
            rows.select_nth_unstable_by_key(limit, order);
            rows.truncate(limit);
        }
        rows.sort_unstable_by_key(order);
        Ok(rows)
    }

    async fn workspace_last_used(&self, workspace_id: Uuid) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.apps.read().last_used.get(&workspace_id).copied())
    }
}
