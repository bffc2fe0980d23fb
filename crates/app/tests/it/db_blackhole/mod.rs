//! The database disappears behind a network blackhole during load: a proxy
//! between `tally serve` and PostgreSQL keeps every connection open but
//! forwards nothing for `FREEZE` (no refusal, no reset: queries just wait).
//! With `--store-timeout 2s` each store call gives up after 2 s, so the
//! replicas report the outage (`tally_store_up` 0, failed flushes counted, a
//! warning naming the timeout), keep taking ingest, lose nothing they
//! acknowledged once the network heals, drain their backlog, resume closing
//! periods and stop cleanly.
//!
//! When the proxy thaws, the bytes it held back are delivered (see
//! `db_blackhole/proxy.rs`): calls the replicas gave up on may still apply,
//! and their retries must not count anything twice.

mod proxy;

use crate::common::{self, scrape, sink};
use crate::db_outage::{check, load};

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Server;
use load::Driver;
use proxy::Proxy;
use scrape::scrape;
use tally::metrics::{
    BACKLOG_ROWS as APP_BACKLOG, BOUNDARY_FLUSH_FAILURES as BOUNDARY_FAILURES, BOUNDARY_PENDING,
    FAILED_FLUSHES as APP_FAILED_FLUSHES, STORE_UP,
};
use time::OffsetDateTime;

const REPLICAS: usize = 2;
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
const FREEZE: Duration = Duration::from_secs(8);
const LOAD: Duration = Duration::from_secs(3);
/// Longest the shutdown test waits for a final flush to fail.
const SHUTDOWN_CAP: Duration = Duration::from_secs(15);

/// The server address a database URL names.
fn server_of(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    let host = u
        .host_str()
        .unwrap_or_else(|| panic!("the test database must be reached over TCP, got {url}"));
    (host, u.port().unwrap_or(5432))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

/// `url` with its host and port replaced by `to`'s.
fn through(url: &str, to: SocketAddr) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_host(Some(&to.ip().to_string())).unwrap();
    u.set_port(Some(to.port())).unwrap();
    u.to_string()
}

