//! The snapshot outbox (claim, lease, publish, release) and lock pruning.

use std::sync::Arc;

use tally_domain::error::StoreError;
use tally_domain::telemetry::{PeriodCloseOutcome, Snapshot};
use uuid::Uuid;

use super::BoundaryPorts;
use super::fixtures::*;

fn ids_of(snapshots: &[Snapshot]) -> Vec<Uuid> {
    snapshots.iter().map(|s| s.id).collect()
}

/// Claims take the oldest unpublished snapshots whose claim is free or
/// expired (`claimed_until <= now`); a failed publish gives the claim back
/// and counts the attempt; a published snapshot is never claimed again.
/// (A claimer's own claims are claimable by it: see the next case; here a
/// third claimer looks at the others' leases.)
pub async fn outbox_claims_leases_publishes_and_retries<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let s1 = must_close(store, 1).await;
    let s2 = must_close(store, 2).await;
    let s3 = must_close(store, 3).await;
    let (c1, c2, c3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let now = period(4).end;
    let lease = secs(60);
    let claim = |claimer, at, limit| store.claim_unpublished_snapshots(claimer, at, lease, limit);

    assert_eq!(claim(c1, now, 0).await.unwrap(), vec![], "limit 0");
    assert_eq!(
        ids_of(&claim(c1, now, 2).await.unwrap()),
        vec![s1.id, s2.id],
        "oldest first"
    );
    assert_eq!(claim(c2, now, 10).await.unwrap(), vec![s3.clone()], "the rest");
    assert_eq!(claim(c3, now + secs(59), 10).await.unwrap(), vec![], "all leased");

    // Only the claimer can give a claim back.
    store.release_snapshot_claim(s1.id, c2, "not mine").await.unwrap();
    assert_eq!(
        claim(c3, now + secs(30), 10).await.unwrap(),
        vec![],
        "a stranger released a claim"
    );

    store
        .release_snapshot_claim(s2.id, c1, "sink answered 500")
        .await
        .unwrap();
    let retried = claim(c3, now + secs(30), 10).await.unwrap();
    assert_eq!(
        ids_of(&retried),
        vec![s2.id],
        "a released snapshot is claimable at once"
    );
    assert_eq!(retried[0].publish_attempts, 1);
    assert_eq!(retried[0].published_at, None);

    store
        .mark_snapshot_published(s1.id, c1, now + secs(10))
        .await
        .unwrap();

    // s3's lease (taken at `now` by c2) ends exactly at now + 60 s; s2's
    // (retaken at now + 30 s by c3) runs on; s1 is published.
    assert_eq!(ids_of(&claim(c1, now + secs(60), 10).await.unwrap()), vec![s3.id]);
    assert_eq!(
        ids_of(&claim(c1, now + mins(60), 10).await.unwrap()),
        vec![s2.id, s3.id]
    );

    let listed = store.list_snapshots(10).await.unwrap();
    assert_eq!(ids_of(&listed), vec![s3.id, s2.id, s1.id], "newest first");
    assert_eq!(listed[2].published_at, Some(now + secs(10)));
    assert_eq!(
        listed.iter().map(|s| s.publish_attempts).collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
}

/// A claimer takes back its own claims before their lease ends (left by an
/// earlier round of its own, such as a claim that applied although its
/// caller saw the call fail), with a new lease, in order with the free
/// ones; another claimer still waits for the lease.
pub async fn a_claimer_takes_back_its_own_claims<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let s1 = must_close(store, 1).await;
    let s2 = must_close(store, 2).await;
    let s3 = must_close(store, 3).await;
    let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
    let now = period(4).end;
    let lease = secs(60);
    let claim = |claimer, at, limit| store.claim_unpublished_snapshots(claimer, at, lease, limit);

    assert_eq!(ids_of(&claim(c1, now, 2).await.unwrap()), vec![s1.id, s2.id]);
    assert_eq!(claim(c2, now + secs(1), 10).await.unwrap(), vec![s3.clone()]);
    assert_eq!(
        claim(c1, now + secs(1), 10).await.unwrap(),
        vec![s1.clone(), s2.clone()],
        "its own, unchanged; not the other claimer's"
    );
    assert_eq!(
        ids_of(&claim(c1, now + secs(2), 1).await.unwrap()),
        vec![s1.id],
        "oldest first, within the limit"
    );
    // Leases now: s1 until now + 62 s, s2 until now + 61 s (both c1's),
    // s3 until now + 61 s (c2's).
    assert_eq!(
        claim(c2, now + secs(60), 10).await.unwrap(),
        vec![s3.clone()],
        "renewed"
    );
    assert_eq!(
        ids_of(&claim(c2, now + secs(61), 10).await.unwrap()),
        vec![s2.id, s3.id],
        "s2's renewed lease ended; s3 is c2's"
    );

    // Published, a snapshot is nobody's to claim, its own claimer's included.
    store
        .mark_snapshot_published(s2.id, c2, now + secs(61))
        .await
        .unwrap();
    assert_eq!(ids_of(&claim(c1, now + secs(61), 10).await.unwrap()), vec![s1.id]);
    assert_eq!(ids_of(&claim(c2, now + secs(62), 10).await.unwrap()), vec![s3.id]);
    let listed = store.list_snapshots(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.publish_attempts).collect::<Vec<_>>(),
        vec![0, 0, 0],
        "claiming again is no attempt"
    );
}

