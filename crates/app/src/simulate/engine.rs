//! The simulation proper: replicas over one store, driven by one manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use indicatif::ProgressBar;
use tally_domain::appstats::StatsReport;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::appstats::reporter::StoreReporter;
use tally_domain::authz::{Authorized, Subject};
use tally_domain::boundary::FlushOutcome;
use tally_domain::boundary::tracker::{BoundaryTracker, TrackerFlush};
use tally_domain::clock::{Clock, ManualClock};
use tally_domain::error::Report;
use tally_domain::ports::{Reporter, Store, UsageStore};
use tally_domain::telemetry::publisher::{DEFAULT_CLAIM_LEASE, Delivered, publish_pending};
use tally_domain::telemetry::snapshot::snapshot_step;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::fleet::{Fleet, FleetSpec, PlannedSession, Workload};
use super::outcome::{ExpectedPeriod, Faults, Outcome, Usage};
use super::render;
use super::sink::RecordingSink;
use super::timeline::{CLOSE_DELAY, Timeline};

/// Everything a run needs besides the store.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub fleet: FleetSpec,
    pub start: OffsetDateTime,
    pub duration: Duration,
    pub report_interval: Duration,
    pub snapshot_interval: Duration,
    pub batch_size: usize,
    /// How often each replica flushes its boundary tracker (staggered).
    pub tracker_flush_interval: Duration,
    /// Real time between tries of a failed store call.
    pub retry_delay: std::time::Duration,
}

/// Most app stat rows read back for the check.
const READ_LIMIT: usize = 50_000_000;
/// Tries of a failing store call before the simulation moves on.
const ATTEMPTS: u32 = 3;
/// Most snapshots claimed per publishing round.
const PUBLISH_LIMIT: usize = 64;

type SharedStore = Arc<dyn Store>;

struct Replica {
    id: Uuid,
    collector: Arc<StatsCollector>,
    tracker: BoundaryTracker,
    /// What this replica tracked since its last acknowledged flush.
    unflushed: Usage,
}

struct Sim<'a> {
    config: &'a SimConfig,
    fleet: &'a Fleet,
    clock: ManualClock,
    replicas: Vec<Replica>,
    tracker_store: Authorized<SharedStore>,
    system_store: Authorized<SharedStore>,
    sink: RecordingSink,
    /// Flushed to the store since the last period close.
    current: Usage,
    expected: Vec<ExpectedPeriod>,
    winners: HashMap<OffsetDateTime, usize>,
    faults: Faults,
    reports_sent: u64,
    boundary_batches: u64,
    tracked: Usage,
    publish_rounds: usize,
    /// Per replica: snapshots delivered whose mark is still owed.
    delivered: Vec<Delivered>,
    /// The collectors' rollup window: what a rolled-up row covers.
    rollup_window: Duration,
}

