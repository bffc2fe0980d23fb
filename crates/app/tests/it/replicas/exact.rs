//! The exact scenario: the driver knows which period every boundary decision
//! lands in, so each snapshot's figures are checked for equality, unique
//! workspaces and users included.
//!
//! Periods are aligned (`telemetry::Period`), so the driver works period by
//! period: it starts sending once the previous period's snapshot row exists
//! (so nothing it sends can land there), stops `QUIET` before the period
//! ends, confirms through each replica's `tally_boundary_requests_pending`
//! that everything was flushed, then that the period is still open (so
//! nothing can land in the next one). Each period has its own workspaces and owners, each workspace
//! sent through all three replicas. Meanwhile the sink is down for more than
//! three periods, so several snapshots wait in the outbox at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::Row as _;
use tally::metrics as m;
use time::OffsetDateTime;
use uuid::Uuid;

use super::checks;
use super::load::Driver;
use super::{SnapshotRow, snapshots, stop};
use crate::common::Server;
use crate::common::scrape::{scrape_all, settle_all};

/// The telemetry period the replicas run with.
const INTERVAL: Duration = Duration::from_secs(2);
/// How often the replicas' trackers flush here: short, so a quiet zone
/// holds many flushes even on a busy machine.
const FLUSH: &str = "50ms";
/// Sending stops this long before a period ends, so every replica has
/// flushed before the period is closed.
const QUIET: Duration = Duration::from_millis(1000);
/// The first period is one with at least this much sending time left.
const MIN_SEND: Duration = Duration::from_millis(300);
/// The sink is down for a little more than this many periods.
const OUTAGE_PERIODS: u32 = 3;
/// Concurrent boundary log senders.
const SENDERS: u64 = 3;
const REPLICAS: usize = 3;

/// The workspaces (with their owners) of period `k`; none in a quiet one.
fn plan(k: usize) -> Vec<(Uuid, Uuid)> {
    if k % 5 == 2 {
        return Vec::new();
    }
    let workspaces = 2 + (k * 3) % 5;
    let users: Vec<Uuid> = (0..(1 + k % 3).min(workspaces)).map(|_| Uuid::new_v4()).collect();
    (0..workspaces)
        .map(|w| (Uuid::new_v4(), users[w % users.len()]))
        .collect()
}

/// What the replicas acknowledged within one period.
#[derive(Debug, Default)]
struct Sent {
    allowed: u64,
    denied: u64,
    workspaces: HashSet<Uuid>,
    users: HashSet<Uuid>,
    replicas: HashSet<usize>,
    /// Replicas each workspace went through.
    reached: HashMap<Uuid, HashSet<usize>>,
}

fn wall_to_instant(t: OffsetDateTime) -> Instant {
    let ahead = t - OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::ZERO)
}

/// What the driver saw of the outbox while polling it.
#[derive(Debug, Default)]
struct Outbox {
    /// Most unpublished snapshots at once.
    max_waiting: i64,
    /// Longest time from a period's end to its snapshot row seen.
    slowest_close: Duration,
}

impl Outbox {
    /// Whether the snapshot for the period ending at `end` exists; notes how
    /// many snapshots wait to be published.
    async fn closed(&mut self, pool: &sqlx::PgPool, end: OffsetDateTime) -> bool {
        let row = sqlx::query(
            "SELECT COALESCE(bool_or(period_end = $1), false) AS closed, \
             count(*) FILTER (WHERE published_at IS NULL) AS waiting FROM telemetry_snapshots",
        )
        .bind(end)
        .fetch_one(pool)
        .await
        .unwrap();
        self.max_waiting = self.max_waiting.max(row.get("waiting"));
        row.get("closed")
    }

