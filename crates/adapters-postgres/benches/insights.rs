//! Insights benchmark of the PostgreSQL store: 90 days of a 6,000-workspace
//! fleet loaded by binary COPY a day at a time with their hourly rollup
//! rows, the store's tick rebuilding the day rows after each day, then
//! five minutes of fresh writes through `PgStore::write_app_stats`, then the
//! reads over a day, a week and 90 days, beside the limit: a plain fetch of
//! the packed day rows each read covers.
//!
//! `cargo bench -p tally-adapters-postgres --bench insights`
//! (`TALLY_BENCH_DAYS` shortens the data set, `TALLY_BENCH_USERS` shrinks
//! the fleet, `TALLY_BENCH_RUNS` sets the runs per query.)
//!
//! The loaded data set is kept in a PostgreSQL cluster of its own under
//! `target/bench-data/` (default settings), named by [`DATA_SET_VERSION`],
//! the fleet size and the days: a later run with the same key starts from it
//! at once, on a copy (`CREATE DATABASE ... TEMPLATE`), so the fresh writes
//! and the retention rounds never change it. Change the version whenever the
//! fleet model or the schema changes; `TALLY_BENCH_RELOAD=1` rebuilds it.
//!
//! The fleet: one user per workspace, in three regions whose working day
//! starts at 01:00, 08:00 and 14:00 UTC. On a weekday a user works with
//! probability 0.7, on a weekend day 0.08. A working day has two code-server
//! sessions (2.5 to 4 hours and 2 to 3.5 hours), four web terminals (2 to
//! 40 minutes), 25 rolled-up rows of 1 to 7 short sessions to one port (each
//! within one minute), and with probability 0.5 one session of another app (10 to
//! 90 minutes).

mod common;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_adapters_postgres::PgStore;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::ports::{AppStatsStore, AppStatsWrite, TimeRange, UsageStore};
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::{IntervalKind, Intervals, RetentionPolicy, interval};
use tally_tests::pg::KeptCluster;
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// Names the kept data set: bump it when the fleet model or the schema of
/// what the load writes changes.
const DATA_SET_VERSION: u32 = 3;

/// A Monday.
const DAY0: OffsetDateTime = datetime!(2026-01-05 00:00 UTC);
const CALL_ROWS: usize = 65_536;
const BATCH: usize = 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

struct Fleet {
    users: Vec<(Uuid, Uuid, Uuid)>,
}

const OTHER_APPS: [&str; 4] = ["jupyter", "filebrowser", "grafana", "rstudio"];
const PORTS: [&str; 3] = ["8080", "3000", "5173"];

fn session(
    who: (Uuid, Uuid, Uuid),
    method: AccessMethod,
    slug: &str,
    start: OffsetDateTime,
    len: time::Duration,
    requests: u64,
    rng: &mut StdRng,
) -> StatsReport {
    StatsReport {
        user_id: who.0,
        workspace_id: who.1,
        agent_id: who.2,
        access_method: method,
        slug_or_port: slug.to_owned(),
        session_id: uuid(rng),
        session_started_at: start,
        session_ended_at: Some(start + len),
        requests,
        sessions: 1,
    }
}