/// Runs the whole simulation against `store` and reads back what it holds.
pub async fn simulate(
    config: &SimConfig,
    store: SharedStore,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let timeline = Timeline::new(
        config.start,
        config.duration,
        config.report_interval,
        config.snapshot_interval,
    )
    .map_err(anyhow::Error::msg)?;
    let fleet = Fleet::generate(&config.fleet);
    let workload = Workload::generate(&fleet, &config.fleet, &timeline);
    let began = Instant::now();

    let clock = ManualClock::new(timeline.start);
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let collector_config = CollectorConfig {
        report_interval: config.report_interval.unsigned_abs(),
        ..CollectorConfig::default()
    };
    let replicas: Vec<_> = (0..config.fleet.replicas)
        .map(|_| {
            // Fresh ids each run: a store applies each (replica, seq) once.
            let id = Uuid::new_v4();
            let reporter: Arc<dyn Reporter> = Arc::new(StoreReporter::new(
                Authorized::new(store.clone(), Subject::SystemRestricted),
                config.batch_size,
                shared_clock.clone(),
            ));
            Replica {
                id,
                collector: StatsCollector::new(collector_config.clone(), reporter, shared_clock.clone()),
                tracker: BoundaryTracker::new(id, shared_clock.clone()),
                unflushed: Usage::default(),
            }
        })
        .collect();
    let delivered = std::iter::repeat_with(Delivered::default)
        .take(replicas.len())
        .collect();
    let mut sim = Sim {
        config,
        fleet: &fleet,
        clock,
        replicas,
        tracker_store: Authorized::new(store.clone(), Subject::BoundaryUsageTracker),
        system_store: Authorized::new(store.clone(), Subject::SystemRestricted),
        sink: RecordingSink::default(),
        current: Usage::default(),
        expected: Vec::new(),
        winners: HashMap::new(),
        faults: Faults::default(),
        reports_sent: 0,
        boundary_batches: 0,
        tracked: Usage::default(),
        publish_rounds: 0,
        delivered,
        rollup_window: collector_config.rollup_window,
    };

    let ticks = timeline.ticks();
    let closes: Vec<OffsetDateTime> = timeline.period_ends().iter().map(|&e| e + CLOSE_DELAY).collect();
    let mut next_close = 0;
    let mut last_sent = vec![0u64; workload.sessions.len()];
    let mut active: Vec<usize> = Vec::new();
    let mut next_session = 0;
    let flush_every = (config.tracker_flush_interval.whole_nanoseconds()
        / config.report_interval.whole_nanoseconds())
    .max(1) as usize;
    // The usage rollup ticks as in `serve`, every 5 minutes.
    let rollup_every = (Duration::minutes(5).whole_nanoseconds() / config.report_interval.whole_nanoseconds())
        .max(1) as usize;

    progress.set_length(ticks.len() as u64);
    for (i, &tick) in ticks.iter().enumerate() {
        // A close due strictly before this tick happens first; one due at the
        // same instant happens after the tick's reports.
        while next_close < closes.len() && closes[next_close] < tick {
            sim.close_period(closes[next_close]).await;
            next_close += 1;
        }
        sim.clock.set(tick);
        while next_session < workload.sessions.len() && workload.sessions[next_session].start <= tick {
            active.push(next_session);
            next_session += 1;
        }
        active.retain(|&s| sim.send_report(&workload.sessions[s], tick, &mut last_sent[s]));
        for batch in &workload.boundary[i] {
            sim.track(batch.workspace, batch.replica, batch.allowed, batch.denied);
        }
        sim.flush_collectors().await;
        // Each replica on its own schedule, staggered.
        let due: Vec<usize> = (0..sim.replicas.len())
            .filter(|r| (i + 1 + r) % flush_every == 0)
            .collect();
        sim.flush_trackers(&due).await;
        if (i + 1) % rollup_every == 0 {
            sim.tick_rollup().await;
        }
        progress.inc(1);
        if i % 16 == 0 {
            progress.set_message(format!("sim {}", render::hhmm(tick)));
        }
    }

    // The end: final flush of every collector (open sessions with the close
    // time as provisional end) and tracker, then close the remaining periods.
    sim.clock.set(timeline.end);
    sim.close_collectors().await;
    let all: Vec<usize> = (0..sim.replicas.len()).collect();
    sim.flush_trackers(&all).await;
    for &close in &closes[next_close..] {
        sim.close_period(close).await;
    }
    // Anything a failed round left behind.
    sim.publish().await;
    sim.tick_rollup().await;
    let wall = began.elapsed();
    progress.finish_and_clear();

    sim.read_back(&timeline, &workload, &last_sent, store, wall).await
}

