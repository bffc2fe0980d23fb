//! Boundary usage: deltas, exact uniques across replicas, seq dedupe, delete.

use std::sync::Arc;

use tally_domain::boundary::{BoundaryUsageSummary, FlushOutcome};
use uuid::Uuid;

use super::BoundaryPorts;
use super::fixtures::*;

/// Counters add up across replicas; a workspace or user seen by several
/// replicas counts once; the tracked range spans every delta.
pub async fn boundary_deltas_add_up_with_exact_uniques_across_replicas<
    S: BoundaryPorts + ?Sized + 'static,
>(
    store: Arc<S>,
) {
    let store = &*store;
    assert_eq!(
        store.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default(),
        "a fresh store"
    );
    let [r1, r2, r3] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let w = ids(4);
    let u = ids(3);
    let deltas = [
        delta(r1, 1, (10, 1), &w[0..2], &u[0..1], (T0 + mins(1), T0 + mins(2))),
        delta(r2, 1, (20, 2), &w[1..3], &u[0..2], (T0 + secs(30), T0 + secs(90))),
        delta(r3, 1, (5, 0), &w[0..3], &u[0..3], (T0 + mins(1), T0 + mins(3))),
        delta(r1, 2, (1, 1), &w[3..4], &u[2..3], (T0 + mins(2), T0 + mins(5))),
    ];
    for d in &deltas {
        assert_eq!(
            store.flush_boundary_usage(d).await.unwrap(),
            FlushOutcome::Applied
        );
    }
    let want = BoundaryUsageSummary {
        unique_workspaces: 4,
        unique_users: 3,
        allowed_requests: 36,
        denied_requests: 4,
        replicas: 3,
        tracked_from: Some(T0 + secs(30)),
        tracked_to: Some(T0 + mins(5)),
    };
    assert_eq!(store.boundary_usage_summary().await.unwrap(), want);
}

/// A delta whose acknowledgement was lost comes again with the same `seq`:
/// it is a duplicate and changes nothing; so is an older `seq`. Sequences
/// are per replica, and a replica's first delta may have any `seq`.
pub async fn a_replayed_delta_is_counted_once<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
    let w = ids(3);
    let range = (T0, T0 + mins(1));
    let first = delta(r1, 1, (7, 3), &w[0..1], &w[0..1], range);
    assert_eq!(
        store.flush_boundary_usage(&first).await.unwrap(),
        FlushOutcome::Applied
    );
    let after_first = store.boundary_usage_summary().await.unwrap();

    assert_eq!(
        store.flush_boundary_usage(&first).await.unwrap(),
        FlushOutcome::Duplicate
    );
    // Even a duplicate carrying new ids adds nothing.
    let dup_with_ids = delta(r1, 1, (7, 3), &w[1..3], &w[1..3], range);
    assert_eq!(
        store.flush_boundary_usage(&dup_with_ids).await.unwrap(),
        FlushOutcome::Duplicate
    );
    assert_eq!(store.boundary_usage_summary().await.unwrap(), after_first);

    let third = delta(r1, 3, (1, 0), &[], &[], range);
    assert_eq!(
        store.flush_boundary_usage(&third).await.unwrap(),
        FlushOutcome::Applied
    );
    let late_second = delta(r1, 2, (100, 100), &[], &[], range);
    assert_eq!(
        store.flush_boundary_usage(&late_second).await.unwrap(),
        FlushOutcome::Duplicate,
        "a seq below the last applied one"
    );
    assert_eq!(
        store.flush_boundary_usage(&third).await.unwrap(),
        FlushOutcome::Duplicate
    );

    // Another replica's seq 1, and a new replica starting at seq 0.
    let other = delta(r2, 1, (2, 0), &[], &[], range);
    assert_eq!(
        store.flush_boundary_usage(&other).await.unwrap(),
        FlushOutcome::Applied
    );
    let zero = delta(Uuid::new_v4(), 0, (1, 0), &[], &[], range);
    assert_eq!(
        store.flush_boundary_usage(&zero).await.unwrap(),
        FlushOutcome::Applied
    );
    assert_eq!(
        store.flush_boundary_usage(&zero).await.unwrap(),
        FlushOutcome::Duplicate
    );

    let summary = store.boundary_usage_summary().await.unwrap();
    assert_eq!(
        (
            summary.allowed_requests,
            summary.denied_requests,
            summary.replicas
        ),
        (7 + 1 + 2 + 1, 3, 3)
    );
    assert_eq!((summary.unique_workspaces, summary.unique_users), (1, 1));
}

