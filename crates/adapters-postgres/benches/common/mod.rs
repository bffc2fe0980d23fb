//! Shared by the benchmarks: app stat rows as one binary COPY payload, the
//! insights benchmarks' fleet ([`fleet`]), and small helpers. Each benchmark
//! uses a part of it.
#![allow(dead_code)]

pub mod fleet;
pub mod year;

use std::time::Duration;

use sqlx::PgPool;

use tally_domain::appstats::StatsReport;
use time::OffsetDateTime;
use time::macros::datetime;

/// The columns [`binary_copy`] writes, in order.
pub const COPY_COLUMNS: &str = "(user_id, agent_id, session_id, workspace_id, access_method, slug_or_port, \
     session_started_at, session_ended_at, requests, sessions)";

/// `rows` in PostgreSQL's binary COPY format, columns as [`COPY_COLUMNS`].
pub fn binary_copy(rows: &[StatsReport]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rows.len() * 160);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
    let ts =
        |t: OffsetDateTime| ((t - datetime!(2000-01-01 0:00 UTC)).whole_microseconds() as i64).to_be_bytes();
    for r in rows {
        buf.extend_from_slice(&10i16.to_be_bytes());
        for u in [r.user_id, r.agent_id, r.session_id, r.workspace_id] {
            buf.extend_from_slice(&16i32.to_be_bytes());
            buf.extend_from_slice(u.as_bytes());
        }
        for s in [r.access_method.as_str(), &r.slug_or_port] {
            buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        for t in [
            r.session_started_at,
            r.session_ended_at.unwrap_or(r.session_started_at),
        ] {
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&ts(t));
        }
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(r.requests as i64).to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(r.sessions as i64).to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// The environment variable `name` as a number, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50 and p99 (nearest rank) of `runs` timings.
pub fn percentiles(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let at = |p: f64| t[((p * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
    (ms(at(0.5)), ms(at(0.99)))
}

pub fn mib(bytes: i64) -> f64 {
    bytes as f64 / 1048576.0
}

/// One table's size, from `pg_stat_user_tables`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TableSize {
    pub name: String,
    /// `n_live_tup`, `n_dead_tup`: the statistics' counts.
    pub live_rows: i64,
    pub dead_rows: i64,
    /// The heap with its TOAST, free space and visibility maps (`pg_table_size`).
    pub table: i64,
    pub indexes: i64,
    /// `pg_total_relation_size`: table and indexes.
    pub total: i64,
    pub autovacuums: i64,
}

/// Every table of the database that holds at least `min_bytes`, by name.
pub async fn table_sizes(pool: &PgPool, min_bytes: i64) -> Vec<TableSize> {
    sqlx::query_as(
        "SELECT relname::text AS name, n_live_tup AS live_rows, n_dead_tup AS dead_rows, \
             pg_table_size(relid) AS \"table\", pg_indexes_size(relid) AS indexes, \
             pg_total_relation_size(relid) AS total, autovacuum_count AS autovacuums \
         FROM pg_stat_user_tables WHERE pg_total_relation_size(relid) >= $1 ORDER BY relname",
    )
    .bind(min_bytes)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The sizes of the raw and rollup tables the insights reads work on.
pub async fn sizes(pool: &PgPool) -> Vec<TableSize> {
    let tables = [
        "workspace_app_stats",
        "app_usage_hours",
        "app_usage_app_days",
        "app_usage_fleet_days",
        "app_usage_users",
    ];
    table_sizes(pool, 0)
        .await
        .into_iter()
        .filter(|t| tables.contains(&t.name.as_str()))
        .collect()
}
