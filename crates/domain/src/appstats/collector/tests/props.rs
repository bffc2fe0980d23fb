//! Properties over random interleavings of open and closed reports, replays,
//! flush times and reporter failures, checked against a model store that
//! merges every delivered row with the store's rule.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use super::*;
use crate::telemetry::truncate;

const WINDOW: Duration = Duration::minutes(1);

#[derive(Debug, Clone)]
struct Plan {
    /// Picks user and app from a few, so sessions share groups.
    key: u8,
    /// From T0, with a sub-second part so no session starts on a window edge.
    start_ms: i64,
    duration_ms: i64,
    /// Request increments of the open reports, then of the close.
    opens: Vec<u8>,
    close_extra: u8,
    /// Later closing reports (a proxy re-sending with more requests), each
    /// adding this many requests and seconds to the end.
    recloses: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Replay(usize),
    Flush { advance_s: i64, fail: bool },
}

fn plans() -> impl Strategy<Value = Vec<Plan>> {
    prop::collection::vec(
        (
            0u8..4,
            0i64..240_000,
            0i64..150_000,
            prop::collection::vec(0u8..4, 0..3),
            0u8..4,
            prop::collection::vec(0u8..3, 0..2),
        )
            .prop_map(
                |(key, start_ms, duration_ms, opens, close_extra, recloses)| Plan {
                    key,
                    start_ms: start_ms / 1000 * 1000 + 123,
                    duration_ms,
                    opens,
                    close_extra,
                    recloses,
                },
            ),
        1..14,
    )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0usize..14).prop_map(Op::Send),
            2 => any::<usize>().prop_map(Op::Replay),
            2 => (0i64..90, prop::bool::weighted(0.3)).prop_map(|(advance_s, fail)| Op::Flush { advance_s, fail }),
        ],
        0..60,
    )
}

/// Every report each session will send, in order; the last ones close it.
fn reports_of(i: usize, plan: &Plan) -> Vec<StatsReport> {
    let start = T0 + Duration::milliseconds(plan.start_ms);
    let base = StatsReport {
        user_id: Uuid::from_u128(u128::from(plan.key % 2)),
        workspace_id: Uuid::from_u128(10 + u128::from(plan.key % 2)),
        agent_id: Uuid::from_u128(20 + u128::from(plan.key % 2)),
        access_method: AccessMethod::Path,
        slug_or_port: format!("app-{}", plan.key / 2),
        session_id: Uuid::from_u128(0x1000 + i as u128),
        session_started_at: start,
        session_ended_at: None,
        requests: 0,
        sessions: 1,
    };
    let mut requests = 0;
    let mut out: Vec<StatsReport> = plan
        .opens
        .iter()
        .map(|inc| {
            requests += u64::from(*inc);
            StatsReport {
                requests,
                ..base.clone()
            }
        })
        .collect();
    let mut end = start + Duration::milliseconds(plan.duration_ms);
    requests += u64::from(plan.close_extra);
    out.push(StatsReport {
        session_ended_at: Some(end),
        requests,
        ..base.clone()
    });
    for extra in &plan.recloses {
        requests += u64::from(*extra);
        end += Duration::seconds(i64::from(*extra));
        out.push(StatsReport {
            session_ended_at: Some(end),
            requests,
            ..base.clone()
        });
    }
    out
}

/// The store as every adapter must behave: rows keyed by (user, agent,
/// session), later writes merged with [`StatsReport::merge_forward`].
#[derive(Debug, Default)]
struct ModelStore {
    rows: HashMap<(Uuid, Uuid, Uuid), StatsReport>,
}

impl ModelStore {
    /// The store after the successful calls of a [`recording_reporter`].
    fn after(calls: &[Call]) -> Self {
        let mut model = Self::default();
        for call in calls.iter().filter(|c| c.ok) {
            model.apply(&call.rows);
        }
        model
    }

    fn apply(&mut self, rows: &[StatsReport]) {
        for row in rows {
            assert!(
                row.session_ended_at.is_some(),
                "rows always carry an end: {row:?}"
            );
            self.rows
                .entry(row.row_key())
                .and_modify(|held| held.merge_forward(row))
                .or_insert_with(|| row.clone());
        }
    }

    fn total(&self) -> u64 {
        self.rows.values().map(|r| r.requests).sum()
    }
}

/// Plays the ops, then closes every session and lets time pass.
struct Run {
    plans: Vec<Plan>,
    reports: Vec<Vec<StatsReport>>,
    next: Vec<usize>,
    sent: Vec<StatsReport>,
    now: OffsetDateTime,
    last_flush: Option<OffsetDateTime>,
}

impl Run {
    fn new(plans: Vec<Plan>) -> Self {
        let reports = plans.iter().enumerate().map(|(i, p)| reports_of(i, p)).collect();
        Self {
            next: vec![0; plans.len()],
            plans,
            reports,
            sent: Vec::new(),
            now: T0,
            last_flush: None,
        }
    }

