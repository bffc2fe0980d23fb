//! The [`Reporter`] that writes through the store port.
//!
//! CONTRACT (stub, to be implemented): public API below is fixed; bodies are not.

use std::sync::Arc;

use async_trait::async_trait;

use super::StatsReport;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::ports::{AppStatsStore, Reporter};

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
        let _ = (reports, &self.store, self.batch_size, &self.clock);
        todo!("issue 2: store reporter")
    }
}
