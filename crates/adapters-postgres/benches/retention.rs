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
//! Every report also plans, with `EXPLAIN (ANALYZE, BUFFERS)`, the raw reads
//! that the index on the session start serves, in every database: the
//! tick's read of one hour of the last weekday loaded, the round's search
//! for the oldest expired row, and the round's delete at the next cut
//! (rolled back). `TALLY_BENCH_INDEXES` compares indexes on the start
//! (`common::StartIndex`) under retention: one purged database per entry,
//! `migrated` (the migrations' index, which the store's rounds summarize
//! again where they deleted rows), `brin`, `brin-multi`, `btree`, or
//! `brin-resummarized` (the BRIN, with every page range that held a purged
//! row summarized again by the bench after the day's rounds, timed with
//! them), each loaded with the same rows. The compared indexes are named
//! `workspace_app_stats_started_idx`, so the store's own re-summarizing
//! (of the migrations' BRIN) passes them by: each shows its index alone.
//!
//! `cargo bench -p tally-adapters-postgres --bench retention`
//! (`TALLY_BENCH_DAYS` (90), `TALLY_BENCH_USERS` (6000),
//! `TALLY_BENCH_RAW_DAYS` (30), `TALLY_BENCH_USAGE_DAYS` (60),
//! `TALLY_BENCH_EVERY` (10 days), `TALLY_BENCH_INDEXES` (none: one purged
//! database with the migrations' index); `TALLY_BENCH_KEEP=1` leaves the
//! databases in the cluster under `target/bench-data/retention`, else they
//! are dropped at the end.)

mod common;

use std::time::{Duration, Instant};

use common::fleet::{DAY0, Fleet, copy_day, day_rows};
use common::{Explained, StartIndex, env, mib, ms, percentiles, table_sizes};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tally_adapters_postgres::PgStore;
use tally_adapters_postgres::start_index_sql::{DELETE_RAW, OLDEST_RAW};
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

/// A database where retention runs, and what its rounds took.
struct Purged {
    name: String,
    store: PgStore,
    /// Summarize again, after the day's rounds, every page range of the
    /// start's BRIN that held a row they deleted.
    resummarize: bool,
    since: Rounds,
    rounds: Vec<Duration>,
}

/// `TALLY_BENCH_INDEXES`: (database name, index to put in place, resummarize).
fn variants() -> Vec<(String, Option<StartIndex>, bool)> {
    let list = std::env::var("TALLY_BENCH_INDEXES").unwrap_or_default();
    if list.trim().is_empty() {
        return vec![("purged".to_owned(), None, false)];
    }
    list.split(',')
        .map(|v| {
            let v = v.trim();
            let (index, resummarize) = match v {
                "migrated" => return ("purged".to_owned(), None, false),
                "brin-resummarized" => (StartIndex::Brin, true),
                _ => (
                    StartIndex::parse(v)
                        .unwrap_or_else(|| panic!("TALLY_BENCH_INDEXES: unknown index {v:?}")),
                    false,
                ),
            };
            (
                format!("purged_{}", v.replace('-', "_")),
                Some(index),
                resummarize,
            )
        })
        .collect()
}

/// The first block of every BRIN page range (32 pages) holding a row that
/// started before `before`.
async fn ranges_before(pool: &sqlx::PgPool, before: OffsetDateTime) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT DISTINCT ((ctid::text::point)[0]::int8 / 32) * 32 FROM workspace_app_stats \
         WHERE session_started_at < $1",
    )
    .bind(before)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Summarizes the page ranges starting at `blocks` again, from the rows
