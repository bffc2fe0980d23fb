use std::sync::Arc;

use tally_adapters_postgres::{AppStatsWriteMode, PgStore};
use tally_domain::appstats::StatsReport;
use tally_domain::error::{Report, StoreError};
use tally_domain::ports::{AppStatsStore, AppStatsWrite, InsightsStore, TimeRange};
use time::Duration;

use tally_tests::conformance::write_of as write;

use super::{MODES, T0, fixture_with, id, session};

fn everything() -> TimeRange {
    TimeRange::new(T0 - Duration::days(365), T0 + Duration::days(365)).unwrap()
}

async fn rows(store: &PgStore) -> Vec<StatsReport> {
    let mut rows = store.app_stats(everything(), 1_000_000).await.unwrap();
    rows.sort_by_key(|r| r.row_key());
    rows
}

#[tokio::test]
async fn rows_are_stored_at_microsecond_precision() {
    for mode in MODES {
        let f = fixture_with(mode).await;
        let mut r = session(id(1), id(2), "code-server", 0, 30, 4);
        r.session_started_at += Duration::nanoseconds(1_234_567);
        r.session_ended_at = Some(r.session_started_at + Duration::nanoseconds(999));
        f.store
            .write_app_stats(&write(vec![r.clone()], 10))
            .await
            .unwrap();
        let got = rows(&f.store).await;
        let mut want = r.clone();
        want.session_started_at = T0 + Duration::microseconds(1_234);
        want.session_ended_at = Some(T0 + Duration::microseconds(1_235));
        assert_eq!(got, vec![want], "{mode:?}");
    }
}

/// The row's (end seconds after T0, requests, slug, workspace).
async fn columns(store: &PgStore) -> (i64, u64, String, uuid::Uuid) {
    let got = rows(store).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    let end = (r.session_ended_at.unwrap() - T0).whole_seconds();
    (end, r.requests, r.slug_or_port.clone(), r.workspace_id)
}

