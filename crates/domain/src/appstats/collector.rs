//! The collector service around [`Rollup`]: concurrent collect, flush loop,
//! backlog with backoff, memory cap, final flush on close.
//!
//! `collect` appends to an inbox under a short lock and never awaits; the
//! inbox is applied to the rollup in batches as it fills, and at each
//! flush. The locking rule is stated once, on [`StatsCollector`]'s fields.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

use super::StatsReport;
use super::rollup::{Collected, DEFAULT_ROLLUP_WINDOW, Rollup, Weights};
use crate::clock::Clock;
use crate::error::{Report, StoreError};
use crate::ports::Reporter;
use crate::retry::Backoff;

/// Default time between two flushes.
pub const DEFAULT_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Default cap on sessions held in memory plus rows waiting in the backlog,
/// in [`Weights::UNITS`].
pub const DEFAULT_MAX_BUFFERED: usize = 1_000_000;

/// Rows handed to the reporter in one call at most. After an outage the
/// backlog can hold millions of rows; one store call (one transaction) that
/// large would outlast the store's deadline at every retry and never drain.
/// Parts go in order, and a failure keeps only the rows not yet written.
pub const MAX_ROWS_PER_REPORT: usize = 20_000;

/// Settings of a [`StatsCollector`]; `Default` gives the documented
/// defaults.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Sessions no longer than this are rolled up ([`Rollup`]).
    pub rollup_window: Duration,
    /// Time between two flushes of the background loop.
    pub report_interval: std::time::Duration,
    /// Cap on tracked sessions, their groups and backlog rows, weighed with
    /// `weights` (in their unit); reports of new sessions beyond it are
    /// dropped and counted. Admission reserves room for the worst case, so
    /// the cap holds even after failed flushes: a live session costs itself
    /// and the row it may leave in the backlog, a session kept to recognise
    /// replays itself, a group itself (and a row while its record changed),
    /// a backlog row a row, and a report queued for the next flush a new
    /// session in a new group ([`Weights::new_group`]). See
    /// [`Rollup::reserved_units`].
    pub max_buffered: usize,
    /// What each session, group and row costs against `max_buffered`
    /// (default [`Weights::UNITS`]; `tally serve` weighs them in bytes of
    /// RSS).
    pub weights: Weights,
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
            weights: Weights::UNITS,
            retry_min_delay: std::time::Duration::from_secs(1),
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// What the memory accounting counts as held now, in the weights' unit,
    /// queued reports at their worst case included: what admission compares
    /// with [`CollectorConfig::max_buffered`].
    pub held_units: usize,
    /// How long the last flush took, reporter call included.
    pub last_flush_seconds: f64,
    /// When the last flush that succeeded ended (the collector's clock).
    pub last_flush_at: Option<OffsetDateTime>,
    /// What made the last flush fail, if it failed (cleared by a success).
    pub last_flush_error: Option<String>,
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
    // Locking, the one rule: `state` before `inbox`, never the other way
    // round, and neither across an await. `collect` takes only `inbox`, for
    // a push; whoever holds `state` (a flush, or a collect that filled the
    // inbox) moves the inbox into the rollup, so reports reach the rollup in
    // the order they were admitted. `flushing` serializes flushes across the
    // reporter call, with neither mutex held.
    /// Reports admitted and not yet applied to the rollup.
    inbox: Mutex<Vec<StatsReport>>,
    state: Mutex<State>,
    /// The memory accounting, kept here only: the state's units
    /// ([`State::units`], exact) plus a queued report's worst case
    /// ([`Weights::new_group`]) for each report taken from the inbox and
    /// being applied. Admission adds as much for each report in the inbox.
    /// Raised only with both locks held (when a batch leaves the inbox),
    /// lowered to the state's units after each change of the state.
    committed: AtomicUsize,
    flushing: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
}

/// Inbox length at which a collect applies the inbox to the rollup (when no
/// flush holds the state), so new sessions need not wait for a flush to
/// free the room their worst case holds.
const APPLY_AT: usize = 4096;

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
    last_flush_at: Option<OffsetDateTime>,
    last_flush_error: Option<String>,
}

impl State {
    /// Exact worst-case units of what is held: the rollup's, and the rows
    /// not yet delivered.
    fn units(&self) -> usize {
        let pending = self.rollup.weights().rows(self.pending_rows);
        self.rollup.reserved_units().saturating_add(pending)
    }