    async fn wait_closed(&mut self, pool: &sqlx::PgPool, end: OffsetDateTime) {
        let deadline = wall_to_instant(end) + INTERVAL;
        while !self.closed(pool, end).await {
            assert!(
                Instant::now() < deadline,
                "no snapshot for the period ending {end} within {INTERVAL:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let late = Duration::try_from(OffsetDateTime::now_utc() - end).unwrap_or_default();
        self.slowest_close = self.slowest_close.max(late);
    }
}

/// Sends a period's boundary logs, for `workspaces` with their owners, (and app stats) until `until`; every
/// workspace goes through every replica first, even past `until` (the flush
/// check after the period is what makes the attribution certain).
async fn send(driver: &Arc<Driver>, workspaces: Arc<Vec<(Uuid, Uuid)>>, until: Instant) -> Sent {
    let sent = Arc::new(Mutex::new(Sent::default()));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (driver, workspaces, sent, next) =
            (driver.clone(), workspaces.clone(), sent.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let first_round = (REPLICAS * workspaces.len()) as u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= first_round && Instant::now() >= until {
                    break;
                }
                let replica = (i % REPLICAS as u64) as usize;
                let (workspace, owner) = workspaces[(i / REPLICAS as u64) as usize % workspaces.len()];
                let (allowed, denied) = (i % 5 + 1, i % 4 / 2);
                if driver.boundary(replica, workspace, owner, allowed, denied).await {
                    let mut s = sent.lock();
                    s.allowed += allowed;
                    s.denied += denied;
                    s.workspaces.insert(workspace);
                    s.users.insert(owner);
                    s.replicas.insert(replica);
                    s.reached.entry(workspace).or_default().insert(replica);
                }
            }
        }));
    }
    let app = driver.clone();
    tasks.push(tokio::spawn(async move {
        while Instant::now() < until {
            app.app_stats_once().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(sent).unwrap().into_inner()
}

/// Waits until no replica holds unflushed boundary decisions, then checks
/// whether the period ending at `end` is still open: if so, all of them are
/// in its snapshot. Returns how long before `end` that was confirmed
/// (negative: after `end`), and whether the period was still open.
async fn flushed_before_close(
    client: &reqwest::Client,
    driver: &Driver,
    outbox: &mut Outbox,
    pool: &sqlx::PgPool,
    end: OffsetDateTime,
) -> (f64, bool) {
    let deadline = wall_to_instant(end) + INTERVAL;
    loop {
        let pending: Vec<u64> = scrape_all(client, driver.replicas.iter().copied())
            .await
            .iter()
            .map(|mx| mx.count(m::BOUNDARY_PENDING, &[]))
            .collect();
        if pending.iter().all(|&p| p == 0) {
            let confirmed = OffsetDateTime::now_utc();
            let open = !outbox.closed(pool, end).await;
            return ((end - confirmed).as_seconds_f64(), open);
        }
        assert!(
            Instant::now() < deadline,
            "replicas still hold {pending:?} unflushed decisions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn scenario(periods: usize) {
    assert!(
        periods > OUTAGE_PERIODS as usize + 1,
        "too few periods for the sink outage"
    );
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    let sink = crate::common::sink::Sink::start(0).await;
    let servers: Vec<_> = (0..REPLICAS)
        .map(|_| {
            // The last flag wins: these override `replica`'s and the harness's.
            Server::start(&[
                "--database-url",
                &url,
                "--snapshot-interval",
                &format!("{}s", INTERVAL.as_secs()),
                "--telemetry-url",
                &sink.url(),
                "--tracker-flush-interval",
                FLUSH,
            ])
        })
        .collect();
    let driver = Driver::new(servers.iter().map(|s| s.addr).collect(), None);
    let client = crate::common::client();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut outbox = Outbox::default();

    // The first period starts at a boundary already closed, with time to send.
    let first = crate::common::eventually(Duration::from_secs(10), "a first snapshot", || async {
        let rows = snapshots(&pool).await;
        rows.last().map(|r| r.period_end)
    })
    .await;
    let mut start = first;
    while OffsetDateTime::now_utc() + QUIET + MIN_SEND > start + INTERVAL {
        start += INTERVAL;
        outbox.wait_closed(&pool, start).await;
    }

    let mut sent: HashMap<OffsetDateTime, Sent> = HashMap::new();
    let mut margin = f64::MAX;
    // Periods closed before the replicas had flushed them.
    let mut late = HashSet::new();
    let mut outage_end = None;
    for k in 0..periods {
        let end = start + INTERVAL;
        outbox.wait_closed(&pool, start).await;
        if k == 1 {
            outage_end = Some(sink.outage(INTERVAL * OUTAGE_PERIODS + INTERVAL / 4));
        }
        let until = wall_to_instant(end - QUIET);
        let workspaces = plan(k);
        let s = if workspaces.is_empty() {
            tokio::time::sleep_until(until.into()).await;
            Sent::default()
        } else {
            send(&driver, Arc::new(workspaces.clone()), until).await
        };
        for (w, _) in &workspaces {
            let reached = s.reached.get(w).map_or(0, HashSet::len);
            assert_eq!(
                reached, REPLICAS,
                "period {k}: workspace {w} went through {reached} replicas"
            );
        }
        let (confirmed, open) = flushed_before_close(&client, &driver, &mut outbox, &pool, end).await;
        margin = margin.min(confirmed);
        if !open {
            late.insert(end);
        }
        sent.insert(end, s);
        start = end;
    }
    outbox.wait_closed(&pool, start).await;
    if late.contains(&start) {
        // The last period's late decisions are in the next snapshot.
        outbox.wait_closed(&pool, start + INTERVAL).await;
    }

    // Every snapshot delivered, then the counters at rest.
    crate::common::eventually(Duration::from_secs(20), "every snapshot published", || async {
        snapshots(&pool).await.iter().all(|r| r.published).then_some(())
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = settle_all(&client, driver.replicas.iter().copied()).await;
        let rows_now = snapshots(&pool).await;
        let accepted = sink.received.lock().accepted.len() as u64;
        let sum = |name| metrics.iter().map(|mx| mx.count(name, &[])).sum::<u64>();
        let attempts: u64 = rows_now.iter().map(|r| r.attempts as u64).sum();
        if sum(m::SNAPSHOTS_CLOSED) == rows_now.len() as u64
            && sum(m::SNAPSHOTS_PUBLISHED) == accepted
            && sum(m::SNAPSHOT_PUBLISH_FAILURES) == attempts
            && rows_now.iter().all(|r| r.published)
        {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the counters never agreed with the outbox and the sink: closed {} vs {} rows, \
             published {} vs {accepted} delivered, failures {} vs {attempts} attempts in the outbox: {rows_now:#?}",
            sum(m::SNAPSHOTS_CLOSED),
            rows_now.len(),
            sum(m::SNAPSHOTS_PUBLISHED),
            sum(m::SNAPSHOT_PUBLISH_FAILURES),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stopping: Vec<_> = servers
        .into_iter()
        .map(|s| tokio::task::spawn_blocking(move || stop(s)))
        .collect();
    for s in stopping {
        s.await.unwrap();
    }
    // A period may have closed while they stopped; it carries nothing, and a
    // replica publishes what it closed before it exits.
    let rows = snapshots(&pool).await;
    assert!(rows.iter().all(|r| r.published), "left unpublished: {rows:#?}");

    let acked = std::mem::take(&mut *driver.acked.lock());
    let received = std::mem::take(&mut *sink.received.lock());
    eprintln!(
        "exact: {periods} periods, {} boundary logs and {} app stats posts acknowledged, {} snapshots; \
         all flushed at worst {margin:.3} s before a period ended, closed at worst {:?} after; \
         sink refused {} requests, {} snapshots waited at once",
        acked.boundary_posts,
        acked.app_posts,
        rows.len(),
        outbox.slowest_close,
        received.refused,
        outbox.max_waiting,
    );
    let exact = check_periods(&rows, &sent, &late);
    let traffic = sent.values().filter(|s| s.allowed + s.denied > 0).count();
    eprintln!("{exact} of {traffic} periods with traffic checked exactly");
    assert!(
        exact >= traffic.min(2),
        "only {exact} periods could be checked exactly: the quiet zone of {QUIET:?} is too short for this machine"
    );
    for (i, mx) in metrics.iter().enumerate() {
        let want = acked.by_replica.get(&i).copied().unwrap_or_default();
        checks::replica_metrics(i, mx, want);
        assert_eq!(
            mx.count(m::BOUNDARY_PENDING, &[]),
            0,
            "replica {i}: decisions left unflushed"
        );
    }
    checks::sink_outage(
        &rows,
        &received,
        outage_end.expect("the outage was set"),
        outbox.max_waiting,
        INTERVAL,
    );
    checks::app_stats_exact(&pool, &acked).await;

    // Nothing was sent after the last period: nothing is left unclosed.
    let rest: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(allowed_requests + denied_requests), 0)::bigint FROM boundary_usage_replicas",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rest, 0, "decisions left outside every snapshot");
    pool.close().await;
    drop(db);
}

/// One snapshot per period, no period skipped, each with exactly what was
/// sent in it (nothing in the periods without traffic). Where a period was
/// closed before the replicas had flushed it (`late`: a starved machine), its
/// late decisions are in the next snapshot: those periods are checked
/// together, decisions exactly, unique counts within bounds. Returns how
/// many periods with traffic were checked exactly.
fn check_periods(
    rows: &[SnapshotRow],
    sent: &HashMap<OffsetDateTime, Sent>,
    late: &HashSet<OffsetDateTime>,
) -> usize {
    let interval = time::Duration::try_from(INTERVAL).unwrap();
    for pair in rows.windows(2) {
        assert_eq!(
            pair[1].period_end - pair[0].period_end,
            interval,
            "a period skipped or closed twice: {pair:#?}"
        );
    }
    let ends: HashSet<_> = rows.iter().map(|r| r.period_end).collect();
    for end in sent.keys() {
        assert!(ends.contains(end), "no snapshot for the period ending {end}");
    }
    let none = Sent::default();
    let mut exact = 0;
    let mut segment: Vec<&SnapshotRow> = Vec::new();
    for r in rows {
        assert_eq!(r.period_end - r.period_start, interval, "{r:?}");
        segment.push(r);
        if late.contains(&r.period_end) {
            continue;
        }
        let sent_in = |r: &SnapshotRow| sent.get(&r.period_end).unwrap_or(&none);
        if let [r] = segment[..] {
            let s = sent_in(r);
            let want = (
                s.allowed as i64,
                s.denied as i64,
                s.workspaces.len() as i64,
                s.users.len() as i64,
                s.replicas.len() as i64,
            );
            let got = (
                r.allowed,
                r.denied,
                r.unique_workspaces,
                r.unique_users,
                r.replicas,
            );
            assert_eq!(
                got, want,
                "period ending {}: (allowed, denied, workspaces, users, replicas) counted vs sent",
                r.period_end
            );
            exact += usize::from(s.allowed + s.denied > 0);
        } else {
            eprintln!(
                "periods ending {} to {} checked together: closed before the replicas had flushed (busy machine)",
                segment[0].period_end, r.period_end
            );
            let sum = |f: &dyn Fn(&SnapshotRow) -> i64| segment.iter().map(|r| f(r)).sum::<i64>();
            let sent_sum =
                |f: &dyn Fn(&Sent) -> usize| segment.iter().map(|r| f(sent_in(r)) as i64).sum::<i64>();
            assert_eq!(
                sum(&|r| r.allowed),
                sent_sum(&|s| s.allowed as usize),
                "{segment:#?}"
            );
            assert_eq!(
                sum(&|r| r.denied),
                sent_sum(&|s| s.denied as usize),
                "{segment:#?}"
            );
            // Pools are disjoint, and a decision lands in its period or the next.
            let (ws, users) = (sent_sum(&|s| s.workspaces.len()), sent_sum(&|s| s.users.len()));
            assert!(sum(&|r| r.unique_workspaces) >= ws, "{segment:#?}");
            assert!(sum(&|r| r.unique_users) >= users, "{segment:#?}");
            let first = sent_in(segment[0]);
            assert!(first.workspaces.len() >= segment[0].unique_workspaces as usize);
            assert!(first.users.len() >= segment[0].unique_users as usize);
            for pair in segment.windows(2) {
                let (before, r) = (sent_in(pair[0]), sent_in(pair[1]));
                assert!(r.workspaces.len() + before.workspaces.len() >= pair[1].unique_workspaces as usize);
                assert!(r.users.len() + before.users.len() >= pair[1].unique_users as usize);
            }
        }
        segment.clear();
    }
    assert!(
        segment.is_empty(),
        "the last period was closed before it was flushed"
    );
    exact
}
