use std::sync::Arc;

use parking_lot::Mutex;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::*;
use crate::appstats::AccessMethod;
use crate::clock::ManualClock;
use crate::ports::MockAppStatsStore;

const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

fn row(user: u128, workspace: u128, session: u128, end: OffsetDateTime, requests: u64) -> StatsReport {
    StatsReport {
        user_id: Uuid::from_u128(user),
        workspace_id: Uuid::from_u128(workspace),
        agent_id: Uuid::from_u128(workspace + 1000),
        access_method: AccessMethod::Subdomain,
        slug_or_port: "jupyter".into(),
        session_id: Uuid::from_u128(session),
        session_started_at: NOW - Duration::hours(1),
        session_ended_at: Some(end),
        requests,
        sessions: 1,
    }
}

/// A store mock that records every write it receives.
fn recording_store() -> (MockAppStatsStore, Arc<Mutex<Vec<AppStatsWrite>>>) {
    let writes = Arc::new(Mutex::new(Vec::new()));
    let mut store = MockAppStatsStore::new();
    let seen = writes.clone();
    store.expect_write_app_stats().returning(move |write| {
        seen.lock().push(write.clone());
        Ok(())
    });
    (store, writes)
}

fn reporter(store: MockAppStatsStore, batch_size: usize) -> StoreReporter<MockAppStatsStore> {
    StoreReporter::new(store, batch_size, Arc::new(ManualClock::new(NOW)))
}

#[tokio::test]
async fn one_atomic_write_with_the_batch_size_and_rows_in_order() {
    let (store, writes) = recording_store();
    let rows = vec![
        row(1, 10, 100, NOW - Duration::minutes(3), 1),
        row(2, 20, 200, NOW - Duration::minutes(2), 2),
    ];
    reporter(store, 7).report(&rows).await.unwrap();
    let writes = writes.lock();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].rows, rows);
    assert_eq!(writes[0].batch_size, 7);
}

#[tokio::test]
async fn an_empty_report_writes_nothing() {
    let mut store = MockAppStatsStore::new();
    store.expect_write_app_stats().never();
    reporter(store, 8).report(&[]).await.unwrap();
}

#[tokio::test]
async fn a_row_without_end_time_is_refused_naming_the_field() {
    let mut store = MockAppStatsStore::new();
    store.expect_write_app_stats().never();
    let mut open = row(1, 10, 100, NOW, 1);
    open.session_ended_at = None;
    let err = reporter(store, 8).report(&[open]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid { .. }) && err.to_string().contains("session_ended_at"),
        "{err}"
    );
}