    /// What the rollup may hold: the cap less the rows not yet delivered.
    fn budget(&self, max_buffered: usize) -> usize {
        max_buffered.saturating_sub(self.rollup.weights().rows(self.pending_rows))
    }
}

/// The state, locked; publishes its units when let go.
struct Locked<'a> {
    state: parking_lot::MutexGuard<'a, State>,
    committed: &'a AtomicUsize,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.committed.store(self.state.units(), Ordering::Release);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
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
            rollup: Rollup::with_weights(config.rollup_window, config.weights),
            backlog: Vec::new(),
            pending_rows: 0,
            spare: Vec::new(),
            collected: 0,
            rows_reported: 0,
            dropped: 0,
            failed_flushes: 0,
            last_flush_seconds: 0.0,
            last_flush_at: None,
            last_flush_error: None,
        });
        Arc::new(Self {
            config,
            reporter,
            clock,
            inbox: Mutex::new(Vec::new()),
            state,
            committed: AtomicUsize::new(0),
            flushing: tokio::sync::Mutex::new(()),
            stop: watch::Sender::new(false),
        })
    }

    /// Takes a report; never waits on I/O. Callable from many tasks. A
    /// report that does not fit even once the inbox is applied is dropped
    /// and counted (see [`CollectorStats::dropped`]).
    pub fn collect(&self, report: StatsReport) {
        let mut report = Some(report);
        if self.admit(1, |inbox| inbox.extend(report.take())) {
            return;
        }
        let Some(report) = report else { return };
        // Near the cap: apply what is queued, then decide exactly.
        let mut state = self.lock_state();
        let inbox = self.apply_inbox(&mut state);
        let budget = state.budget(self.config.max_buffered);
        match state.rollup.collect_within(&report, budget) {
            Collected::Dropped => state.dropped += 1,
            _ => state.collected += 1,
        }
        // The state publishes its units before the inbox admits more.
        drop(state);
        drop(inbox);
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
        self.config.max_buffered / self.queued_cost().max(1)
    }

    /// What a report not yet applied is counted at: it may start a new
    /// session in a new group.
    fn queued_cost(&self) -> usize {
        self.config.weights.new_group()
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
        let (count, mut reports) = (reports.len(), Some(reports));
        if self.admit(count, |inbox| inbox.extend(reports.take().into_iter().flatten())) {
            return true;
        }
        let Some(reports) = reports else { return true };
        // Updates of known sessions take far less room once applied.
        let mut state = self.lock_state();
        let mut inbox = self.apply_inbox(&mut state);
        let need = count.saturating_mul(self.queued_cost());
        if state.units().saturating_add(need) > self.config.max_buffered {
            return false;
        }
        inbox.extend(reports);
        true
    }

    /// Counters as of now.
    pub fn stats(&self) -> CollectorStats {
        let state = self.state.lock();
        let inbox = self.inbox.lock();
        CollectorStats {
            collected: state.collected + inbox.len() as u64,
            rows_reported: state.rows_reported,
            dropped: state.dropped,
            failed_flushes: state.failed_flushes,
            // Each queued report may be a new session.
            tracked_sessions: state.rollup.tracked_sessions() + inbox.len(),
            backlog_rows: state.pending_rows,
            held_units: state
                .units()
                .saturating_add(inbox.len().saturating_mul(self.queued_cost())),
            last_flush_seconds: state.last_flush_seconds,
            last_flush_at: state.last_flush_at,
            last_flush_error: state.last_flush_error.clone(),
        }
    }

    fn lock_state(&self) -> Locked<'_> {
        Locked {
            state: self.state.lock(),
            committed: &self.committed,
        }
    }

    /// Pushes `count` reports (with `push`) into the inbox if their worst
    /// case fits beside what is committed; applies the inbox when it has
    /// grown to [`APPLY_AT`] and no one else holds the state. False, and
    /// `push` not called, when they do not fit as queued reports.
    fn admit(&self, count: usize, push: impl FnOnce(&mut Vec<StatsReport>)) -> bool {
        let mut inbox = self.inbox.lock();
        let queued = (inbox.len() + count).saturating_mul(self.queued_cost());
        if self.committed.load(Ordering::Acquire).saturating_add(queued) > self.config.max_buffered {
            return false;
        }
        push(&mut inbox);
        let full = inbox.len() >= APPLY_AT;
        drop(inbox);
        if full && let Some(state) = self.state.try_lock() {
            let mut state = Locked {
                state,
                committed: &self.committed,
            };
            drop(self.apply_inbox(&mut state));
        }
        true
    }

    /// The one path from the inbox to the rollup, for flushes and collects
    /// alike: takes the inbox (its reports' units stay committed while they
    /// are applied) and applies it. Returns the inbox, locked and empty, so
    /// a caller can decide on more reports before anyone else queues any.
    fn apply_inbox<'a>(&'a self, state: &mut Locked<'_>) -> parking_lot::MutexGuard<'a, Vec<StatsReport>> {
        let mut inbox = self.inbox.lock();
        if inbox.is_empty() {
            return inbox;
        }
        let spare = std::mem::take(&mut state.spare);
        let mut batch = std::mem::replace(&mut *inbox, spare);
        let in_flight = batch.len().saturating_mul(self.queued_cost());
        self.committed
            .store(state.units().saturating_add(in_flight), Ordering::Release);
        drop(inbox);
        let budget = state.budget(self.config.max_buffered);
        let outcome = state.rollup.collect_batch(&batch, budget);
        state.collected += outcome.taken() as u64;
        state.dropped += outcome.dropped as u64;
        batch.clear();
        state.spare = batch;
        // Applied: what the state holds now is all that counts.
        self.committed.store(state.units(), Ordering::Release);
        self.inbox.lock()
    }

    async fn flush_with(&self, is_final: bool) -> Result<(), StoreError> {
        let _serial = self.flushing.lock().await;
        let started = tokio::time::Instant::now();
        let result = self.flush_serialized(is_final).await;
        let mut state = self.lock_state();
        state.last_flush_seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(()) => {
                state.last_flush_at = Some(self.clock.now());
                state.last_flush_error = None;
            }
            Err(e) => {
                state.failed_flushes += 1;
                state.last_flush_error = Some(Report(e).to_string());
            }
        }
        result
    }

    async fn flush_serialized(&self, is_final: bool) -> Result<(), StoreError> {
        let mut backlog = std::mem::take(&mut self.lock_state().backlog);
        if !backlog.is_empty() {
            let result = self.report_in_parts(&backlog).await;
            let written = result.as_ref().err().map_or(backlog.len(), |(n, _)| *n);
            let mut state = self.lock_state();
            state.pending_rows -= written;
            state.rows_reported += written as u64;
            if let Err((_, error)) = result {
                backlog.drain(..written);
                state.backlog = backlog;
                return Err(error);
            }
        }
        let out = {
            let now = self.clock.now();
            let mut state = self.lock_state();
            drop(self.apply_inbox(&mut state));
            let out = state.rollup.rollup_rows(now, is_final);
            state.pending_rows += out.rows.len() - out.provisional.len();
            out
        };
        if out.rows.is_empty() {
            return Ok(());
        }
        let result = self.report_in_parts(&out.rows).await;
        let mut state = self.lock_state();
        let definitive = out.rows.len() - out.provisional.len();
        match result {
            Ok(()) => {
                state.pending_rows -= definitive;
                state.rows_reported += out.rows.len() as u64;
                Ok(())
            }
            Err((written, error)) => {
                // The first `written` rows are stored. Of the rest, open
                // sessions' rows are superseded: every later rollup reports
                // those sessions again with a later end. Filtered in place:
                // a copy would hold a second backlog the cap does not count.
                let mut rows = out.rows;
                let mut provisional = out.provisional.iter().peekable();
                let mut stored_definitive = 0;
                let mut i = 0;
                rows.retain(|_| {
                    let open = provisional.next_if_eq(&&i).is_some();
                    let keep = match (i < written, open) {
                        (true, false) => {
                            stored_definitive += 1;
                            false
                        }
                        (false, false) => true,
                        (_, true) => false,
                    };
                    i += 1;
                    keep
                });
                debug_assert!(rows.len() <= definitive);
                state.pending_rows -= stored_definitive;
                state.rows_reported += written as u64;
                state.backlog = rows;
                Err(error)
            }
        }
    }

    /// Reports `rows` in parts of at most [`MAX_ROWS_PER_REPORT`]; a failure
    /// says how many leading rows were written before it.
    async fn report_in_parts(&self, rows: &[StatsReport]) -> Result<(), (usize, StoreError)> {
        let mut written = 0;
        for part in rows.chunks(MAX_ROWS_PER_REPORT) {
            self.reporter.report(part).await.map_err(|e| (written, e))?;
            written += part.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
