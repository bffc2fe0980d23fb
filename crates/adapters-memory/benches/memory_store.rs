//! Throughput of the in-memory store: app stat writes (fresh and replayed),
//! boundary flushes, and one period switch. Inputs are built before timing.
//!
//! cargo bench -p tally-adapters-memory --bench memory_store

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tally_adapters_memory::MemoryStore;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::BoundaryDelta;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, BoundaryUsageStore, TelemetryStore};
use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, Period, PeriodClose};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);
const ROWS: usize = 1_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

/// 1000 users each with one workspace and agent, 10 apps, random session ids.
fn fleet_rows() -> Vec<StatsReport> {
    let users: Vec<(Uuid, Uuid, Uuid)> = (0..1000)
        .map(|_| (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    (0..ROWS)
        .map(|i| {
            let (user, workspace, agent) = users[i % 1000];
            let start = T0 + time::Duration::milliseconds(i as i64);
            StatsReport {
                user_id: user,
                workspace_id: workspace,
                agent_id: agent,
                access_method: AccessMethod::Path,
                slug_or_port: format!("app{}", (i / 1000) % 10),
                session_id: Uuid::new_v4(),
                session_started_at: start,
                session_ended_at: Some(start + time::Duration::seconds(10)),
                requests: 1 + (i % 50) as u64,
                sessions: 1,
            }
        })
        .collect()
}

/// The writes a reporter would make: chunks of one batch each, with the
/// chunk's workspaces' last-used times.
fn writes(rows: &[StatsReport], batch_size: usize) -> Vec<AppStatsWrite> {
    rows.chunks(batch_size)
        .map(|chunk| {
            let mut last_used: Vec<(Uuid, OffsetDateTime)> = Vec::new();
            let mut seen = std::collections::HashMap::new();
            for r in chunk {
                let end = r.session_ended_at.unwrap();
                let at = seen.entry(r.workspace_id).or_insert(end);
                *at = (*at).max(end);
            }
            last_used.extend(seen);
            AppStatsWrite {
                rows: chunk.to_vec(),
                batch_size,
                last_used,
            }
        })
        .collect()
}

fn app_stats(c: &mut Criterion) {
    let rt = rt();
    let rows = fleet_rows();
    let mut group = c.benchmark_group("memory_write_app_stats");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(ROWS as u64));
    for batch_size in [1024, 8192] {
        let writes = writes(&rows, batch_size);
        group.bench_function(format!("fresh_1m_batch_{batch_size}"), |b| {
            b.iter_batched(
                MemoryStore::new,
                |store| {
                    for w in &writes {
                        rt.block_on(store.write_app_stats(w)).unwrap();
                    }
                    store
                },
                BatchSize::PerIteration,
            )
        });
        let filled = MemoryStore::new();
        for w in &writes {
            rt.block_on(filled.write_app_stats(w)).unwrap();
        }
        group.bench_function(format!("replay_1m_batch_{batch_size}"), |b| {
            b.iter(|| {
                for w in &writes {
                    rt.block_on(filled.write_app_stats(w)).unwrap();
                }
            })
        });
    }
    group.finish();
}

fn boundary(c: &mut Criterion) {
    let rt = rt();
    let workspaces: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
    let users: Vec<Uuid> = (0..2_000).map(|_| Uuid::new_v4()).collect();
    let delta = |replica_id, seq, ids: &[Uuid]| BoundaryDelta {
        replica_id,
        seq,
        allowed: 3,
        denied: 1,
        workspace_ids: ids.to_vec(),
        user_ids: users[..ids.len().min(users.len())].to_vec(),
        tracked_from: T0,
        tracked_to: T0,
    };

    let mut group = c.benchmark_group("memory_boundary");
    group.throughput(Throughput::Elements(1));
    let store = MemoryStore::new();
    let replica = Uuid::new_v4();
    let mut seq = 0;
    group.bench_function("flush_delta_of_100_ids", |b| {
        b.iter_batched(
            || {
                seq += 1;
                delta(replica, seq, &workspaces[(seq as usize % 100) * 100..][..100])
            },
            |d| rt.block_on(store.flush_boundary_usage(&d)).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // One period switch over 10,000 distinct workspaces flushed by 16 replicas.
    group.bench_function("close_period_10k_workspaces_16_replicas", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let store = MemoryStore::new();
                for r in 0..16 {
                    let share = &workspaces[r * 625..(r + 1) * 625];
                    let mut ids = share.to_vec();
                    ids.extend_from_slice(&workspaces[..1000]);
                    rt.block_on(store.flush_boundary_usage(&delta(Uuid::new_v4(), 1, &ids)))
                        .unwrap();
                }
                let close = PeriodClose {
                    event_type: BOUNDARY_USAGE_EVENT.into(),
                    period: Period::containing(T0, time::Duration::minutes(30)),
                    snapshot_id: Uuid::new_v4(),
                    replica_id: Uuid::new_v4(),
                    now: T0 + time::Duration::minutes(30) * (i as i32 + 1),
                };
                let started = Instant::now();
                rt.block_on(store.close_period(&close)).unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, app_stats, boundary);
criterion_main!(benches);
