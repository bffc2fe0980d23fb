//! The collector service around [`Rollup`]: concurrent collect, flush loop,
//! backlog with backoff, memory cap, final flush on close.
//!
//! CONTRACT (stub, to be implemented): public API below is fixed; bodies are not.

use std::sync::Arc;

use time::Duration;

use super::StatsReport;
use super::rollup::{DEFAULT_ROLLUP_WINDOW, Rollup};
use crate::clock::Clock;
use crate::error::StoreError;
use crate::ports::Reporter;

pub const DEFAULT_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Default cap on sessions held in memory plus rows waiting in the backlog.
pub const DEFAULT_MAX_BUFFERED: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub rollup_window: Duration,
    pub report_interval: std::time::Duration,
    /// Cap on tracked sessions plus backlog rows; reports beyond it are
    /// dropped and counted.
    pub max_buffered: usize,
    /// First retry delay after a failed flush; doubles up to `report_interval`.
    pub retry_min_delay: std::time::Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            rollup_window: DEFAULT_ROLLUP_WINDOW,
            report_interval: DEFAULT_REPORT_INTERVAL,
            max_buffered: DEFAULT_MAX_BUFFERED,
            retry_min_delay: std::time::Duration::from_secs(1),
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectorStats {
    pub collected: u64,
    pub rows_reported: u64,
    pub dropped: u64,
    pub failed_flushes: u64,
    pub tracked_sessions: usize,
    pub backlog_rows: usize,
    pub last_flush_seconds: f64,
}

#[derive(Debug)]
pub struct StatsCollector {
    config: CollectorConfig,
    reporter: Arc<dyn Reporter>,
    clock: Arc<dyn Clock>,
    rollup: parking_lot::Mutex<Rollup>,
}

impl std::fmt::Debug for dyn Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl StatsCollector {
    pub fn new(config: CollectorConfig, reporter: Arc<dyn Reporter>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let rollup = parking_lot::Mutex::new(Rollup::new(config.rollup_window));
        Arc::new(Self {
            config,
            reporter,
            clock,
            rollup,
        })
    }

    /// Takes a report; never waits on I/O. Callable from many tasks.
    pub fn collect(&self, report: StatsReport) {
        let _ = (report, &self.config, &self.reporter, &self.clock, &self.rollup);
        todo!("issue 2: collect")
    }

    /// Reports the backlog, then one rollup. On failure the rows become the
    /// backlog and the error is returned.
    pub async fn flush(&self) -> Result<(), StoreError> {
        todo!("issue 2: flush")
    }

    /// Starts the background loop: a flush every report interval, retries
    /// with backoff after failures, until [`StatsCollector::close`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        todo!("issue 2: spawn")
    }

    /// Stops the loop and flushes once more, open sessions included with the
    /// close time as provisional end.
    pub async fn close(&self) -> Result<(), StoreError> {
        todo!("issue 2: close")
    }

    pub fn stats(&self) -> CollectorStats {
        todo!("issue 2: stats")
    }
}