#[tokio::test]
async fn store_errors_come_back_unchanged() {
    let mut store = MockAppStatsStore::new();
    store
        .expect_write_app_stats()
        .returning(|_| Err(StoreError::unavailable("connection reset")));
    let err = reporter(store, 8)
        .report(&[row(1, 10, 100, NOW, 1)])
        .await
        .unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn last_used_is_the_latest_end_per_workspace_but_never_after_now() {
    let (store, writes) = recording_store();
    let rows = vec![
        row(1, 10, 100, NOW - Duration::minutes(9), 1),
        row(2, 10, 101, NOW - Duration::minutes(4), 1),
        row(3, 10, 102, NOW - Duration::minutes(6), 1),
        // A rolled-up record whose window ends after now.
        row(4, 20, 200, NOW + Duration::seconds(40), 3),
    ];
    reporter(store, 8).report(&rows).await.unwrap();
    assert_eq!(
        writes.lock()[0].last_used,
        vec![
            (Uuid::from_u128(10), NOW - Duration::minutes(4)),
            (Uuid::from_u128(20), NOW),
        ]
    );
}

/// Every touched workspace's last-used time moves, not only those of the
/// last partial batch, also when the count is a multiple of the batch size
/// (docs/rules.md#last-used).
#[tokio::test]
async fn every_touched_workspace_is_bumped_whatever_the_batching() {
    for count in [3usize, 4, 5, 8] {
        let (store, writes) = recording_store();
        let rows: Vec<_> = (0..count as u128)
            .map(|i| row(i, 10 + i, 100 + i, NOW - Duration::minutes(1), 1))
            .collect();
        reporter(store, 4).report(&rows).await.unwrap();
        let last_used = &writes.lock()[0].last_used;
        assert_eq!(last_used.len(), count, "{count} rows at batch size 4");
        for (i, (workspace, at)) in last_used.iter().enumerate() {
            assert_eq!(*workspace, Uuid::from_u128(10 + i as u128));
            assert_eq!(*at, NOW - Duration::minutes(1));
        }
    }
}

/// The same (user, agent, session) twice in one statement would make
/// PostgreSQL reject the whole upsert. Duplicates are merged column by
/// column: the latest end and the most requests, whichever rows carry them
/// (docs/rules.md#writing-rows).
#[tokio::test]
async fn duplicates_are_merged_column_by_column() {
    let (store, writes) = recording_store();
    let first = row(1, 10, 100, NOW - Duration::minutes(5), 4);
    let most = row(1, 10, 100, NOW - Duration::minutes(2), 9);
    let latest = row(1, 10, 100, NOW - Duration::minutes(1), 3);
    let other = row(2, 10, 101, NOW - Duration::minutes(3), 1);
    reporter(store, 8)
        .report(&[first, other.clone(), most, latest])
        .await
        .unwrap();
    let write = &writes.lock()[0];
    assert_eq!(
        write.rows,
        vec![row(1, 10, 100, NOW - Duration::minutes(1), 9), other],
        "one row per key, each column at its maximum, first-seen order"
    );
    assert_eq!(
        write.last_used,
        vec![(Uuid::from_u128(10), NOW - Duration::minutes(1))]
    );
}

/// The replica handoff: the open report's provisional end lies after the
/// real close, which carries more requests. In one write, in either order,
/// the close's requests are kept.
#[tokio::test]
async fn a_handoff_in_one_write_keeps_the_close_requests_in_either_order() {
    let provisional = row(1, 10, 100, NOW - Duration::seconds(10), 3);
    let close = row(1, 10, 100, NOW - Duration::seconds(40), 8);
    let want = row(1, 10, 100, NOW - Duration::seconds(10), 8);
    for order in [[&provisional, &close], [&close, &provisional]] {
        let (store, writes) = recording_store();
        let reports: Vec<_> = order.into_iter().cloned().collect();
        reporter(store, 8).report(&reports).await.unwrap();
        assert_eq!(writes.lock()[0].rows, vec![want.clone()]);
    }
}

mod props {
    use proptest::prelude::*;

    use super::*;

    /// Reports of three sessions (two sharing a workspace) with any end and
    /// request count.
    fn arb_reports() -> impl Strategy<Value = Vec<StatsReport>> {
        prop::collection::vec((0u128..3, 0i64..600, 0u64..50), 0..24).prop_map(|v| {
            v.into_iter()
                .map(|(s, end_s, requests)| {
                    row(s, 10 + s / 2, 100 + s, NOW - Duration::seconds(end_s), requests)
                })
                .collect()
        })
    }

    fn rows_by_key(write: &AppStatsWrite) -> Vec<StatsReport> {
        let mut rows = write.rows.clone();
        rows.sort_by_key(StatsReport::row_key);
        rows
    }

    fn prepared(reports: &[StatsReport]) -> AppStatsWrite {
        let reporter = StoreReporter::new((), 4, Arc::new(ManualClock::new(NOW)));
        reporter.prepare(reports).unwrap()
    }

    proptest! {
        /// The merged rows and last-used times do not depend on the order of
        /// the reports, and each row holds its key's latest end and most
        /// requests.
        #[test]
        fn merging_duplicates_ignores_their_order(
            (reports, shuffled) in arb_reports().prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle())),
        ) {
            let a = prepared(&reports);
            let b = prepared(&shuffled);
            prop_assert_eq!(rows_by_key(&a), rows_by_key(&b));
            let mut used_a = a.last_used.clone();
            let mut used_b = b.last_used.clone();
            used_a.sort();
            used_b.sort();
            prop_assert_eq!(used_a, used_b);
            for merged in &a.rows {
                let same: Vec<_> = reports.iter().filter(|r| r.row_key() == merged.row_key()).collect();
                prop_assert_eq!(merged.requests, same.iter().map(|r| r.requests).max().unwrap());
                prop_assert_eq!(merged.session_ended_at, same.iter().map(|r| r.session_ended_at).max().unwrap());
            }
        }
    }
}

#[test]
#[should_panic(expected = "batch size must be positive")]
fn zero_batch_size_is_refused() {
    let _ = StoreReporter::new(MockAppStatsStore::new(), 0, Arc::new(ManualClock::new(NOW)));
}