/// they hold now.
async fn resummarize(pool: &sqlx::PgPool, blocks: &[i64]) {
    let index = start_index(pool).await.0;
    for sql in [
        "SELECT count(*) FROM (SELECT brin_desummarize_range($1::regclass, b) FROM unnest($2::int8[]) b) s",
        "SELECT sum(brin_summarize_range($1::regclass, b)) FROM unnest($2::int8[]) b",
    ] {
        sqlx::query(sql)
            .bind(&index)
            .bind(blocks)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// The name and size of the index on the session start.
async fn start_index(pool: &sqlx::PgPool) -> (String, i64) {
    sqlx::query_as(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index \
         WHERE indrelid = 'workspace_app_stats'::regclass AND NOT indisprimary",
    )
    .fetch_one(pool)
    .await
    .unwrap()
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
    let fresh = async |name: &str| {
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql).execute(&admin).await.unwrap();
        }
        PgStore::connect(&cluster.url(name)).await.unwrap()
    };
    let kept = fresh("kept").await;
    let mut purged = Vec::new();
    for (name, index, resummarize) in variants() {
        let store = fresh(&name).await;
        if let Some(index) = index {
            index.apply(store.pool()).await;
        }
        purged.push(Purged {
            name,
            store,
            resummarize,
            since: Rounds::default(),
            rounds: Vec::new(),
        });
    }

    let mut rng = StdRng::seed_from_u64(7);
    let fleet = Fleet::new(users, &mut rng);
    println!(
        "{days} days of {users} users, a day at a time; the purged databases ({}) keep raw rows {} days and the \
         rollup {} days, with rounds of at most {} hours per table",
        purged
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        policy.app_stats.whole_days(),
        policy.usage.whole_days(),
        policy.max_batch.whole_hours()
    );
    let started = Instant::now();
    let mut loads = vec![Vec::new(); purged.len() + 1];
    let mut raw_rows = 0;
    let mut last_weekday = 0;
    for d in 0..days {
        let rows = day_rows(&fleet, d, &mut rng);
        raw_rows += rows.len();
        if d % 7 < 5 {
            last_weekday = d;
        }
        let stores = std::iter::once(&kept).chain(purged.iter().map(|p| &p.store));
        for (i, store) in stores.enumerate() {
            let t = Instant::now();
            copy_day(store, &rows).await;
            store.tick_usage_rollup().await.unwrap();
            loads[i].push(t.elapsed());
        }
        let now = DAY0 + time::Duration::days(d + 1);
        for p in &mut purged {
            let held = if p.resummarize {
                ranges_before(p.store.pool(), now - policy.app_stats).await
            } else {
                Vec::new()
            };
            let mut done = catch_up(&p.store, now, &policy).await;
            if !held.is_empty() {
                let t = Instant::now();
                resummarize(p.store.pool(), &held).await;
                // Counted as part of the day's last round.
                *done.rounds.last_mut().unwrap() += t.elapsed();
            }
            p.since.rounds.extend(&done.rounds);
            p.since.raw_rows += done.raw_rows;
            p.since.usage_rows += done.usage_rows;
            p.rounds.extend(done.rounds);
        }
        if (d + 1) % every == 0 || d + 1 == days {
            println!(
                "\nafter day {} ({:.0} s in): {raw_rows} raw rows loaded",
                d + 1,
                started.elapsed().as_secs_f64()
            );
            for p in &mut purged {
                let since = std::mem::take(&mut p.since);
                let (p50, p99) = percentiles(since.rounds.clone());
                println!(
                    "- `{}`: retention since the last report: {} rounds, {} raw and {} rollup rows deleted, \
                     round p50 {p50:.0} ms, p99 {p99:.0} ms, slowest {:.0} ms",
                    p.name,
                    since.rounds.len(),
                    since.raw_rows,
                    since.usage_rows,
                    ms(since.rounds.iter().copied().max().unwrap_or_default())
                );
            }
            report(&kept, &purged[0].store).await;
            let hour = DAY0 + time::Duration::days(last_weekday) + time::Duration::hours(9);
            plans(&kept, &purged, hour).await;
        }
    }
    let names = std::iter::once("kept").chain(purged.iter().map(|p| p.name.as_str()));
    for (name, times) in names.zip(loads) {
        let (p50, p99) = percentiles(times);
        println!("a day's load and tick in `{name}`: p50 {p50:.0} ms, p99 {p99:.0} ms");
    }
    for p in &purged {
        let (p50, p99) = percentiles(p.rounds.clone());
        println!(
            "retention rounds in `{}`: {}, p50 {p50:.0} ms, p99 {p99:.0} ms",
            p.name,
            p.rounds.len()
        );
    }
    let names: Vec<String> = std::iter::once("kept".to_owned())
        .chain(purged.iter().map(|p| p.name.clone()))
        .collect();
    drop(kept);
    drop(purged);
    if std::env::var_os("TALLY_BENCH_KEEP").is_none() {
        for name in names {
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `sql` with the one parameter `at`, in a
/// transaction rolled back afterwards, `jit` off as in a round; the best
/// execution time of `runs`, the blocks of the last.
async fn explain(pool: &sqlx::PgPool, sql: &str, binds: &[Option<OffsetDateTime>], runs: usize) -> Explained {
    let mut best: Option<Explained> = None;
    for _ in 0..runs {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL jit = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
        let mut q = sqlx::query_scalar::<_, String>(&explain);
        for b in binds {
            q = q.bind(*b);
        }
        let lines = q.fetch_all(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        let e = Explained::parse(&lines);
        best = Some(match best {
            Some(b) if b.execution_ms < e.execution_ms => Explained {
                execution_ms: b.execution_ms,
                ..e
            },
            _ => e,
        });
    }
    best.unwrap()
}

/// The raw reads served by the start's index, in every database: what
/// each touched, against the heap's size.
async fn plans(kept: &PgStore, purged: &[Purged], hour: OffsetDateTime) {
    println!(
        "\nplans (buffers hit + read; heap blocks of the bitmap scans; ms, best of 3 for the reads): the tick's read of \
         {hour} to the next hour, the round's search for the oldest expired row, its delete at the next cut (rolled back)"
    );
    println!(
        "| database | start index | index MiB | heap blocks | hour read: rows, buffers, heap blocks, ms | \
         oldest row: buffers, heap blocks, ms | delete: rows, buffers, heap blocks, ms |"
    );
    println!("|---|---|---:|---:|---|---|---|");
    let all = std::iter::once(("kept", kept)).chain(purged.iter().map(|p| (p.name.as_str(), &p.store)));
    for (name, store) in all {
        let pool = store.pool();
        let (index, index_bytes) = start_index(pool).await;
        let kind: String = sqlx::query_scalar(
            "SELECT regexp_replace(pg_get_indexdef($1::regclass), '^.* USING | WITH .*$', '', 'g')",
        )
        .bind(&index)
        .fetch_one(pool)
        .await
        .unwrap();
        let heap_blocks: i64 = sqlx::query_scalar("SELECT pg_relation_size('workspace_app_stats') / 8192")
            .fetch_one(pool)
            .await
            .unwrap();
        let next = hour + time::Duration::HOUR;
        // The raw read of the tick's roll-up statement.
        let read = "SELECT user_id, access_method, slug_or_port, sessions, requests, session_started_at, \
                    session_ended_at FROM workspace_app_stats \
                    WHERE session_started_at >= $1 AND session_started_at < $2";
        let count = |from: Option<OffsetDateTime>, to: OffsetDateTime| async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workspace_app_stats \
                 WHERE session_started_at >= coalesce($1, '-infinity') AND session_started_at < $2",
            )
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await
            .unwrap();
            n
        };
        let hour_rows = count(Some(hour), next).await;
        let hour_read = explain(pool, read, &[Some(hour), Some(next)], 3).await;
        let frozen: Option<OffsetDateTime> = sqlx::query_scalar("SELECT frozen_before FROM app_usage_state")
            .fetch_one(pool)
            .await
            .unwrap();
        let (oldest, delete, delete_rows) = match frozen {
            Some(frozen) => {
                let horizon = frozen + time::Duration::days(1);
                let cut = frozen + time::Duration::hours(4);
                (
                    Some(explain(pool, OLDEST_RAW, &[Some(frozen), Some(horizon)], 3).await),
                    Some(explain(pool, DELETE_RAW, &[Some(cut)], 1).await),
                    count(None, cut).await,
                )
            }
            None => (None, None, 0),
        };
        let show = |e: Option<Explained>| {
            e.map_or("-".to_owned(), |e| {
                format!("{}, {}, {:.1}", e.buffers, e.heap_blocks, e.execution_ms)
            })
        };
        println!(
            "| {name} | {kind} | {:.2} | {heap_blocks} | {hour_rows}, {}, {}, {:.1} | {} | {} |",
            mib(index_bytes),
            hour_read.buffers,
            hour_read.heap_blocks,
            hour_read.execution_ms,
            show(oldest),
            delete.map_or("-".to_owned(), |e| format!("{delete_rows}, {}", show(Some(e)))),
        );
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
