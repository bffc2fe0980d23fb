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

/// An index on the raw rows' session start, for comparing them: the
/// benchmarks replace whatever the migrations made with one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartIndex {
    /// The BRIN of migration 0002 (one min/max per 32-page range).
    Brin,
    /// The same BRIN with the multi-minmax operator class (several
    /// intervals per range).
    BrinMulti,
    /// A B-tree.
    Btree,
}

impl StartIndex {
    pub fn name(self) -> &'static str {
        match self {
            Self::Brin => "brin",
            Self::BrinMulti => "brin-multi",
            Self::Btree => "btree",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Brin, Self::BrinMulti, Self::Btree]
            .into_iter()
            .find(|i| i.name() == s)
    }

    /// Drops every index of `workspace_app_stats` but its key and creates
    /// this one as `workspace_app_stats_started_idx`.
    pub async fn apply(self, pool: &PgPool) {
        let create = match self {
            Self::Brin => {
                "CREATE INDEX workspace_app_stats_started_idx ON workspace_app_stats \
                 USING brin (session_started_at) WITH (pages_per_range = 32, autosummarize = on)"
            }
            Self::BrinMulti => {
                "CREATE INDEX workspace_app_stats_started_idx ON workspace_app_stats \
                 USING brin (session_started_at timestamptz_minmax_multi_ops) \
                 WITH (pages_per_range = 32, autosummarize = on)"
            }
            Self::Btree => {
                "CREATE INDEX workspace_app_stats_started_idx ON workspace_app_stats (session_started_at)"
            }
        };
        for sql in [
            "DO $$ DECLARE i regclass; BEGIN \
                 FOR i IN SELECT indexrelid::regclass FROM pg_index \
                          WHERE indrelid = 'workspace_app_stats'::regclass AND NOT indisprimary LOOP \
                     EXECUTE format('DROP INDEX %s', i); \
                 END LOOP; END $$",
            create,
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
    }
}

/// What `EXPLAIN (ANALYZE, BUFFERS)` says of one statement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Explained {
    /// Shared buffers the whole statement touched (hit and read).
    pub buffers: u64,
    /// Heap blocks of its bitmap heap scans (exact and lossy), if any.
    pub heap_blocks: u64,
    pub execution_ms: f64,
}

impl Explained {
    /// Reads the text form: the first `Buffers:` line is the root node's
    /// (it includes its children's).
    pub fn parse(lines: &[String]) -> Self {
        let number = |line: &str, key: &str| -> u64 {
            line.split(key)
                .nth(1)
                .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let mut out = Self::default();
        if let Some(line) = lines.iter().find(|l| l.contains("Buffers: shared")) {
            out.buffers = number(line, "hit=") + number(line, "read=");
        }
        for line in lines.iter().filter(|l| l.contains("Heap Blocks:")) {
            out.heap_blocks += number(line, "exact=") + number(line, "lossy=");
        }
        if let Some(line) = lines.iter().find(|l| l.contains("Execution Time:")) {
            out.execution_ms = line
                .split("Execution Time:")
                .nth(1)
                .and_then(|t| t.trim().trim_end_matches("ms").trim().parse().ok())
                .unwrap_or(0.0);
        }
        out
    }
}
