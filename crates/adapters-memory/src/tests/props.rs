//! Property tests of the store's own rules, against simple models.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use tally_domain::appstats::{AccessMethod, StatsReport};
use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::ports::{AppStatsStore, AppStatsWrite, BoundaryUsageStore, InsightsStore, TelemetryStore};
use tally_domain::telemetry::{Period, PeriodClose, PeriodCloseOutcome};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{all_time, block_on};
use crate::MemoryStore;

const T0: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

/// A row of one of four keys, with an end, a request count and a session
/// count (more than one for a rolled-up record).
fn arb_row() -> impl Strategy<Value = StatsReport> {
    (0u128..4, 0i64..5_000_000, 0u64..20, 1u64..5).prop_map(|(key, end_us, requests, sessions)| StatsReport {
        user_id: Uuid::from_u128(key % 2 + 1),
        workspace_id: Uuid::from_u128(key + 100),
        agent_id: Uuid::from_u128(7),
        access_method: AccessMethod::Path,
        slug_or_port: "code".into(),
        session_id: Uuid::from_u128(key / 2 + 1),
        session_started_at: T0,
        // Sub-microsecond digits exercise the truncation before the merge.
        session_ended_at: Some(T0 + Duration::nanoseconds(end_us * 333)),
        requests,
        sessions,
    })
}

fn rows_of(store: &MemoryStore) -> Vec<StatsReport> {
    let mut rows = block_on(store.app_stats(all_time(), usize::MAX)).unwrap();
    rows.sort_by_key(StatsReport::row_key);
    rows
}

proptest! {
    /// A write is its rows applied one by one in order, whatever the batch
    /// size: the same as writing each row on its own. A write naming a key
    /// twice is refused and changes nothing.
    #[test]
    fn a_write_is_its_rows_in_order(
        writes in prop::collection::vec(prop::collection::vec(arb_row(), 0..12), 1..6),
        batch_size in 1usize..6,
    ) {
        let batched = MemoryStore::new();
        let one_by_one = MemoryStore::new();
        for rows in &writes {
            let mut seen = HashSet::new();
            if !rows.iter().all(|r| seen.insert(r.row_key())) {
                let before = rows_of(&batched);
                let write = AppStatsWrite { rows: rows.clone(), batch_size, last_used: vec![] };
                prop_assert!(block_on(batched.write_app_stats(&write)).is_err());
                prop_assert_eq!(rows_of(&batched), before);
                continue;
            }
            let write = AppStatsWrite { rows: rows.clone(), batch_size, last_used: vec![] };
            block_on(batched.write_app_stats(&write)).unwrap();
            for row in rows {
                let single = AppStatsWrite { rows: vec![row.clone()], batch_size: 1, last_used: vec![] };
                block_on(one_by_one.write_app_stats(&single)).unwrap();
            }
        }
        prop_assert_eq!(rows_of(&batched), rows_of(&one_by_one));
    }

    /// Writes applied in any order leave the same rows: per key the latest
    /// end (truncated to microseconds), the most requests and the most
    /// sessions written.
    #[test]
    fn write_order_does_not_matter(
        (rows, shuffled) in prop::collection::vec(arb_row(), 1..16)
            .prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle())),
        batch_size in 1usize..4,
    ) {
        let in_order = MemoryStore::new();
        let reordered = MemoryStore::new();
        for (store, rows) in [(&in_order, &rows), (&reordered, &shuffled)] {
            for row in rows {
                let write = AppStatsWrite { rows: vec![row.clone()], batch_size, last_used: vec![] };
                block_on(store.write_app_stats(&write)).unwrap();
            }
        }
        let got = rows_of(&in_order);
        prop_assert_eq!(&got, &rows_of(&reordered));
        for held in &got {
            let same: Vec<_> = rows.iter().filter(|r| r.row_key() == held.row_key()).collect();
            prop_assert_eq!(held.requests, same.iter().map(|r| r.requests).max().unwrap());
            prop_assert_eq!(held.sessions, same.iter().map(|r| r.sessions).max().unwrap());
            let end = same.iter().map(|r| r.session_ended_at.map(crate::pg_time)).max().unwrap();
            prop_assert_eq!(held.session_ended_at, end);
        }
    }

    /// Last used ends at the latest time ever written, truncated.
    #[test]
    fn last_used_is_the_latest_time_written(
        times in prop::collection::vec(prop::collection::vec((0u128..3, 0i64..1_000_000_000), 0..5), 1..8),
    ) {
        let store = MemoryStore::new();
        let mut latest: HashMap<Uuid, OffsetDateTime> = HashMap::new();
        for entries in &times {
            let last_used: Vec<_> = entries
                .iter()
                .map(|&(w, ns)| (Uuid::from_u128(w), T0 + Duration::nanoseconds(ns)))
                .collect();
            for &(w, at) in &last_used {
                let at = crate::pg_time(at);
                latest.entry(w).and_modify(|t| *t = (*t).max(at)).or_insert(at);
            }
            block_on(store.write_app_stats(&AppStatsWrite { rows: vec![], batch_size: 1, last_used })).unwrap();
        }
        for w in 0..3 {
            let w = Uuid::from_u128(w);
            prop_assert_eq!(block_on(store.workspace_last_used(w)).unwrap(), latest.get(&w).copied());
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Replica, whether to resend the last seq (a lost ack), counts, ids.
    Flush {
        replica: u8,
        replay: bool,
        allowed: u64,
        denied: u64,
        ids: Vec<u8>,
    },
    Close,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, any::<bool>(), 0u64..100, 0u64..100, prop::collection::vec(0u8..10, 0..4))
            .prop_map(|(replica, replay, allowed, denied, ids)| Op::Flush { replica, replay, allowed, denied, ids }),
        1 => Just(Op::Close),
    ]
}

