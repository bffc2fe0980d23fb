use tally_adapters_postgres::PgStore;
use tally_domain::boundary::{BoundaryUsageSummary, FlushOutcome};
use tally_domain::ports::{BoundaryUsageStore, TelemetryStore};
use tally_domain::telemetry::{BOUNDARY_USAGE_EVENT, Period, PeriodClose, PeriodCloseOutcome, Snapshot};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::boundary::delta;
use super::{T0, fixture, id};

pub fn close_of(period_index: i64) -> PeriodClose {
    let start = T0 + Duration::minutes(30 * period_index);
    PeriodClose {
        event_type: BOUNDARY_USAGE_EVENT.into(),
        period: Period {
            start,
            end: start + Duration::minutes(30),
        },
        snapshot_id: Uuid::new_v4(),
        replica_id: id(77),
        now: start + Duration::minutes(30) + Duration::seconds(1),
    }
}

pub async fn close(store: &PgStore, period_index: i64) -> Option<Snapshot> {
    match store.close_period(&close_of(period_index)).await.unwrap() {
        PeriodCloseOutcome::Closed(s) => Some(s),
        PeriodCloseOutcome::AlreadyClosed => None,
    }
}

#[tokio::test]
async fn a_period_is_closed_once_with_its_totals_and_reset() {
    let f = fixture().await;
    let s = &f.store;
    s.flush_boundary_usage(&delta(id(1), 1, 5, 1, &[1, 2], &[3], 0))
        .await
        .unwrap();
    s.flush_boundary_usage(&delta(id(2), 1, 2, 2, &[2], &[4], 60))
        .await
        .unwrap();
    let before = s.boundary_usage_summary().await.unwrap();

    let c = close_of(0);
    let PeriodCloseOutcome::Closed(snap) = s.close_period(&c).await.unwrap() else {
        panic!("the first close wins")
    };
    assert_eq!(snap.usage, before);
    assert_eq!(
        (snap.id, snap.period_start, snap.period_end),
        (c.snapshot_id, c.period.start, c.period.end)
    );
    assert_eq!(
        (snap.created_at, snap.published_at, snap.publish_attempts),
        (c.now, None, 0)
    );
    assert_eq!(s.list_snapshots(10).await.unwrap(), vec![snap.clone()]);

    let after = s.boundary_usage_summary().await.unwrap();
    assert_eq!(after, BoundaryUsageSummary::default(), "the period is reset");
    // The same period, or an earlier one, is already closed.
    assert_eq!(
        s.close_period(&close_of(0)).await.unwrap(),
        PeriodCloseOutcome::AlreadyClosed
    );
    assert_eq!(
        s.close_period(&close_of(-1)).await.unwrap(),
        PeriodCloseOutcome::AlreadyClosed
    );
    assert_eq!(s.list_snapshots(10).await.unwrap().len(), 1);
    // Sequence numbers survive the reset.
    assert_eq!(
        s.flush_boundary_usage(&delta(id(1), 1, 5, 1, &[1], &[3], 0))
            .await
            .unwrap(),
        FlushOutcome::Duplicate
    );
    // A period with no data still gets a (zero) snapshot.
    let empty = close(s, 1).await.expect("next period closes");
    assert_eq!(empty.usage, BoundaryUsageSummary::default());
    let listed = s.list_snapshots(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![empty.id, snap.id],
        "newest first"
    );
    assert_eq!(s.list_snapshots(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn claims_publish_and_retry_through_the_outbox() {
    let f = fixture().await;
    let s = &f.store;
    let first = close(s, 0).await.unwrap();
    let second = close(s, 1).await.unwrap();
    let now = T0 + Duration::hours(2);
    let lease = Duration::seconds(30);
    let (a, b) = (id(1), id(2));

    let claimed = s.claim_unpublished_snapshots(a, now, lease, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![first.id, second.id],
        "oldest first"
    );
    assert!(
        s.claim_unpublished_snapshots(b, now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed"
    );

    // Only the claimer can give a claim back; that counts an attempt.
    s.release_snapshot_claim(first.id, b, "not mine").await.unwrap();
    assert!(
        s.claim_unpublished_snapshots(b, now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.release_snapshot_claim(first.id, a, "sink down").await.unwrap();
    let again = s.claim_unpublished_snapshots(b, now, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].publish_attempts), (first.id, 1));

    // An expired lease frees the claim.
    let later = now + lease;
    let expired = s.claim_unpublished_snapshots(a, later, lease, 1).await.unwrap();
    assert_eq!(
        expired.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![first.id],
        "limit 1, oldest"
    );

    let at: OffsetDateTime = later + Duration::seconds(1);
    s.mark_snapshot_published(first.id, a, at).await.unwrap();
    s.mark_snapshot_published(first.id, a, at + Duration::hours(1))
        .await
        .unwrap();
    let listed = s.list_snapshots(10).await.unwrap();
    let published = listed.iter().find(|x| x.id == first.id).unwrap();
    assert_eq!(published.published_at, Some(at), "the first publish time stays");
    let rest = s
        .claim_unpublished_snapshots(b, later + Duration::hours(1), lease, 10)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), vec![second.id]);
}

#[tokio::test]
async fn old_locks_are_pruned() {
    let f = fixture().await;
    let s = &f.store;
    for p in 0..4 {
        close(s, p).await.unwrap();
    }
    // Periods end at T0+30m, +60m, +90m, +120m.
    assert_eq!(
        s.prune_telemetry_locks(T0 + Duration::minutes(90)).await.unwrap(),
        2
    );
    assert_eq!(
        s.prune_telemetry_locks(T0 + Duration::minutes(90)).await.unwrap(),
        0
    );
    // The newest lock still guards older periods.
    assert!(close(s, 0).await.is_none());
}