/// The row version's `xmin`: it changes only when the row is rewritten.
async fn xmin(store: &PgStore) -> String {
    sqlx::query_scalar("SELECT xmin::text FROM workspace_app_stats")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_upsert_moves_each_column_forward_and_keeps_the_others() {
    for mode in MODES {
        let f = fixture_with(mode).await;
        let first = session(id(1), id(2), "app", 0, 60, 10);
        let with = |end, requests| {
            let mut r = first.clone();
            r.session_ended_at = Some(T0 + Duration::seconds(end));
            r.requests = requests;
            r.slug_or_port = "other".into();
            r.workspace_id = id(99);
            r
        };
        f.store
            .write_app_stats(&write(vec![first.clone()], 10))
            .await
            .unwrap();
        let steps = [
            ((90, 12), (90, 12), "later and larger: both move"),
            ((80, 20), (90, 20), "older end, more requests: the requests move"),
            ((100, 11), (100, 20), "later end, fewer requests: the end moves"),
            ((95, 15), (100, 20), "older and smaller: nothing moves"),
        ];
        for ((end, requests), (want_end, want_requests), what) in steps {
            f.store
                .write_app_stats(&write(vec![with(end, requests)], 10))
                .await
                .unwrap();
            assert_eq!(
                columns(&f.store).await,
                (want_end, want_requests, "app".to_owned(), id(2)),
                "{mode:?}: {what}; slug and workspace stay the first write's"
            );
        }

        // Writes that change nothing leave the row version alone.
        let version = xmin(&f.store).await;
        for (end, requests) in [(100, 20), (50, 0), (100, 19), (99, 20)] {
            f.store
                .write_app_stats(&write(vec![with(end, requests)], 10))
                .await
                .unwrap();
        }
        assert_eq!(
            xmin(&f.store).await,
            version,
            "{mode:?}: a no-op write rewrote the row"
        );
        f.store
            .write_app_stats(&write(vec![with(100, 21)], 10))
            .await
            .unwrap();
        assert_ne!(xmin(&f.store).await, version, "{mode:?}");
    }
}

#[tokio::test]
async fn replays_change_nothing_and_batches_cover_every_row_and_workspace() {
    for mode in MODES {
        // 7 rows: an exact multiple of 7 and of 1, one over 6 and 3.
        for batch_size in [1, 3, 6, 7, 8] {
            let f = fixture_with(mode).await;
            let input: Vec<StatsReport> = (0..7)
                .map(|i| session(id(i), id(100 + i), "app", i as i64, 10, i as u64))
                .collect();
            let w = write(input.clone(), batch_size);
            f.store.write_app_stats(&w).await.unwrap();
            let once = rows(&f.store).await;
            assert_eq!(once.len(), 7, "{mode:?} batch {batch_size}");
            f.store.write_app_stats(&w).await.unwrap();
            assert_eq!(rows(&f.store).await, once, "{mode:?}: a replay changes nothing");
            for r in &input {
                assert_eq!(
                    f.store.workspace_last_used(r.workspace_id).await.unwrap(),
                    r.session_ended_at,
                    "{mode:?} batch {batch_size}: every touched workspace is bumped"
                );
            }
        }
    }
}

#[tokio::test]
async fn last_used_never_moves_backwards() {
    for mode in MODES {
        let f = fixture_with(mode).await;
        let ws = id(7);
        let at = |s| T0 + Duration::seconds(s);
        let only = |t| AppStatsWrite {
            rows: vec![],
            batch_size: 1,
            last_used: vec![(ws, t)],
        };
        assert_eq!(f.store.workspace_last_used(ws).await.unwrap(), None);
        f.store.write_app_stats(&only(at(100))).await.unwrap();
        f.store.write_app_stats(&only(at(50))).await.unwrap();
        assert_eq!(
            f.store.workspace_last_used(ws).await.unwrap(),
            Some(at(100)),
            "{mode:?}"
        );
        // The same workspace twice in one write: the later time wins.
        let w = AppStatsWrite {
            rows: vec![],
            batch_size: 1,
            last_used: vec![(ws, at(300)), (ws, at(200))],
        };
        f.store.write_app_stats(&w).await.unwrap();
        assert_eq!(f.store.workspace_last_used(ws).await.unwrap(), Some(at(300)));
    }
}

#[tokio::test]
async fn invalid_writes_are_refused_whole() {
    for mode in MODES {
        let f = fixture_with(mode).await;
        let good = session(id(1), id(2), "app", 0, 10, 1);
        let mut open = session(id(3), id(4), "app", 0, 10, 1);
        open.session_ended_at = None;
        let mut inverted = session(id(3), id(4), "app", 0, 10, 1);
        inverted.session_ended_at = Some(T0 - Duration::seconds(1));
        let mut huge = session(id(3), id(4), "app", 0, 10, 1);
        huge.requests = u64::MAX;
        let mut long_slug = session(id(3), id(4), "app", 0, 10, 1);
        long_slug.slug_or_port = "x".repeat(1025);
        let cases = [
            (write(vec![good.clone(), open], 1), "session_ended_at is not set"),
            (
                write(vec![good.clone(), inverted], 1),
                "before session_started_at",
            ),
            (write(vec![good.clone(), huge], 1), "requests"),
            (
                write(vec![good.clone(), good.clone()], 1),
                "same (user, agent, session)",
            ),
            (write(vec![good.clone()], 0), "batch_size"),
            // Caught by the table's constraint, not by the adapter.
            (write(vec![good.clone(), long_slug], 1), "slug_or_port"),
        ];
        for (w, needle) in cases {
            match f.store.write_app_stats(&w).await {
                Err(e @ StoreError::Invalid { .. }) => {
                    let msg = Report(&e).to_string();
                    assert!(msg.contains(needle), "{mode:?}: {msg:?} names {needle:?}")
                }
                other => panic!("{mode:?}: expected Invalid naming {needle:?}, got {other:?}"),
            }
            assert!(rows(&f.store).await.is_empty(), "{mode:?}: nothing written");
            assert_eq!(f.store.workspace_last_used(id(2)).await.unwrap(), None);
        }
    }
}

/// Many writers racing on the same new sessions: the COPY path loses the
/// race, falls back to the upsert, and nobody sees an error.
#[tokio::test]
async fn concurrent_writers_of_the_same_new_rows_all_succeed() {
    for mode in MODES {
        let f = fixture_with(mode).await;
        let base: Vec<StatsReport> = (0..300)
            .map(|i| session(id(i), id(5000 + i % 7), "app", 0, 10, 0))
            .collect();
        let store = Arc::new(f.store.clone());
        let tasks: Vec<_> = (0..6u64)
            .map(|k| {
                let store = Arc::clone(&store);
                let rows: Vec<StatsReport> = base
                    .iter()
                    .map(|r| StatsReport {
                        requests: k * 10,
                        ..r.clone()
                    })
                    .collect();
                tokio::spawn(async move { store.write_app_stats(&write(rows, 64)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let got = rows(&f.store).await;
        assert_eq!(got.len(), 300);
        assert!(
            got.iter().all(|r| r.requests == 50),
            "{mode:?}: the largest count wins"
        );
    }
}

#[tokio::test]
async fn errors_of_a_closed_pool_are_retryable() {
    let f = fixture_with(AppStatsWriteMode::Copy).await;
    f.store.pool().close().await;
    let err = f
        .store
        .write_app_stats(&write(vec![session(id(1), id(2), "a", 0, 1, 1)], 1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = f.store.workspace_last_used(id(2)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = tally_adapters_postgres::PgStoreOptions {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let err = PgStore::connect_with(&format!("postgres://postgres@127.0.0.1:{port}/x"), opts)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn a_write_mixing_new_and_stored_rows_applies_both() {
    for mode in MODES {
        let f = fixture_with(mode).await;
        let stored: Vec<StatsReport> = (0..50)
            .map(|i| session(id(i), id(900), "app", 0, 10, 5))
            .collect();
        f.store.write_app_stats(&write(stored.clone(), 16)).await.unwrap();
        let mut next: Vec<StatsReport> = stored
            .iter()
            .map(|r| StatsReport {
                requests: 6,
                ..r.clone()
            })
            .collect();
        next.extend((50..120).map(|i| session(id(i), id(901), "app", 0, 10, 1)));
        f.store.write_app_stats(&write(next, 16)).await.unwrap();
        let got = rows(&f.store).await;
        assert_eq!(got.len(), 120, "{mode:?}");
        assert_eq!(
            got.iter().filter(|r| r.requests == 6).count(),
            50,
            "{mode:?}: updates applied"
        );
        assert_eq!(
            got.iter().filter(|r| r.requests == 1).count(),
            70,
            "{mode:?}: new rows inserted"
        );
    }
}

/// A server that drops the store's connections: calls fail retryably at
/// worst, and the pool recovers.
#[tokio::test]
async fn lost_connections_are_retryable_and_recovered() {
    let f = fixture_with(AppStatsWriteMode::Copy).await;
    assert_eq!(f.store.workspace_last_used(id(1)).await.unwrap(), None);
    let admin = sqlx::PgPool::connect(f.db.admin_url()).await.unwrap();
    let killed: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&f.db.name)
            .fetch_all(&admin)
            .await
            .unwrap();
    assert!(!killed.is_empty(), "the store had a connection");
    let w = write(vec![session(id(1), id(2), "a", 0, 1, 1)], 1);
    match f.store.write_app_stats(&w).await {
        Ok(()) => {}
        Err(e) => {
            assert!(e.is_retryable(), "{e:?}");
            f.store.write_app_stats(&w).await.expect("the retry goes through");
        }
    }
    assert!(f.store.workspace_last_used(id(2)).await.unwrap().is_some());
}
