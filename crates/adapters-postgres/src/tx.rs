//! The two steps of a transaction that a caller who gives up could leave
//! half done, each run to the end in a task of its own.
//!
//! A store call is given up when its future is dropped: an HTTP client
//! that hung up, a store call timed out. sqlx (0.8.6, and 0.9.0 likewise)
//! survives that between statements (a dropped transaction queues its
//! `ROLLBACK`, sent before the connection goes back to the pool) but not at
//! two points. It counts a transaction as begun only once the server has
//! answered its `BEGIN`, so a drop while waiting for that answer leaves the
//! server inside a transaction nothing will end; and a drop while a `COPY
//! FROM STDIN` waits for the server to take data leaves the server in copy
//! mode, where the queued `ROLLBACK` is taken as a copy error and lost. The
//! next borrower of that connection then runs in a stale transaction: its
//! reads fail, its plain writes are not committed. In a task, each step
//! completes whatever its caller does; a transaction nobody waits for any
//! more is then dropped the usual way, which rolls it back.

use std::future::Future;

use sqlx::{PgPool, Postgres, Transaction};

/// `BEGIN` on a connection from `pool`.
pub(crate) async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    begin_with(pool, "BEGIN").await
}

/// `statement` (a `BEGIN` with its options) on a connection from `pool`.
pub(crate) async fn begin_with(
    pool: &PgPool,
    statement: &'static str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    run_to_end(async move { pool.begin_with(statement).await }).await
}

/// `statement` (a `COPY ... FROM STDIN`) with `data` in `tx`, which comes
/// back for the rest of the transaction.
pub(crate) async fn copy_in(
    mut tx: Transaction<'static, Postgres>,
    statement: String,
    data: Vec<u8>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    run_to_end(async move {
        let mut copy = tx.copy_in_raw(&statement).await?;
        if let Err(e) = copy.send(data).await {
            let _ = copy.abort("send failed").await;
            return Err(e);
        }
        copy.finish().await?;
        Ok(tx)
    })
    .await
}

async fn run_to_end<T: Send + 'static>(
    step: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, sqlx::Error> {
    match tokio::spawn(step).await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}
