use std::collections::HashSet;

use tally_domain::boundary::FlushOutcome;
use tally_domain::ports::{BoundaryUsageStore, TelemetryStore};

use super::boundary::delta;
use super::telemetry::close;
use super::{fixture, id};

/// Replicas flush from their own connections while periods are switched.
/// Every flush adds one allowed request, one workspace nobody else sees and
/// its replica's id as user: a flush split across a switch would break
/// `unique_workspaces == allowed` or `unique_users == replicas`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_land_wholly_in_one_period() {
    const REPLICAS: u128 = 4;
    const FLUSHES: u64 = 150;
    let f = fixture().await;
    let flushers: Vec<_> = (0..REPLICAS)
        .map(|r| {
            let store = f.store.clone();
            tokio::spawn(async move {
                for seq in 1..=FLUSHES {
                    let ws = 1_000_000 + r * 10_000 + u128::from(seq);
                    let d = delta(id(r), seq, 1, 0, &[ws], &[r], 0);
                    assert_eq!(
                        store.flush_boundary_usage(&d).await.unwrap(),
                        FlushOutcome::Applied
                    );
                }
            })
        })
        .collect();
    let closer = {
        let store = f.store.clone();
        tokio::spawn(async move {
            let mut closed = 0;
            for p in 0..40 {
                if close(&store, p).await.is_some() {
                    closed += 1;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            closed
        })
    };
    for t in flushers {
        t.await.unwrap();
    }
    assert_eq!(closer.await.unwrap(), 40);
    close(&f.store, 40).await.unwrap();

    let snaps = f.store.list_snapshots(1000).await.unwrap();
    assert_eq!(snaps.len(), 41);
    let ends: HashSet<_> = snaps.iter().map(|s| s.period_end).collect();
    assert_eq!(ends.len(), 41, "one snapshot per period");
    let total: u64 = snaps.iter().map(|s| s.usage.allowed_requests).sum();
    assert_eq!(
        total,
        REPLICAS as u64 * FLUSHES,
        "every flush counted exactly once"
    );
    for s in &snaps {
        assert_eq!(s.usage.unique_workspaces, s.usage.allowed_requests, "{s:?}");
        assert_eq!(s.usage.unique_users, s.usage.replicas, "{s:?}");
    }
}

/// Replicas racing to close the same period: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_closes_a_period() {
    let f = fixture().await;
    f.store
        .flush_boundary_usage(&delta(id(1), 1, 10, 2, &[1, 2], &[3], 0))
        .await
        .unwrap();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move { close(&store, 0).await })
        })
        .collect();
    let mut won = vec![];
    for r in racers {
        won.extend(r.await.unwrap());
    }
    assert_eq!(won.len(), 1, "one snapshot for the period");
    assert_eq!(won[0].usage.allowed_requests, 10);
    assert_eq!(f.store.list_snapshots(10).await.unwrap(), won);
}
