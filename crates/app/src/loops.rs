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
use tally_domain::telemetry::publisher::{DEFAULT_CLAIM_LEASE, PublishRound, publish_pending};
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
    /// twice.
    publish_lock: Arc<Mutex<()>>,
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
            publish_lock: Arc::new(Mutex::new(())),
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
        let _one_round = self.publish_lock.lock().await;
        let round = publish_pending(
            &self.as_system(),
            &*self.sink,
            self.settings.replica_id,
            &*self.clock,
            DEFAULT_CLAIM_LEASE,
            PUBLISH_BATCH,
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
mod publish_tests;

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use mockall::Sequence;
    use tally_domain::boundary::FlushOutcome;
    use tally_domain::clock::ManualClock;
    use tally_domain::ports::{MockSnapshotSink, MockStore, SinkError};
    use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, PeriodCloseOutcome};
    use time::macros::datetime;

    pub(super) const NOW: time::OffsetDateTime = datetime!(2026-11-25 10:30:00.5 UTC);

    fn snapshot() -> Snapshot {
        Snapshot {
            id: Uuid::new_v4(),
            event_type: BOUNDARY_USAGE_EVENT.into(),
            period_start: datetime!(2026-11-25 10:00 UTC),
            period_end: datetime!(2026-11-25 10:30 UTC),
            usage: Default::default(),
            created_at: NOW,
            published_at: None,
            publish_attempts: 0,
        }
    }

    pub(super) fn background(store: MockStore, sink: MockSnapshotSink) -> Background {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
        let replica_id = Uuid::new_v4();
        Background::new(
            LoopSettings {
                replica_id,
                snapshot_interval: Duration::from_secs(1800),
                tracker_flush_interval: Duration::from_secs(10),
                publish_interval: Duration::from_secs(5),
                lock_retention: Duration::from_secs(7 * 86400),
                usage_rollup_interval: Duration::from_secs(300),
                purge_interval: Duration::from_secs(600),
                retention: RetentionPolicy::default(),
            },
            Arc::new(store),
            Arc::new(BoundaryTracker::new(replica_id, clock.clone())),
            Arc::new(sink),
            clock,
        )
    }

    #[tokio::test]
    async fn snapshot_step_flushes_own_usage_first_then_closes_the_ended_period() {
        let mut store = MockStore::new();
        let mut seq = Sequence::new();
        store
            .expect_flush_boundary_usage()
            .withf(|d| d.allowed == 3 && d.denied == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(FlushOutcome::Applied));
        store
            .expect_close_period()
            .withf(|c| {
                c.event_type == BOUNDARY_USAGE_EVENT
                    && c.period.end == datetime!(2026-11-25 10:30 UTC)
                    && c.period.start == datetime!(2026-11-25 10:00 UTC)
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(PeriodCloseOutcome::Closed(snapshot())));
        let bg = background(store, MockSnapshotSink::new());
        bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 3, 1);
        let closed = bg.snapshot_once().await.unwrap();
        assert_eq!(closed.unwrap().period_end, datetime!(2026-11-25 10:30 UTC));
        assert_eq!(bg.tracker.pending().allowed, 0);
    }

    #[tokio::test]
    async fn a_period_another_replica_closed_is_not_an_error() {
        let mut store = MockStore::new();
        store
            .expect_close_period()
            .returning(|_| Ok(PeriodCloseOutcome::AlreadyClosed));
        let bg = background(store, MockSnapshotSink::new());
        assert_eq!(bg.snapshot_once().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failed_tracker_flush_keeps_the_usage_and_the_step_still_runs() {
        let mut store = MockStore::new();
        store
            .expect_flush_boundary_usage()
            .returning(|_| Err(StoreError::unavailable("down")));
        store
            .expect_close_period()
            .returning(|_| Ok(PeriodCloseOutcome::AlreadyClosed));
        let bg = background(store, MockSnapshotSink::new());
        bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 2, 0);
        assert_eq!(bg.snapshot_once().await.unwrap(), None);
        assert_eq!(bg.tracker.pending().allowed, 2);
    }

    #[tokio::test]
    async fn published_snapshots_are_marked_and_failed_ones_released() {
        let (ok, bad) = (snapshot(), snapshot());
        let (ok_id, bad_id) = (ok.id, bad.id);
        let mut store = MockStore::new();
        store
            .expect_claim_unpublished_snapshots()
            .times(1)
            .returning(move |_, now, _, _| {
                assert_eq!(now, NOW);
                Ok(vec![ok.clone(), bad.clone()])
            });
        store
            .expect_mark_snapshot_published()
            .withf(move |id, _, _| *id == ok_id)
            .times(1)
            .returning(|_, _, _| Ok(()));
        store
            .expect_release_snapshot_claim()
            .withf(move |id, _, e| *id == bad_id && e.contains("503"))
            .times(1)
            .returning(|_, _, _| Ok(()));
        let mut sink = MockSnapshotSink::new();
        sink.expect_publish().returning(move |s| {
            if s.id == bad_id {
                Err(SinkError("answered 503".into()))
            } else {
                Ok(())
            }
        });
        let round = background(store, sink).publish_once().await.unwrap();
        assert_eq!(
            round,
            PublishRound {
                published: 1,
                failed: 1,
                deferred: 0
            }
        );
    }

    #[tokio::test]
    async fn locks_older_than_the_retention_are_pruned() {
        let mut store = MockStore::new();
        store
            .expect_prune_telemetry_locks()
            .withf(|before| *before == NOW - time::Duration::days(7))
            .times(1)
            .returning(|_| Ok(3));
        assert_eq!(
            background(store, MockSnapshotSink::new())
                .prune_once()
                .await
                .unwrap(),
            3
        );
    }

    #[tokio::test]
    async fn loops_stop_when_told() {
        let bg = background(MockStore::new(), MockSnapshotSink::new());
        let (tx, rx) = watch::channel(false);
        let handles = bg.spawn(&rx);
        tx.send(true).unwrap();
        for h in handles {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// While the store fails fast, the tracker loop backs off (one call and
    /// one warning per backoff step, not one per 200 ms); once it answers,
    /// the kept usage is flushed and the loop returns to its interval.
    #[tokio::test(start_paused = true)]
    async fn the_tracker_loop_backs_off_while_the_store_fails_and_recovers() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let calls = Arc::new(AtomicU32::new(0));
        let down = Arc::new(AtomicBool::new(true));
        let mut store = MockStore::new();
        let (c, d) = (calls.clone(), down.clone());
        store.expect_flush_boundary_usage().returning(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            if d.load(Ordering::SeqCst) {
                Err(StoreError::unavailable("connection refused"))
            } else {
                Ok(FlushOutcome::Applied)
            }
        });
        let mut bg = background(store, MockSnapshotSink::new());
        bg.jitter = false;
        bg.settings.tracker_flush_interval = Duration::from_millis(200);
        bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 5, 1);
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(bg.clone().tracker_loop(rx.clone()));

        // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 + 5 ... : 7 calls in 20 s, not 100.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let failing = calls.load(Ordering::SeqCst);
        assert!((6..=8).contains(&failing), "{failing} calls in 20 s");
        assert_eq!(bg.tracker.pending().allowed, 5, "kept while the store fails");

        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(MAX_TRACKER_BACKOFF + Duration::from_millis(10)).await;
        assert_eq!(bg.tracker.pending().allowed, 0, "flushed once the store answers");
        // Back to the interval: new usage goes out within it.
        bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 2, 0);
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(bg.tracker.pending().allowed, 0);

        tx.send(true).unwrap();
        stopped(&mut rx).await;
        task.await.unwrap();
    }

    /// A store outage backs the publisher off to at most 30 s (not the
    /// 5 min a failing sink may take), so snapshots go out soon after.
    #[tokio::test(start_paused = true)]
    async fn the_publisher_retries_an_unavailable_outbox_within_30_s() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let calls = Arc::new(AtomicU32::new(0));
        let down = Arc::new(AtomicBool::new(true));
        let mut store = MockStore::new();
        let (c, d) = (calls.clone(), down.clone());
        store
            .expect_claim_unpublished_snapshots()
            .returning(move |_, _, _, _| {
                c.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    Err(StoreError::unavailable("connection refused"))
                } else {
                    Ok(vec![])
                }
            });
        let mut bg = background(store, MockSnapshotSink::new());
        bg.jitter = false;
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(bg.clone().publisher_loop(rx));
        tokio::time::sleep(Duration::from_secs(600)).await;
        // 5 s, then 10, 20, 30, 30...: about 22 rounds in 10 min.
        let failing = calls.load(Ordering::SeqCst);
        assert!((18..=24).contains(&failing), "{failing} rounds in 10 min");
        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(MAX_OUTBOX_BACKOFF + Duration::from_millis(10)).await;
        assert!(
            calls.load(Ordering::SeqCst) > failing,
            "no round after the store came back"
        );
        tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// A store that fails every call of `call`, counting them.
    fn failing(calls: &Arc<std::sync::atomic::AtomicU32>) -> MockStore {
        use std::sync::atomic::Ordering;
        let mut store = MockStore::new();
        let c = calls.clone();
        store.expect_flush_boundary_usage().returning(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::unavailable("connection refused"))
        });
        let c = calls.clone();
        store.expect_close_period().returning(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::unavailable("connection refused"))
        });
        store
    }

    /// With jitter the tracker loop still backs off within its bounds: each
    /// wait is in [d, 2d) for d = 0.2 s, 0.4 s ... up to 2.5 s, so 7 to 11
    /// calls in 20 s, not 100.
    #[tokio::test(start_paused = true)]
    async fn the_jittered_tracker_loop_backs_off_within_its_bounds() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut bg = background(failing(&calls), MockSnapshotSink::new());
        bg.settings.tracker_flush_interval = Duration::from_millis(200);
        bg.tracker.track(Uuid::new_v4(), Uuid::new_v4(), 5, 1);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(bg.clone().tracker_loop(rx));
        tokio::time::sleep(Duration::from_secs(20)).await;
        let n = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!((7..=11).contains(&n), "{n} calls in 20 s");
        tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// A failing snapshot step is retried with backoff (0.5 s, 1, 2, 4, 8,
    /// 16, 30, 30 ...) until the next period begins.
    #[tokio::test(start_paused = true)]
    async fn the_snapshot_step_retries_with_backoff() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut bg = background(failing(&calls), MockSnapshotSink::new());
        bg.jitter = false;
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(bg.clone().snapshot_loop(rx));
        // The manual clock stands still: the loop waits for the period end
        // (30 min less 0.5 s) on tokio's paused clock, then retries.
        tokio::time::sleep(Duration::from_secs(30 * 60 + 90)).await;
        // Nothing tracked, so each attempt is one close: at 0, 0.5, 1.5,
        // 3.5, 7.5, 15.5, 31.5 and 61.5 s after the boundary (then 91.5).
        let attempts = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(attempts, 8, "{attempts} attempts in 90 s");
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
