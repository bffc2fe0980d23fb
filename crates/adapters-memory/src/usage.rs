//! The usage rollup, its reads, the raw export and retention, in memory.
//!
//! The same rules as PostgreSQL's (`tally_domain::usage::rollup`): writes
//! mark the start hours they touch, a tick rolls those hours up again from
//! the raw rows, reads answer from the rollup only (app usage, active users
//! and user activity through `tally_domain::usage::packed`, as PostgreSQL
//! does).

use async_trait::async_trait;
use tally_domain::appstats::StatsReport;
use tally_domain::error::StoreError;
use tally_domain::ports::{TimeRange, UsageStore};
use tally_domain::usage::minutes::hour_of;
use tally_domain::usage::packed;
use tally_domain::usage::rollup::contributions;
use tally_domain::usage::{
    ActiveUsers, AppUsageSeries, Intervals, PurgeOutcome, RetentionPolicy, TickOutcome, UserActivity,
};
use time::OffsetDateTime;

use crate::appstats::AppsState;
use crate::budget::{Budget, raw_row_bytes, rollup_bytes};
use crate::{MemoryStore, pg_time_ceil};

/// Whole hours of a batch limit, at least one.
pub(crate) fn batch_hours(policy: &RetentionPolicy) -> i64 {
    policy.max_batch.whole_hours().max(1)
}

impl AppsState {
    /// Rolls up the dirty start hours; charges the rollup rows created and
    /// gives back the room the writes reserved for them.
    pub(crate) fn tick(&mut self, budget: &Budget) -> TickOutcome {
        let before = rollup_bytes(&self.rollup);
        let outcome = self.roll_up_dirty();
        budget.settle_tick(rollup_bytes(&self.rollup) - before);
        outcome
    }

    fn roll_up_dirty(&mut self) -> TickOutcome {
        let mut outcome = TickOutcome::default();
        for hour in self.rollup.take_dirty() {
            let keys = self
                .by_start_hour
                .get(&hour)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let rows = keys.iter().filter_map(|k| self.rows.get(k));
            outcome.rows_changed += self.rollup.apply(hour, &contributions(rows));
            outcome.start_hours += 1;
        }
        outcome
    }

    /// Deletes raw rows of whole start hours before `horizon`, at most
    /// `max_hours` of them from the oldest row held at or after where the
    /// last round stopped (empty history is skipped, not walked); the hours
    /// deleted become final.
    fn purge_raw(&mut self, horizon: i64, max_hours: i64, budget: &Budget) -> u64 {
        let frozen = self.rollup.frozen_before().unwrap_or(i64::MIN);
        let oldest = (frozen < horizon)
            .then(|| self.by_start_hour.range(frozen..horizon).next().map(|(&h, _)| h))
            .flatten();
        let lower = oldest.unwrap_or(horizon);
        self.rollup
            .freeze_before(horizon.min(lower.saturating_add(max_hours)));
        let cut = self.rollup.frozen_before().unwrap_or(horizon);
        // Late rows of hours already final lie below the cut and go too.
        let keep = self.by_start_hour.split_off(&cut);
        let gone = std::mem::replace(&mut self.by_start_hour, keep);
        let (mut deleted, mut freed) = (0, 0);
        for key in gone.values().flatten() {
            if let Some(row) = self.rows.remove(key) {
                deleted += 1;
                freed += raw_row_bytes(&row);
            }
        }
        budget.give_back(freed);
        deleted
    }

    /// Deletes rollup rows as [`purge_before`](tally_domain::usage::rollup::HourlyRollup::purge_before) does and gives
    /// their charges back.
    fn purge_rollup(&mut self, horizon: i64, max_hours: i64, budget: &Budget) -> u64 {
        let before = rollup_bytes(&self.rollup);
        let deleted = self.rollup.purge_before(horizon, max_hours);
        budget.give_back(before - rollup_bytes(&self.rollup));
        deleted
    }
}

/// Rows whose session started in `range`, by start hour, start, then key.
fn rows_started_in(state: &AppsState, range: TimeRange) -> Vec<StatsReport> {
    let (from, to) = (pg_time_ceil(range.from), pg_time_ceil(range.to));
    let mut rows: Vec<StatsReport> = state
        .by_start_hour
        .range(hour_of(from)..=hour_of(to))
        .flat_map(|(_, keys)| keys.iter().filter_map(|k| state.rows.get(k)))
        .filter(|r| r.session_started_at >= from && r.session_started_at < to)
        .cloned()
        .collect();
    rows.sort_by_key(|r| (r.session_started_at, r.user_id, r.agent_id, r.session_id));
    rows
}

fn whole_minutes(range: TimeRange) -> Result<Intervals, StoreError> {
    Intervals::single(range).map_err(|e| StoreError::invalid(format!("range: {e}")))
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn tick_usage_rollup(&self) -> Result<TickOutcome, StoreError> {
        Ok(self.apps.write().tick(&self.budget))
    }

    // Every read goes through the packed day rows PostgreSQL keeps, packed
    // here per read: one combining code for both stores.
    async fn app_usage_by_interval(&self, intervals: &Intervals) -> Result<Vec<AppUsageSeries>, StoreError> {
        let state = self.apps.read();
        Ok(packed::app_usage_from_hours(
            intervals,
            state.rollup.hour_span(),
            |from, to| state.rollup.rows(from, to),
        ))
    }

    async fn active_users(&self, intervals: &Intervals) -> Result<ActiveUsers, StoreError> {
        let state = self.apps.read();
        Ok(packed::active_users_from_hours(
            intervals,
            state.rollup.hour_span(),
            |from, to| state.rollup.rows(from, to),
        ))
    }

    async fn user_activity(&self, range: TimeRange, limit: usize) -> Result<Vec<UserActivity>, StoreError> {
        let intervals = whole_minutes(range)?;
        let state = self.apps.read();
        Ok(packed::user_activity_from_hours(
            &intervals,
            state.rollup.hour_span(),
            |from, to| state.rollup.rows(from, to),
            limit,
        ))
    }

    async fn app_stats_started_in(&self, range: TimeRange) -> Result<Vec<StatsReport>, StoreError> {
        Ok(rows_started_in(&self.apps.read(), range))
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        policy: &RetentionPolicy,
    ) -> Result<PurgeOutcome, StoreError> {
        let max_hours = batch_hours(policy);
        let mut outcome = PurgeOutcome::default();
        {
            let mut state = self.apps.write();
            // Nothing is deleted before the rollup has taken it in.
            state.tick(&self.budget);
            outcome.app_stats_rows =
                state.purge_raw(hour_of(now - policy.app_stats), max_hours, &self.budget);
            outcome.usage_rows = state.purge_rollup(hour_of(now - policy.usage), max_hours, &self.budget);
        }
        let before = now - policy.snapshots;
        outcome.snapshots = self
            .telemetry
            .lock()
            .purge_published(before, policy.max_batch.max(time::Duration::HOUR));
        Ok(outcome)
    }
}
