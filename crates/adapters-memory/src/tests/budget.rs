//! The memory budget: charges equal the sum over what is held, against a
//! plain model of the rows, whatever writes, upserts, ticks and purges come.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::BoundaryDelta;
use tally_domain::error::StoreError;
use tally_domain::ports::{
    AppStatsStore, AppStatsWrite, BoundaryUsageStore, InsightsStore, TelemetryStore, UsageStore,
};
use tally_domain::telemetry::{Period, PeriodClose};
use tally_domain::usage::RetentionPolicy;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{all_time, block_on};
use crate::budget::{BOUNDARY_ID_BYTES, LAST_USED_BYTES, RAW_ROW_BYTES, ROLLUP_ROW_BYTES};
use crate::{MemoryStore, pg_time};

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);
const SLUGS: [&str; 3] = ["a", "code-server", "jupyter-notebook"];

fn hour(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(3600)
}

/// A row of one of six keys: a start in one of the first five hours, an
/// end up to three hours later (a write of a key already held is an upsert
/// that may move its end on).
fn arb_row() -> impl Strategy<Value = StatsReport> {
    (0u128..6, 0i64..5, 0i64..180, 0u64..20, 0usize..3).prop_map(|(key, start_h, minutes, requests, slug)| {
        let start = T0 + Duration::hours(start_h) + Duration::seconds(7);
        StatsReport {
            user_id: Uuid::from_u128(key % 3 + 1),
            workspace_id: Uuid::from_u128(key % 2 + 100),
            agent_id: Uuid::from_u128(7),
            access_method: AccessMethod::Path,
            slug_or_port: SLUGS[slug].into(),
            session_id: Uuid::from_u128(key + 1),
            session_started_at: start,
            session_ended_at: Some(start + Duration::minutes(minutes) + Duration::nanoseconds(333)),
            requests,
            sessions: 1,
        }
    })
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<StatsReport>),
    Tick,
    /// A purge at T0 plus this many hours, raw rows kept this many hours.
    Purge(i64, i64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(arb_row(), 0..5).prop_map(|rows| {
            // A write names a key once (the reporter merges duplicates).
            let mut seen = HashSet::new();
            Op::Write(rows.into_iter().filter(|r| seen.insert(r.row_key())).collect())
        }),
        1 => Just(Op::Tick),
        1 => (0i64..10, 1i64..4).prop_map(|(at, keep)| Op::Purge(at, keep)),
    ]
}

/// The plain model: the rows and workspaces the store must hold, and what
/// the writes since the last tick reserved.
#[derive(Debug, Default)]
struct Model {
    rows: HashMap<(Uuid, Uuid, Uuid), StatsReport>,
    workspaces: HashSet<Uuid>,
    reserved: u64,
}

impl Model {
    /// Bytes of the held rows and workspaces, and of the rollup rows the
    /// store shows.
    fn held(&self, store: &MemoryStore) -> u64 {
        let raw: u64 = self
            .rows
            .values()
            .map(|r| RAW_ROW_BYTES + r.slug_or_port.len() as u64)
            .sum();
        let state = store.apps.read();
        let rollup: u64 = state
            .rollup
            .rows(i64::MIN, i64::MAX)
            .map(|r| ROLLUP_ROW_BYTES + r.slug_or_port.len() as u64)
            .sum();
        raw + rollup + LAST_USED_BYTES * self.workspaces.len() as u64
    }

    /// What `rows` would add and reserve.
    fn cost(&self, rows: &[StatsReport]) -> (u64, u64) {
        let (mut held, mut reserved) = (0, 0);
        let mut workspaces = HashSet::new();
        for row in rows {
            let end = pg_time(row.session_ended_at.unwrap());
            let per_hour = |r: &StatsReport| ROLLUP_ROW_BYTES + r.slug_or_port.len() as u64;
            match self.rows.get(&row.row_key()) {
                // A held row keeps its own slug, the one its rollup rows get.
                Some(old) => {
                    let old_end = hour(old.session_ended_at.unwrap());
                    reserved += (hour(end) - old_end).max(0) as u64 * per_hour(old);
                }
                None => {
                    held += RAW_ROW_BYTES + row.slug_or_port.len() as u64;
                    reserved += (hour(end) - hour(row.session_started_at) + 1) as u64 * per_hour(row);
                }
            }
            if !self.workspaces.contains(&row.workspace_id) {
                workspaces.insert(row.workspace_id);
            }
        }
        (held + LAST_USED_BYTES * workspaces.len() as u64, reserved)
    }