/// The tests load the machine hard: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn replica(url: &str, sink: &sink::Sink, extra: &[&str]) -> Server {
    let timeout = humantime::format_duration(STORE_TIMEOUT).to_string();
    let mut args = vec!["--store-timeout", &timeout];
    args.extend(extra);
    common::replica(url, &sink.url(), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blackholed_database_is_reported_retried_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let db = tally_tests::pg::fresh_database().await;
    let proxy = Proxy::start(server_of(&db.url)).await;
    let url = through(&db.url, proxy.addr);
    let sink = sink::Sink::start(0).await;
    let servers: Vec<Server> = (0..REPLICAS).map(|_| replica(&url, &sink, &[])).collect();
    let driver = Driver::new(servers.iter().map(|s| s.addr).collect());
    let client = common::client();
    let run = driver.start(4, 2);

    tokio::time::sleep(LOAD).await;
    let before = scrape::scrape_all(&client, servers.iter().map(|s| s.addr)).await;
    check::all_healthy(&before, "before");

    // Blackhole: every connection stays open, nothing gets through.
    driver.outage.store(true, Ordering::SeqCst);
    proxy.freeze();
    let frozen_at = Instant::now();
    let read = check::start_read(&client, &servers[0]);
    let mut saw_down = [false; REPLICAS];
    let mut max_backlog = [0.0f64; REPLICAS];
    let mut max_pending = [0.0f64; REPLICAS];
    let mut during = Vec::new();
    while frozen_at.elapsed() < FREEZE {
        tokio::time::sleep(Duration::from_millis(500)).await;
        during = scrape::scrape_all(&client, servers.iter().map(|s| s.addr)).await;
        for (i, s) in during.iter().enumerate() {
            saw_down[i] |= s.get(STORE_UP, &[]) == 0.0;
            max_backlog[i] = max_backlog[i].max(s.get(APP_BACKLOG, &[]));
            max_pending[i] = max_pending[i].max(s.get(BOUNDARY_PENDING, &[]));
        }
    }
    check::refused_within(read, STORE_TIMEOUT + Duration::from_secs(2)).await;

    // The network heals; tally is not restarted.
    proxy.unfreeze();
    driver.outage.store(false, Ordering::SeqCst);
    let thawed_at = Instant::now();
    let thawed_wall = OffsetDateTime::now_utc();
    let drained = check::drained(&client, &servers, &during, Duration::from_secs(20)).await;
    let drain_time = thawed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(drain_time)).await;
    driver.stop.store(true, Ordering::SeqCst);
    run.await.unwrap();
    let load_ended = OffsetDateTime::now_utc();
    scrape::settle_all(&client, servers.iter().map(|s| s.addr)).await;

    // Periods resume: one after the last acknowledged request closes, and
    // every snapshot goes out.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows = check::published_after(&pool, load_ended, Duration::from_secs(15)).await;

    let after = scrape::scrape_all(&client, servers.iter().map(|s| s.addr)).await;
    let logs = check::stop_cleanly(servers).await;
    for line in logs[0].lines().filter(|l| l.contains("WARN")) {
        eprintln!("replica 0: {line}");
    }

    let acked = std::mem::take(&mut *driver.acked.lock());
    let timed_out: Vec<usize> = logs
        .iter()
        .map(|l| l.lines().filter(|l| l.contains("timed out after 2s")).count())
        .collect();
    let failed_app: Vec<f64> = after.iter().map(|s| s.get(APP_FAILED_FLUSHES, &[])).collect();
    let failed_boundary: Vec<f64> = after.iter().map(|s| s.get(BOUNDARY_FAILURES, &[])).collect();
    let repeats = check::delivered(&sink, &rows);
    eprintln!(
        "blackhole {FREEZE:?}, store timeout {STORE_TIMEOUT:?}, load {LOAD:?} before\n\
         acknowledged: {} boundary logs ({} allowed, {} denied), {} app stats posts ({} sessions)\n\
         during the blackhole: {} boundary logs and {} app stats posts acknowledged, {} / {} refused (503)\n\
         failed flushes per replica: app stats {failed_app:?}, boundary {failed_boundary:?}\n\
         timeout warnings per replica: {timed_out:?}\n\
         peak during the blackhole: app stats backlog rows {max_backlog:?}, boundary pending {max_pending:?}\n\
         backlog drained {drain_time:?} after the thaw; {} snapshots, {repeats} delivered again",
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
    assert!(
        acked.outage.boundary_acked > 50 && acked.outage.app_acked > 10,
        "too little load acknowledged during the blackhole: {:?}",
        acked.outage
    );

    for i in 0..REPLICAS {
        assert!(
            saw_down[i],
            "replica {i}: {STORE_UP} never went to 0 in the blackhole"
        );
        assert!(
            during[i].get(APP_FAILED_FLUSHES, &[]) > 0.0,
            "replica {i}: no failed app stats flush counted in the blackhole"
        );
        assert!(
            during[i].get(BOUNDARY_FAILURES, &[]) > 0.0,
            "replica {i}: no failed boundary flush counted in the blackhole"
        );
        assert!(max_backlog[i] > 0.0, "replica {i}: no app stats backlog seen");
        assert!(
            max_pending[i] > 0.0,
            "replica {i}: no boundary usage pending seen"
        );
        assert_eq!(drained[i].get(APP_BACKLOG, &[]), 0.0);
        assert_eq!(
            after[i].get(STORE_UP, &[]),
            1.0,
            "replica {i} after: {:?}",
            after[i]
        );
        assert!(timed_out[i] >= 1, "replica {i}: no timeout warning:\n{}", logs[i]);
        assert!(
            logs[i].contains("store reachable again"),
            "replica {i}:\n{}",
            logs[i]
        );
    }

    check::one_snapshot_per_period(&rows);
    assert!(
        rows.iter().filter(|r| r.period_start >= thawed_wall).count() >= 2,
        "periods did not resume after the blackhole: {rows:#?}"
    );
    check::nothing_lost(&pool, &acked, &rows).await;
    pool.close().await;
    drop(proxy);
    drop(db);
}

