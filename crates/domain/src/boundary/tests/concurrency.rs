//! Threads tracking while flushes (some failing) and period switches run:
//! the totals over all snapshots are exact.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use time::Duration;

use super::fake_store::{FakeStore, Fault};
use super::{INTERVAL, id, next_period, t0, tracker};
use crate::clock::{Clock, ManualClock};
use crate::telemetry::snapshot::snapshot_step;

const REPLICAS: u128 = 2;
const THREADS_PER_REPLICA: u128 = 2;
const CALLS: u128 = 40_000;

#[test]
fn totals_are_exact_with_threads_tracking_while_flushes_and_closes_run() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let trackers: Vec<_> = (1..=REPLICAS).map(|r| tracker(r, &clock)).collect();
    let done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in &trackers {
            for thread in 0..THREADS_PER_REPLICA {
                workers.push(s.spawn(move || {
                    for i in 0..CALLS {
                        // Workspaces overlap across threads and replicas.
                        let ws = (i * 7 + thread) % 500;
                        t.track(id(10_000 + ws), id(20_000 + ws % 50), 3, 1);
                    }
                }));
            }
        }
        for (r, t) in trackers.iter().enumerate() {
            let (store, clock, done) = (&store, &clock, &done);
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let mut round = 0u32;
                while round < 30 || !done.load(Ordering::Acquire) {
                    round += 1;
                    // Faults hit whichever flush reaches the store next.
                    match round % 7 {
                        2 => store.fail_next_flush(Fault::FailBefore),
                        5 => store.fail_next_flush(Fault::LostAck),
                        _ => {}
                    }
                    let _ = rt.block_on(t.flush(store));
                    if r == 0 && round.is_multiple_of(4) {
                        clock.advance(INTERVAL);
                        rt.block_on(snapshot_step(store, id(1), clock.now(), INTERVAL))
                            .unwrap();
                    }
                    std::thread::yield_now();
                }
            });
        }
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    store.clear_faults();
    for t in &trackers {
        rt.block_on(t.flush(&store)).unwrap();
        assert_eq!(t.pending().allowed, 0);
    }
    clock.advance(Duration::seconds(1));
    rt.block_on(next_period(&store, &clock));

    let snapshots = store.snapshots();
    let calls = (REPLICAS * THREADS_PER_REPLICA * CALLS) as u64;
    let allowed: u64 = snapshots.iter().map(|s| s.usage.allowed_requests).sum();
    let denied: u64 = snapshots.iter().map(|s| s.usage.denied_requests).sum();
    assert_eq!((allowed, denied), (3 * calls, calls));
    assert!(snapshots.len() > 2, "periods switched while tracking");

    // Uniques per period are those of the deltas that landed in it.
    let applied = store.applied();
    let mut all = BTreeSet::new();
    for (g, snap) in snapshots.iter().enumerate() {
        let ws: BTreeSet<_> = applied
            .iter()
            .filter(|(gen_, _)| *gen_ == g)
            .flat_map(|(_, d)| d.workspace_ids.iter().copied())
            .collect();
        assert_eq!(snap.usage.unique_workspaces, ws.len() as u64);
        all.extend(ws);
    }
    assert_eq!(all.len(), 500);
}
