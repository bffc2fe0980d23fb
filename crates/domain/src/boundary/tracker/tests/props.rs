//! Several replicas sharing one store, random tracking, flush failures of
//! both kinds and period switches, checked against a model of where each
//! delta must land: per period the counts and exact uniques match, and over
//! all snapshots every tracked request is counted exactly once.

use std::collections::BTreeSet;

use proptest::prelude::*;
use time::Duration;
use uuid::Uuid;

use crate::boundary::tracker::PendingUsage;
use crate::clock::{Clock, ManualClock};
use crate::telemetry::Period;
use crate::telemetry::snapshot::snapshot_step;
use crate::testing::fake_store::{FakeStore, Fault};
use crate::testing::fixtures::{INTERVAL, id, t0, tracker};

#[derive(Debug, Clone)]
enum Op {
    Track {
        replica: usize,
        ws: u8,
        user: u8,
        allowed: u8,
        denied: u8,
    },
    Flush {
        replica: usize,
        fault: Option<Fault>,
    },
    Tick {
        secs: u16,
    },
    Close {
        advance: bool,
        by: usize,
        fault: Option<Fault>,
    },
}

fn fault() -> impl Strategy<Value = Option<Fault>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Fault::FailBefore)),
        1 => Just(Some(Fault::LostAck)),
    ]
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..replicas, 0u8..12, 0u8..6, 0u8..5, 0u8..5).prop_map(|(replica, ws, user, allowed, denied)| Op::Track {
            replica,
            ws,
            user,
            allowed,
            denied
        }),
        4 => (0..replicas, fault()).prop_map(|(replica, fault)| Op::Flush { replica, fault }),
        1 => (1u16..1200).prop_map(|secs| Op::Tick { secs }),
        2 => (any::<bool>(), 0..replicas, fault()).prop_map(|(advance, by, fault)| Op::Close { advance, by, fault }),
    ]
}

/// Usage as the model sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Part {
    allowed: u64,
    denied: u64,
    ws: BTreeSet<Uuid>,
    users: BTreeSet<Uuid>,
}

impl Part {
    fn is_empty(&self) -> bool {
        *self == Part::default()
    }
    fn add(&mut self, other: &Part) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.ws.extend(other.ws.iter().copied());
        self.users.extend(other.users.iter().copied());
    }
}

#[derive(Debug, Default)]
struct ModelReplica {
    fresh: Part,
    /// The delta sent but not acknowledged, and whether the store has it.
    unacked: Option<(Part, bool)>,
}

#[derive(Debug, Default)]
struct Model {
    replicas: Vec<ModelReplica>,
    current: Part,
    closed: Vec<Part>,
    last_lock: Option<time::OffsetDateTime>,
    tracked: Part,
}

impl Model {
    /// The tracker's documented flush: resend the kept delta first, then send
    /// what is new; `fault` hits the first store call.
    fn flush(&mut self, r: usize, mut fault: Option<Fault>) {
        let rep = &mut self.replicas[r];
        if let Some((part, landed)) = rep.unacked.take() {
            let f = fault.take();
            if f != Some(Fault::FailBefore) && !landed {
                self.current.add(&part);
            }
            if f.is_some() {
                let landed = landed || f == Some(Fault::LostAck);
                rep.unacked = Some((part, landed));
                return;
            }
        }
        if rep.fresh.is_empty() {
            return;
        }
        let part = std::mem::take(&mut rep.fresh);
        match fault {
            None => self.current.add(&part),
            Some(Fault::FailBefore) => rep.unacked = Some((part, false)),
            Some(Fault::LostAck) => {
                self.current.add(&part);
                rep.unacked = Some((part, true));
            }
        }
    }

    fn close(&mut self, period: Period, fault: Option<Fault>) {
        let locked = self.last_lock.is_some_and(|end| end >= period.end);
        if locked || fault == Some(Fault::FailBefore) {
            return;
        }
        self.last_lock = Some(period.end);
        self.closed.push(std::mem::take(&mut self.current));
    }
}

