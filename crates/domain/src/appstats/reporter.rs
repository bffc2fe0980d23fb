//! The [`Reporter`] that writes through the store port.

use std::sync::Arc;

use async_trait::async_trait;
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StatsReport;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::ports::{AppStatsStore, AppStatsWrite, Reporter};

/// Default number of rows per database statement.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// Merges duplicate rows, computes each touched workspace's last-used time,
/// and hands everything to the store as one atomic write.
#[derive(Debug)]
pub struct StoreReporter<S> {
    store: S,
    batch_size: usize,
    clock: Arc<dyn Clock>,
}

impl<S> StoreReporter<S> {
    /// # Panics
    /// If `batch_size` is zero.
    pub fn new(store: S, batch_size: usize, clock: Arc<dyn Clock>) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        Self {
            store,
            batch_size,
            clock,
        }
    }
}

#[async_trait]
impl<S: AppStatsStore> Reporter for StoreReporter<S> {
    async fn report(&self, reports: &[StatsReport]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let write = self.prepare(reports)?;
        self.store.write_app_stats(&write).await
    }
}

impl<S> StoreReporter<S> {
    /// The one write for `reports`: duplicates of (user, agent, session)
    /// merged with the store's rule ([`StatsReport::merge_forward`], so
    /// their order does not matter), and every touched
    /// workspace once, last used at its latest end time but never later
    /// than now (a rolled-up record ends at the end of its window).
    fn prepare(&self, reports: &[StatsReport]) -> Result<AppStatsWrite, StoreError> {
        let hasher = foldhash::fast::RandomState::default();
        let mut rows: Vec<StatsReport> = Vec::with_capacity(reports.len());
        let mut by_key: HashMap<(Uuid, Uuid, Uuid), usize, _> =
            HashMap::with_capacity_and_hasher(reports.len(), hasher.clone());
        let mut workspaces: HashMap<Uuid, usize, _> = HashMap::with_hasher(hasher);
        let mut last_used: Vec<(Uuid, OffsetDateTime)> = Vec::new();
        for report in reports {
            if report.session_ended_at.is_none() {
                return Err(StoreError::invalid(format!(
                    "session_ended_at: app stats row for session {} has no end time",
                    report.session_id
                )));
            }
            match by_key.entry(report.row_key()) {
                Entry::Occupied(slot) => rows[*slot.get()].merge_forward(report),
                Entry::Vacant(slot) => {
                    slot.insert(rows.len());
                    rows.push(report.clone());
                }
            }
        }
        for row in &rows {
            let end = row.session_ended_at.expect("checked above");
            match workspaces.entry(row.workspace_id) {
                Entry::Occupied(slot) => {
                    let latest = &mut last_used[*slot.get()].1;
                    *latest = (*latest).max(end);
                }
                Entry::Vacant(slot) => {
                    slot.insert(last_used.len());
                    last_used.push((row.workspace_id, end));
                }
            }
        }
        let now = self.clock.now();
        for (_, at) in &mut last_used {
            *at = (*at).min(now);
        }
        Ok(AppStatsWrite {
            rows,
            batch_size: self.batch_size,
            last_used,
        })
    }
}

#[cfg(test)]
mod tests;