/// Every row of day `d`, in start order (as they would arrive).
fn day_rows(fleet: &Fleet, d: i64, rng: &mut StdRng) -> Vec<StatsReport> {
    let day = DAY0 + time::Duration::days(d);
    let weekday = d % 7 < 5;
    let mins = |m: i64| time::Duration::minutes(m);
    let mut rows = Vec::new();
    for (u, &who) in fleet.users.iter().enumerate() {
        if !rng.random_bool(if weekday { 0.7 } else { 0.08 }) {
            continue;
        }
        let begin = day + time::Duration::hours([1, 8, 14][u % 3]);
        let morning = begin + mins(rng.random_range(0..60));
        rows.push(session(
            who,
            AccessMethod::Subdomain,
            "code-server",
            morning,
            mins(rng.random_range(150..240)),
            rng.random_range(100..5000),
            rng,
        ));
        let afternoon = begin + mins(270 + rng.random_range(0..30));
        rows.push(session(
            who,
            AccessMethod::Subdomain,
            "code-server",
            afternoon,
            mins(rng.random_range(120..210)),
            rng.random_range(100..5000),
            rng,
        ));
        for _ in 0..4 {
            let at = begin + mins(rng.random_range(0..540));
            rows.push(session(
                who,
                AccessMethod::Terminal,
                "",
                at,
                mins(rng.random_range(2..40)),
                rng.random_range(10..500),
                rng,
            ));
        }
        let port = PORTS[rng.random_range(0..PORTS.len())];
        for _ in 0..25 {
            let at = begin + mins(rng.random_range(0..540));
            let folded = rng.random_range(1..8);
            rows.push(session(
                who,
                AccessMethod::Subdomain,
                port,
                at,
                time::Duration::seconds(rng.random_range(1..59)),
                rng.random_range(1..50),
                rng,
            ));
            // A rolled-up record of short sessions.
            rows.last_mut().unwrap().sessions = folded;
        }
        if rng.random_bool(0.5) {
            let app = OTHER_APPS[rng.random_range(0..OTHER_APPS.len())];
            let at = begin + mins(rng.random_range(0..480));
            rows.push(session(
                who,
                AccessMethod::Path,
                app,
                at,
                mins(rng.random_range(10..90)),
                rng.random_range(50..2000),
                rng,
            ));
        }
    }
    rows.sort_by_key(|r| r.session_started_at);
    rows
}

