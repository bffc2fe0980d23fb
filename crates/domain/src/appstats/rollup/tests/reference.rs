//! The engine against the plain reference: the same random reports (open,
//! closed, with any request counts, late, replayed), flushes at random times,
//! final flushes, and a budget in weights of any size; both must give
//! identical outcomes, rows, counts of what they hold and accounting at
//! every step.

use proptest::prelude::*;

use super::*;
use crate::appstats::rollup::reference::ReferenceRollup;

const WINDOW: Duration = Duration::minutes(1);

/// A session's fixed identity: which of four groups' keys, and its start.
#[derive(Debug, Clone)]
struct Plan {
    key: u8,
    start_ms: i64,
}

#[derive(Debug, Clone)]
enum Op {
    /// A report of session `session`: open, or closed `end_ms` after its
    /// start; `requests` in any order (a reordered older report has fewer).
    Send {
        session: usize,
        end_ms: Option<i64>,
        requests: u64,
    },
    /// Something sent before, again.
    Replay(usize),
    Flush {
        advance_s: i64,
        is_final: bool,
    },
}

fn plans() -> impl Strategy<Value = Vec<Plan>> {
    // Starts before and after the first flushes, some on a window's edge.
    let start = prop_oneof![0i64..300_000, (0i64..5).prop_map(|m| m * 60_000)];
    prop::collection::vec(
        (0u8..4, start).prop_map(|(key, start_ms)| Plan { key, start_ms }),
        1..12,
    )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let end = prop::option::weighted(0.7, prop_oneof![0i64..=60_000, 0i64..200_000]);
    prop::collection::vec(
        prop_oneof![
            6 => (0usize..12, end, 0u64..6).prop_map(|(session, end_ms, requests)| Op::Send { session, end_ms, requests }),
            2 => any::<usize>().prop_map(Op::Replay),
            3 => (0i64..100, prop::bool::weighted(0.1)).prop_map(|(advance_s, is_final)| Op::Flush { advance_s, is_final }),
        ],
        0..80,
    )
}

fn report(i: usize, plan: &Plan, end_ms: Option<i64>, requests: u64) -> StatsReport {
    let start = T0 + Duration::milliseconds(plan.start_ms);
    StatsReport {
        user_id: Uuid::from_u128(u128::from(plan.key % 2)),
        workspace_id: Uuid::from_u128(10 + u128::from(plan.key % 2)),
        agent_id: Uuid::from_u128(20 + u128::from(plan.key % 2)),
        access_method: AccessMethod::Path,
        slug_or_port: format!("app-{}", plan.key / 2),
        session_id: Uuid::from_u128(0x1000 + i as u128),
        session_started_at: start,
        session_ended_at: end_ms.map(|ms| start + Duration::milliseconds(ms)),
        requests,
        sessions: 1,
    }
}

/// Rows in a fixed order, each with whether it is provisional.
fn sorted(out: RollupRows) -> Vec<(StatsReport, bool)> {
    let mut rows: Vec<_> = out
        .rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| (row, out.provisional.contains(&i)))
        .collect();
    rows.sort_by_key(|(r, provisional)| {
        (
            r.session_id,
            r.session_started_at,
            r.user_id,
            r.slug_or_port.clone(),
            r.session_ended_at,
            r.requests,
            r.sessions,
            *provisional,
        )
    });
    rows
}

/// Applies the batch (if any) to both, then compares one flush's rows.
fn flush(
    engine: &mut Rollup,
    reference: &mut ReferenceRollup,
    batch: &mut Vec<StatsReport>,
    now: OffsetDateTime,
    is_final: bool,
) {
    let taken = engine.collect_batch(batch, usize::MAX);
    assert_eq!(taken.taken(), batch.len());
    for r in batch.drain(..) {
        assert_ne!(reference.collect_within(r, usize::MAX), Collected::Dropped);
    }
    let (a, b) = (
        engine.rollup_rows(now, is_final),
        reference.rollup_rows(now, is_final),
    );
    assert_eq!(sorted(a), sorted(b), "rows at {now} (final: {is_final})");
}

/// Drives both with `ops`, then a final flush and one an hour later. Reports
/// go to the engine one by one within `budget`, or (`batched`) as one batch
/// per flush with no budget.
fn run(plans: &[Plan], ops: &[Op], budget: usize, batched: bool) {
    run_weighted(plans, ops, budget, batched, Weights::UNITS);
}

fn run_weighted(plans: &[Plan], ops: &[Op], budget: usize, batched: bool, weights: Weights) {
    let mut engine = Rollup::with_weights(WINDOW, weights);
    let mut reference = ReferenceRollup::with_weights(WINDOW, weights);
    let (mut now, mut sent, mut batch): (_, Vec<StatsReport>, _) = (T0, Vec::new(), Vec::new());
    for op in ops {
        let r = match op {
            Op::Send {
                session,
                end_ms,
                requests,
            } => {
                let i = session % plans.len();
                Some(report(i, &plans[i], *end_ms, *requests))
            }
            Op::Replay(k) => (!sent.is_empty()).then(|| sent[k % sent.len()].clone()),
            Op::Flush { advance_s, is_final } => {
                now += Duration::seconds(*advance_s);
                flush(&mut engine, &mut reference, &mut batch, now, *is_final);
                None
            }
        };
        if let Some(r) = r {
            sent.push(r.clone());
            if batched {
                batch.push(r);
            } else {
                let outcome = engine.collect_within(&r, budget);
                assert_eq!(outcome, reference.collect_within(r, budget));
            }
        }
        engine.check_invariants();
        assert_eq!(engine.held(), reference.held());
        assert_eq!(engine.reserved_units(), reference.reserved_units());
    }
    flush(&mut engine, &mut reference, &mut batch, now, true);
    flush(
        &mut engine,
        &mut reference,
        &mut batch,
        now + Duration::hours(1),
        false,
    );
    assert_eq!(engine.held(), reference.held());
    assert_eq!(engine.reserved_units(), reference.reserved_units());
}

fn weights() -> impl Strategy<Value = Weights> {
    (0usize..8, 0usize..8, 0usize..8).prop_map(|(session, group, row)| Weights { session, group, row })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_engine_gives_the_reference_rows_one_by_one(plans in plans(), ops in ops()) {
        run(&plans, &ops, usize::MAX, false);
    }

    #[test]
    fn the_engine_gives_the_reference_rows_and_drops_within_a_budget(
        plans in plans(),
        ops in ops(),
        budget in 0usize..40,
    ) {
        run(&plans, &ops, budget, false);
    }

    #[test]
    fn the_engine_gives_the_reference_rows_and_drops_within_a_budget_of_any_weights(
        plans in plans(),
        ops in ops(),
        budget in 0usize..200,
        weights in weights(),
    ) {
        run_weighted(&plans, &ops, budget, false, weights);
    }

    #[test]
    fn the_engine_gives_the_reference_rows_in_batches(plans in plans(), ops in ops()) {
        run(&plans, &ops, usize::MAX, true);
    }
}
