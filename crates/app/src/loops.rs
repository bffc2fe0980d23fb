//! Background loops of `tally serve`: tracker flush, snapshot step, outbox
//! publisher, lock pruning, usage rollup and retention (`usage.rs`).
//! Failures are logged and retried, never fatal.

mod usage;

use std::sync::Arc;
use std::time::Duration;

use tally_domain::appstats::StatsReport;
use tally_domain::authz::{Authorized, Subject};
use tally_domain::boundary::tracker::{BoundaryTracker, TrackerFlush};
use tally_domain::clock::Clock;
use tally_domain::error::{Report, StoreError};
use tally_domain::ports::{Reporter, SnapshotSink, Store, TelemetryStore};
use tally_domain::retry::Backoff;
use tally_domain::telemetry::publisher::{DEFAULT_CLAIM_LEASE, Delivered, PublishRound, publish_pending};
use tally_domain::telemetry::snapshot::snapshot_step;
use tally_domain::telemetry::{Period, Snapshot};
use tally_domain::usage::RetentionPolicy;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::metrics as m;

/// Snapshots claimed per publishing round.
const PUBLISH_BATCH: usize = 16;
/// Longest wait between publishing attempts while the sink keeps failing.
const MAX_PUBLISH_BACKOFF: Duration = Duration::from_secs(300);
/// How often old period locks are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Longest wait between publishing rounds while the outbox itself (the
/// store) is unavailable, or the publish interval if longer: shorter than
/// for a failing sink, so snapshots go out soon after the store is back.
const MAX_OUTBOX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait between tracker flushes while the store keeps failing (or
/// the flush interval, if longer): a short interval must not turn an outage
/// into a flood of failing calls and warnings.
const MAX_TRACKER_BACKOFF: Duration = Duration::from_secs(5);
/// Retries of a failed snapshot step: from about half a second up to 30 s.
const SNAPSHOT_FIRST_RETRY: Duration = Duration::from_millis(250);
const SNAPSHOT_MOST_RETRY: Duration = Duration::from_secs(30);
/// Longest wait before pruning locks again after a failure.
const PRUNE_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub replica_id: Uuid,
    pub snapshot_interval: Duration,
    pub tracker_flush_interval: Duration,
    pub publish_interval: Duration,
    pub lock_retention: Duration,
    pub usage_rollup_interval: Duration,
    pub purge_interval: Duration,
    pub retention: RetentionPolicy,
}

/// What the loops share; also used by the shutdown sequence.
#[derive(Clone)]
pub struct Background {
    pub settings: LoopSettings,
    pub store: Arc<dyn Store>,
    pub tracker: Arc<BoundaryTracker>,
    pub sink: Arc<dyn SnapshotSink>,
    pub clock: Arc<dyn Clock>,
    /// One tracker flush at a time: the loop, the snapshot step and shutdown.
    flush_lock: Arc<Mutex<()>>,
    /// One publishing round at a time: the loop and shutdown. A round takes
    /// back this replica's own claims, so two at once could send a snapshot
    /// twice. It holds the deliveries whose mark the store has not taken yet.
    publish_lock: Arc<Mutex<Delivered>>,
    publish_now: Arc<Notify>,
    /// Off only in tests that count calls on the un-jittered schedule.
    jitter: bool,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Resolves once shutdown is requested (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
async fn sleep_or_stop(d: Duration, rx: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped(rx) => false,
    }
}

impl Background {
    pub fn new(
        settings: LoopSettings,
        store: Arc<dyn Store>,
        tracker: Arc<BoundaryTracker>,
        sink: Arc<dyn SnapshotSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            settings,
            store,
            tracker,
            sink,
            clock,
            flush_lock: Arc::new(Mutex::new(())),
            publish_lock: Arc::new(Mutex::new(Delivered::default())),
            publish_now: Arc::new(Notify::new()),
            jitter: true,
        }
    }

    /// The retry policy with these bounds (see [`Backoff`]).
    fn backoff(&self, first: Duration, most: Duration) -> Backoff {
        let policy = Backoff::new(first, most);
        if self.jitter {
            policy
        } else {
            policy.without_jitter()
        }
    }

