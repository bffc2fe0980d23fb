use tally_domain::boundary::{BoundaryDelta, BoundaryUsageSummary, FlushOutcome};
use tally_domain::error::StoreError;
use tally_domain::ports::BoundaryUsageStore;
use time::Duration;
use uuid::Uuid;

use super::{T0, fixture, id};

pub fn delta(
    replica: Uuid,
    seq: u64,
    allowed: u64,
    denied: u64,
    ws: &[u128],
    users: &[u128],
    at: i64,
) -> BoundaryDelta {
    BoundaryDelta {
        replica_id: replica,
        seq,
        allowed,
        denied,
        workspace_ids: ws.iter().map(|&n| id(n)).collect(),
        user_ids: users.iter().map(|&n| id(n)).collect(),
        tracked_from: T0 + Duration::seconds(at),
        tracked_to: T0 + Duration::seconds(at + 10),
    }
}

#[tokio::test]
async fn uniques_are_exact_across_replicas_and_sums_add_up() {
    let f = fixture().await;
    let s = &f.store;
    assert_eq!(
        s.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default()
    );
    let (a, b) = (id(1001), id(1002));
    assert_eq!(
        s.flush_boundary_usage(&delta(a, 1, 5, 1, &[1, 2], &[10], 0))
            .await
            .unwrap(),
        FlushOutcome::Applied
    );
    assert_eq!(
        s.flush_boundary_usage(&delta(b, 1, 7, 2, &[2, 3], &[10, 11], 20))
            .await
            .unwrap(),
        FlushOutcome::Applied
    );
    assert_eq!(
        s.flush_boundary_usage(&delta(a, 2, 1, 0, &[3, 3], &[11], 5))
            .await
            .unwrap(),
        FlushOutcome::Applied
    );
    assert_eq!(
        s.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary {
            unique_workspaces: 3,
            unique_users: 2,
            allowed_requests: 13,
            denied_requests: 3,
            replicas: 2,
            tracked_from: Some(T0),
            tracked_to: Some(T0 + Duration::seconds(30)),
        }
    );
}

#[tokio::test]
async fn a_sequence_number_is_applied_once() {
    let f = fixture().await;
    let s = &f.store;
    let r = id(1);
    s.flush_boundary_usage(&delta(r, 3, 5, 1, &[1], &[2], 0))
        .await
        .unwrap();
    let before = s.boundary_usage_summary().await.unwrap();
    for seq in [3, 2, 0] {
        assert_eq!(
            s.flush_boundary_usage(&delta(r, seq, 100, 100, &[50], &[60], 500))
                .await
                .unwrap(),
            FlushOutcome::Duplicate
        );
    }
    assert_eq!(
        s.boundary_usage_summary().await.unwrap(),
        before,
        "duplicates change nothing"
    );
}

#[tokio::test]
async fn a_gone_replica_is_deleted_by_id() {
    let f = fixture().await;
    let s = &f.store;
    s.flush_boundary_usage(&delta(id(1), 1, 5, 1, &[1], &[2], 0))
        .await
        .unwrap();
    s.flush_boundary_usage(&delta(id(2), 1, 3, 0, &[1], &[2], 0))
        .await
        .unwrap();
    assert_eq!(s.delete_boundary_usage_by_replica(id(1)).await.unwrap(), 1);
    assert_eq!(s.delete_boundary_usage_by_replica(id(1)).await.unwrap(), 0);
    let sum = s.boundary_usage_summary().await.unwrap();
    assert_eq!((sum.allowed_requests, sum.replicas), (3, 1));
    // Its sequence went with it: seq 1 applies again.
    assert_eq!(
        s.flush_boundary_usage(&delta(id(1), 1, 1, 0, &[], &[], 0))
            .await
            .unwrap(),
        FlushOutcome::Applied
    );
}

#[tokio::test]
async fn impossible_deltas_are_invalid() {
    let f = fixture().await;
    let s = &f.store;
    let mut d = delta(id(1), u64::MAX, 1, 0, &[], &[], 0);
    assert!(
        matches!(s.flush_boundary_usage(&d).await, Err(e @ StoreError::Invalid { .. }) if e.to_string().contains("seq"))
    );
    d.seq = 1;
    d.allowed = u64::MAX;
    assert!(
        matches!(s.flush_boundary_usage(&d).await, Err(e @ StoreError::Invalid { .. }) if e.to_string().contains("allowed"))
    );
    d.allowed = 1;
    d.tracked_to = d.tracked_from - Duration::seconds(1);
    assert!(
        matches!(s.flush_boundary_usage(&d).await, Err(e @ StoreError::Invalid { .. }) if e.to_string().contains("tracked_to"))
    );
    // Counters overflowing the column are refused by the database.
    s.flush_boundary_usage(&delta(id(1), 1, i64::MAX as u64, 0, &[], &[], 0))
        .await
        .unwrap();
    let err = s
        .flush_boundary_usage(&delta(id(1), 2, 1, 0, &[], &[], 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(
        s.boundary_usage_summary().await.unwrap().allowed_requests,
        i64::MAX as u64
    );
}
