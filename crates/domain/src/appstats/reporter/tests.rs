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
        matches!(&err, StoreError::Invalid(m) if m.contains("session_ended_at")),
        "{err}"
    );
}

#[tokio::test]
async fn store_errors_come_back_unchanged() {
    let mut store = MockAppStatsStore::new();
    store
        .expect_write_app_stats()
        .returning(|_| Err(StoreError::Unavailable("connection reset".into())));
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

/// Seed bug 2: the seed bumped last-used only for the workspaces of the last
/// partial batch, and for none when the count was a multiple of the batch.
#[tokio::test]
async fn seed_bug_2_every_touched_workspace_is_bumped_whatever_the_batching() {
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

/// Seed bug 5: the same (user, agent, session) twice in one statement made
/// PostgreSQL reject the whole upsert.
#[tokio::test]
async fn seed_bug_5_duplicates_are_merged_with_the_guarded_rule_in_order() {
    let (store, writes) = recording_store();
    let first = row(1, 10, 100, NOW - Duration::minutes(5), 4);
    let newer = row(1, 10, 100, NOW - Duration::minutes(2), 9);
    let stale = row(1, 10, 100, NOW - Duration::minutes(1), 3);
    let other = row(2, 10, 101, NOW - Duration::minutes(3), 1);
    reporter(store, 8)
        .report(&[first, other.clone(), newer.clone(), stale])
        .await
        .unwrap();
    let write = &writes.lock()[0];
    assert_eq!(
        write.rows,
        vec![newer, other],
        "one row per key, guarded, first-seen order"
    );
    assert_eq!(
        write.last_used,
        vec![(Uuid::from_u128(10), NOW - Duration::minutes(2))]
    );
}

#[test]
#[should_panic(expected = "batch size must be positive")]
fn zero_batch_size_is_refused() {
    let _ = StoreReporter::new(MockAppStatsStore::new(), 0, Arc::new(ManualClock::new(NOW)));
}
