//! `cargo xtask capacity --outage`: the database is stopped before the
//! sustained run, so the collector holds everything it takes until its cap
//! refuses with 503; then the database is started again and every report
//! taken must reach it (counted in the table's `sessions` column).

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection as _;
use tally_tests::pg::{PrivateCluster, Shutdown};

/// How long the healed replica may take to write everything it held.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// What the healed database holds.
#[derive(Debug, Default)]
pub struct Healed {
    /// Seconds from the restart until every report taken was written (or
    /// [`DRAIN_LIMIT`] if not).
    pub drain_seconds: u64,
    pub rows: i64,
    /// Sessions the rows stand for (a rolled-up row stands for several).
    pub sessions: i64,
}

pub fn stop(cluster: &mut PrivateCluster) -> anyhow::Result<()> {
    cluster.stop(Shutdown::Fast).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Starts the database again and waits until the rows stand for `taken`
/// sessions (every report of the load is a session of its own).
pub fn heal(
    rt: &tokio::runtime::Runtime,
    cluster: &mut PrivateCluster,
    url: &str,
    taken: u64,
) -> anyhow::Result<Healed> {
    cluster.start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .context("connect to the healed database")?;
        loop {
            let (rows, sessions): (i64, i64) = sqlx::query_as(
                "SELECT count(*), coalesce(sum(sessions), 0)::bigint FROM workspace_app_stats",
            )
            .fetch_one(&mut conn)
            .await?;
            let done = u64::try_from(sessions).unwrap_or(0) >= taken;
            if done || started.elapsed() > DRAIN_LIMIT {
                return Ok(Healed {
                    drain_seconds: started.elapsed().as_secs(),
                    rows,
                    sessions,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
