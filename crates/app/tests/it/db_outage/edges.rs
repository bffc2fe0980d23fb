//! Outages at the edges of a replica's life: start-up and shutdown.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::with_cluster;
use crate::common::{self, Server};
use tally_tests::pg::{PrivateCluster, Shutdown};

/// Outages at the edges of a replica's life: it starts while the database
/// is down (and waits for it, beyond one connection attempt), and it is
/// stopped while the database is down with acknowledged usage in memory
/// (and writes it once the database is back, before its shutdown timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waits_for_the_database_at_start_and_at_shutdown() {
    let cluster = PrivateCluster::started().await;
    let db = cluster.fresh_database().await;
    let url = db.url.clone();
    let cluster = with_cluster(cluster, |c| c.stop(Shutdown::Immediate).unwrap()).await;

    let starting = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Server::start(&["--database-url", &url, "--connect-timeout", "60s"])
        })
    };
    // Longer than one connection attempt may wait.
    tokio::time::sleep(tally::store::ACQUIRE_TIMEOUT + Duration::from_secs(2)).await;
    assert!(
        !starting.is_finished(),
        "tally serve listened without its database"
    );
    let cluster = with_cluster(cluster, |c| c.start().unwrap()).await;
    let server = starting.await.unwrap();
    assert!(
        server.logs().contains("database not reachable yet"),
        "{}",
        server.logs()
    );

    // Down again; what is acknowledged now is only in the replica's memory.
    let cluster = with_cluster(cluster, |c| c.stop(Shutdown::Immediate).unwrap()).await;
    let client = common::client();
    let (workspace, owner) = (Uuid::new_v4(), Uuid::new_v4());
    let boundary = serde_json::json!({
        "workspace_id": workspace, "owner_id": owner, "allowed": 40, "denied": 2,
    });
    let (status, body) =
        common::post_json(&client, &server, common::BOUNDARY_LOGS, common::AGENT, &boundary).await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");
    let now = OffsetDateTime::now_utc();
    let start = now - time::Duration::minutes(10);
    let sessions: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let stats: Vec<_> = sessions
        .iter()
        .map(|&s| common::go_report(owner, workspace, "terminal", "", s, start, Some(now), 5))
        .collect();
    let (status, body) = common::post_json(
        &client,
        &server,
        common::APP_STATS,
        common::PROXY,
        &serde_json::json!({ "stats": stats }),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");

    // SIGTERM while the database is down; it comes back after the final
    // flush failed once (a loop's store call in flight may hold the shutdown
    // one acquire timeout first), within the shutdown timeout (30 s); the
    // replica writes everything out.
    server.signal("-TERM");
    tokio::time::sleep(2 * tally::store::ACQUIRE_TIMEOUT + Duration::from_secs(2)).await;
    let cluster = with_cluster(cluster, |c| c.start().unwrap()).await;
    let (status, log) = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(40)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("final app stats flush failed; retrying"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (allowed, denied) = crate::common::db::unclosed_boundary(&pool).await;
    let closed: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(allowed_requests), 0)::bigint FROM telemetry_snapshots")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (allowed + closed, denied),
        (40, 2),
        "boundary usage written at shutdown"
    );
    let stored: Vec<(Uuid, i64)> = sqlx::query_as("SELECT session_id, requests FROM workspace_app_stats")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), sessions.len(), "app stats written at shutdown");
    assert!(
        stored.iter().all(|(s, n)| sessions.contains(s) && *n == 5),
        "{stored:?}"
    );
    pool.close().await;
    drop(db);
    drop(cluster);
}
