use std::sync::Arc;

use tally_domain::boundary::BoundaryDelta;
use tally_domain::ports::{BoundaryUsageStore, TelemetryStore};
use tally_domain::telemetry::{Period, PeriodClose, PeriodCloseOutcome};
use time::macros::datetime;
use time::{Duration, UtcOffset};
use uuid::Uuid;

use super::*;

#[test]
fn pg_time_drops_sub_microsecond_digits_and_returns_utc() {
    let t = datetime!(2026-11-25 10:00:00.123456789 +02:00);
    let stored = pg_time(t);
    assert_eq!(stored, datetime!(2026-11-25 08:00:00.123456 UTC));
    assert_eq!(stored.offset(), UtcOffset::UTC);
    assert_eq!(pg_time(stored), stored);
}

#[test]
fn pg_time_floors_before_the_epoch_too() {
    let t = datetime!(1969-12-31 23:59:59.999999999 UTC);
    assert_eq!(pg_time(t), datetime!(1969-12-31 23:59:59.999999 UTC));
}

fn delta(replica_id: Uuid, seq: u64) -> BoundaryDelta {
    BoundaryDelta {
        replica_id,
        seq,
        allowed: 1,
        denied: 0,
        workspace_ids: vec![Uuid::new_v4()],
        user_ids: vec![],
        tracked_from: datetime!(2026-11-25 10:00 UTC),
        tracked_to: datetime!(2026-11-25 10:01 UTC),
    }
}

#[tokio::test]
async fn a_failed_publish_keeps_its_error() {
    let store = MemoryStore::new();
    let now = datetime!(2026-11-25 10:30 UTC);
    let close = PeriodClose {
        event_type: "boundary_usage".into(),
        period: Period::last_ended(now, Duration::minutes(30)),
        snapshot_id: Uuid::new_v4(),
        replica_id: Uuid::new_v4(),
        now,
    };
    assert!(matches!(
        store.close_period(&close).await.unwrap(),
        PeriodCloseOutcome::Closed(_)
    ));
    let claimer = Uuid::new_v4();
    let claimed = store
        .claim_unpublished_snapshots(claimer, now, Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.snapshot_last_error(close.snapshot_id), None);
    store
        .release_snapshot_claim(close.snapshot_id, claimer, "sink answered 503")
        .await
        .unwrap();
    assert_eq!(
        store.snapshot_last_error(close.snapshot_id).as_deref(),
        Some("sink answered 503")
    );
}

#[test]
fn flushes_from_os_threads_all_count() {
    let store = Arc::new(MemoryStore::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let replica = Uuid::new_v4();
                for seq in 1..=500 {
                    rt.block_on(store.flush_boundary_usage(&delta(replica, seq)))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let summary = rt.block_on(store.boundary_usage_summary()).unwrap();
    assert_eq!(summary.allowed_requests, 2000);
    assert_eq!(summary.unique_workspaces, 2000);
    assert_eq!(summary.replicas, 4);
}

#[tokio::test]
async fn a_row_keeps_its_session_count_and_must_stand_for_one_at_least() {
    use tally_domain::appstats::{AccessMethod, StatsReport};
    use tally_domain::ports::{AppStatsStore, AppStatsWrite, InsightsStore, TimeRange};

    let store = MemoryStore::new();
    let start = datetime!(2026-11-25 10:00 UTC);
    let rolled = StatsReport {
        user_id: Uuid::from_u128(1),
        workspace_id: Uuid::from_u128(2),
        agent_id: Uuid::from_u128(3),
        access_method: AccessMethod::Path,
        slug_or_port: "code-server".into(),
        session_id: Uuid::from_u128(4),
        session_started_at: start,
        session_ended_at: Some(start + Duration::minutes(1)),
        requests: 12,
        sessions: 5,
    };
    let write = |rows: Vec<StatsReport>| AppStatsWrite {
        rows,
        batch_size: 10,
        last_used: vec![],
    };
    store.write_app_stats(&write(vec![rolled.clone()])).await.unwrap();
    let older = StatsReport {
        sessions: 3,
        ..rolled.clone()
    };
    store.write_app_stats(&write(vec![older])).await.unwrap();
    let range = TimeRange::new(start, start + Duration::hours(1)).unwrap();
    assert_eq!(store.app_stats(range, 10).await.unwrap(), vec![rolled.clone()]);

    let none = StatsReport {
        session_id: Uuid::from_u128(5),
        sessions: 0,
        ..rolled.clone()
    };
    let err = store.write_app_stats(&write(vec![none])).await.unwrap_err();
    assert!(err.to_string().contains("sessions: must be at least 1"), "{err}");
    assert_eq!(store.app_stats(range, 10).await.unwrap(), vec![rolled]);
}

/// Runs a store call to completion in a property test's synchronous body.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A range holding every time the tests write.
fn all_time() -> tally_domain::ports::TimeRange {
    tally_domain::ports::TimeRange::new(datetime!(2000-01-01 0:00 UTC), datetime!(2100-01-01 0:00 UTC))
        .unwrap()
}

mod budget;
mod props;
