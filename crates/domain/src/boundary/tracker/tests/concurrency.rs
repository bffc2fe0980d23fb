//! Threads tracking while flushes (some failing) and period switches run:
//! the totals over all snapshots are exact. Flushes are serialized and a
//! cancelled flush loses nothing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use std::future::Future;

use time::Duration;

use crate::clock::{Clock, ManualClock};
use crate::error::StoreError;
use crate::ports::{CallInfo, Layer, Layered, MockBoundaryUsageStore};
use crate::telemetry::snapshot::snapshot_step;
use crate::testing::fake_store::{FakeStore, Fault};
use crate::testing::fixtures::{INTERVAL, id, next_period, t0, tracker};

const REPLICAS: u128 = 2;
const THREADS_PER_REPLICA: u128 = 2;
const CALLS: u128 = 150_000;

#[test]
fn totals_are_exact_with_threads_tracking_while_flushes_and_closes_run() {
    let clock = ManualClock::new(t0());
    let store = FakeStore::new();
    let trackers: Vec<_> = (1..=REPLICAS).map(|r| tracker(r, &clock)).collect();
    let done = AtomicBool::new(false);
    // Everyone starts together, so flushes overlap the tracking.
    let start = Barrier::new((REPLICAS * THREADS_PER_REPLICA + REPLICAS) as usize);

    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in &trackers {
            for thread in 0..THREADS_PER_REPLICA {
                let start = &start;
                workers.push(s.spawn(move || {
                    start.wait();
                    for i in 0..CALLS {
                        if i.is_multiple_of(1000) {
                            std::thread::yield_now();
                        }
                        // Workspaces overlap across threads and replicas.
                        let ws = (i * 7 + thread) % 500;
                        t.track(id(10_000 + ws), id(20_000 + ws % 50), 3, 1);
                    }
                }));
            }
        }
        for (r, t) in trackers.iter().enumerate() {
            let (store, clock, done, start) = (&store, &clock, &done, &start);
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                start.wait();
                let mut round = 0u32;
                while round < 30 || !done.load(Ordering::Acquire) {
                    round += 1;
                    // A fault hits whichever flush reaches the store next;
                    // unconsumed ones are dropped so they do not pile up.
                    store.clear_faults();
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
    assert!(
        applied.len() > trackers.len(),
        "flushes ran while threads tracked"
    );
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

/// A store call that never answers, to cancel a flush mid-way. The mock
/// under it is never called.
struct Hanging;

impl Layer for Hanging {
    async fn around<T: Send, F>(&self, _: &'static CallInfo, _: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_flush_loses_nothing() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    t.track(id(10), id(1), 3, 0);
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        t.flush(&Layered::new(MockBoundaryUsageStore::new(), Hanging)),
    )
    .await;
    assert!(cancelled.is_err(), "the flush was cut off");
    assert_eq!(t.pending().allowed, 3);
    let store = FakeStore::new();
    t.flush(&store).await.unwrap();
    let applied = store.applied();
    let (seq, allowed) = (applied[0].1.seq, applied[0].1.allowed);
    assert_eq!((seq, allowed), (1, 3));
}

/// Records overlapping store calls; each call yields to the scheduler.
#[derive(Default)]
struct Overlap {
    busy: AtomicBool,
    overlapped: AtomicBool,
}

impl Layer for Overlap {
    async fn around<T: Send, F>(&self, _: &'static CallInfo, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let outcome = call.await;
        self.busy.store(false, Ordering::SeqCst);
        outcome
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_do_not_interleave() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    let store = Arc::new(Layered::new(FakeStore::new(), Overlap::default()));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (t, store) = (t.clone(), store.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    t.track(id(10), id(1), 1, 0);
                    t.flush(&*store).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(!store.layer().overlapped.load(Ordering::SeqCst));
    let applied = store.inner().applied();
    let seqs: Vec<u64> = applied.iter().map(|(_, d)| d.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "applied in seq order, none skipped");
    assert_eq!(applied.iter().map(|(_, d)| d.allowed).sum::<u64>(), 80);
}

/// Says when a flush reached it, then never answers.
#[derive(Default)]
struct Stuck {
    entered: AtomicBool,
}

impl Layer for Stuck {
    async fn around<T: Send, F>(&self, _: &'static CallInfo, _: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        self.entered.store(true, Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_and_pending_do_not_wait_for_a_flush_stuck_on_the_store() {
    let clock = ManualClock::new(t0());
    let t = tracker(1, &clock);
    t.track(id(10), id(1), 1, 0);
    let store = Arc::new(Layered::new(MockBoundaryUsageStore::new(), Stuck::default()));
    let stuck = {
        let (t, store) = (t.clone(), store.clone());
        tokio::spawn(async move { t.flush(&store).await })
    };
    while !store.layer().entered.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    t.track(id(11), id(2), 2, 0);
    assert_eq!(t.pending().allowed, 3);
    stuck.abort();
    let store = FakeStore::new();
    t.flush(&store).await.unwrap();
    let seqs: Vec<(u64, u64)> = store.applied().iter().map(|(_, d)| (d.seq, d.allowed)).collect();
    assert_eq!(seqs, vec![(1, 1), (2, 2)], "the stuck delta first, then the rest");
}
