//! Period locks and the period switch.

use std::sync::Arc;

use tally_domain::boundary::{BoundaryUsageSummary, FlushOutcome};
use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, PeriodClose, PeriodCloseOutcome, Snapshot};
use uuid::Uuid;

use super::BoundaryPorts;
use super::fixtures::*;

/// The lock of a period is taken once; a period that ends no later than a
/// locked one is refused, and a refused close changes nothing. Locks are per
/// event type.
pub async fn a_period_is_closed_once<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
    let first = must_close(store, 1).await;
    assert_eq!(
        (first.period_start, first.period_end),
        (period(1).start, period(1).end)
    );
    assert_eq!(first.event_type, BOUNDARY_USAGE_EVENT);

    let w = ids(1);
    let d = delta(r1, 1, (3, 2), &w, &w, (T0, T0 + mins(1)));
    store.flush_boundary_usage(&d).await.unwrap();
    let pending = store.boundary_usage_summary().await.unwrap();

    for (k, replica, what) in [(1, r2, "the same period"), (0, r1, "an earlier period")] {
        let outcome = store.close_period(&close_of(k, replica)).await.unwrap();
        assert_eq!(outcome, PeriodCloseOutcome::AlreadyClosed, "{what}");
        assert_eq!(
            store.boundary_usage_summary().await.unwrap(),
            pending,
            "{what}: a refused close reset the period"
        );
    }
    assert_eq!(store.list_snapshots(10).await.unwrap(), vec![first.clone()]);

    let second = must_close(store, 2).await;
    assert_eq!(second.usage, pending);

    // Another event type has its own locks.
    let other = PeriodClose {
        event_type: "other_event".into(),
        ..close_of(1, r1)
    };
    let PeriodCloseOutcome::Closed(third) = store.close_period(&other).await.unwrap() else {
        panic!("the lock of another event type blocked a close");
    };
    assert_eq!(third.event_type, "other_event");

    let mut want = vec![second, first, third];
    want[1..].sort_by_key(|s: &Snapshot| std::cmp::Reverse(s.id));
    assert_eq!(
        store.list_snapshots(10).await.unwrap(),
        want,
        "newest period first, then id descending"
    );
    assert_eq!(store.list_snapshots(1).await.unwrap(), want[..1].to_vec());
}

/// The snapshot holds the period's totals; the next period starts from
/// zero but every replica keeps its sequence.
pub async fn closing_a_period_snapshots_and_resets_it<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
    let w = ids(3);
    let d1 = delta(r1, 1, (10, 2), &w[0..2], &w[0..1], (T0 + mins(1), T0 + mins(2)));
    let d2 = delta(r2, 1, (5, 1), &w[1..3], &w[0..1], (T0 + mins(3), T0 + mins(4)));
    store.flush_boundary_usage(&d1).await.unwrap();
    store.flush_boundary_usage(&d2).await.unwrap();
    let totals = store.boundary_usage_summary().await.unwrap();
    assert_eq!(
        (totals.unique_workspaces, totals.unique_users, totals.replicas),
        (3, 1, 2)
    );

    let close = PeriodClose {
        now: period(0).end + time::Duration::nanoseconds(1_234_567_890),
        ..close_of(0, r1)
    };
    let PeriodCloseOutcome::Closed(snapshot) = store.close_period(&close).await.unwrap() else {
        panic!("a fresh period was already closed");
    };
    let want = Snapshot {
        id: close.snapshot_id,
        event_type: BOUNDARY_USAGE_EVENT.into(),
        period_start: period(0).start,
        period_end: period(0).end,
        usage: totals,
        created_at: period(0).end + time::Duration::microseconds(1_234_567),
        published_at: None,
        publish_attempts: 0,
    };
    assert_eq!(snapshot, want);
    assert_eq!(store.list_snapshots(10).await.unwrap(), vec![want]);
    assert_eq!(
        store.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default(),
        "the next period starts empty"
    );

    // Sequences survive the switch: a late replay of seq 1 is not counted again.
    assert_eq!(
        store.flush_boundary_usage(&d1).await.unwrap(),
        FlushOutcome::Duplicate
    );
    assert_eq!(
        store.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default()
    );

    // A workspace of the last period counts again in the new one.
    let d3 = delta(r1, 2, (1, 0), &w[0..1], &[], (T0 + mins(31), T0 + mins(32)));
    assert_eq!(
        store.flush_boundary_usage(&d3).await.unwrap(),
        FlushOutcome::Applied
    );
    let want = BoundaryUsageSummary {
        unique_workspaces: 1,
        unique_users: 0,
        allowed_requests: 1,
        denied_requests: 0,
        replicas: 1,
        tracked_from: Some(T0 + mins(31)),
        tracked_to: Some(T0 + mins(32)),
    };
    assert_eq!(store.boundary_usage_summary().await.unwrap(), want);
    assert_eq!(must_close(store, 1).await.usage, want);
}

/// A period nobody flushed into still gets its (zero) snapshot, also when
/// replicas flushed in earlier periods.
pub async fn an_empty_period_gets_a_zero_snapshot<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    assert_eq!(must_close(store, 0).await.usage, BoundaryUsageSummary::default());

    let w = ids(1);
    let d = delta(Uuid::new_v4(), 1, (1, 1), &w, &w, (T0 + mins(31), T0 + mins(32)));
    store.flush_boundary_usage(&d).await.unwrap();
    assert_eq!(must_close(store, 1).await.usage.allowed_requests, 1);
    assert_eq!(must_close(store, 2).await.usage, BoundaryUsageSummary::default());
    assert_eq!(store.list_snapshots(10).await.unwrap().len(), 3);
}
