//! The lock cycle two replicas' app-stats writes could close, forced step
//! by step: a third connection holds a row lock so that each write stops
//! where the interleaving needs it.

use std::time::Duration as StdDuration;

use tally_adapters_postgres::PgStore;
use tally_domain::appstats::StatsReport;
use tally_domain::error::Report;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, InsightsStore, TimeRange};
use time::Duration;

use super::{T0, fixture, id, session};

/// A closed session of user `user` (keys sort by user first).
fn row(user: u128, secs: i64, requests: u64) -> StatsReport {
    let mut r = session(id(user), id(100), "code-server", 0, secs, requests);
    r.session_id = id(1000 + user);
    r
}

fn write(rows: Vec<StatsReport>) -> AppStatsWrite {
    let end = rows.iter().filter_map(|r| r.session_ended_at).max().unwrap();
    AppStatsWrite {
        rows,
        batch_size: 1024,
        last_used: vec![(id(100), end)],
    }
}

/// Backends of this database waiting for a lock.
async fn waiting(store: &PgStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Waits until `n` backends wait for a lock or `task` is done.
async fn until_waiting<T>(store: &PgStore, n: i64, task: &tokio::task::JoinHandle<T>) {
    for _ in 0..500 {
        if task.is_finished() || waiting(store).await >= n {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!("no {n} waiting backends after 5 s");
}

/// Replica A has written k0 and k1, and now writes them again with a new
/// k2 (k0 < k1 < k2): rows it has not written go by COPY, the others by
/// upsert. Replica B, which wrote none of them, writes k1 and k2: its COPY
/// fails on k1, which exists, and it redoes the call as upserts in key
/// order. Held at k0 by a third connection, A has (with the COPY first)
/// inserted k2 and waits; B then takes k1 and waits for A's k2; released, A
/// waits for B's k1: a cycle. With one lock order neither waits for the
/// other while holding a later row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_redoing_a_write_as_upserts_and_one_copying_new_rows_do_not_deadlock() {
    let f = fixture().await;
    let a = f.store.clone();
    let b = PgStore::connect(&f.db.url).await.expect("connect");
    a.write_app_stats(&write(vec![row(1, 10, 1), row(2, 10, 1)]))
        .await
        .unwrap();

    let mut blocker = f.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM workspace_app_stats WHERE user_id = $1 FOR UPDATE")
        .bind(id(1))
        .execute(&mut *blocker)
        .await
        .unwrap();

    let a_write = write(vec![row(1, 20, 2), row(2, 20, 2), row(3, 20, 2)]);
    let b_write = write(vec![row(2, 30, 3), row(3, 30, 3)]);
    let a_task = tokio::spawn(async move { a.write_app_stats(&a_write).await });
    until_waiting(&f.store, 1, &a_task).await;
    let b_task = tokio::spawn(async move { b.write_app_stats(&b_write).await });
    until_waiting(&f.store, 2, &b_task).await;
    blocker.commit().await.unwrap();

    for (name, task) in [("A", a_task), ("B", b_task)] {
        if let Err(e) = task.await.unwrap() {
            panic!("replica {name}'s write failed: {}", Report(&e));
        }
    }
    let range = TimeRange::new(T0 - Duration::days(1), T0 + Duration::days(1)).unwrap();
    let mut got = f.store.app_stats(range, 10).await.unwrap();
    got.sort_by_key(|r| r.row_key());
    let figures: Vec<(i64, u64)> = got
        .iter()
        .map(|r| ((r.session_ended_at.unwrap() - T0).whole_seconds(), r.requests))
        .collect();
    assert_eq!(figures, vec![(20, 2), (30, 3), (30, 3)]);
}
