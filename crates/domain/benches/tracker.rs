//! `track` throughput: 10,000,000 calls over 10,000 workspaces and 2,000
//! users (owner of workspace i is user i % 2000, 3 allowed, 1 denied), on
//! one thread and split over two. Ids are generated before timing; each
//! iteration starts from a fresh tracker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_domain::ManualClock;
use tally_domain::boundary::tracker::BoundaryTracker;
use uuid::Uuid;

const CALLS: usize = 10_000_000;
const WORKSPACES: usize = 10_000;
const USERS: usize = 2_000;

struct Fleet {
    workspaces: Vec<Uuid>,
    owners: Vec<Uuid>,
}

impl Fleet {
    fn new() -> Self {
        let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
        let workspaces: Vec<Uuid> = (0..WORKSPACES).map(|_| Uuid::new_v4()).collect();
        let owners = (0..WORKSPACES).map(|i| users[i % USERS]).collect();
        Self { workspaces, owners }
    }

    /// Calls `from..to` of the sequence: call k tracks workspace k % 10,000.
    fn run(&self, tracker: &BoundaryTracker, from: usize, to: usize) {
        for k in from..to {
            let i = k % WORKSPACES;
            tracker.track(self.workspaces[i], self.owners[i], 3, 1);
        }
    }
}

fn fresh_tracker() -> BoundaryTracker {
    BoundaryTracker::new(
        Uuid::new_v4(),
        Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH)),
    )
}

fn timed(iters: u64, threads: usize, fleet: &Fleet) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let tracker = fresh_tracker();
        let start = Instant::now();
        if threads == 1 {
            fleet.run(&tracker, 0, CALLS);
        } else {
            let per = CALLS / threads;
            std::thread::scope(|s| {
                for t in 0..threads {
                    let tracker = &tracker;
                    s.spawn(move || fleet.run(tracker, t * per, (t + 1) * per));
                }
            });
        }
        total += start.elapsed();
        let pending = tracker.pending();
        assert_eq!(pending.allowed, 3 * CALLS as u64);
        assert_eq!((pending.workspaces, pending.users), (WORKSPACES, USERS));
    }
    total
}

fn bench(c: &mut Criterion) {
    let fleet = Fleet::new();
    let mut group = c.benchmark_group("tracker");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(CALLS as u64));
    group.bench_function("track_1t", |b| b.iter_custom(|iters| timed(iters, 1, &fleet)));
    group.bench_function("track_2t", |b| b.iter_custom(|iters| timed(iters, 2, &fleet)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