fn writes(rows: &[StatsReport]) -> Vec<AppStatsWrite> {
    rows.chunks(CALL_ROWS)
        .map(|chunk| {
            let mut last = std::collections::HashMap::new();
            for r in chunk {
                let end = r.session_ended_at.unwrap();
                last.entry(r.workspace_id)
                    .and_modify(|t: &mut OffsetDateTime| *t = (*t).max(end))
                    .or_insert(end);
            }
            AppStatsWrite {
                rows: chunk.to_vec(),
                batch_size: BATCH,
                last_used: last.into_iter().collect(),
            }
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50 and p99 (nearest rank) of `runs` timings.
fn percentiles(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let at = |p: f64| t[((p * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
    (ms(at(0.5)), ms(at(0.99)))
}

async fn sizes(store: &PgStore) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT relname::text, n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables \
         WHERE relname IN ('workspace_app_stats', 'app_usage_hours', 'app_usage_app_days', \
             'app_usage_fleet_days', 'app_usage_users') \
         ORDER BY relname",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::main]
async fn main() {
    let days = env("TALLY_BENCH_DAYS", 90) as i64;
    let users = env("TALLY_BENCH_USERS", 6000);
    let runs = env("TALLY_BENCH_RUNS", 30);
    let mut rng = StdRng::seed_from_u64(7);
    let fleet = Fleet {
        users: (0..users)
            .map(|_| (uuid(&mut rng), uuid(&mut rng), uuid(&mut rng)))
            .collect(),
    };
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target
        .join("bench-data")
        .join(format!("insights-v{DATA_SET_VERSION}-{users}u-{days}d"));
    if std::env::var_os("TALLY_BENCH_RELOAD").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let cluster = tokio::task::spawn_blocking(move || KeptCluster::open(&dir))
        .await
        .unwrap()
        .unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url("postgres")).await.unwrap();
    let loaded: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = 'insights')")
            .fetch_one(&admin)
            .await
            .unwrap();
    let mut load = None;
    if !loaded {
        sqlx::query("DROP DATABASE IF EXISTS insights_loading")
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE insights_loading")
            .execute(&admin)
            .await
            .unwrap();
        let store = PgStore::connect(&cluster.url("insights_loading")).await.unwrap();
        load = Some(load_data_set(&store, &fleet, days, &mut rng).await);
        sqlx::query("VACUUM ANALYZE").execute(store.pool()).await.unwrap();
        store.pool().close().await;
        drop(store);
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'insights_loading'",
        )
        .execute(&admin)
        .await
        .unwrap();
        // Named `insights` only once complete: an interrupted load starts over.
        sqlx::query("ALTER DATABASE insights_loading RENAME TO insights")
            .execute(&admin)
            .await
            .unwrap();
    } else {
        eprintln!("reusing the kept data set");
    }
    sqlx::query("DROP DATABASE IF EXISTS insights_run")
        .execute(&admin)
        .await
        .unwrap();
    let t = Instant::now();
    sqlx::query("CREATE DATABASE insights_run TEMPLATE insights STRATEGY = FILE_COPY")
        .execute(&admin)
        .await
        .unwrap();
    eprintln!("copied the data set in {:.1} s", t.elapsed().as_secs_f64());
    let store = PgStore::connect(&cluster.url("insights_run")).await.unwrap();
    let raw_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM workspace_app_stats")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let end_day = DAY0 + time::Duration::days(days);

    // Five minutes of fresh writes: the sessions that start in the last five
    // minutes of the busiest hour of a weekday, and every session open then
    // rewritten with a later end, as the collectors would.
    let last_weekday = (0..days).rev().find(|d| d % 7 < 5).unwrap();
    let busy = DAY0 + time::Duration::days(last_weekday) + time::Duration::hours(10);
    let window = (busy - time::Duration::minutes(5), busy);
    let mut fresh: Vec<StatsReport> = day_rows(&fleet, last_weekday, &mut StdRng::seed_from_u64(8))
        .into_iter()
        .filter(|r| r.session_started_at >= window.0 && r.session_started_at < window.1)
        .collect();
    let open: Vec<StatsReport> = store_rows_open_at(&store, window.1).await;
    let open_count = open.len();
    fresh.extend(open.into_iter().map(|mut r| {
        r.session_ended_at = r.session_ended_at.map(|e| e + time::Duration::seconds(30));
        r.requests += 7;
        r
    }));
    let fresh_count = fresh.len();
    for w in writes(&fresh) {
        store.write_app_stats(&w).await.unwrap();
    }
    let t = Instant::now();
    let five = store.tick_usage_rollup().await.unwrap();
    let tick_five = t.elapsed();

    sqlx::query("VACUUM ANALYZE").execute(store.pool()).await.unwrap();
    let sized = sizes(&store).await;

    // Reads over the last day, week and 90 days, in UTC and at +05:30.
    let mut reads = Vec::new();
    for offset in [UtcOffset::UTC, UtcOffset::from_hms(5, 30, 0).unwrap()] {
        for span in [1i64, 7, days.min(90)] {
            let to = end_day.to_offset(offset).date().midnight().assume_offset(offset);
            let from = to - time::Duration::days(span);
            let range = TimeRange::new(from, to).unwrap();
            let iv: Intervals = interval::intervals(range, IntervalKind::Day).unwrap();
            let mut app = Vec::new();
            let mut active = Vec::new();
            let mut top = Vec::new();
            let mut scan = Vec::new();
            let (first_day, end) = (
                hour_start(hour_of(from).div_euclid(24) * 24),
                to + time::Duration::DAY,
            );
            for _ in 0..runs {
                // The limit: a plain fetch of the packed rows app usage reads.
                let t = Instant::now();
                let fetched: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                    "SELECT figures, users FROM app_usage_app_days WHERE day >= $1 AND day < $2",
                )
                .bind(first_day)
                .bind(end)
                .fetch_all(store.pool())
                .await
                .unwrap();
                scan.push(t.elapsed());
                assert!(!fetched.is_empty());
                let t = Instant::now();
                let a = store.app_usage_by_interval(&iv).await.unwrap();
                app.push(t.elapsed());
                assert!(!a.is_empty());
                let t = Instant::now();
                store.active_users(&iv).await.unwrap();
                active.push(t.elapsed());
                let t = Instant::now();
                let u = store.user_activity(range, 100).await.unwrap();
                top.push(t.elapsed());
                assert!(!u.is_empty());
            }
            reads.push((
                offset,
                span,
                percentiles(app),
                percentiles(active),
                percentiles(top),
                percentiles(scan),
            ));
        }
    }

    // Retention: one round with the defaults at the end of the data, then
    // rounds that keep 30 days of raw rows, timed.
    let t = Instant::now();
    let round = store
        .purge_expired(end_day, &RetentionPolicy::default())
        .await
        .unwrap();
    let default_round = (t.elapsed(), round);
    let keep30 = RetentionPolicy {
        app_stats: time::Duration::days(30),
        ..RetentionPolicy::default()
    };
    let mut purge_rounds = Vec::new();
    loop {
        let t = Instant::now();
        let round = store.purge_expired(end_day, &keep30).await.unwrap();
        // A day of rounds is enough to time them.
        if round.app_stats_rows == 0 || purge_rounds.len() == 6 {
            break;
        }
        purge_rounds.push((t.elapsed(), round.app_stats_rows));
    }
    sqlx::query("VACUUM ANALYZE").execute(store.pool()).await.unwrap();
    let sized_after = sizes(&store).await;

    println!("\n{days} days, {users} users (one workspace each), {raw_rows} raw rows");
    match load {
        None => println!("(the kept data set: its load was measured when it was built)"),
        Some((write_time, ticks)) => {
            println!(
                "loaded by COPY in {:.1} s ({:.0} rows/s)",
                write_time.as_secs_f64(),
                raw_rows as f64 / write_time.as_secs_f64()
            );
            let (p50, p99) = percentiles(ticks.clone());
            println!(
                "tick rebuilding one whole day's day rows (after each day's load): median {p50:.0} ms, p99 {p99:.0} ms, max {:.0} ms",
                ms(*ticks.iter().max().unwrap())
            );
        }
    }
    println!(
        "tick over 5 minutes of fresh writes ({fresh_count} rows: {} new, {open_count} open sessions rewritten): {:.0} ms, {} start hours, {} rollup rows changed",
        fresh_count - open_count,
        ms(tick_five),
        five.start_hours,
        five.rows_changed
    );
    println!("\ntables after the load (VACUUM ANALYZE):");
    for (name, rows, bytes) in &sized {
        println!("- {name}: {rows} rows, {:.1} MiB", *bytes as f64 / 1048576.0);
    }
    let (users_bytes, totals_bytes, detail_bytes, entries): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT sum(octet_length(users))::int8, sum(octet_length(totals))::int8, \
         sum(octet_length(detail))::int8, sum(octet_length(users) / 16)::int8 FROM app_usage_fleet_days",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let mib = |b: i64| b as f64 / 1048576.0;
    println!(
        "fleet-day columns: users {:.1} MiB, totals {:.1} MiB, detail {:.1} MiB ({:.1} bytes per active user and day, {entries} of them)",
        mib(users_bytes),
        mib(totals_bytes),
        mib(detail_bytes),
        detail_bytes as f64 / entries as f64
    );
    println!(
        "\n| offset | range | app usage p50 / p99 ms | active users p50 / p99 ms | top-100 users p50 / p99 ms | plain scan of its day rows p50 / p99 ms |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (offset, span, a, b, c, d) in &reads {
        println!(
            "| {offset} | {span} d | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            a.0, a.1, b.0, b.1, c.0, c.1, d.0, d.1
        );
    }
    println!(
        "\nretention: a default round at the end of the data took {:.0} ms and deleted {:?}",
        ms(default_round.0),
        default_round.1
    );
    let deleted: u64 = purge_rounds.iter().map(|r| r.1).sum();
    let slowest = purge_rounds.iter().map(|r| r.0).max().unwrap_or_default();
    println!(
        "keeping 30 days of raw rows: {} rounds of at most 4 hours (the first day's) deleted {deleted} rows, slowest round {:.0} ms",
        purge_rounds.len(),
        ms(slowest)
    );
    println!("tables after it (VACUUM ANALYZE; the heap is reused, not returned):");
    for (name, rows, bytes) in &sized_after {
        println!("- {name}: {rows} rows, {:.1} MiB", *bytes as f64 / 1048576.0);
    }
}

/// Loads `days` days, one day at a time: the raw rows by binary COPY, and
/// the hourly rollup rows they make (`tally_domain::usage::rollup::
/// contributions`, the rules the tick's SQL follows and the conformance
/// suite holds it to) merged in as the tick would merge them, their days
/// marked; then a tick, which has no start hour to roll up and rebuilds the
/// packed rows of the marked days. (Rolling up 90 days of raw rows through
/// the tick takes over half an hour here; the tick's own roll-up is timed on
/// the fresh writes below.) Returns the time spent writing and each tick's.
async fn load_data_set(
    store: &PgStore,
    fleet: &Fleet,
    days: i64,
    rng: &mut StdRng,
) -> (Duration, Vec<Duration>) {
    let (mut write_time, mut ticks) = (Duration::ZERO, Vec::new());
    for d in 0..days {
        let rows = day_rows(fleet, d, rng);
        let t = Instant::now();
        copy_day(store, &rows).await;
        write_time += t.elapsed();
        let t = Instant::now();
        let tick = store.tick_usage_rollup().await.unwrap();
        ticks.push(t.elapsed());
        if d % 10 == 0 {
            eprintln!(
                "day {d}: {} rows, day rows rebuilt in {:.0} ms ({} start hours rolled up)",
                rows.len(),
                ms(ticks[d as usize]),
                tick.start_hours
            );
        }
    }
    (write_time, ticks)
}

/// The hourly rows of `rows` in COPY's text format.
fn hourly_copy(rows: &[StatsReport]) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    for ((user, method, slug, hour), u) in tally_domain::usage::rollup::contributions(rows) {
        let at = hour_start(hour);
        writeln!(
            out,
            "{}\t{user}\t{}\t{slug}\t{}\t{}\t{}",
            at.format(&time::format_description::well_known::Rfc3339).unwrap(),
            method.as_str(),
            u.minutes,
            u.sessions,
            u.requests
        )
        .unwrap();
    }
    out
}

/// Stored rows of sessions still open at `at` (ending after it).
async fn store_rows_open_at(store: &PgStore, at: OffsetDateTime) -> Vec<StatsReport> {
    use futures::TryStreamExt;
    let range = TimeRange::new(at - time::Duration::hours(6), at).unwrap();
    let rows: Vec<StatsReport> = tally_domain::usage::export::export_app_stats(store, range)
        .try_collect()
        .await
        .unwrap();
    rows.into_iter()
        .filter(|r| r.session_ended_at.unwrap() > at)
        .collect()
}

/// One day's raw rows by binary COPY and their hourly rows merged into
/// the rollup (minutes OR'ed, counts added: a start hour's counts come from
/// one day only), their days marked for the packed rows, in one transaction.
async fn copy_day(store: &PgStore, rows: &[StatsReport]) {
    let mut tx = store.pool().begin().await.unwrap();
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY workspace_app_stats {} FROM STDIN (FORMAT binary)",
            common::COPY_COLUMNS
        ))
        .await
        .unwrap();
    copy.send(common::binary_copy(rows)).await.unwrap();
    copy.finish().await.unwrap();
    sqlx::query("CREATE TEMPORARY TABLE stage (LIKE app_usage_hours) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut copy = tx
        .copy_in_raw(
            "COPY stage (hour, user_id, access_method, slug_or_port, minutes, sessions, requests) FROM STDIN",
        )
        .await
        .unwrap();
    copy.send(hourly_copy(rows)).await.unwrap();
    copy.finish().await.unwrap();
    for sql in [
        "INSERT INTO app_usage_hours AS u SELECT * FROM stage ON CONFLICT (hour, user_id, access_method, slug_or_port) \
         DO UPDATE SET minutes = u.minutes | excluded.minutes, sessions = u.sessions + excluded.sessions, \
         requests = u.requests + excluded.requests",
        "INSERT INTO app_usage_packed_dirty (day) SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM stage",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}