    fn apply(&mut self, rows: &[StatsReport]) {
        for row in rows {
            let stored = StatsReport {
                session_started_at: pg_time(row.session_started_at),
                session_ended_at: row.session_ended_at.map(pg_time),
                ..row.clone()
            };
            self.rows
                .entry(row.row_key())
                .and_modify(|r| r.merge_forward(&stored))
                .or_insert(stored);
            self.workspaces.insert(row.workspace_id);
        }
    }
}

fn write_of(rows: &[StatsReport]) -> AppStatsWrite {
    AppStatsWrite {
        rows: rows.to_vec(),
        batch_size: 2,
        last_used: rows
            .iter()
            .map(|r| (r.workspace_id, r.session_ended_at.unwrap()))
            .collect(),
    }
}

fn rows_of(store: &MemoryStore) -> Vec<StatsReport> {
    let mut rows = block_on(store.app_stats(all_time(), usize::MAX)).unwrap();
    rows.sort_by_key(StatsReport::row_key);
    rows
}

fn sorted(model: &Model) -> Vec<StatsReport> {
    let mut rows: Vec<_> = model.rows.values().cloned().collect();
    rows.sort_by_key(StatsReport::row_key);
    rows
}

proptest! {
    /// After any sequence of writes (new rows, upserts of held keys),
    /// rollup ticks and retention purges, the store charges exactly the
    /// sum over what it holds, never more than its limit; a write is
    /// refused exactly when it does not fit (as unavailable, changing
    /// nothing), and the model's rows are the store's.
    #[test]
    fn charges_are_the_sum_over_what_is_held(
        ops in prop::collection::vec(arb_op(), 1..30),
        limit in 1_000u64..12_000,
    ) {
        let store = MemoryStore::with_limit(limit);
        let mut model = Model::default();
        let mut refused = 0;
        for op in &ops {
            match op {
                Op::Write(rows) => {
                    let (held, reserve) = model.cost(rows);
                    let fits = model.held(&store) + model.reserved + held + reserve <= limit;
                    match block_on(store.write_app_stats(&write_of(rows))) {
                        Ok(()) => {
                            prop_assert!(fits, "took a write that does not fit");
                            model.apply(rows);
                            model.reserved += reserve;
                        }
                        Err(e) => {
                            prop_assert!(!fits, "refused a write that fits: {e}");
                            prop_assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
                            prop_assert!(e.to_string().contains("in-memory store full"), "{e}");
                            refused += 1;
                        }
                    }
                }
                Op::Tick => {
                    block_on(store.tick_usage_rollup()).unwrap();
                    model.reserved = 0;
                }
                Op::Purge(at, keep) => {
                    let policy = RetentionPolicy {
                        app_stats: Duration::hours(*keep),
                        usage: Duration::hours(keep + 2),
                        ..RetentionPolicy::default()
                    };
                    let now = T0 + Duration::hours(*at);
                    let purged = block_on(store.purge_expired(now, &policy)).unwrap();
                    model.reserved = 0;
                    let frozen = store.apps.read().rollup.frozen_before();
                    if let Some(frozen) = frozen {
                        let before = model.rows.len();
                        model.rows.retain(|_, r| hour(r.session_started_at) >= frozen);
                        prop_assert_eq!(purged.app_stats_rows, (before - model.rows.len()) as u64);
                    }
                }
            }
            let used = store.memory_use();
            prop_assert_eq!(rows_of(&store), sorted(&model));
            prop_assert_eq!(used.held_bytes, model.held(&store), "after {:?}", op);
            prop_assert_eq!(used.reserved_bytes, model.reserved, "after {:?}", op);
            prop_assert!(used.held_bytes + used.reserved_bytes <= limit, "{used:?} past {limit}");
            prop_assert_eq!(used.refused_writes, refused);
            let state = store.apps.read();
            prop_assert_eq!(state.rollup.len(), state.rollup.rows(i64::MIN, i64::MAX).count());
        }
    }
}

