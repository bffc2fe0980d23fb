//! Replicas flushing from separate tasks while periods close.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tally_domain::boundary::{BoundaryUsageSummary, FlushOutcome};
use tally_domain::ports::Store;
use tally_domain::telemetry::{PeriodCloseOutcome, Snapshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::BoundaryPorts;
use super::fixtures::*;

/// Closers stop here at the latest, so the final close always wins.
const MAX_RACED_PERIOD: i64 = 5_000;
/// After every period the closers reach: closes whatever is left.
const LAST_PERIOD: i64 = MAX_RACED_PERIOD + 1;

/// Closes successive periods as fast as it can until `done`; returns the
/// snapshots it won.
async fn closer<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>, done: Arc<AtomicBool>) -> Vec<Snapshot> {
    let replica = Uuid::new_v4();
    let mut won = Vec::new();
    let mut k = 1;
    while !done.load(Ordering::Acquire) && k <= MAX_RACED_PERIOD {
        let close = close_of(k, replica);
        if let PeriodCloseOutcome::Closed(s) = retrying("close", || store.close_period(&close)).await {
            won.push(s);
        }
        k += 1;
        tokio::task::yield_now().await;
    }
    won
}

/// Runs `replicas` (each a future of flushes) alongside `closers` closer
/// tasks, then closes what is left; returns every snapshot taken.
async fn race<S: BoundaryPorts + ?Sized + 'static, F>(
    store: &Arc<S>,
    replicas: Vec<F>,
    closers: usize,
) -> Vec<Snapshot>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(AtomicBool::new(false));
    let mut closing = JoinSet::new();
    for _ in 0..closers {
        closing.spawn(closer(Arc::clone(store), Arc::clone(&done)));
    }
    let mut flushing = JoinSet::new();
    for r in replicas {
        flushing.spawn(r);
    }
    while let Some(joined) = flushing.join_next().await {
        joined.expect("a replica task panicked");
    }
    done.store(true, Ordering::Release);
    let mut snapshots = Vec::new();
    while let Some(joined) = closing.join_next().await {
        snapshots.extend(joined.expect("a closer task panicked"));
    }
    snapshots.push(must_close(&**store, LAST_PERIOD).await);
    assert_eq!(
        store.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default(),
        "the last close left data behind"
    );

    let mut listed = store.list_snapshots(NO_LIMIT).await.unwrap();
    listed.sort_by_key(|s| s.period_end);
    snapshots.sort_by_key(|s| s.period_end);
    assert_eq!(
        listed, snapshots,
        "the outbox holds exactly the snapshots the closes returned"
    );
    let ends: HashSet<_> = snapshots.iter().map(|s| s.period_end).collect();
    assert_eq!(ends.len(), snapshots.len(), "two snapshots for one period");
    snapshots
}

/// A flush racing with a period switch lands wholly in one period: each
/// delta carries one allowed, two denied, and one workspace and one user
/// nobody else sends, so in every snapshot those four numbers agree.
pub async fn period_switch_is_atomic_against_flushes<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    const REPLICAS: u64 = 4;
    const DELTAS: u64 = 150;
    let replicas = (0..REPLICAS)
        .map(|_| {
            let store = Arc::clone(&store);
            async move {
                let replica = Uuid::new_v4();
                for seq in 1..=DELTAS {
                    let mine = ids(2);
                    let d = delta(replica, seq, (1, 2), &mine[..1], &mine[1..], (T0, T0 + secs(1)));
                    let outcome = retrying("flush", || store.flush_boundary_usage(&d)).await;
                    assert_eq!(outcome, FlushOutcome::Applied);
                    tokio::task::yield_now().await;
                }
            }
        })
        .collect();
    let snapshots = race(&store, replicas, 1).await;

    for s in &snapshots {
        let u = &s.usage;
        assert_eq!(
            (u.unique_workspaces, u.unique_users, u.denied_requests),
            (u.allowed_requests, u.allowed_requests, 2 * u.allowed_requests),
            "a delta was split across periods: {s:?}"
        );
        assert!(u.replicas <= REPLICAS);
    }
    let total: u64 = snapshots.iter().map(|s| s.usage.allowed_requests).sum();
    assert_eq!(total, REPLICAS * DELTAS, "every delta in exactly one snapshot");
}

