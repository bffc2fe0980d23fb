//! End-to-end over TLS: `tally serve` and `tally migrate` against a
//! PostgreSQL that accepts TLS only, verified in full (`sslmode=verify-full`,
//! `sslrootcert`), and an HTTPS snapshot sink trusted through
//! `--telemetry-ca-file`. Every refusal (a wrong CA, a name the certificate
//! lacks, `sslmode=disable`, an untrusted sink) is one clear configuration
//! error at start-up (exit 2), never retried as an unreachable database.

use crate::common;

use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use reqwest::StatusCode as HttpStatus;
use tally_adapters_postgres::PgStore;
use tally_domain::ports::{InsightsStore, TimeRange};
use tally_tests::pg::{TestDatabase, TlsCluster, tls_server, with_params};
use tally_tests::tls::TestCa;
use time::OffsetDateTime;

/// A database on the process's TLS-only server, for a test without a runtime.
fn tls_database() -> (&'static TlsCluster, TestDatabase) {
    let server = tls_server().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    (server, rt.block_on(server.fresh_database()))
}

/// An HTTPS sink on a free port with a certificate of `ca`'s for 127.0.0.1;
/// the snapshots it received.
async fn https_sink(ca: &TestCa) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let app = Router::new().route(
        "/snapshots",
        post(move |body: axum::Json<serde_json::Value>| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(body.0);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = ca.issue(&["127.0.0.1"]).https_listener().await;
    let url = format!("https://{}/snapshots", listener.local_addr());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Runs tally with `args`; a long connect timeout, so a failure retried as
/// an unreachable database would show (and take that long).
fn run(args: &[&str]) -> Output {
    tally()
        .args(args)
        .args(["--connect-timeout", "60s"])
        .env("TALLY_TOKENS", TOKENS)
        .output()
        .unwrap()
}

/// Exit 2 with `needle` in the one error line, and no retry as unreachable.
fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tally: configuration error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(line.contains(needle), "{needle:?} not in {line}");
    assert!(
        !stderr.contains("not reachable"),
        "a TLS failure is not an unreachable database: {stderr}"
    );
}

#[tokio::test]
async fn serve_verifies_postgres_in_full_and_delivers_snapshots_to_an_https_sink() {
    let server = tokio::task::spawn_blocking(tls_server).await.unwrap().unwrap();
    let db = server.fresh_database().await;
    assert!(db.url.contains("sslmode=verify-full") && db.url.contains("sslrootcert="));
    let sink_ca = TestCa::new("sink CA");
    let (sink_url, received) = https_sink(&sink_ca).await;
    let ca_file = sink_ca.path().display().to_string();
    let server = Server::start(&[
        ROLLUP_TICK[0],
        ROLLUP_TICK[1],
        "--database-url",
        &db.url,
        "--telemetry-url",
        &sink_url,
        "--telemetry-ca-file",
        &ca_file,
        "--snapshot-interval",
        "2s",
    ]);
    let client = client();
    let sc = Scenario::new(OffsetDateTime::now_utc());
    post_and_read_back(&client, &server, &sc).await;
    let (ws, owner) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let body = serde_json::json!({"workspace_id": ws, "owner_id": owner, "allowed": 7, "denied": 5});
    let (status, _) = post_json(&client, &server, BOUNDARY_LOGS, AGENT, &body).await;
    assert_eq!(status, HttpStatus::NO_CONTENT);
    eventually(
        Duration::from_secs(30),
        "the HTTPS sink receiving the snapshot with the decisions",
        || async {
            let got = received.lock().unwrap().clone();
            got.into_iter()
                .find(|s| s["allowed_requests"] == 7 && s["denied_requests"] == 5)
        },
    )
    .await;
    server.signal("-TERM");
    let (status, logs) = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{logs}");

    // What serve wrote is in the database, read back over TLS as well.
    let store = PgStore::connect(&db.url).await.unwrap();
    let range = TimeRange::new(
        sc.now - time::Duration::hours(1),
        sc.now + time::Duration::hours(1),
    )
    .unwrap();
    assert_eq!(store.app_stats(range, 100).await.unwrap().len(), 4);
}

#[test]
fn migrate_verifies_in_full_and_refuses_a_wrong_ca_a_wrong_name_and_plaintext() {
    let (server, db) = tls_database();
    let out = run(&["migrate", "--database-url", &db.url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");

    let other = TestCa::new("someone else's CA");
    let wrong_ca = with_params(&db.url, &[("sslrootcert", &other.path().display().to_string())]);
    let by_name = db.url.replace("127.0.0.1", "localhost");
    let plaintext = with_params(&db.url, &[("sslmode", "disable")]);
    for (url, needle) in [
        (&wrong_ca, "certificate is not trusted"),
        (&by_name, "hostname mismatch"),
        (&plaintext, "the server requires TLS"),
    ] {
        assert_refused(&run(&["migrate", "--database-url", url]), needle);
    }
    assert!(
        server.log().contains("no pg_hba.conf entry"),
        "the server refused the plaintext connection itself"
    );
}

#[test]
fn serve_refuses_a_wrong_ca_and_plaintext_at_start_up() {
    let (_, db) = tls_database();
    let other = TestCa::new("someone else's CA");
    let wrong_ca = with_params(&db.url, &[("sslrootcert", &other.path().display().to_string())]);
    let plaintext = with_params(&db.url, &[("sslmode", "disable")]);
    for (url, needle) in [
        (&wrong_ca, "certificate is not trusted"),
        (&plaintext, "the server requires TLS"),
    ] {
        let out = run(&["serve", "--listen", "127.0.0.1:0", "--database-url", url]);
        assert_refused(&out, needle);
    }
}

#[tokio::test]
async fn serve_refuses_an_https_sink_it_cannot_trust_at_start_up() {
    let sink_ca = TestCa::new("sink CA");
    let (sink_url, received) = https_sink(&sink_ca).await;
    let other = TestCa::new("someone else's CA");
    let other_file = other.path().display().to_string();
    let serve = |extra: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["serve".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
            args.extend(extra);
            run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    for extra in [
        vec!["--telemetry-url".to_owned(), sink_url.clone()],
        vec![
            "--telemetry-url".to_owned(),
            sink_url.clone(),
            "--telemetry-ca-file".into(),
            other_file.clone(),
        ],
    ] {
        let out = serve(extra).await.unwrap();
        assert_refused(&out, "the sink's certificate is not trusted");
    }
    assert!(received.lock().unwrap().is_empty());

    for (extra, needle) in [
        (vec!["--telemetry-ca-file", &other_file], "needs an https://"),
        (
            vec![
                "--telemetry-url",
                "http://127.0.0.1:9/x",
                "--telemetry-ca-file",
                &other_file,
            ],
            "needs an https://",
        ),
        (
            vec![
                "--telemetry-url",
                &sink_url,
                "--telemetry-ca-file",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem: cannot read it",
        ),
    ] {
        let out = serve(extra.into_iter().map(str::to_owned).collect())
            .await
            .unwrap();
        assert_refused(&out, needle);
    }
}