/// Marking published twice keeps the first time; it clears the claim
/// whoever holds it, and a published snapshot is never claimed again.
pub async fn marking_published_is_idempotent_and_clears_the_claim<S: BoundaryPorts + ?Sized + 'static>(
    store: Arc<S>,
) {
    let store = &*store;
    let s = must_close(store, 1).await;
    let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
    let now = period(2).end + time::Duration::nanoseconds(999);
    let lease = mins(5);
    let claimed = store
        .claim_unpublished_snapshots(c1, now, lease, 10)
        .await
        .unwrap();
    assert_eq!(ids_of(&claimed), vec![s.id]);

    store
        .mark_snapshot_published(s.id, c1, now + secs(1))
        .await
        .unwrap();
    store
        .mark_snapshot_published(s.id, c1, now + secs(2))
        .await
        .unwrap();
    store
        .mark_snapshot_published(s.id, c2, now + secs(3))
        .await
        .unwrap();
    // Releasing after publishing is a no-op: the claim is gone.
    store
        .release_snapshot_claim(s.id, c1, "late failure")
        .await
        .unwrap();

    let listed = store.list_snapshots(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].published_at,
        Some(micros(now + secs(1))),
        "the first time stays"
    );
    assert_eq!(listed[0].publish_attempts, 0);
    for at in [now, now + lease, now + mins(600)] {
        assert_eq!(
            store
                .claim_unpublished_snapshots(c2, at, lease, 10)
                .await
                .unwrap(),
            vec![],
            "a published snapshot was claimed"
        );
    }
}

/// Publishing or releasing a snapshot the outbox does not hold does nothing;
/// a close cannot reuse the id of a snapshot in the outbox.
pub async fn unknown_snapshots_are_ignored<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    let (unknown, claimer) = (Uuid::new_v4(), Uuid::new_v4());
    store.mark_snapshot_published(unknown, claimer, T0).await.unwrap();
    store
        .release_snapshot_claim(unknown, claimer, "boom")
        .await
        .unwrap();
    assert_eq!(store.list_snapshots(10).await.unwrap(), vec![]);

    // A snapshot id already in the outbox cannot be reused by a close.
    let first = must_close(store, 1).await;
    let reuse = tally_domain::telemetry::PeriodClose {
        snapshot_id: first.id,
        ..close_of(2, claimer)
    };
    let result = store.close_period(&reuse).await;
    assert!(
        matches!(result, Err(StoreError::Invalid { .. })),
        "reused id: {result:?}"
    );
    assert_eq!(store.list_snapshots(10).await.unwrap(), vec![first]);
    // ... and that failed close took no lock.
    assert!(matches!(
        store.close_period(&close_of(2, claimer)).await.unwrap(),
        PeriodCloseOutcome::Closed(_)
    ));
}

/// Pruning deletes locks of periods that ended strictly before the cut-off
/// (compared exactly, to the nanosecond).
/// A pruned period stays closed while a later period's lock exists.
pub async fn pruning_locks_keeps_later_periods_closed<S: BoundaryPorts + ?Sized + 'static>(store: Arc<S>) {
    let store = &*store;
    for k in 1..=3 {
        must_close(store, k).await;
    }
    let replica = Uuid::new_v4();
    assert_eq!(store.prune_telemetry_locks(period(1).start).await.unwrap(), 0);
    assert_eq!(
        store.prune_telemetry_locks(period(1).end).await.unwrap(),
        0,
        "not before itself"
    );
    let just_after = period(1).end + time::Duration::nanoseconds(1);
    assert_eq!(
        store.prune_telemetry_locks(just_after).await.unwrap(),
        1,
        "only P1's"
    );
    assert_eq!(
        store.prune_telemetry_locks(period(2).end).await.unwrap(),
        0,
        "again"
    );
    for k in [1, 2] {
        assert_eq!(
            store.close_period(&close_of(k, replica)).await.unwrap(),
            PeriodCloseOutcome::AlreadyClosed,
            "period {k}"
        );
    }
    assert_eq!(
        store
            .prune_telemetry_locks(period(3).end + secs(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.list_snapshots(10).await.unwrap().len(), 3, "snapshots stay");
    must_close(store, 4).await;
}
