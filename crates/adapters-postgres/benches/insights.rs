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
//! `TALLY_BENCH_YEAR=1` instead times the widest range a read accepts (366
//! days) over a year of the fleet made from the kept data set
//! (`common/year.rs`; kept too, as `insights_year_YYYYMMDD`, the day it was
//! built), and nothing else.
//!
//! The loaded data set is kept in a PostgreSQL cluster of its own under
//! `target/bench-data/` (default settings), named by [`DATA_SET_VERSION`],
//! the fleet size and the days: a later run with the same key starts from it
//! at once, on a copy (`CREATE DATABASE ... TEMPLATE`), so the fresh writes
//! and the retention rounds never change it. Change the version whenever the
//! fleet model or the schema changes; `TALLY_BENCH_RELOAD=1` rebuilds it.
//!
//! The fleet is `common/fleet.rs`.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{DAY0, Fleet, copy_day, day_rows};
use common::{env, ms, percentiles};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tally_adapters_postgres::PgStore;
use tally_domain::appstats::StatsReport;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, TimeRange, UsageStore};
use tally_domain::usage::minutes::{hour_of, hour_start};
use tally_domain::usage::{IntervalKind, Intervals, RetentionPolicy, interval};
use tally_tests::pg::KeptCluster;
use time::{OffsetDateTime, UtcOffset};

/// Names the kept data set: bump it when the fleet model or the schema of
/// what the load writes changes.
const DATA_SET_VERSION: u32 = 3;

const CALL_ROWS: usize = 65_536;
const BATCH: usize = 1024;

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

#[tokio::main]
async fn main() {
    let days = env("TALLY_BENCH_DAYS", 90) as i64;
    let users = env("TALLY_BENCH_USERS", 6000);
    let runs = env("TALLY_BENCH_RUNS", 30);
    let mut rng = StdRng::seed_from_u64(7);
    let fleet = Fleet::new(users, &mut rng);
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
    if std::env::var_os("TALLY_BENCH_YEAR").is_some() {
        let today = OffsetDateTime::now_utc().date().midnight().assume_utc();
        let name = common::year::name(today);
        let built: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&admin)
            .await
            .unwrap();
        if !built {
            for sql in [
                "DROP DATABASE IF EXISTS insights_year_building",
                "CREATE DATABASE insights_year_building TEMPLATE insights STRATEGY = FILE_COPY",
            ] {
                sqlx::query(sql).execute(&admin).await.unwrap();
            }
            let pool = sqlx::PgPool::connect(&cluster.url("insights_year_building"))
                .await
                .unwrap();
            let t = Instant::now();
            common::year::build(&pool, days, today).await;
            eprintln!("built the year in {:.1} s", t.elapsed().as_secs_f64());
            drop(pool);
            // A rename refuses while any session is in the database, and a
            // dropped pool's backends may still be exiting: end them first.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = 'insights_year_building' AND pid <> pg_backend_pid()",
            )
            .execute(&admin)
            .await
            .unwrap();
            let rename = format!("ALTER DATABASE insights_year_building RENAME TO {name}");
            let mut tries = 0;
            while let Err(e) = sqlx::query(&rename).execute(&admin).await {
                tries += 1;
                assert!(tries < 50, "renaming the year database: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let store = PgStore::connect(&cluster.url(&name)).await.unwrap();
        common::year::widest_reads(&store, runs).await;
        return;
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
    let sized = common::sizes(store.pool()).await;

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
    let sized_after = common::sizes(store.pool()).await;

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
    for t in &sized {
        println!(
            "- {}: {} rows, {:.1} MiB",
            t.name,
            t.live_rows,
            common::mib(t.total)
        );
    }
    let (users_bytes, totals_bytes, detail_bytes, entries): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT sum(octet_length(users))::int8, sum(octet_length(totals))::int8, \
         sum(octet_length(detail))::int8, sum(octet_length(users) / 16)::int8 FROM app_usage_fleet_days",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    println!(
        "fleet-day columns: users {:.1} MiB, totals {:.1} MiB, detail {:.1} MiB ({:.1} bytes per active user and day, {entries} of them)",
        common::mib(users_bytes),
        common::mib(totals_bytes),
        common::mib(detail_bytes),
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
    let each: Vec<String> = purge_rounds
        .iter()
        .map(|(t, rows)| format!("{rows} rows in {:.0} ms", ms(*t)))
        .collect();
    println!("  each round: {}", each.join(", "));
    println!("tables after it (VACUUM ANALYZE; the heap is reused, not returned):");
    for t in &sized_after {
        println!(
            "- {}: {} rows, {:.1} MiB",
            t.name,
            t.live_rows,
            common::mib(t.total)
        );
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
