//! Write benchmark of the PostgreSQL store.
//!
//! 1,000,000 app stat rows (1000 users each with one workspace and agent, 10
//! apps, random session ids) written through `PgStore::write_app_stats` in
//! calls of 65,536 rows (one transaction each, as the collector would), at
//! batch sizes 1024 and 8192, in both write modes: fresh inserts, a replay
//! of the same rows (every row a conflict, nothing changes), and a replay
//! that moves every row forward (every row a conflict and an update), then
//! as many rows again of which one in ten updates a stored row. The
//! limit: the same rows by binary COPY into a table with the same columns,
//! keys and indexes, from this client, in the same run. Then one period
//! switch with 10,000 distinct workspaces from 16 replicas.
//!
//! `cargo bench -p tally-adapters-postgres --bench write`
//! (`TALLY_BENCH_ROWS` scales the row count; `TALLY_BENCH_ONLY=marks` runs
//! only the interleaved comparison of the rollup marks, [`marks_ab`];
//! `TALLY_BENCH_ONLY=index` only that of indexes on the session start,
//! [`index_ab`].)

mod common;

use std::time::{Duration, Instant};

use common::StartIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection};
use tally_adapters_postgres::{AppStatsWriteMode, PgStore, PgStoreOptions};
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::BoundaryDelta;
use tally_domain::ports::{
    AppStatsStore, AppStatsWrite, BoundaryUsageStore, InsightsStore, TelemetryStore, TimeRange, UsageStore,
};
use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, Period, PeriodClose, PeriodCloseOutcome};
use tally_domain::usage::Intervals;
use tally_tests::pg::fresh_database;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const CALL_ROWS: usize = 65_536;
const T0: OffsetDateTime = datetime!(2026-11-25 00:00 UTC);

fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn generate(n: usize, seed: u64) -> Vec<StatsReport> {
    let mut rng = StdRng::seed_from_u64(42);
    let users: Vec<Uuid> = (0..1000).map(|_| uuid(&mut rng)).collect();
    let workspaces: Vec<Uuid> = (0..1000).map(|_| uuid(&mut rng)).collect();
    let agents: Vec<Uuid> = (0..1000).map(|_| uuid(&mut rng)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let apps = [
        "code-server",
        "jupyter",
        "terminal",
        "8080",
        "3000",
        "vscode",
        "grafana",
        "filebrowser",
        "rstudio",
        "5173",
    ];
    (0..n)
        .map(|i| {
            let u = rng.random_range(0..1000);
            let app = rng.random_range(0..apps.len());
            // Sessions arrive in rough time order over one day.
            let start = T0
                + time::Duration::microseconds(
                    (i as i64) * 86_400_000_000 / n as i64 + rng.random_range(0..60_000_000),
                );
            StatsReport {
                user_id: users[u],
                workspace_id: workspaces[u],
                agent_id: agents[u],
                access_method: [
                    AccessMethod::Path,
                    AccessMethod::Subdomain,
                    AccessMethod::Terminal,
                ][app % 3],
                slug_or_port: apps[app].to_owned(),
                session_id: uuid(&mut rng),
                session_started_at: start,
                session_ended_at: Some(start + time::Duration::milliseconds(rng.random_range(0..600_000))),
                requests: rng.random_range(1..1000),
                sessions: 1,
            }
        })
        .collect()
}

fn writes(rows: &[StatsReport], batch_size: usize) -> Vec<AppStatsWrite> {
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
                batch_size,
                last_used: last.into_iter().collect(),
            }
        })
        .collect()
}

async fn timed_writes(store: &PgStore, ws: &[AppStatsWrite]) -> Duration {
    let t = Instant::now();
    for w in ws {
        store.write_app_stats(w).await.expect("write");
    }
    t.elapsed()
}

/// Binary COPY of the rows into a copy of the table (same columns,
/// constraints, keys and indexes), one COPY and transaction per call chunk.
async fn copy_limit(rows: &[StatsReport]) -> Duration {
    let db = fresh_database().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE copy_target (LIKE workspace_app_stats INCLUDING ALL) WITH (fillfactor = 90)")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(store);
    let t = Instant::now();
    for chunk in rows.chunks(CALL_ROWS) {
        let mut tx = conn.begin().await.unwrap();
        let buf = common::binary_copy(chunk);
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY copy_target {} FROM STDIN (FORMAT binary)",
                common::COPY_COLUMNS
            ))
            .await
            .unwrap();
        copy.send(buf).await.unwrap();
        copy.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    t.elapsed()
}

