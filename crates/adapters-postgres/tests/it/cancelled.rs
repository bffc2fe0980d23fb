//! A store call whose caller gives up (a client that hangs up, a store
//! timeout) must not leave its connection inside a transaction: the next
//! borrower's reads would fail and its plain writes would not be committed.

use std::future::Future;
use std::time::Duration;

use tally_adapters_postgres::{PgStore, PgStoreOptions};
use tally_domain::ports::{AppStatsStore, AppStatsWrite, TimeRange, UsageStore};
use tally_tests::pg::{TestDatabase, fresh_database};

use super::{MODES, T0, id, session};

/// Backends of the database that sit inside a transaction between statements.
async fn idle_in_transaction(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Whether no backend of the database stays inside a transaction. A
/// rollback queued by a dropped transaction goes out as the connection is
/// put back, and the server may take a moment to run it; a transaction
/// nobody ends stays open for good.
async fn transactions_end(admin: &sqlx::PgPool) -> bool {
    for _ in 0..200 {
        if idle_in_transaction(admin).await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Waits until the store's connection is back in its pool: a call given up
/// may still be finishing, or its connection on its way back.
async fn settle(store: &PgStore) {
    for _ in 0..5000 {
        let pool = store.pool();
        if pool.size() > 0 && pool.num_idle() == pool.size() as usize {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the store's connection never came back to its pool");
}

/// A store of one connection, so that every call after a cancelled one gets
/// the connection that call had, and a second pool to watch it with.
async fn one_connection() -> (PgStore, sqlx::PgPool, TestDatabase) {
    let db = fresh_database().await;
    let options = PgStoreOptions {
        max_connections: 1,
        ..PgStoreOptions::default()
    };
    let store = PgStore::connect_with(&db.url, options).await.unwrap();
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    (store, admin, db)
}

/// Starts `call` 300 times and gives up after 0 to 3 ms, stepping by 50 µs,
/// so that some land while the transaction's `BEGIN` is on the wire; after
/// each, no transaction may stay open.
async fn give_up_repeatedly<F, Fut>(store: &PgStore, admin: &sqlx::PgPool, call: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future,
{
    for step in 0..300u64 {
        let wait = Duration::from_micros((step * 50) % 3000);
        let _ = tokio::time::timeout(wait, call(step)).await;
        settle(store).await;
        assert!(
            transactions_end(admin).await,
            "a call given up after {wait:?} left its connection inside a transaction"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_given_up_at_any_point_leaves_no_transaction_open() {
    let (store, admin, _db) = one_connection().await;
    let range = TimeRange::new(T0, T0 + time::Duration::hours(2)).unwrap();
    give_up_repeatedly(&store, &admin, |_| store.user_activity(range, 10)).await;
    store.user_activity(range, 10).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_given_up_at_any_point_leaves_no_transaction_open() {
    let write = |step: u64| {
        let ws = id(u128::from(step) + 1);
        AppStatsWrite {
            rows: vec![session(id(7), ws, "code", 0, 60, 1)],
            batch_size: 1024,
            last_used: vec![(ws, T0)],
        }
    };
    // By COPY (a new row is copied) and by upsert.
    for mode in MODES {
        let (store, admin, _db) = one_connection().await;
        let store = store.with_write_mode(mode);
        give_up_repeatedly(&store, &admin, |step| {
            let w = write(step);
            let store = &store;
            async move { store.write_app_stats(&w).await }
        })
        .await;
        // A write after them all is committed, seen from another connection.
        let last = write(10_000);
        store.write_app_stats(&last).await.unwrap();
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM workspace_app_stats WHERE workspace_id = $1")
                .bind(last.last_used[0].0)
                .fetch_one(&admin)
                .await
                .unwrap();
        assert_eq!(seen, 1, "{mode:?}");
    }
}