    fn as_tracker(&self) -> Authorized<Arc<dyn Store>> {
        Authorized::new(self.store.clone(), Subject::BoundaryUsageTracker)
    }

    fn as_system(&self) -> Authorized<Arc<dyn Store>> {
        Authorized::new(self.store.clone(), Subject::SystemRestricted)
    }

    /// Starts every loop; they end when `stop` turns true.
    pub fn spawn(&self, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().tracker_loop(stop.clone())),
            tokio::spawn(self.clone().snapshot_loop(stop.clone())),
            tokio::spawn(self.clone().publisher_loop(stop.clone())),
            tokio::spawn(self.clone().prune_loop(stop.clone())),
            tokio::spawn(self.clone().rollup_loop(stop.clone())),
            tokio::spawn(self.clone().purge_loop(stop.clone())),
        ]
    }

    /// Flushes the tracker once; failures keep the delta for the next flush.
    pub async fn flush_tracker(&self) -> Result<TrackerFlush, StoreError> {
        let _guard = self.flush_lock.lock().await;
        let result = self.tracker.flush(&self.as_tracker()).await;
        if !matches!(result, Ok(TrackerFlush::Nothing)) {
            m::store_result(&result);
        }
        if let Err(e) = &result {
            metrics::counter!(m::BOUNDARY_FLUSH_FAILURES).increment(1);
            tracing::warn!(error = %Report(&e), "boundary usage flush failed; kept for the next flush");
        }
        result
    }

    async fn tracker_loop(self, mut stop: watch::Receiver<bool>) {
        let base = self.settings.tracker_flush_interval;
        let backoff = self.backoff(base, base.max(MAX_TRACKER_BACKOFF));
        let mut retries = backoff.delays();
        let mut wait = base;
        while sleep_or_stop(wait, &mut stop).await {
            wait = match self.flush_tracker().await {
                Ok(_) => {
                    retries = backoff.delays();
                    base
                }
                Err(_) => retries.next().unwrap_or(backoff.most()),
            };
        }
    }

    /// Flushes this replica's tracker, then tries to close the period that
    /// just ended. `Some` when this replica won the period.
    pub async fn snapshot_once(&self) -> Result<Option<Snapshot>, StoreError> {
        // Our own usage lands in the period being closed, as far as we can.
        let _ = self.flush_tracker().await;
        let interval = to_time(self.settings.snapshot_interval);
        let snapshot = snapshot_step(
            &self.as_tracker(),
            self.settings.replica_id,
            self.clock.now(),
            interval,
        )
        .await;
        m::store_result(&snapshot);
        let snapshot = snapshot?;
        if let Some(s) = &snapshot {
            metrics::counter!(m::SNAPSHOTS_CLOSED).increment(1);
            tracing::info!(
                snapshot_id = %s.id,
                period_start = %s.period_start,
                period_end = %s.period_end,
                allowed = s.usage.allowed_requests,
                denied = s.usage.denied_requests,
                unique_workspaces = s.usage.unique_workspaces,
                unique_users = s.usage.unique_users,
                "telemetry period closed"
            );
        }
        // Even when another close won: it may be this replica's own earlier
        // attempt, which applied after the replica had given up on it.
        self.publish_now.notify_one();
        Ok(snapshot)
    }

    async fn snapshot_loop(self, mut stop: watch::Receiver<bool>) {
        let interval = to_time(self.settings.snapshot_interval);
        loop {
            let now = self.clock.now();
            let end = Period::containing(now, interval).end;
            // A little past the boundary, so `now` is surely in the next period.
            let wait = to_std(end - now) + Duration::from_millis(20);
            if !sleep_or_stop(wait, &mut stop).await {
                return;
            }
            let mut retries = self.backoff(SNAPSHOT_FIRST_RETRY, SNAPSHOT_MOST_RETRY).delays();
            loop {
                let retry = retries.next().unwrap_or(SNAPSHOT_MOST_RETRY);
                match self.snapshot_once().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %Report(&e), retry_in = ?retry, "snapshot step failed; retrying")
                    }
                }
                // Past the next boundary the next round closes the later
                // period, which then carries this one's usage.
                if Period::containing(self.clock.now(), interval).start > end {
                    break;
                }
                if !sleep_or_stop(retry, &mut stop).await {
                    return;
                }
            }
        }
    }

    /// One publishing round of the outbox.
    pub async fn publish_once(&self) -> Result<PublishRound, StoreError> {
        let mut delivered = self.publish_lock.lock().await;
        let round = publish_pending(
            &self.as_system(),
            &*self.sink,
            self.settings.replica_id,
            &*self.clock,
            DEFAULT_CLAIM_LEASE,
            PUBLISH_BATCH,
            &mut delivered,
        )
        .await;
        m::store_result(&round);
        let round = round?;
        metrics::counter!(m::SNAPSHOTS_PUBLISHED).increment(round.published as u64);
        metrics::counter!(m::SNAPSHOT_PUBLISH_FAILURES).increment(round.failed as u64);
        if round.published > 0 {
            tracing::info!(published = round.published, "snapshots published");
        }
        if round.failed > 0 {
            tracing::warn!(
                failed = round.failed,
                "snapshot delivery failed; kept in the outbox"
            );
        }
        Ok(round)
    }

    async fn publisher_loop(self, mut stop: watch::Receiver<bool>) {
        let base = self.settings.publish_interval;
        let sink_backoff = self.backoff(base, MAX_PUBLISH_BACKOFF.max(base));
        let outbox_backoff = self.backoff(base, MAX_OUTBOX_BACKOFF.max(base));
        let (mut sink_retries, mut outbox_retries) = (sink_backoff.delays(), outbox_backoff.delays());
        let mut delay = base;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.publish_now.notified() => {}
                _ = stopped(&mut stop) => return,
            }
            let round = self.publish_once().await;
            if matches!(&round, Ok(r) if r.failed == 0) {
                (sink_retries, outbox_retries) = (sink_backoff.delays(), outbox_backoff.delays());
            }
            delay = match round {
                Ok(round) if round.failed == 0 && round.published == PUBLISH_BATCH => Duration::ZERO,
                Ok(round) if round.failed == 0 => base,
                Ok(_) => sink_retries.next().unwrap_or(sink_backoff.most()),
                Err(e) => {
                    let next = outbox_retries.next().unwrap_or(outbox_backoff.most());
                    tracing::warn!(error = %Report(&e), retry_in = ?next, "snapshot outbox unavailable; retrying later");
                    next
                }
            };
        }
    }

    /// Deletes period locks older than the retention.
    pub async fn prune_once(&self) -> Result<u64, StoreError> {
        let before = self.clock.now() - to_time(self.settings.lock_retention);
        let pruned = self.as_system().prune_telemetry_locks(before).await;
        m::store_result(&pruned);
        let pruned = pruned?;
        if pruned > 0 {
            tracing::info!(pruned, "old telemetry locks pruned");
        }
        Ok(pruned)
    }

    async fn prune_loop(self, mut stop: watch::Receiver<bool>) {
        let backoff = self.backoff(PRUNE_RETRY / 2, PRUNE_RETRY);
        let mut retries = backoff.delays();
        let mut wait = Duration::from_secs(5);
        while sleep_or_stop(wait, &mut stop).await {
            wait = match self.prune_once().await {
                Ok(_) => {
                    retries = backoff.delays();
                    PRUNE_EVERY
                }
                Err(e) => {
                    tracing::warn!(error = %Report(&e), "pruning telemetry locks failed; retrying later");
                    retries.next().unwrap_or(PRUNE_RETRY)
                }
            };
        }
    }
}

/// The collector's reporter, recording each outcome in `tally_store_up`.
pub struct WatchedReporter(pub Arc<dyn Reporter>);

impl std::fmt::Debug for WatchedReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedReporter").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Reporter for WatchedReporter {
    async fn report(&self, reports: &[StatsReport]) -> Result<(), StoreError> {
        let result = self.0.report(reports).await;
        m::store_result(&result);
        result
    }
}

pub fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

pub fn to_std(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
pub(crate) mod tests;