fn forward(r: &StatsReport, by: u64) -> StatsReport {
    StatsReport {
        session_ended_at: r.session_ended_at.map(|t| t + time::Duration::seconds(by as i64)),
        requests: r.requests + by,
        ..r.clone()
    }
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

/// The read side over the written table: app usage of one hour and of the
/// whole day from the rollup (after an untimed tick), and one page of rows.
async fn insights_queries(store: &PgStore) -> Vec<(&'static str, Duration)> {
    store.tick_usage_rollup().await.unwrap();
    sqlx::query("VACUUM ANALYZE workspace_app_stats")
        .execute(store.pool())
        .await
        .unwrap();
    let hour = TimeRange::new(T0 + time::Duration::hours(12), T0 + time::Duration::hours(13)).unwrap();
    let day = TimeRange::new(T0, T0 + time::Duration::days(1)).unwrap();
    let mut out = vec![];
    for (what, range, page) in [
        ("app_usage_by_interval, 1 hour", hour, false),
        ("app_usage_by_interval, whole day", day, false),
        ("app_stats, 1 hour, first 1000 rows", hour, true),
    ] {
        let mut times = vec![];
        for _ in 0..5 {
            let t = Instant::now();
            if page {
                assert_eq!(store.app_stats(range, 1000).await.unwrap().len(), 1000);
            } else {
                let one = Intervals::single(range).unwrap();
                assert_eq!(store.app_usage_by_interval(&one).await.unwrap().len(), 10);
            }
            times.push(t.elapsed());
        }
        times.sort();
        out.push((what, times[2]));
    }
    out
}

/// What the usage rollup's start-hour marks cost the write path at the
/// default settings (COPY mode, batch 1024), measured so that load on a
/// shared machine falls on both sides alike: two stores on one database,
/// one marking and one not, take the calls of every phase in turn (call k
/// goes to store k mod 2, which also writes that chunk's replay and
/// updates, so each store's recent-rows memory sees its own rows). Four
/// rounds, each on a fresh database, with the stores' order swapped every
/// round.
async fn marks_ab(rows: &[StatsReport], moved: &[StatsReport], mixed: &[StatsReport]) {
    const BATCH: usize = 1024;
    let phases = [
        ("fresh insert", writes(rows, BATCH)),
        ("replay, no change", writes(rows, BATCH)),
        ("replay, all updated", writes(moved, BATCH)),
        ("90% new, 10% updates", writes(mixed, BATCH)),
    ];
    // [phase][marks?] total time and rows
    let mut totals = [[(Duration::ZERO, 0usize); 2]; 4];
    for round in 0..4 {
        let db = fresh_database().await;
        let marked = PgStore::connect(&db.url).await.unwrap();
        let unmarked = PgStore::connect(&db.url)
            .await
            .unwrap()
            .without_usage_marks_for_benchmarks();
        for (p, (_, calls)) in phases.iter().enumerate() {
            for (k, w) in calls.iter().enumerate() {
                let marks = (k + round) % 2 == 0;
                let store = if marks { &marked } else { &unmarked };
                let t = Instant::now();
                store.write_app_stats(w).await.expect("write");
                let slot = &mut totals[p][usize::from(marks)];
                slot.0 += t.elapsed();
                slot.1 += w.rows.len();
            }
        }
        let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM app_usage_dirty_hours")
            .fetch_one(marked.pool())
            .await
            .unwrap();
        eprintln!("round {round}: {marks} marks written");
    }
    println!(
        "\nmarks, interleaved (Copy mode, batch {BATCH}, 4 rounds of {} rows per phase):",
        rows.len()
    );
    println!("| phase | marks rows/s | no marks rows/s | marks / no marks |");
    println!("|---|---:|---:|---:|");
    for (p, (phase, _)) in phases.iter().enumerate() {
        let [(t0, n0), (t1, n1)] = totals[p];
        let (with, without) = (rate(n1, t1), rate(n0, t0));
        println!("| {phase} | {with:.0} | {without:.0} | {:.3} |", with / without);
    }
}

/// What an index on the session start costs the write path at the default
/// settings (COPY mode, batch 1024), interleaved as [`marks_ab`] is: one
/// database per index (`common::StartIndex`), the calls of every phase
/// dealt to them in turn (call k to database (k + round) mod 3, with its
/// replay and updates), three rounds on fresh databases. Then each index's
/// size.
async fn index_ab(rows: &[StatsReport], moved: &[StatsReport], mixed: &[StatsReport]) {
    const BATCH: usize = 1024;
    const INDEXES: [StartIndex; 3] = [StartIndex::Brin, StartIndex::BrinMulti, StartIndex::Btree];
    let phases = [
        ("fresh insert", writes(rows, BATCH)),
        ("replay, no change", writes(rows, BATCH)),
        ("replay, all updated", writes(moved, BATCH)),
        ("90% new, 10% updates", writes(mixed, BATCH)),
    ];
    // [phase][index] total time and rows
    let mut totals = [[(Duration::ZERO, 0usize); 3]; 4];
    let mut sizes = [0i64; 3];
    for round in 0..3 {
        let mut stores = Vec::new();
        let mut dbs = Vec::new();
        for index in INDEXES {
            let db = fresh_database().await;
            let store = PgStore::connect(&db.url).await.unwrap();
            index.apply(store.pool()).await;
            stores.push(store);
            dbs.push(db);
        }
        for (p, (_, calls)) in phases.iter().enumerate() {
            for (k, w) in calls.iter().enumerate() {
                let i = (k + round) % INDEXES.len();
                let t = Instant::now();
                stores[i].write_app_stats(w).await.expect("write");
                let slot = &mut totals[p][i];
                slot.0 += t.elapsed();
                slot.1 += w.rows.len();
            }
        }
        for (i, store) in stores.iter().enumerate() {
            let size: i64 = sqlx::query_scalar("SELECT pg_relation_size('workspace_app_stats_started_idx')")
                .fetch_one(store.pool())
                .await
                .unwrap();
            sizes[i] += size;
        }
        eprintln!("round {round} done");
    }
    println!(
        "\nindexes on the start, interleaved (Copy mode, batch {BATCH}, 3 rounds of {} rows per phase):",
        rows.len()
    );
    let names: Vec<&str> = INDEXES.iter().map(|i| i.name()).collect();
    println!("| phase | {} rows/s | / brin |", names.join(" rows/s | "));
    println!("|---|{}---:|", "---:|".repeat(INDEXES.len()));
    for (p, (phase, _)) in phases.iter().enumerate() {
        let rates: Vec<f64> = totals[p].iter().map(|&(t, n)| rate(n, t)).collect();
        let ratios: Vec<String> = rates.iter().map(|r| format!("{:.3}", r / rates[0])).collect();
        println!(
            "| {phase} | {} | {} |",
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" | "),
            ratios.join(" / ")
        );
    }
    for (i, name) in names.iter().enumerate() {
        println!(
            "- {name}: {:.2} MiB per database after a round (its share of the rows)",
            sizes[i] as f64 / 3.0 / 1048576.0
        );
    }
}