/// Several replicas flush from separate tasks, replaying some deltas as a
/// lost acknowledgement would, over shared workspaces and users, while two
/// replicas race to close the same periods: the snapshots hold exactly what
/// was flushed, once, and no period is closed twice.
pub async fn replicas_flush_while_periods_close<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    const REPLICAS: u64 = 4;
    const DELTAS: u64 = 100;
    let workspaces = Arc::new(ids(20));
    let users = Arc::new(ids(5));
    let shape = |r: u64, seq: u64| (seq % 7 + 1 + r, seq % 3);
    let replicas = (0..REPLICAS)
        .map(|r| {
            let (store, workspaces, users) =
                (Arc::clone(&store), Arc::clone(&workspaces), Arc::clone(&users));
            async move {
                let replica = Uuid::new_v4();
                for seq in 1..=DELTAS {
                    let i = (seq * (r + 1)) as usize;
                    let ws = [workspaces[i % 20], workspaces[(i + 7) % 20]];
                    let us = [users[i % 5]];
                    let at = T0 + secs(seq as i64);
                    let d = delta(replica, seq, shape(r, seq), &ws, &us, (at, at + secs(1)));
                    let outcome = retrying("flush", || store.flush_boundary_usage(&d)).await;
                    assert_eq!(outcome, FlushOutcome::Applied);
                    if seq % 3 == 0 {
                        // The acknowledgement was lost; the tracker sends it again.
                        let again = retrying("replay", || store.flush_boundary_usage(&d)).await;
                        assert_eq!(again, FlushOutcome::Duplicate);
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
        .collect();
    let snapshots = race(&store, replicas, 2).await;

    let (mut allowed, mut denied) = (0, 0);
    for r in 0..REPLICAS {
        for seq in 1..=DELTAS {
            let (a, d) = shape(r, seq);
            allowed += a;
            denied += d;
        }
    }
    let sum = |f: fn(&Snapshot) -> u64| snapshots.iter().map(f).sum::<u64>();
    assert_eq!(sum(|s| s.usage.allowed_requests), allowed);
    assert_eq!(sum(|s| s.usage.denied_requests), denied);
    for s in &snapshots {
        assert!(
            s.usage.unique_workspaces <= 20 && s.usage.unique_users <= 5,
            "{s:?}"
        );
        assert!(s.usage.replicas <= REPLICAS, "{s:?}");
        let empty = s.usage.allowed_requests == 0;
        assert_eq!(empty, s.usage.unique_workspaces == 0, "ids without counts: {s:?}");
        assert_eq!(empty, s.usage.replicas == 0, "replicas without counts: {s:?}");
    }
}

/// Calls `op` until it succeeds, retrying only what the store calls
/// retryable (a deadlock or serialization failure), as every caller may.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tally_domain::error::StoreError>>,
{
    let mut attempts = 0;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if e.is_retryable() && attempts < 20 => attempts += 1,
            Err(e) => panic!("{what}: {e} (after {attempts} retries)"),
        }
    }
}

/// Replicas writing the same rows and workspaces at once, each in its own
/// order (as when a proxy retries through another replica): every write
/// goes through, and the store ends at each row's latest end and largest
/// request count (carried by different writes, so any rule that lets one
/// write win whole depends on the interleaving) and each workspace's latest
/// last-used time.
pub async fn concurrent_writes_of_the_same_rows_converge(store: Arc<dyn Store>) {
    const WRITERS: i64 = 4;
    const WRITES: i64 = 25;
    let people: Vec<Who> = (0..5).map(|_| Who::new()).collect();
    let base: Vec<_> = (0..40)
        .map(|i| {
            let method = tally_domain::appstats::AccessMethod::Path;
            row(people[i % 5], method, &format!("app{}", i % 3), T0, T0, 0)
        })
        .collect();
    let base = Arc::new(base);
    let mut writers = JoinSet::new();
    for t in 0..WRITERS {
        let (store, base) = (Arc::clone(&store), Arc::clone(&base));
        writers.spawn(async move {
            for i in 0..WRITES {
                let v = i * WRITERS + t;
                let mut rows: Vec<_> = base
                    .iter()
                    .map(|r| later(r, T0 + secs(v), requests_of(v)))
                    .collect();
                let len = rows.len();
                rows.rotate_left((t * 7) as usize % len);
                if t % 2 == 1 {
                    rows.reverse();
                }
                let write = write_of(rows, 16);
                retrying("concurrent write", || store.write_app_stats(&write)).await;
            }
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined.expect("a writer task panicked");
    }
    let newest = WRITES * WRITERS - 1;
    let most = (0..=newest).map(requests_of).max().unwrap();
    assert_ne!(requests_of(newest), most, "the newest write is not the largest");
    let want: Vec<_> = base
        .iter()
        .map(|r| stored(&later(r, T0 + secs(newest), most)))
        .collect();
    assert_eq!(by_key(all_rows(&*store).await), by_key(want));
    for who in &people {
        assert_eq!(
            store.workspace_last_used(who.workspace).await.unwrap(),
            Some(T0 + secs(newest)),
            "last used of a workspace written concurrently"
        );
    }
}

/// The request count of the `v`-th write: a shuffle of `0..100`, so request
/// counts and ends disagree on which write is newest.
fn requests_of(v: i64) -> u64 {
    (v * 37 % 100) as u64
}
