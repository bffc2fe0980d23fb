//! The database stops during load (as in a crash: `pg_ctl stop -m immediate`)
//! for `TALLY_OUTAGE_SECONDS` (default 10 s) and comes back: three `tally
//! serve` replicas keep taking ingest, lose nothing they acknowledged, recover
//! by themselves (no restart), drain their backlog, resume closing periods,
//! and their metrics and logs show the outage.
//!
//! One replica has a small collector cap: it refuses app stats (503, the
//! proxy retries) once its buffer is full, and never acknowledges what it
//! cannot keep. The database is a private cluster of this test (never
//! `TALLY_TEST_DATABASE_URL`, which cannot be stopped).
//!
//! Longer runs: `TALLY_OUTAGE_SECONDS` (at least 8: the outage must outlast
//! the store's 5 s wait for a connection), `TALLY_OUTAGE_LOAD_SECONDS` (load
//! before and after the outage, default 4 s each), `TALLY_OUTAGE_SHUTDOWN`
//! (`immediate`, the default, or `fast` for a clean stop).
//!
//! `db_outage/edges.rs`: a replica started, and one stopped, while the
//! database is down.

pub mod check;
mod edges;
pub mod load;

use crate::common::{self, scrape, sink};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Server;
use load::Driver;
use tally::metrics::{
    BACKLOG_ROWS as APP_BACKLOG, BOUNDARY_FLUSH_FAILURES as BOUNDARY_FAILURES, BOUNDARY_PENDING,
    FAILED_FLUSHES as APP_FAILED_FLUSHES, REPORTS_REFUSED, STORE_UP, TRACKED_SESSIONS,
};
use tally_tests::pg::{PrivateCluster, Shutdown};
use time::OffsetDateTime;

const REPLICAS: usize = 3;

/// How the database goes down: `TALLY_OUTAGE_SHUTDOWN=fast` for a clean
/// stop, else a crash (`immediate`).
fn shutdown_from_env() -> Shutdown {
    match std::env::var("TALLY_OUTAGE_SHUTDOWN").as_deref() {
        Ok("fast") => Shutdown::Fast,
        Ok("immediate") | Err(_) => Shutdown::Immediate,
        Ok(other) => panic!("TALLY_OUTAGE_SHUTDOWN={other:?}: expected fast or immediate"),
    }
}

/// The last replica's collector cap, in reports at their worst case (a new
/// session in a group of its own): far above what the load holds while the
/// database is up (a few hundred sessions of a few groups); the test fills
/// it during the outage until it refuses app stats (503).
const SMALL_CAP_REPORTS: u64 = 1000;
/// Most posts (8 new sessions each) the test sends to fill the capped
/// replica: several times what the cap holds.
const FILL_POSTS: usize = 2000;

/// Runs `f` on the cluster off the runtime's threads (it blocks until done).
async fn with_cluster(
    cluster: PrivateCluster,
    f: impl FnOnce(&mut PrivateCluster) + Send + 'static,
) -> PrivateCluster {
    tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        f(&mut cluster);
        cluster
    })
    .await
    .unwrap()
}

