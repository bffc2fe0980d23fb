//! Table sizes with and without retention. The insights bench's fleet
//! (`common/fleet.rs`, 6,000 users) is loaded a day at a time, the same
//! rows into two databases of one PostgreSQL cluster at its default settings
//! (autovacuum on): raw rows by binary COPY with their hourly rollup rows,
//! then a tick rebuilding the day's day rows, as the insights bench loads.
//! In `purged`, each day's load is followed by retention rounds as `serve`
//! runs them (`PgStore::purge_expired` at the end of that day, the default
//! batch of at most 4 hours per table per round) until they have caught up;
//! in `kept` nothing is deleted. Retention is scaled to the 90-day load:
//! raw rows are kept 30 days and the rollup 60 days (the defaults are 90
//! days and a year), so each window fills and then holds for a while. Every
//! N days it prints every table's size in both.
//!
//! `cargo bench -p tally-adapters-postgres --bench retention`
//! (`TALLY_BENCH_DAYS` (90), `TALLY_BENCH_USERS` (6000),
//! `TALLY_BENCH_RAW_DAYS` (30), `TALLY_BENCH_USAGE_DAYS` (60),
//! `TALLY_BENCH_EVERY` (10 days); `TALLY_BENCH_KEEP=1` leaves both
//! databases in the cluster under `target/bench-data/retention`, else they
//! are dropped at the end.)

mod common;

use std::time::{Duration, Instant};

use common::fleet::{DAY0, Fleet, copy_day, day_rows};
use common::{env, mib, ms, percentiles, table_sizes};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tally_adapters_postgres::PgStore;
use tally_domain::ports::UsageStore;
use tally_domain::usage::RetentionPolicy;
use tally_tests::pg::KeptCluster;
use time::OffsetDateTime;

/// Tables smaller than this in both databases are left out of the report.
const SHOWN_BYTES: i64 = 1 << 20;

/// What the retention rounds of one day did.
#[derive(Default)]
struct Rounds {
    rounds: Vec<Duration>,
    raw_rows: u64,
    usage_rows: u64,
}

/// Retention rounds at `now` until raw rows are purged up to their horizon
/// and the rollup's oldest hour is within its own (a round may delete
/// nothing and still move on, over an hour without sessions).
async fn catch_up(store: &PgStore, now: OffsetDateTime, policy: &RetentionPolicy) -> Rounds {
    let raw_horizon = now - policy.app_stats;
    let usage_horizon = now - policy.usage;
    let mut done = Rounds::default();
    loop {
        let t = Instant::now();
        let round = store.purge_expired(now, policy).await.unwrap();
        done.rounds.push(t.elapsed());
        assert!(!round.skipped, "nothing else holds the usage lock here");
        done.raw_rows += round.app_stats_rows;
        done.usage_rows += round.usage_rows;
        let (frozen, oldest): (Option<OffsetDateTime>, Option<OffsetDateTime>) = sqlx::query_as(
            "SELECT (SELECT frozen_before FROM app_usage_state), (SELECT min(hour) FROM app_usage_hours)",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if frozen.is_some_and(|f| f >= raw_horizon) && oldest.is_none_or(|o| o >= usage_horizon) {
            return done;
        }
    }
}

#[tokio::main]
async fn main() {
    let days = env("TALLY_BENCH_DAYS", 90) as i64;
    let users = env("TALLY_BENCH_USERS", 6000);
    let every = env("TALLY_BENCH_EVERY", 10) as i64;
    let policy = RetentionPolicy {
        app_stats: time::Duration::days(env("TALLY_BENCH_RAW_DAYS", 30) as i64),
        usage: time::Duration::days(env("TALLY_BENCH_USAGE_DAYS", 60) as i64),
        ..RetentionPolicy::default()
    };
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("bench-data").join("retention");
    let cluster = tokio::task::spawn_blocking(move || KeptCluster::open(&dir))
        .await
        .unwrap()
        .unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url("postgres")).await.unwrap();
    let mut stores = Vec::new();
    for name in ["kept", "purged"] {
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql).execute(&admin).await.unwrap();
        }
        stores.push(PgStore::connect(&cluster.url(name)).await.unwrap());
    }
    let (kept, purged) = (&stores[0], &stores[1]);

    let mut rng = StdRng::seed_from_u64(7);
    let fleet = Fleet::new(users, &mut rng);
    println!(
        "{days} days of {users} users, a day at a time; `purged` keeps raw rows {} days and the rollup {} days, \
         with rounds of at most {} hours per table",
        policy.app_stats.whole_days(),
        policy.usage.whole_days(),
        policy.max_batch.whole_hours()
    );
    let started = Instant::now();
    let (mut loads, mut all_rounds) = ([Vec::new(), Vec::new()], Vec::new());
    let mut since = Rounds::default();
    let mut raw_rows = 0;
    for d in 0..days {
        let rows = day_rows(&fleet, d, &mut rng);
        raw_rows += rows.len();
        for (i, store) in stores.iter().enumerate() {
            let t = Instant::now();
            copy_day(store, &rows).await;
            store.tick_usage_rollup().await.unwrap();
            loads[i].push(t.elapsed());
        }
        let done = catch_up(purged, DAY0 + time::Duration::days(d + 1), &policy).await;
        since.rounds.extend(&done.rounds);
        since.raw_rows += done.raw_rows;
        since.usage_rows += done.usage_rows;
        all_rounds.extend(done.rounds);
        if (d + 1) % every == 0 || d + 1 == days {
            let (p50, p99) = percentiles(since.rounds.clone());
            println!(
                "\nafter day {} ({:.0} s in): {raw_rows} raw rows loaded; retention since the last report: {} rounds, \
                 {} raw and {} rollup rows deleted, round p50 {p50:.0} ms, p99 {p99:.0} ms, slowest {:.0} ms",
                d + 1,
                started.elapsed().as_secs_f64(),
                since.rounds.len(),
                since.raw_rows,
                since.usage_rows,
                ms(since.rounds.iter().copied().max().unwrap_or_default())
            );
            report(kept, purged).await;
            since = Rounds::default();
        }
    }
    for (name, times) in ["kept", "purged"].iter().zip(loads) {
        let (p50, p99) = percentiles(times);
        println!("a day's load and tick in `{name}`: p50 {p50:.0} ms, p99 {p99:.0} ms");
    }
    let (p50, p99) = percentiles(all_rounds.clone());
    println!(
        "retention rounds in `purged`: {}, p50 {p50:.0} ms, p99 {p99:.0} ms",
        all_rounds.len()
    );
    drop(stores);
    if std::env::var_os("TALLY_BENCH_KEEP").is_none() {
        for name in ["kept", "purged"] {
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
}

/// Every table of either database, side by side.
async fn report(kept: &PgStore, purged: &PgStore) {
    let (a, b) = (
        table_sizes(kept.pool(), 0).await,
        table_sizes(purged.pool(), 0).await,
    );
    println!(
        "| table | live rows kept / purged | table MiB kept / purged | indexes MiB kept / purged | total MiB kept / purged | dead rows purged | autovacuums purged |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for x in &a {
        let Some(y) = b.iter().find(|y| y.name == x.name) else {
            continue;
        };
        if x.total < SHOWN_BYTES && y.total < SHOWN_BYTES {
            continue;
        }
        println!(
            "| {} | {} / {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {} | {} |",
            x.name,
            x.live_rows,
            y.live_rows,
            mib(x.table),
            mib(y.table),
            mib(x.indexes),
            mib(y.indexes),
            mib(x.total),
            mib(y.total),
            y.dead_rows,
            y.autovacuums
        );
    }
}