async fn period_switch() -> Vec<Duration> {
    let mut times = Vec::new();
    for round in 0..5u64 {
        let db = fresh_database().await;
        let store = PgStore::connect(&db.url).await.unwrap();
        let mut rng = StdRng::seed_from_u64(round);
        let workspaces: Vec<Uuid> = (0..10_000).map(|_| uuid(&mut rng)).collect();
        let users: Vec<Uuid> = (0..2_000).map(|_| uuid(&mut rng)).collect();
        for r in 0..16usize {
            // Each replica sees an overlapping fifth of the fleet.
            let ws: Vec<Uuid> = workspaces.iter().skip(r % 5).step_by(5).copied().collect();
            let us: Vec<Uuid> = users.iter().skip(r % 5).step_by(5).copied().collect();
            store
                .flush_boundary_usage(&BoundaryDelta {
                    replica_id: Uuid::from_u128(r as u128 + 1),
                    seq: 1,
                    allowed: 1000,
                    denied: 10,
                    workspace_ids: ws,
                    user_ids: us,
                    tracked_from: T0,
                    tracked_to: T0 + time::Duration::minutes(29),
                })
                .await
                .unwrap();
        }
        let close = PeriodClose {
            event_type: BOUNDARY_USAGE_EVENT.into(),
            period: Period {
                start: T0,
                end: T0 + time::Duration::minutes(30),
            },
            snapshot_id: Uuid::new_v4(),
            replica_id: Uuid::from_u128(1),
            now: T0 + time::Duration::minutes(30),
        };
        let t = Instant::now();
        let outcome = store.close_period(&close).await.unwrap();
        times.push(t.elapsed());
        let PeriodCloseOutcome::Closed(s) = outcome else {
            panic!("closed")
        };
        assert_eq!(
            (s.usage.unique_workspaces, s.usage.unique_users, s.usage.replicas),
            (10_000, 2_000, 16)
        );
    }
    times
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TALLY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    eprintln!("generating {n} rows");
    let rows = generate(n, 1);
    let moved: Vec<StatsReport> = rows.iter().map(|r| forward(r, 1)).collect();
    // New sessions with every tenth row an update of a stored one.
    let mut mixed = generate(n, 2);
    for (i, r) in mixed.iter_mut().enumerate().filter(|(i, _)| i % 10 == 0) {
        *r = forward(&rows[i], 2);
    }

    // The store sorts each call's rows by key; COPY of rows so sorted is
    // the stricter limit, so both are measured. The machine is shared, so
    // COPY runs before and after every configuration and each is compared
    // with the COPY runs next to it.
    match std::env::var("TALLY_BENCH_ONLY").as_deref() {
        Ok("marks") => return marks_ab(&rows, &moved, &mixed).await,
        Ok("index") => return index_ab(&rows, &moved, &mixed).await,
        _ => {}
    }
    let mut sorted = rows.clone();
    for chunk in sorted.chunks_mut(CALL_ROWS) {
        chunk.sort_unstable_by_key(|r| r.row_key());
    }
    let mut copies: Vec<(Duration, Duration)> = vec![];
    let measure_copy = async || {
        let c = (copy_limit(&rows).await, copy_limit(&sorted).await);
        eprintln!(
            "COPY: {:.0} rows/s as generated, {:.0} sorted",
            rate(n, c.0),
            rate(n, c.1)
        );
        c
    };
    let mut table = vec![];
    let mut insights = vec![];
    copies.push(measure_copy().await);
    // Each configuration also runs without the usage rollup's start-hour
    // marks, right after, to show what the marks cost.
    for mode in [AppStatsWriteMode::Copy, AppStatsWriteMode::Upsert] {
        for (batch, marks) in [(1024, true), (1024, false), (8192, true), (8192, false)] {
            let db = fresh_database().await;
            let opts = PgStoreOptions {
                write_mode: mode,
                ..Default::default()
            };
            let store = PgStore::connect_with(&db.url, opts).await.unwrap();
            let store = if marks {
                store
            } else {
                store.without_usage_marks_for_benchmarks()
            };
            let fresh = writes(&rows, batch);
            let update = writes(&moved, batch);
            let t_fresh = timed_writes(&store, &fresh).await;
            let t_replay = timed_writes(&store, &fresh).await;
            let t_update = timed_writes(&store, &update).await;
            let t_mixed = timed_writes(&store, &writes(&mixed, batch)).await;
            if insights.is_empty() && marks {
                insights = insights_queries(&store).await;
            }
            drop(store);
            drop(db);
            copies.push(measure_copy().await);
            let [.., before, after] = copies[..] else {
                unreachable!()
            };
            let limit = ((before.0 + after.0) / 2, (before.1 + after.1) / 2);
            for (phase, d) in [
                ("fresh insert", t_fresh),
                ("replay, no change", t_replay),
                ("replay, all updated", t_update),
                ("90% new, 10% updates", t_mixed),
            ] {
                let label = if marks {
                    format!("{mode:?}")
                } else {
                    format!("{mode:?}, no marks")
                };
                eprintln!("{label} batch {batch} {phase}: {:.0} rows/s", rate(n, d));
                table.push((label, batch, phase, d, limit));
            }
        }
    }

    println!("\nrows: {n}, rows per write_app_stats call: {CALL_ROWS}");
    println!("COPY into the indexed table (rows/s), before, between and after the configurations:");
    for (i, (u, s)) in copies.iter().enumerate() {
        println!(
            "- run {i}: rows as generated {:.0}, each call's rows sorted by key {:.0}",
            rate(n, *u),
            rate(n, *s)
        );
    }
    println!();
    println!("| mode | batch | phase | seconds | rows/s | / COPY (as generated) | / COPY (sorted) |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (mode, batch, phase, d, (unsorted, sorted)) in &table {
        println!(
            "| {mode} | {batch} | {phase} | {:.2} | {:.0} | {:.2} | {:.2} |",
            d.as_secs_f64(),
            rate(n, *d),
            unsorted.as_secs_f64() / d.as_secs_f64(),
            sorted.as_secs_f64() / d.as_secs_f64()
        );
    }
    println!(
        "\ninsights over the table of {} rows (after VACUUM ANALYZE), median of 5:",
        2 * n - n / 10
    );
    for (what, d) in &insights {
        println!("- {what}: {:.1} ms", d.as_secs_f64() * 1e3);
    }
    let mut switch = period_switch().await;
    switch.sort();
    println!(
        "\nperiod switch, 10,000 distinct workspaces, 2,000 users, 16 replicas: median {:.1} ms (min {:.1}, max {:.1}, 5 runs)",
        switch[2].as_secs_f64() * 1e3,
        switch[0].as_secs_f64() * 1e3,
        switch[4].as_secs_f64() * 1e3
    );
}