/// Deleting a gone replica removes its counters and its sequence; the
/// distinct ids belong to the period and stay.
pub async fn deleting_a_replica_forgets_its_counters_and_seq<S: BoundaryPorts + ?Sized + 'static>(
    store: Arc<S>,
) {
    let store = &*store;
    let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
    let w = ids(2);
    let d1 = delta(r1, 5, (10, 4), &w[0..1], &w[0..1], (T0, T0 + mins(1)));
    let d2 = delta(r2, 1, (3, 1), &w[1..2], &w[1..2], (T0 + mins(2), T0 + mins(3)));
    store.flush_boundary_usage(&d1).await.unwrap();
    store.flush_boundary_usage(&d2).await.unwrap();

    assert_eq!(store.delete_boundary_usage_by_replica(r1).await.unwrap(), 1);
    let want = BoundaryUsageSummary {
        unique_workspaces: 2,
        unique_users: 2,
        allowed_requests: 3,
        denied_requests: 1,
        replicas: 1,
        tracked_from: Some(T0 + mins(2)),
        tracked_to: Some(T0 + mins(3)),
    };
    assert_eq!(store.boundary_usage_summary().await.unwrap(), want);
    assert_eq!(
        store.delete_boundary_usage_by_replica(r1).await.unwrap(),
        0,
        "gone already"
    );
    assert_eq!(
        store
            .delete_boundary_usage_by_replica(Uuid::new_v4())
            .await
            .unwrap(),
        0,
        "never there"
    );

    // Its sequence is forgotten too: seq 1 is new again.
    let again = delta(r1, 1, (1, 0), &[], &[], (T0, T0 + mins(1)));
    assert_eq!(
        store.flush_boundary_usage(&again).await.unwrap(),
        FlushOutcome::Applied
    );
    let summary = store.boundary_usage_summary().await.unwrap();
    assert_eq!((summary.allowed_requests, summary.replicas), (4, 2));
}

/// Deltas a `bigint` cannot hold, or with an inverted range, are refused
/// naming the field, and neither count nor use up their `seq`.
pub async fn invalid_deltas_change_nothing<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let r = Uuid::new_v4();
    let range = (T0, T0 + mins(1));
    let w = ids(1);
    store
        .flush_boundary_usage(&delta(r, 1, (5, 5), &w, &w, range))
        .await
        .unwrap();
    let before = store.boundary_usage_summary().await.unwrap();

    let big = i64::MAX as u64 + 1;
    let fresh = ids(1);
    let cases = [
        (delta(r, 2, (big, 0), &fresh, &fresh, range), "allowed"),
        (delta(r, 2, (0, big), &fresh, &fresh, range), "denied"),
        (delta(r, big, (1, 1), &fresh, &fresh, range), "seq"),
        (
            delta(r, 2, (1, 1), &fresh, &fresh, (T0, T0 - secs(1))),
            "tracked_to",
        ),
    ];
    for (bad, field) in cases {
        assert_invalid(store.flush_boundary_usage(&bad).await, field, field);
        assert_eq!(store.boundary_usage_summary().await.unwrap(), before, "{field}");
    }

    // A counter that would pass i64::MAX is refused too.
    let fill = delta(r, 2, (i64::MAX as u64 - 5, 0), &[], &[], range);
    assert_eq!(
        store.flush_boundary_usage(&fill).await.unwrap(),
        FlushOutcome::Applied
    );
    let filled = store.boundary_usage_summary().await.unwrap();
    let over = delta(r, 3, (6, 0), &fresh, &fresh, range);
    let result = store.flush_boundary_usage(&over).await;
    assert!(
        matches!(result, Err(tally_domain::error::StoreError::Invalid { .. })),
        "counter overflow: {result:?}"
    );
    assert_eq!(store.boundary_usage_summary().await.unwrap(), filled);

    // The refused seq 3 is still free.
    let ok = delta(r, 3, (0, 1), &fresh, &fresh, range);
    assert_eq!(
        store.flush_boundary_usage(&ok).await.unwrap(),
        FlushOutcome::Applied
    );
    assert_eq!(store.boundary_usage_summary().await.unwrap().unique_workspaces, 2);
}