/// The network freezes the moment the sink accepts a snapshot, before the
/// replica can mark it published: the mark times out and the round ends
/// holding its claim. Once the network heals the replica sends it again
/// (same id and body) and marks it, in seconds, not after the 5-minute
/// claim lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_between_delivery_and_mark_delays_the_snapshot_only_until_the_thaw() {
    let _serial = SERIAL.lock().await;
    let db = tally_tests::pg::fresh_database().await;
    let proxy = Proxy::start(server_of(&db.url)).await;
    let url = through(&db.url, proxy.addr);
    let sink = sink::Sink::start(0).await;
    let server = replica(&url, &sink, &[]);

    let frozen = std::sync::Arc::new(tokio::sync::Notify::new());
    let freeze = proxy.freezer();
    let told = frozen.clone();
    sink.on_next_accept(move || {
        freeze();
        told.notify_one();
    });
    tokio::time::timeout(Duration::from_secs(15), frozen.notified())
        .await
        .expect("no snapshot delivered");
    // Longer than the store timeout: the mark gives up.
    tokio::time::sleep(STORE_TIMEOUT + Duration::from_secs(1)).await;
    proxy.unfreeze();
    let healed = OffsetDateTime::now_utc();

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows = check::published_after(&pool, healed, Duration::from_secs(15)).await;
    let logs = check::stop_cleanly(vec![server]).await;
    assert!(
        logs[0].contains("store call mark_snapshot_published timed out after 2s"),
        "the freeze did not catch the mark:\n{}",
        logs[0]
    );
    let repeats = check::delivered(&sink, &rows);
    eprintln!("{} snapshots, {repeats} delivered again", rows.len());
    check::one_snapshot_per_period(&rows);
    pool.close().await;
    drop(proxy);
    drop(db);
}

/// SIGTERM while the database is blackholed: the final flushes time out,
/// are retried within the shutdown timeout, and succeed once the network
/// heals; the replica exits 0 with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_in_the_blackhole_flushes_once_the_network_heals() {
    let _serial = SERIAL.lock().await;
    let db = tally_tests::pg::fresh_database().await;
    let proxy = Proxy::start(server_of(&db.url)).await;
    let url = through(&db.url, proxy.addr);
    let sink = sink::Sink::start(0).await;
    let server = replica(&url, &sink, &["--shutdown-timeout", "20s"]);
    let driver = Driver::new(vec![server.addr]);
    let run = driver.start(2, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.freeze();
    driver.outage.store(true, Ordering::SeqCst);
    // Taken in the blackhole, so held in memory at the signal.
    tokio::time::sleep(Duration::from_secs(1)).await;
    driver.stop.store(true, Ordering::SeqCst);
    run.await.unwrap();
    let held = scrape(&common::client(), server.addr).await;
    assert!(held.get(BOUNDARY_PENDING, &[]) > 0.0, "{held:?}");

    server.signal("-TERM");
    let signalled = Instant::now();
    // The network heals only once a final flush has failed in the
    // blackhole (the loops first finish their calls, each cut off at the
    // store timeout): that flush must be retried, not given up.
    common::eventually(SHUTDOWN_CAP, "a final flush to fail and be retried", || {
        let log = server.logs();
        async move {
            log.contains("final app stats flush failed; retrying")
                .then_some(())
        }
    })
    .await;
    let healed_after = signalled.elapsed();
    proxy.unfreeze();
    let (status, log) = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let took = signalled.elapsed();
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("tally::serve"))
    {
        eprintln!("replica: {line}");
    }
    eprintln!("exited {took:?} after SIGTERM, the network healed after {healed_after:?}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(log.contains("timed out after 2s"), "{log}");
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");

    let acked = std::mem::take(&mut *driver.acked.lock());
    assert!(
        acked.outage.boundary_acked > 0 && acked.outage.app_acked > 0,
        "{acked:?}"
    );
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows = check::snapshots(&pool).await;
    check::one_snapshot_per_period(&rows);
    check::nothing_lost(&pool, &acked, &rows).await;
    pool.close().await;
    drop(proxy);
    drop(db);
}
