//! Against PostgreSQL: the migration controls and readiness.

use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use tally_tests::pg::{PrivateCluster, Shutdown};

use crate::common::*;

fn run(args: &[&str]) -> Output {
    tally().args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn history_exists(url: &str) -> bool {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    found.is_some()
}

/// Records migration 9999, "from a newer tally", as applied: one this build
/// does not know.
async fn record_a_migration_from_a_newer_tally(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer tally', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
}

fn known_migrations() -> usize {
    tally_adapters_postgres::MIGRATOR.iter().count()
}

#[tokio::test]
async fn migrate_status_lists_pending_applied_and_unknown_migrations_and_changes_nothing() {
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    let n = known_migrations();

    let out = run(&["migrate", "--status", "--database-url", &url]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("VERSION  NAME"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("0001") && l.contains("init") && l.contains("pending")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("schema not current: {n} pending (0001 init")),
        "{stdout}"
    );
    assert!(!history_exists(&url).await, "--status migrated nothing");

    let out = run(&["migrate", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let (stdout, _) = text(&run(&["migrate", "--status", "--database-url", &url]));
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" applied ")).count(),
        n,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("schema current ({n} applied)")),
        "{stdout}"
    );

    // A migration only a newer tally knows.
    record_a_migration_from_a_newer_tally(&url).await;
    let (stdout, _) = text(&run(&["migrate", "--status", "--database-url", &url]));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("9999") && l.contains("unknown to this tally")),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 applied by a newer tally (9999 from a newer tally)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn serve_no_migrate_refuses_a_schema_behind_and_starts_on_a_current_one() {
    let db = tally_tests::pg::fresh_database().await;
    let url = db.url.to_string();
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-migrate",
        "--database-url",
        &url,
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for want in [
        "tally: configuration error: --no-migrate:",
        "pending (0001 init",
        "`tally migrate`",
    ] {
        assert!(stderr.contains(want), "{want} missing: {stderr}");
    }
    assert!(!history_exists(&url).await, "--no-migrate migrated nothing");

    let out = run(&["migrate", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let server = Server::start_with_env(&["--database-url", &url], &[("TALLY_NO_MIGRATE", "true")]);
    let r = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().starts_with("schema current"),
        "{body}"
    );
    assert!(server.logs().contains("migrate=false"), "{}", server.logs());
    drop(server);

    // A migration only a newer tally knows: --no-migrate starts and is
    // ready; a migrating serve refuses the history it does not know.
    record_a_migration_from_a_newer_tally(&url).await;
    let server = Server::start(&["--database-url", &url, "--no-migrate"]);
    let r = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("1 applied by a newer tally"),
        "{body}"
    );
    drop(server);
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--database-url", &url]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("9999"), "{stderr}");
}

/// `/readyz`'s status and body.
async fn ready(client: &reqwest::Client, server: &Server) -> (StatusCode, Option<String>, serde_json::Value) {
    let r = client.get(server.url("/readyz")).send().await.unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn readiness_follows_the_database_and_its_schema() {
    let mut cluster = PrivateCluster::started().await;
    let db = cluster.fresh_database().await;
    let url = db.url.to_string();
    let server = Server::start(&["--database-url", &url, "--store-timeout", "2s"]);
    let client = client();
    let (status, _, body) = ready(&client, &server).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The schema changed under the replica: an applied migration's file
    // differs from this build's.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    let checksum: Vec<u8> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
        .bind(last)
        .fetch_one(&pool)
        .await
        .unwrap();
    let set_checksum = |sum: Vec<u8>| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
                .bind(sum)
                .bind(last)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set_checksum(vec![0]).await;
    let (status, retry, body) = ready(&client, &server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(body["message"], "Not ready: the database schema is not current.");
    assert!(body["detail"].as_str().unwrap().contains("1 modified"), "{body}");
    set_checksum(checksum).await;
    assert_eq!(ready(&client, &server).await.0, StatusCode::OK);
    pool.close().await;

    // The database goes away: not ready, still live; back: ready again.
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop(Shutdown::Fast).unwrap();
        cluster
    })
    .await
    .unwrap();
    let (status, retry, body) = ready(&client, &server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(body["message"], "Not ready: the store does not answer.", "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.start().unwrap();
        cluster
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "ready again", || async {
        (ready(&client, &server).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    drop(db);
}