    fn send(&mut self, i: usize) -> Option<StatsReport> {
        let i = i % self.plans.len();
        let report = self.reports[i].get(self.next[i])?.clone();
        self.next[i] += 1;
        if self.late(&report) {
            return None;
        }
        self.sent.push(report.clone());
        Some(report)
    }

    /// Whether a closed session's group may be gone: its reports then count
    /// as new sessions, which the rollup cannot tell from late data, so the
    /// run leaves them out (a group is kept one window past its rolled-up
    /// record's end and no longer: docs/rules.md#group-lifetime).
    fn late(&self, report: &StatsReport) -> bool {
        let closed_before = self
            .sent
            .iter()
            .any(|r| r.session_id == report.session_id && r.session_ended_at.is_some());
        let group_gone_after = truncate(report.session_started_at, WINDOW) + 2 * WINDOW;
        closed_before && self.last_flush.is_some_and(|at| at > group_gone_after)
    }

    /// A replay of something sent before, while its group is surely still
    /// held (no flush yet past one window after its rolled-up record's end).
    fn replay(&self, k: usize) -> Option<StatsReport> {
        if self.sent.is_empty() {
            return None;
        }
        let report = &self.sent[k % self.sent.len()];
        let group_gone_after = truncate(report.session_started_at, WINDOW) + 2 * WINDOW;
        match self.last_flush {
            Some(at) if at > group_gone_after => None,
            _ => Some(report.clone()),
        }
    }

    fn remaining(&mut self) -> Vec<StatsReport> {
        let mut out = Vec::new();
        for i in 0..self.plans.len() {
            while let Some(report) = self.send(i) {
                out.push(report);
            }
            self.next[i] = self.reports[i].len();
        }
        out
    }

    /// Each session's final count: the most requests it sent.
    fn finals(&self) -> HashMap<Uuid, (OffsetDateTime, u64)> {
        let mut finals = HashMap::new();
        for r in &self.sent {
            let entry = finals.entry(r.session_id).or_insert((r.session_started_at, 0));
            entry.1 = entry.1.max(r.requests);
        }
        finals
    }

    fn expected_total(&self) -> u64 {
        self.finals().values().map(|(_, requests)| requests).sum()
    }
}

/// Rows whose start is the session's own are reported alone; the others are
/// rolled-up records (sessions never start on a window edge here).
fn check_rows(model: &ModelStore, run: &Run, exact: bool) {
    let finals = run.finals();
    for row in model.rows.values() {
        let (start, final_requests) = finals[&row.session_id];
        if row.session_started_at == start {
            if exact {
                assert_eq!(row.requests, final_requests, "alone: {row:?}");
            }
        } else {
            assert_eq!(row.session_started_at, truncate(start, WINDOW), "rolled: {row:?}");
            assert_eq!(row.session_ended_at, Some(row.session_started_at + WINDOW));
        }
    }
    if exact {
        assert_eq!(model.total(), run.expected_total(), "requests conserved");
    } else {
        assert!(model.total() <= run.expected_total(), "never counted twice");
    }
}

fn run_rollup(plans: Vec<Plan>, ops: Vec<Op>) {
    let mut rollup = Rollup::new(WINDOW);
    let mut model = ModelStore::default();
    let mut run = Run::new(plans);
    for op in ops {
        match op {
            Op::Send(i) => {
                if let Some(r) = run.send(i) {
                    rollup.collect(r);
                }
            }
            Op::Replay(k) => {
                if let Some(r) = run.replay(k) {
                    rollup.collect(r);
                }
            }
            Op::Flush { advance_s, .. } => {
                run.now += Duration::seconds(advance_s);
                run.last_flush = Some(run.now);
                model.apply(&rollup.rollup(run.now));
            }
        }
        rollup.check_invariants();
    }
    for r in run.remaining() {
        rollup.collect(r);
    }
    model.apply(&rollup.rollup_final(run.now));
    rollup.check_invariants();
    check_rows(&model, &run, true);
    model.apply(&rollup.rollup(run.now + Duration::hours(1)));
    assert_eq!((rollup.groups(), rollup.tracked_sessions()), (0, 0), "all freed");
    check_rows(&model, &run, true);
}

fn run_collector(plans: Vec<Plan>, ops: Vec<Op>, cap: usize) {
    run_weighted_collector(plans, ops, cap, Weights::UNITS);
}