async fn run(replicas: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(t0() + Duration::seconds(1));
    let store = FakeStore::new();
    let trackers: Vec<_> = (0..replicas).map(|r| tracker(r as u128 + 1, &clock)).collect();
    let mut model = Model {
        replicas: (0..replicas).map(|_| ModelReplica::default()).collect(),
        ..Model::default()
    };
    let mut per_replica_ids: Vec<BTreeSet<Uuid>> = vec![BTreeSet::new(); replicas];

    for op in ops {
        match op {
            Op::Track {
                replica,
                ws,
                user,
                allowed,
                denied,
            } => {
                let (w, u) = (id(1000 + u128::from(ws)), id(2000 + u128::from(user)));
                trackers[replica].track(w, u, allowed.into(), denied.into());
                let part = Part {
                    allowed: allowed.into(),
                    denied: denied.into(),
                    ws: [w].into(),
                    users: [u].into(),
                };
                model.replicas[replica].fresh.add(&part);
                model.tracked.add(&part);
                per_replica_ids[replica].extend([w, u]);
            }
            Op::Flush { replica, fault } => {
                if let Some(f) = fault {
                    store.fail_next_flush(f);
                }
                let result = trackers[replica].flush(&store).await;
                store.clear_faults();
                model.flush(replica, fault);
                // An error exactly when the model says a call failed.
                prop_assert_eq!(result.is_err(), model.replicas[replica].unacked.is_some());
            }
            Op::Tick { secs } => clock.advance(Duration::seconds(secs.into())),
            Op::Close { advance, by, fault } => {
                if advance {
                    clock.advance(INTERVAL);
                }
                if let Some(f) = fault {
                    store.fail_next_close(f);
                }
                let now = clock.now();
                let result = snapshot_step(&store, id(by as u128 + 1), now, INTERVAL).await;
                store.clear_faults();
                prop_assert_eq!(result.is_err(), fault.is_some());
                model.close(Period::last_ended(now, INTERVAL), fault);
            }
        }
    }

    // Final flush of every replica and a final close.
    for (r, t) in trackers.iter().enumerate() {
        t.flush(&store).await.unwrap();
        model.flush(r, None);
        prop_assert_eq!(t.pending(), PendingUsage::default());
    }
    clock.advance(INTERVAL);
    let now = clock.now();
    prop_assert!(
        snapshot_step(&store, id(1), now, INTERVAL)
            .await
            .unwrap()
            .is_some()
    );
    model.close(Period::last_ended(now, INTERVAL), None);

    // Per period: counts and exact uniques as the model says they landed.
    let snapshots = store.snapshots();
    prop_assert_eq!(snapshots.len(), model.closed.len());
    for (snap, want) in snapshots.iter().zip(&model.closed) {
        prop_assert_eq!(snap.usage.allowed_requests, want.allowed);
        prop_assert_eq!(snap.usage.denied_requests, want.denied);
        prop_assert_eq!(snap.usage.unique_workspaces, want.ws.len() as u64);
        prop_assert_eq!(snap.usage.unique_users, want.users.len() as u64);
    }
    // Exactly once overall.
    let allowed: u64 = snapshots.iter().map(|s| s.usage.allowed_requests).sum();
    let denied: u64 = snapshots.iter().map(|s| s.usage.denied_requests).sum();
    prop_assert_eq!((allowed, denied), (model.tracked.allowed, model.tracked.denied));

    // Uniques from the store's own log: what landed in a period, deduplicated.
    let applied = store.applied();
    for (g, snap) in snapshots.iter().enumerate() {
        let ws: BTreeSet<Uuid> = applied
            .iter()
            .filter(|(gen_, _)| *gen_ == g)
            .flat_map(|(_, d)| d.workspace_ids.iter().copied())
            .collect();
        prop_assert_eq!(snap.usage.unique_workspaces, ws.len() as u64);
    }
    // Each replica: seqs 1, 2, 3... applied in order, intervals chained, and
    // exactly the ids it tracked.
    for (r, ids) in per_replica_ids.iter().enumerate() {
        let mine: Vec<_> = applied
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d.replica_id == id(r as u128 + 1))
            .collect();
        for (k, d) in mine.iter().enumerate() {
            prop_assert_eq!(d.seq, k as u64 + 1);
            prop_assert!(d.tracked_from <= d.tracked_to);
            if k > 0 {
                prop_assert_eq!(d.tracked_from, mine[k - 1].tracked_to);
            }
        }
        let sent: BTreeSet<Uuid> = mine
            .iter()
            .flat_map(|d| d.workspace_ids.iter().chain(&d.user_ids).copied())
            .collect();
        prop_assert_eq!(&sent, ids);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_tracked_request_lands_in_exactly_one_snapshot_with_exact_uniques(
        (replicas, ops) in (1usize..=3).prop_flat_map(|r| (Just(r), prop::collection::vec(op(r), 0..120)))
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(replicas, ops))?;
    }
}