/// Lines of `log` holding `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_loses_nothing_and_the_replicas_recover_by_themselves() {
    let outage = Duration::from_secs(common::number_from_env("TALLY_OUTAGE_SECONDS", 10));
    let load = Duration::from_secs(common::number_from_env("TALLY_OUTAGE_LOAD_SECONDS", 4));
    // A store call waits this long for a connection before it fails: the
    // outage must last longer for failures to show.
    let felt = tally::store::ACQUIRE_TIMEOUT + Duration::from_secs(3);
    assert!(
        outage >= felt,
        "TALLY_OUTAGE_SECONDS must be at least {} for the failures to show",
        felt.as_secs()
    );
    let cluster = PrivateCluster::started().await;
    let db = cluster.fresh_database().await;
    let url = db.url.clone();
    let sink = sink::Sink::start(0).await;
    let small_cap = common::memory_for_reports(SMALL_CAP_REPORTS);
    let servers: Vec<Server> = (0..REPLICAS)
        .map(|i| {
            let extra: &[&str] = if i == REPLICAS - 1 {
                &["--max-memory", &small_cap]
            } else {
                &[]
            };
            common::replica(&url, &sink.url(), extra)
        })
        .collect();
    let driver = Driver::new(servers.iter().map(|s| s.addr).collect());
    let client = common::client();
    let run = driver.start(4, 2);

    // Up: flushes work, nothing has failed.
    tokio::time::sleep(load).await;
    let before = scrape::scrape_all(&client, servers.iter().map(|s| s.addr)).await;
    check::all_healthy(&before, "before the outage");

    // Down, as in a crash. Load goes on; the metrics are watched.
    driver.outage.store(true, Ordering::SeqCst);
    let how = shutdown_from_env();
    let cluster = with_cluster(cluster, move |c| c.stop(how).unwrap()).await;
    let down_at = Instant::now();
    // A read needs the store: it fails, clearly and in bounded time.
    let read = check::start_read(&client, &servers[0]);
    // The capped replica, pushed with new sessions until it refuses: it
    // cannot write them, so they fill its cap whatever the machine's speed.
    let refused = driver.fill_until_refused(REPLICAS - 1, FILL_POSTS).await;
    let refused = refused.unwrap_or_else(|| panic!("the capped replica refused none of {FILL_POSTS} posts"));
    let mut max_backlog = [0.0f64; REPLICAS];
    let mut max_pending = [0.0f64; REPLICAS];
    let mut max_tracked = [0.0f64; REPLICAS];
    let mut saw_down = [false; REPLICAS];
    // Scraped at least once while the database is down: filling the cap
    // can take the whole outage on a loaded machine, and the checks below
    // read every replica's scrape.
    let mut during = Vec::new();
    while during.is_empty() || down_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(500).min(outage)).await;
        during = scrape::scrape_all(&client, servers.iter().map(|s| s.addr)).await;
        for (i, s) in during.iter().enumerate() {
            max_backlog[i] = max_backlog[i].max(s.get(APP_BACKLOG, &[]));
            max_pending[i] = max_pending[i].max(s.get(BOUNDARY_PENDING, &[]));
            max_tracked[i] = max_tracked[i].max(s.get(TRACKED_SESSIONS, &[]));
            saw_down[i] |= s.get(STORE_UP, &[]) == 0.0;
        }
    }
    check::refused_within(read, tally::store::ACQUIRE_TIMEOUT + Duration::from_secs(2)).await;
    let health = client
        .get(servers[0].url("/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        health,
        reqwest::StatusCode::OK,
        "/healthz is liveness: up while the store is down"
    );

    // Back on the same data and port; tally is not restarted.
    let cluster = with_cluster(cluster, |c| c.start().unwrap()).await;
    driver.outage.store(false, Ordering::SeqCst);
    let up_at = Instant::now();
    let up_wall = OffsetDateTime::now_utc();

    // The refused post is taken once the backlog has room again.
    driver.resend(REPLICAS - 1, &refused).await;
    // The backlog drains by itself, under load.
    let drained = check::drained(&client, &servers, &during, Duration::from_secs(30)).await;
    let drain_time = up_at.elapsed();
    tokio::time::sleep(load.saturating_sub(drain_time)).await;
    driver.stop.store(true, Ordering::SeqCst);
    run.await.unwrap();
    let load_ended = OffsetDateTime::now_utc();

    // Idle: the boundary usage is flushed too.
    scrape::settle_all(&client, servers.iter().map(|s| s.addr)).await;

    // Periods resume: one after the last acknowledged request is closed (so
    // it holds everything), and every snapshot is published.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows = check::published_after(&pool, load_ended, Duration::from_secs(20)).await;

    let after = scrape::scrape_all(&client, servers.iter().map(|s| s.addr)).await;
    let logs = check::stop_cleanly(servers).await;

    // What an operator reads: replica 0's warnings and errors.
    for line in logs[0]
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        eprintln!("replica 0: {line}");
    }
    let acked = std::mem::take(&mut *driver.acked.lock());
    let failed_app: Vec<f64> = after.iter().map(|s| s.get(APP_FAILED_FLUSHES, &[])).collect();
    let failed_boundary: Vec<f64> = after.iter().map(|s| s.get(BOUNDARY_FAILURES, &[])).collect();
    let warned_app: Vec<usize> = logs
        .iter()
        .map(|l| count_lines(l, "app stats flush failed"))
        .collect();
    let warned_boundary: Vec<usize> = logs
        .iter()
        .map(|l| count_lines(l, "boundary usage flush failed"))
        .collect();
    eprintln!(
        "outage {outage:?} ({how:?} stop), load {load:?} before and after\n\
         acknowledged: {} boundary logs ({} allowed, {} denied), {} app stats posts ({} sessions)\n\
         during the outage: {} boundary logs and {} app stats posts acknowledged, {} / {} refused (503)\n\
         failed flushes per replica: app stats {failed_app:?}, boundary {failed_boundary:?}\n\
         warnings per replica: app stats {warned_app:?}, boundary {warned_boundary:?}\n\
         peak during the outage: app stats backlog rows {max_backlog:?}, sessions held {max_tracked:?}, \
         boundary pending {max_pending:?}\n\
         backlog drained {drain_time:?} after the restart; {} snapshots",
        acked.total.boundary_acked,
        acked.allowed,
        acked.denied,
        acked.total.app_acked,
        acked.sessions.len(),
        acked.outage.boundary_acked,
        acked.outage.app_acked,
        acked.outage.boundary_refused,
        acked.outage.app_refused,
        rows.len(),
    );
    // The capped replica refused app stats while it could not write them,
    // and only then; every refused request was acknowledged on a retry.
    assert!(acked.outage.app_refused > 0, "the capped replica refused nothing");
    assert!(after[REPLICAS - 1].get(REPORTS_REFUSED, &[]) > 0.0);
    assert_eq!(
        before[REPLICAS - 1].get(REPORTS_REFUSED, &[]),
        0.0,
        "refused while the database was up"
    );
    assert!(
        acked.outage.boundary_acked + acked.outage.boundary_refused > 50
            && acked.outage.app_acked + acked.outage.app_refused > 10,
        "too little load during the outage to prove anything: {:?}",
        acked.outage
    );

    // The metrics showed it, on every replica, and show the recovery.
    for i in 0..REPLICAS {
        assert!(
            during[i].get(APP_FAILED_FLUSHES, &[]) > 0.0,
            "replica {i}: no failed app stats flush counted during the outage"
        );
        assert!(
            during[i].get(BOUNDARY_FAILURES, &[]) > 0.0,
            "replica {i}: no failed boundary flush counted during the outage"
        );
        assert!(
            max_backlog[i] > 0.0,
            "replica {i}: no app stats backlog seen during the outage"
        );
        assert!(
            max_pending[i] > 0.0,
            "replica {i}: no boundary usage pending during the outage"
        );
        assert!(
            saw_down[i],
            "replica {i}: {STORE_UP} never went to 0 during the outage"
        );
        assert_eq!(drained[i].get(APP_BACKLOG, &[]), 0.0);
        assert_eq!(
            after[i].get(STORE_UP, &[]),
            1.0,
            "replica {i} after: {:?}",
            after[i]
        );
        // The log says so, once per failed flush, backing off: not a flood.
        assert!(
            warned_app[i] >= 1 && warned_boundary[i] >= 1,
            "replica {i}:\n{}",
            logs[i]
        );
        assert!(
            logs[i].contains("store reachable again"),
            "replica {i}:\n{}",
            logs[i]
        );
        let most = outage.as_secs() as usize / 2 + 3;
        assert!(
            warned_app[i] <= most && warned_boundary[i] <= most,
            "replica {i}: more than {most} warnings for a {outage:?} outage:\n{}",
            logs[i]
        );
    }

    // Exactly one snapshot per period, and periods closed after the outage.
    check::one_snapshot_per_period(&rows);
    let since_up = rows.iter().filter(|r| r.period_start >= up_wall).count();
    assert!(
        since_up >= 2,
        "periods did not resume after the outage: {rows:#?}"
    );
    // Nothing acknowledged is lost; each snapshot reached the sink once.
    check::nothing_lost(&pool, &acked, &rows).await;
    assert_eq!(check::delivered(&sink, &rows), 0, "a snapshot delivered twice");
    pool.close().await;
    drop(db);
    drop(cluster);
}