fn run_weighted_collector(plans: Vec<Plan>, ops: Vec<Op>, cap: usize, weights: Weights) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let failing = Arc::new(AtomicBool::new(false));
        let fail = failing.clone();
        let (reporter, calls) = recording_reporter(move |_| fail.load(Ordering::SeqCst));
        let clock = ManualClock::new(T0);
        let c = collector(
            CollectorConfig {
                weights,
                ..capped(cap)
            },
            reporter,
            &clock,
        );
        let within_cap = |c: &StatsCollector| {
            let stats = c.stats();
            assert!(
                stats.tracked_sessions + stats.backlog_rows <= cap,
                "{stats:?} over {cap}"
            );
            // What the memory gauge shows is what admission compares.
            assert!(stats.held_units <= cap, "{stats:?} over {cap}");
            assert!(
                stats.held_units >= stats.tracked_sessions + stats.backlog_rows,
                "{stats:?}: every session and row held counts at least one unit"
            );
            let weighed = weights.session * stats.tracked_sessions + weights.rows(stats.backlog_rows);
            assert!(
                stats.held_units >= weighed,
                "{stats:?}: every session and row held counts at its weight ({weights:?})"
            );
        };
        let mut run = Run::new(plans);
        for op in ops {
            match op {
                Op::Send(i) => {
                    if let Some(r) = run.send(i) {
                        c.collect(r);
                    }
                }
                Op::Replay(k) => {
                    if let Some(r) = run.replay(k) {
                        c.collect(r);
                    }
                }
                Op::Flush { advance_s, fail } => {
                    run.now += Duration::seconds(advance_s);
                    run.last_flush = Some(run.now);
                    clock.set(run.now);
                    failing.store(fail, Ordering::SeqCst);
                    let _ = c.flush().await;
                    failing.store(false, Ordering::SeqCst);
                }
            }
            within_cap(&c);
        }
        for r in run.remaining() {
            c.collect(r);
            within_cap(&c);
        }
        c.close().await.unwrap();
        let exact = c.stats().dropped == 0;
        check_rows(&ModelStore::after(&calls.lock()), &run, exact);
        clock.set(run.now + Duration::hours(1));
        c.flush().await.unwrap();
        let stats = c.stats();
        // A dropped close followed by an accepted replay of an older open
        // report leaves that session open: only without drops must all go.
        if exact {
            assert_eq!(
                (stats.tracked_sessions, stats.backlog_rows, stats.held_units),
                (0, 0, 0),
                "all freed"
            );
        }
        check_rows(&ModelStore::after(&calls.lock()), &run, exact);
    });
}

/// Batches give the same rows as one-by-one collection (budget unlimited).
fn run_batches(plans: Vec<Plan>, ops: Vec<Op>) {
    let mut one = Rollup::new(WINDOW);
    let mut batched = Rollup::new(WINDOW);
    let mut run = Run::new(plans);
    let mut batch = Vec::new();
    let sorted = |mut rows: Vec<StatsReport>| {
        rows.sort_by_key(|r| (r.session_id, r.session_started_at));
        rows
    };
    let flush = |one: &mut Rollup, batched: &mut Rollup, batch: &mut Vec<StatsReport>, now, is_final| {
        let taken = batched.collect_batch(batch, usize::MAX);
        assert_eq!(taken.taken(), batch.len());
        batch.clear();
        batched.check_invariants();
        let (a, b) = if is_final {
            (one.rollup_final(now), batched.rollup_final(now))
        } else {
            (one.rollup(now), batched.rollup(now))
        };
        assert_eq!(sorted(a), sorted(b));
        assert_eq!(one.reserved_units(), batched.reserved_units());
    };
    for op in ops {
        match op {
            Op::Send(i) => {
                if let Some(r) = run.send(i) {
                    one.collect_within(&r, usize::MAX);
                    batch.push(r);
                }
            }
            Op::Replay(k) => {
                if let Some(r) = run.replay(k) {
                    one.collect_within(&r, usize::MAX);
                    batch.push(r);
                }
            }
            Op::Flush { advance_s, .. } => {
                run.now += Duration::seconds(advance_s);
                run.last_flush = Some(run.now);
                flush(&mut one, &mut batched, &mut batch, run.now, false);
            }
        }
    }
    for r in run.remaining() {
        one.collect_within(&r, usize::MAX);
        batch.push(r);
    }
    flush(&mut one, &mut batched, &mut batch, run.now, true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn batch_collection_matches_one_by_one(
        plans in plans(),
        ops in ops(),
    ) {
        run_batches(plans, ops);
    }

    #[test]
    fn rollup_conserves_requests_and_never_rolls_up_a_session_reported_alone(
        plans in plans(),
        ops in ops(),
    ) {
        run_rollup(plans, ops);
    }

    #[test]
    fn collector_conserves_requests_through_failures_and_replays(
        plans in plans(),
        ops in ops(),
    ) {
        run_collector(plans, ops, usize::MAX);
    }

    #[test]
    fn collector_stays_within_its_cap_and_never_counts_twice(
        plans in plans(),
        ops in ops(),
        cap in 0usize..40,
    ) {
        run_collector(plans, ops, cap);
    }

    #[test]
    fn collector_stays_within_a_cap_of_any_weights(
        plans in plans(),
        ops in ops(),
        cap in 0usize..400,
        (session, group, row) in (1usize..10, 1usize..10, 1usize..10),
    ) {
        run_weighted_collector(plans, ops, cap, Weights { session, group, row });
    }
}
