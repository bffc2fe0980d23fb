//! The collector service around [`Rollup`]: concurrent collect, flush loop,
//! backlog with backoff, memory cap, final flush on close.
//!
//! `collect` appends to an inbox under a short lock and never awaits; the
//! next flush applies the inbox to the rollup in one batch. Flushes are
//! serialized by an async lock held across the report; the state lock is
//! never held while the reporter runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use time::Duration;
use tokio::sync::watch;

use super::StatsReport;
use super::rollup::{Collected, DEFAULT_ROLLUP_WINDOW, Rollup};
use crate::clock::Clock;
use crate::error::{Report, StoreError};
use crate::ports::Reporter;
use crate::retry::Backoff;

/// Default time between two flushes.
pub const DEFAULT_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Default cap on sessions held in memory plus rows waiting in the backlog.
pub const DEFAULT_MAX_BUFFERED: usize = 1_000_000;

/// Settings of a [`StatsCollector`]; `Default` gives the documented
/// defaults.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Sessions no longer than this are rolled up ([`Rollup`]).
    pub rollup_window: Duration,
    /// Time between two flushes of the background loop.
    pub report_interval: std::time::Duration,
    /// Cap on tracked sessions plus backlog rows; reports of new sessions
    /// beyond it are dropped and counted. Admission reserves room for the
    /// worst case, so the cap holds even after failed flushes: a live
    /// session takes two units (itself and the row it may leave in the
    /// backlog), a session kept to recognise replays one, a group one (its
    /// rolled-up row), a backlog row one, and a report queued for the next
    /// flush three (it may open a session in a new group). See
    /// [`Rollup::reserved_units`].
    pub max_buffered: usize,
    /// First retry delay after a failed flush (plus jitter); doubles up to
    /// `report_interval` (see [`Backoff`]).
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
    /// Reports taken (including replays and those queued for the next flush).
    pub collected: u64,
    /// Rows delivered to the reporter.
    pub rows_reported: u64,
    /// Reports refused by the memory cap.
    pub dropped: u64,
    /// Flushes whose reporter call failed.
    pub failed_flushes: u64,
    /// Sessions held, plus reports queued for the next flush (each may be a
    /// new session).
    pub tracked_sessions: usize,
    /// Rows waiting in the backlog or being reported.
    pub backlog_rows: usize,
    /// How long the last flush took, reporter call included.
    pub last_flush_seconds: f64,
}

/// Collects app session reports from many tasks and flushes the rollup's
/// rows to a [`Reporter`]: every report interval once [`spawned`], on
/// demand, and once more when closed.
///
/// [`spawned`]: StatsCollector::spawn
pub struct StatsCollector {
    config: CollectorConfig,
    reporter: Arc<dyn Reporter>,
    clock: Arc<dyn Clock>,
    /// Reports not yet applied to the rollup. `collect` only appends here,
    /// so its critical section is a push; flushes apply it in one batch.
    inbox: Mutex<Vec<StatsReport>>,
    /// Upper bound of the state's [`Rollup::reserved_units`] plus pending
    /// rows, plus three units for each report taken from the inbox and not
    /// yet applied. Written with the state lock held.
    reserved: AtomicUsize,
    state: Mutex<State>,
    /// Serializes flushes; held across the reporter call.
    flushing: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
}

/// A report not yet applied may start a new session in a new group.
const UNITS_PER_QUEUED_REPORT: usize = 3;

#[derive(Debug)]
struct State {
    rollup: Rollup,
    /// Rows of a failed report, retried whole before anything new.
    backlog: Vec<StatsReport>,
    /// Rows in the backlog or being reported right now: they count against
    /// the cap until delivered.
    pending_rows: usize,
    /// The last applied inbox, emptied, to swap in with its capacity.
    spare: Vec<StatsReport>,
    collected: u64,
    rows_reported: u64,
    dropped: u64,
    failed_flushes: u64,
    last_flush_seconds: f64,
}