fn row(session: u128, start: OffsetDateTime, minutes: i64) -> StatsReport {
    StatsReport {
        user_id: Uuid::from_u128(1),
        workspace_id: Uuid::from_u128(2),
        agent_id: Uuid::from_u128(3),
        access_method: AccessMethod::Subdomain,
        slug_or_port: "code-server".into(),
        session_id: Uuid::from_u128(session),
        session_started_at: start,
        session_ended_at: Some(start + Duration::minutes(minutes)),
        requests: 1,
        sessions: 1,
    }
}

#[test]
fn a_full_store_refuses_until_retention_deletes_rows() {
    // Room for about three rows of one hour, with their rollup row.
    let per_row = RAW_ROW_BYTES + 11 + ROLLUP_ROW_BYTES + 11;
    let store = MemoryStore::with_limit(LAST_USED_BYTES + 3 * per_row);
    let old = T0;
    for session in 1..=3 {
        block_on(store.write_app_stats(&write_of(&[row(session, old, 5)]))).unwrap();
    }
    let late = row(4, T0 + Duration::hours(5), 5);
    let err = block_on(store.write_app_stats(&write_of(std::slice::from_ref(&late)))).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("in-memory store full"), "{err}");
    assert_eq!(store.memory_use().refused_writes, 1);
    assert_eq!(rows_of(&store).len(), 3, "a refused write changes nothing");

    // Retention deletes the old hour's rows: room again, for the same write.
    let policy = RetentionPolicy {
        app_stats: Duration::hours(2),
        ..RetentionPolicy::default()
    };
    let purged = block_on(store.purge_expired(T0 + Duration::hours(4), &policy)).unwrap();
    assert_eq!(purged.app_stats_rows, 3);
    block_on(store.write_app_stats(&write_of(&[late]))).unwrap();
    assert_eq!(rows_of(&store).len(), 1);
}

#[test]
fn the_boundary_ids_of_a_period_are_charged_until_it_closes() {
    let store = MemoryStore::with_limit(3 * BOUNDARY_ID_BYTES);
    let replica = Uuid::new_v4();
    let delta = |seq: u64, ids: &[u128]| BoundaryDelta {
        replica_id: replica,
        seq,
        allowed: 1,
        denied: 0,
        workspace_ids: ids.iter().map(|&i| Uuid::from_u128(i)).collect(),
        user_ids: vec![Uuid::from_u128(99)],
        tracked_from: T0,
        tracked_to: T0 + Duration::minutes(1),
    };
    block_on(store.flush_boundary_usage(&delta(1, &[1, 2]))).unwrap();
    assert_eq!(store.memory_use().held_bytes, 3 * BOUNDARY_ID_BYTES);
    // Known ids cost nothing more; a new one does not fit.
    block_on(store.flush_boundary_usage(&delta(2, &[1, 2, 2]))).unwrap();
    let err = block_on(store.flush_boundary_usage(&delta(3, &[3]))).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let summary = block_on(store.boundary_usage_summary()).unwrap();
    assert_eq!((summary.allowed_requests, summary.unique_workspaces), (2, 2));

    // Closing the period drops its ids: the refused delta fits now.
    let close = PeriodClose {
        event_type: "boundary_usage".into(),
        period: Period::last_ended(T0 + Duration::hours(1), Duration::minutes(30)),
        snapshot_id: Uuid::new_v4(),
        replica_id: replica,
        now: T0 + Duration::hours(1),
    };
    block_on(store.close_period(&close)).unwrap();
    assert_eq!(store.memory_use().held_bytes, 0);
    block_on(store.flush_boundary_usage(&delta(3, &[3]))).unwrap();
    assert_eq!(store.memory_use().held_bytes, 2 * BOUNDARY_ID_BYTES);
}

#[test]
fn a_store_without_a_limit_takes_everything() {
    let store = MemoryStore::new();
    for session in 1..=100 {
        block_on(store.write_app_stats(&write_of(&[row(session, T0, 90)]))).unwrap();
    }
    let used = store.memory_use();
    assert_eq!(used.limit_bytes, u64::MAX);
    assert_eq!(used.held_bytes, 100 * (RAW_ROW_BYTES + 11) + LAST_USED_BYTES);
    assert_eq!(used.refused_writes, 0);
}
