//! End-to-end: `tally serve` over PostgreSQL (a throwaway database per test).

use crate::common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use tally_adapters_postgres::PgStore;
use tally_domain::ports::{InsightsStore, TimeRange};
use time::OffsetDateTime;

#[tokio::test]
async fn go_shaped_reports_reach_postgres_and_sigterm_flushes_the_rest() {
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    let server = Server::start(&["--database-url", &url, ROLLUP_TICK[0], ROLLUP_TICK[1]]);
    let client = client();
    let sc = Scenario::new(OffsetDateTime::now_utc());
    post_and_read_back(&client, &server, &sc).await;

    // The young open session is still held back; SIGTERM must write it.
    server.signal("-TERM");
    let (status, logs) = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
    assert!(!logs.contains("secret"), "{logs}");

    let store = PgStore::connect(&url).await.unwrap();
    let range = TimeRange::new(
        sc.now - time::Duration::hours(1),
        sc.now + time::Duration::hours(1),
    )
    .unwrap();
    let rows = store.app_stats(range, 100).await.unwrap();
    // long closed, old open, one rolled-up row for the two short ones, young open.
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let young = rows
        .iter()
        .find(|r| r.workspace_id == sc.ws2)
        .unwrap_or_else(|| panic!("young open session not flushed at shutdown: {rows:#?}"));
    assert_eq!(young.requests, 1);
    let end = young.session_ended_at.expect("rows always carry an end time");
    assert!(
        end >= young.session_started_at && end <= OffsetDateTime::now_utc(),
        "{young:?}"
    );
    let old_open = rows.iter().find(|r| r.user_id == sc.user_b).unwrap();
    assert_eq!(old_open.requests, 6);
    assert!(store.workspace_last_used(sc.ws2).await.unwrap().is_some());

    // A second server on the same database reads the same, once its first
    // rollup tick has taken in the row written at shutdown.
    let server = Server::start(&["--database-url", &url, ROLLUP_TICK[0], ROLLUP_TICK[1]]);
    let apps = eventually(
        Duration::from_secs(15),
        "the shutdown row in the insights",
        || async {
            let (status, apps) = get_json(&client, &server, &sc.insights(), READER).await;
            assert_eq!(status, StatusCode::OK);
            app(&apps, "path", "8080").is_some().then_some(apps)
        },
    )
    .await;
    assert_eq!(app(&apps, "path", "8080").unwrap()["requests"], 1, "{apps}");
    assert_eq!(app(&apps, "terminal", "").unwrap()["requests"], 5, "{apps}");
}

#[tokio::test]
async fn boundary_usage_is_snapshotted_from_postgres() {
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    let server = Server::start(&["--database-url", &url, "--snapshot-interval", "2s"]);
    let client = client();
    let (ws, owner) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let body = serde_json::json!({"workspace_id": ws, "owner_id": owner, "allowed": 7, "denied": 5});
    let (status, _) = post_json(&client, &server, BOUNDARY_LOGS, AGENT, &body).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    eventually(
        Duration::from_secs(20),
        "a published snapshot with the decisions",
        || async {
            let (_, body) = get_json(&client, &server, "/api/v2/telemetry/snapshots?limit=100", ADMIN).await;
            let list = body["snapshots"].as_array()?.clone();
            list.iter()
                .find(|s| {
                    s["allowed_requests"] == 7 && s["denied_requests"] == 5 && s["published_at"].is_string()
                })
                .map(|s| {
                    assert_eq!(s["unique_workspaces"], 1, "{s}");
                    assert_eq!(s["unique_users"], 1, "{s}");
                })
        },
    )
    .await;
    server.signal("-TERM");
    let (status, logs) = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("telemetry snapshot"), "the log sink got it: {logs}");
}

#[test]
fn migrate_applies_migrations_and_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(tally_tests::pg::fresh_database());
    let out = tally()
        .args(["migrate", "--database-url", &db.url.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
    // Twice is fine.
    let out = tally()
        .args(["migrate", "--database-url", &db.url.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    drop(db);
}