impl State {
    fn units(&self) -> usize {
        self.rollup.reserved_units() + self.pending_rows
    }
}

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCollector")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StatsCollector {
    /// A collector that reports to `reporter` and reads `now` from `clock`.
    /// Nothing runs until [`StatsCollector::spawn`] or a call to
    /// [`StatsCollector::flush`].
    pub fn new(config: CollectorConfig, reporter: Arc<dyn Reporter>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let state = Mutex::new(State {
            rollup: Rollup::new(config.rollup_window),
            backlog: Vec::new(),
            pending_rows: 0,
            spare: Vec::new(),
            collected: 0,
            rows_reported: 0,
            dropped: 0,
            failed_flushes: 0,
            last_flush_seconds: 0.0,
        });
        Arc::new(Self {
            config,
            reporter,
            clock,
            inbox: Mutex::new(Vec::new()),
            reserved: AtomicUsize::new(0),
            state,
            flushing: tokio::sync::Mutex::new(()),
            stop: watch::Sender::new(false),
        })
    }

    /// Takes a report; never waits on I/O. Callable from many tasks.
    pub fn collect(&self, report: StatsReport) {
        let mut inbox = self.inbox.lock();
        let queued = (inbox.len() + 1).saturating_mul(UNITS_PER_QUEUED_REPORT);
        if self.reserved.load(Ordering::Acquire).saturating_add(queued) <= self.config.max_buffered {
            inbox.push(report);
            return;
        }
        // Near the cap: apply what is queued, then decide exactly. The inbox
        // lock stays held so that no later report overtakes this one.
        let mut state = self.state.lock();
        self.apply_inbox(&mut inbox, &mut state);
        let budget = self.config.max_buffered.saturating_sub(state.pending_rows);
        match state.rollup.collect_within(&report, budget) {
            Collected::Dropped => state.dropped += 1,
            _ => state.collected += 1,
        }
        self.reserved.store(state.units(), Ordering::Release);
        drop(state);
        drop(inbox);
        drop(report);
    }

    /// Reports the backlog, then one rollup. On failure the rows become the
    /// backlog and the error is returned.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flush_with(false).await
    }

    /// Starts the background loop: a flush every report interval, retries
    /// with backoff after failures, until [`StatsCollector::close`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let interval = this.config.report_interval;
            let backoff = Backoff::new(this.config.retry_min_delay.min(interval), interval);
            let mut retries = None;
            let mut delay = interval;
            loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => break,
                    () = tokio::time::sleep(delay) => {}
                }
                match this.flush().await {
                    Ok(()) => {
                        retries = None;
                        delay = interval;
                    }
                    Err(error) => {
                        delay = retries
                            .get_or_insert_with(|| backoff.delays())
                            .next()
                            .unwrap_or(interval);
                        tracing::warn!(error = %Report(&error), retry_in = ?delay, "app stats flush failed");
                    }
                }
            }
            tracing::debug!("app stats collector loop stopped");
        })
    }

    /// Stops the loop and flushes once more, open sessions included with the
    /// close time as provisional end.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.stop.send_replace(true);
        self.flush_with(true).await
    }

    /// The most reports one [`StatsCollector::try_collect_all`] call can
    /// take even with nothing buffered: a larger call is refused every time,
    /// so retrying it is pointless.
    pub fn max_reports_per_call(&self) -> usize {
        self.config.max_buffered / UNITS_PER_QUEUED_REPORT
    }

    /// How often the buffer is flushed (and its room given back).
    pub fn report_interval(&self) -> std::time::Duration {
        self.config.report_interval
    }

    /// Takes all of `reports` or none of them: a request is applied whole or
    /// refused whole (the caller answers "retry later"), never cut by the
    /// cap. Each report is counted at its worst case; when that does not fit,
    /// the queued reports are applied first (updates of known sessions take
    /// far less room once applied) and the decision is made again. No I/O.
    pub fn try_collect_all(&self, reports: Vec<StatsReport>) -> bool {
        let need = reports.len().saturating_mul(UNITS_PER_QUEUED_REPORT);
        let mut inbox = self.inbox.lock();
        let queued = inbox.len().saturating_mul(UNITS_PER_QUEUED_REPORT);
        let held = self.reserved.load(Ordering::Acquire).saturating_add(queued);
        if held.saturating_add(need) > self.config.max_buffered {
            let mut state = self.state.lock();
            self.apply_inbox(&mut inbox, &mut state);
            self.reserved.store(state.units(), Ordering::Release);
            if state.units().saturating_add(need) > self.config.max_buffered {
                return false;
            }
        }
        inbox.extend(reports);
        true
    }

    /// Counters as of now.
    pub fn stats(&self) -> CollectorStats {
        let inbox = self.inbox.lock();
        let state = self.state.lock();
        CollectorStats {
            collected: state.collected + inbox.len() as u64,
            rows_reported: state.rows_reported,
            dropped: state.dropped,
            failed_flushes: state.failed_flushes,
            // Each queued report may be a new session.
            tracked_sessions: state.rollup.tracked_sessions() + inbox.len(),
            backlog_rows: state.pending_rows,
            last_flush_seconds: state.last_flush_seconds,
        }
    }

    /// Moves the inbox into the rollup. Takes the state lock before letting
    /// go of the inbox, so batches are applied in the order they were taken.
    fn drain(&self) -> parking_lot::MutexGuard<'_, State> {
        let mut inbox = self.inbox.lock();
        let mut state = self.state.lock();
        if inbox.is_empty() {
            return state;
        }
        let mut batch = std::mem::replace(&mut *inbox, std::mem::take(&mut state.spare));
        let held = batch.len() * UNITS_PER_QUEUED_REPORT;
        self.reserved.fetch_add(held, Ordering::AcqRel);
        drop(inbox);
        let budget = self.config.max_buffered.saturating_sub(state.pending_rows);
        let outcome = state.rollup.collect_batch(&batch, budget);
        state.collected += outcome.taken() as u64;
        state.dropped += outcome.dropped as u64;
        self.reserved.store(state.units(), Ordering::Release);
        batch.clear();
        state.spare = batch;
        state
    }

    fn apply_inbox(&self, inbox: &mut Vec<StatsReport>, state: &mut State) {
        if inbox.is_empty() {
            return;
        }
        let budget = self.config.max_buffered.saturating_sub(state.pending_rows);
        let outcome = state.rollup.collect_batch(inbox, budget);
        state.collected += outcome.taken() as u64;
        state.dropped += outcome.dropped as u64;
        inbox.clear();
    }

    async fn flush_with(&self, is_final: bool) -> Result<(), StoreError> {
        let _serial = self.flushing.lock().await;
        let started = tokio::time::Instant::now();
        let result = self.flush_serialized(is_final).await;
        let mut state = self.state.lock();
        state.last_flush_seconds = started.elapsed().as_secs_f64();
        if result.is_err() {
            state.failed_flushes += 1;
        }
        result
    }

    async fn flush_serialized(&self, is_final: bool) -> Result<(), StoreError> {
        let backlog = std::mem::take(&mut self.state.lock().backlog);
        if !backlog.is_empty() {
            if let Err(error) = self.reporter.report(&backlog).await {
                self.state.lock().backlog = backlog;
                return Err(error);
            }
            let mut state = self.state.lock();
            state.pending_rows -= backlog.len();
            state.rows_reported += backlog.len() as u64;
            self.reserved.store(state.units(), Ordering::Release);
        }
        let out = {
            let now = self.clock.now();
            let mut state = self.drain();
            let out = state.rollup.rollup_rows(now, is_final);
            state.pending_rows += out.rows.len() - out.provisional.len();
            self.reserved.store(state.units(), Ordering::Release);
            out
        };
        if out.rows.is_empty() {
            return Ok(());
        }
        let result = self.reporter.report(&out.rows).await;
        let mut state = self.state.lock();
        let definitive = out.rows.len() - out.provisional.len();
        let result = match result {
            Ok(()) => {
                state.pending_rows -= definitive;
                state.rows_reported += out.rows.len() as u64;
                Ok(())
            }
            Err(error) => {
                // Open sessions' rows are superseded: every later rollup
                // reports those sessions again with a later end.
                let mut rows = Vec::with_capacity(definitive);
                let mut provisional = out.provisional.iter().peekable();
                for (i, row) in out.rows.into_iter().enumerate() {
                    if provisional.next_if_eq(&&i).is_none() {
                        rows.push(row);
                    }
                }
                state.backlog = rows;
                Err(error)
            }
        };
        self.reserved.store(state.units(), Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests;