proptest! {
    /// Over any interleaving of flushes, replays and closes: each snapshot
    /// holds exactly the deltas applied in its period, with exact uniques,
    /// and replays are duplicates.
    #[test]
    fn snapshots_hold_each_applied_delta_once(ops in prop::collection::vec(arb_op(), 0..60)) {
        let store = MemoryStore::new();
        let replicas: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut last: HashMap<u8, BoundaryDelta> = HashMap::new();
        let mut period = 0i32;
        // The model of the open period.
        let (mut allowed, mut denied) = (0u64, 0u64);
        let mut ids: HashSet<u8> = HashSet::new();
        let mut active: HashSet<u8> = HashSet::new();
        for op in ops {
            match op {
                Op::Flush { replica, replay, allowed: a, denied: d, ids: seen } => {
                    let delta = match (replay, last.get(&replica)) {
                        (true, Some(previous)) => previous.clone(),
                        _ => BoundaryDelta {
                            replica_id: replicas[replica as usize],
                            seq: last.get(&replica).map_or(1, |p| p.seq + 1),
                            allowed: a,
                            denied: d,
                            workspace_ids: seen.iter().map(|&i| Uuid::from_u128(i.into())).collect(),
                            user_ids: seen.iter().map(|&i| Uuid::from_u128(u128::from(i) % 3)).collect(),
                            tracked_from: T0,
                            tracked_to: T0,
                        },
                    };
                    let fresh = last.get(&replica).is_none_or(|p| p.seq < delta.seq);
                    let outcome = block_on(store.flush_boundary_usage(&delta)).unwrap();
                    prop_assert_eq!(outcome, if fresh { FlushOutcome::Applied } else { FlushOutcome::Duplicate });
                    if fresh {
                        allowed += a;
                        denied += d;
                        ids.extend(seen);
                        active.insert(replica);
                        last.insert(replica, delta);
                    }
                }
                Op::Close => {
                    let start = T0 + Duration::minutes(30) * period;
                    let close = PeriodClose {
                        event_type: "boundary_usage".into(),
                        period: Period { start, end: start + Duration::minutes(30) },
                        snapshot_id: Uuid::new_v4(),
                        replica_id: replicas[0],
                        now: start,
                    };
                    period += 1;
                    let PeriodCloseOutcome::Closed(snapshot) = block_on(store.close_period(&close)).unwrap() else {
                        return Err(TestCaseError::fail("a fresh period was already closed"));
                    };
                    let users: HashSet<u8> = ids.iter().map(|i| i % 3).collect();
                    let want = BoundaryUsageSummary {
                        unique_workspaces: ids.len() as u64,
                        unique_users: users.len() as u64,
                        allowed_requests: allowed,
                        denied_requests: denied,
                        replicas: active.len() as u64,
                        tracked_from: (!active.is_empty()).then_some(T0),
                        tracked_to: (!active.is_empty()).then_some(T0),
                    };
                    prop_assert_eq!(snapshot.usage, want);
                    (allowed, denied) = (0, 0);
                    ids.clear();
                    active.clear();
                }
            }
        }
        let summary = block_on(store.boundary_usage_summary()).unwrap();
        prop_assert_eq!((summary.allowed_requests, summary.denied_requests), (allowed, denied));
        prop_assert_eq!(summary.unique_workspaces, ids.len() as u64);
    }
}