impl Sim<'_> {
    /// The sticky proxy reports one session at `tick`: open with its
    /// cumulative requests so far, or closed with its end. Returns whether
    /// the session is still open.
    fn send_report(&mut self, session: &PlannedSession, tick: OffsetDateTime, last_sent: &mut u64) -> bool {
        let end = session.end();
        let closed = end <= tick;
        let requests = session.requests_at(tick);
        let workspace = &self.fleet.workspaces[session.workspace as usize];
        let app = &self.fleet.apps[usize::from(session.app)];
        self.replicas[usize::from(session.replica)]
            .collector
            .collect(StatsReport {
                user_id: self.fleet.users[session.user as usize],
                workspace_id: workspace.id,
                agent_id: workspace.agent_id,
                access_method: app.access_method,
                slug_or_port: app.slug_or_port.clone(),
                session_id: session.id,
                session_started_at: session.start,
                session_ended_at: closed.then_some(end),
                requests,
                sessions: 1,
            });
        self.reports_sent += 1;
        *last_sent = requests;
        !closed
    }

    fn track(&mut self, workspace: u32, replica: u16, allowed: u32, denied: u32) {
        let ws = &self.fleet.workspaces[workspace as usize];
        let r = &mut self.replicas[usize::from(replica)];
        r.tracker.track(
            ws.id,
            self.fleet.users[ws.owner as usize],
            allowed.into(),
            denied.into(),
        );
        r.unflushed
            .add(workspace, ws.owner, allowed.into(), denied.into());
        self.tracked
            .add(workspace, ws.owner, allowed.into(), denied.into());
        self.boundary_batches += 1;
    }

    async fn flush_collectors(&mut self) {
        let results = join_all(self.replicas.iter().map(|r| r.collector.flush())).await;
        for e in results.into_iter().filter_map(Result::err) {
            // The collector keeps the rows as its backlog; the next tick retries.
            tracing::warn!(error = %Report(&e), "collector flush failed");
            self.faults.collector_flushes += 1;
        }
    }

    /// The final flush of every collector, open sessions included with the
    /// close time as provisional end; retried while the store fails.
    async fn close_collectors(&mut self) {
        for r in 0..self.replicas.len() {
            for attempt in 1..=ATTEMPTS {
                match self.replicas[r].collector.close().await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %Report(&e), attempt, "final collector flush failed");
                        self.faults.collector_flushes += 1;
                        if attempt == ATTEMPTS {
                            self.faults.unrecovered += 1;
                        } else {
                            tokio::time::sleep(self.config.retry_delay).await;
                        }
                    }
                }
            }
        }
    }

    /// Flushes the trackers of `which` replicas concurrently; what a replica
    /// had tracked joins the current period once the store acknowledged it.
    /// A failed flush is retried at once: the tracker resends the same delta,
    /// and as no period closes in between, attribution stays exact.
    async fn flush_trackers(&mut self, which: &[usize]) {
        let mut left: Vec<usize> = which.to_vec();
        for attempt in 1..=ATTEMPTS {
            let store = &self.tracker_store;
            let results = join_all(left.iter().map(|&r| self.replicas[r].tracker.flush(store))).await;
            let mut failed = Vec::new();
            for (&r, result) in left.iter().zip(results) {
                match result {
                    Ok(flush) => {
                        // A duplicate means an earlier attempt that reported
                        // failure had landed, maybe before a period closed.
                        if flush == TrackerFlush::Flushed(FlushOutcome::Duplicate) {
                            self.faults.acks_lost += 1;
                        }
                        self.current
                            .absorb(std::mem::take(&mut self.replicas[r].unflushed));
                    }
                    Err(e) => {
                        tracing::warn!(error = %Report(&e), attempt, "tracker flush failed");
                        self.faults.tracker_flushes += 1;
                        failed.push(r);
                    }
                }
            }
            left = failed;
            if left.is_empty() {
                return;
            }
            tokio::time::sleep(self.config.retry_delay).await;
        }
        // Still held by the trackers: they go with a later flush.
        self.faults.unrecovered += left.len();
    }

    /// Every replica wakes at `at`, flushes its tracker and races to close
    /// the period that just ended; then one publishing round.
    async fn close_period(&mut self, at: OffsetDateTime) {
        self.clock.set(at);
        let all: Vec<usize> = (0..self.replicas.len()).collect();
        self.flush_trackers(&all).await;
        let interval = self.config.snapshot_interval;
        let period_end = tally_domain::telemetry::Period::last_ended(at, interval).end;
        let mut won = 0;
        let mut left = all;
        for attempt in 1..=ATTEMPTS {
            let store = &self.tracker_store;
            let results = join_all(
                left.iter()
                    .map(|&r| snapshot_step(store, self.replicas[r].id, at, interval)),
            )
            .await;
            let mut failed = Vec::new();
            for (&r, result) in left.iter().zip(results) {
                match result {
                    Ok(Some(snapshot)) => {
                        won += 1;
                        self.expected.push(ExpectedPeriod {
                            period_end: snapshot.period_end,
                            usage: std::mem::take(&mut self.current),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %Report(&e), attempt, "snapshot step failed");
                        self.faults.snapshot_steps += 1;
                        failed.push(r);
                    }
                }
            }
            left = failed;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(self.config.retry_delay).await;
        }
        self.faults.unrecovered += left.len();
        if won == 0 && left.is_empty() {
            // Everyone lost: the winner's success was reported as a failure.
            self.faults.acks_lost += 1;
        }
        *self.winners.entry(period_end).or_default() += won;
        self.publish().await;
    }

    /// One usage rollup tick; a failure is retried at the next one.
    async fn tick_rollup(&mut self) {
        if let Err(e) = self.system_store.tick_usage_rollup().await {
            tracing::warn!(error = %e, "usage rollup tick failed");
        }
    }

    async fn publish(&mut self) {
        let replica = self.publish_rounds % self.replicas.len();
        let claimer = self.replicas[replica].id;
        self.publish_rounds += 1;
        match publish_pending(
            &self.system_store,
            &self.sink,
            claimer,
            &self.clock,
            DEFAULT_CLAIM_LEASE,
            PUBLISH_LIMIT,
            &mut self.delivered[replica],
        )
        .await
        {
            Ok(round) => self.faults.publishes += round.failed,
            Err(e) => {
                tracing::warn!(error = %Report(&e), "publishing round failed");
                self.faults.publishes += 1;
            }
        }
    }
}

mod read_back;
