//! End-to-end: `tally serve` with the in-memory store, over loopback HTTP.
// Tables of cases read best as tuples.
#![allow(clippy::type_complexity)]

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode as AxumStatus;
use common::scrape::scrape;
use common::*;
use reqwest::StatusCode;
use time::OffsetDateTime;

#[tokio::test]
async fn go_shaped_reports_are_collected_and_read_back() {
    let server = Server::start(&ROLLUP_TICK);
    let client = client();
    let sc = Scenario::new(OffsetDateTime::now_utc());
    post_and_read_back(&client, &server, &sc).await;

    let m = scrape(&client, server.addr).await;
    let ingest = [("method", "POST"), ("route", APP_STATS), ("status", "204")];
    // Each series rendered, with its value where one is known.
    let series: [(&str, &[(&str, &str)], Option<u64>); 6] = [
        ("tally_app_stats_reports_collected_total", &[], Some(9)),
        ("tally_app_stats_rows_written_total", &[], None),
        ("tally_app_stats_backlog_rows", &[], Some(0)),
        ("tally_app_stats_reports_dropped_total", &[], Some(0)),
        ("tally_app_stats_last_flush_duration_seconds", &[], None),
        ("tally_http_requests_total", &ingest, Some(2)),
    ];
    for (name, labels, value) in series {
        assert!(m.has(name, labels), "{name}{labels:?} missing in\n{m:?}");
        if let Some(value) = value {
            assert_eq!(m.count(name, labels), value, "{name}{labels:?} in\n{m:?}");
        }
    }
}

#[tokio::test]
async fn tokens_map_to_subjects_401_and_403() {
    let server = Server::start(&[]);
    let client = client();
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let empty = serde_json::json!({"stats": []});
    let boundary = serde_json::json!({"workspace_id": uuid::Uuid::new_v4(), "owner_id": uuid::Uuid::new_v4(), "allowed": 1});
    let now = OffsetDateTime::now_utc();
    let insights = insights_path(now - time::Duration::hours(1), now);
    let cases: &[(&str, &str, Option<&serde_json::Value>, Option<&str>, StatusCode)] = &[
        ("POST", APP_STATS, Some(&empty), None, StatusCode::UNAUTHORIZED),
        (
            "POST",
            APP_STATS,
            Some(&empty),
            Some("not-a-token"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            APP_STATS,
            Some(&empty),
            Some(AGENT),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            APP_STATS,
            Some(&empty),
            Some(ADMIN),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            APP_STATS,
            Some(&empty),
            Some(PROXY),
            StatusCode::NO_CONTENT,
        ),
        (
            "POST",
            BOUNDARY_LOGS,
            Some(&boundary),
            Some(PROXY),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            BOUNDARY_LOGS,
            Some(&boundary),
            Some(READER),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            BOUNDARY_LOGS,
            Some(&boundary),
            Some(AGENT),
            StatusCode::NO_CONTENT,
        ),
        ("GET", &insights, None, None, StatusCode::UNAUTHORIZED),
        ("GET", &insights, None, Some(PROXY), StatusCode::FORBIDDEN),
        ("GET", &insights, None, Some(MEMBER), StatusCode::FORBIDDEN),
        ("GET", &insights, None, Some(READER), StatusCode::OK),
        (
            "GET",
            "/api/v2/telemetry/snapshots",
            None,
            Some(AGENT),
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/api/v2/telemetry/snapshots",
            None,
            Some(ADMIN),
            StatusCode::OK,
        ),
        ("GET", "/metrics", None, None, StatusCode::UNAUTHORIZED),
        ("GET", "/metrics", None, Some(PROXY), StatusCode::FORBIDDEN),
        ("GET", "/metrics", None, Some(ADMIN), StatusCode::OK),
    ];
    for (method, path, body, token, want) in cases {
        let mut req = client.request(method.parse().unwrap(), server.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), *want, "{method} {path} as {token:?}");
        if *want == StatusCode::UNAUTHORIZED {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
    }
    // Coder's own header works as well.
    let response = client
        .post(server.url(APP_STATS))
        .header("Coder-Session-Token", PROXY)
        .json(&empty)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Tokens never reach the log.
    let logs = server.logs();
    for secret in [
        "proxy-token",
        "agent-token",
        "reader-token",
        "admin-token",
        "not-a-token",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the log:\n{logs}");
    }
}

/// Receives snapshots like a telemetry endpoint; the first delivery fails.
async fn snapshot_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/snapshots",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let (g, calls) = (g.clone(), calls.clone());
            async move {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    return AxumStatus::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap().push(body);
                AxumStatus::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/snapshots"), got)
}

fn sums(snapshots: &[serde_json::Value]) -> (u64, u64) {
    let mut by_id = HashMap::new();
    for s in snapshots {
        by_id.insert(s["id"].as_str().unwrap().to_owned(), s);
    }
    by_id.values().fold((0, 0), |(a, d), s| {
        (
            a + s["allowed_requests"].as_u64().unwrap(),
            d + s["denied_requests"].as_u64().unwrap(),
        )
    })
}

#[tokio::test]
async fn boundary_logs_are_counted_once_in_published_snapshots() {
    let (sink_url, received) = snapshot_receiver().await;
    let server = Server::start(&["--snapshot-interval", "2s", "--telemetry-url", &sink_url]);
    let client = client();
    let (ws1, ws2, owner1, owner2) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    for body in [
        serde_json::json!({"workspace_id": ws1, "owner_id": owner1, "allowed": 3, "denied": 1}),
        serde_json::json!({"workspace_id": ws2, "owner_id": owner1, "logs": [
            {"decision": "allow", "http_method": "GET", "http_url": "https://example.com"},
            {"decision": "deny"}, {"decision": "deny"}]}),
        serde_json::json!({"workspace_id": ws1, "owner_id": owner2, "allowed": 2}),
    ] {
        let (status, error) = post_json(&client, &server, BOUNDARY_LOGS, AGENT, &body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{error}");
    }
    let listed = eventually(
        Duration::from_secs(20),
        "snapshots holding every decision",
        || async {
            let (status, body) =
                get_json(&client, &server, "/api/v2/telemetry/snapshots?limit=1000", READER).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let list = body["snapshots"].as_array().unwrap().clone();
            (sums(&list) == (6, 3)).then_some(list)
        },
    )
    .await;
    // Each snapshot covers one aligned 2 s period, at most one per period.
    let mut ends: Vec<_> = listed
        .iter()
        .map(|s| s["period_end"].as_str().unwrap().to_owned())
        .collect();
    let n = ends.len();
    ends.sort();
    ends.dedup();
    assert_eq!(ends.len(), n, "two snapshots for one period: {listed:?}");
    let with_usage: Vec<_> = listed
        .iter()
        .filter(|s| s["allowed_requests"].as_u64() > Some(0) || s["denied_requests"].as_u64() > Some(0))
        .collect();
    let workspaces: u64 = with_usage
        .iter()
        .map(|s| s["unique_workspaces"].as_u64().unwrap())
        .sum();
    assert!((2..=3).contains(&workspaces), "{with_usage:?}");

    // The sink gets them too, after its first answer failed.
    eventually(
        Duration::from_secs(20),
        "the sink to receive every decision",
        || async {
            let got = received.lock().unwrap().clone();
            (sums(&got) == (6, 3)).then_some(())
        },
    )
    .await;
    let m = scrape(&client, server.addr).await;
    assert_eq!(
        m.count(
            "tally_boundary_requests_tracked_total",
            &[("decision", "allowed")]
        ),
        6,
        "{m:?}"
    );
    assert!(m.has("tally_snapshots_published_total", &[]), "{m:?}");
}

#[tokio::test]
async fn sigterm_flushes_what_was_collected_and_exits_0() {
    // No periodic flush within the test: only the shutdown writes.
    let server = Server::start(&["--report-interval", "1h", "--tracker-flush-interval", "1h"]);
    let client = client();
    let sc = Scenario::new(OffsetDateTime::now_utc());
    let body = serde_json::json!({"stats": [sc.long_closed, sc.young_open]});
    let (status, _) = post_json(&client, &server, APP_STATS, PROXY, &body).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let boundary =
        serde_json::json!({"workspace_id": sc.ws1, "owner_id": sc.user_a, "allowed": 2, "denied": 1});
    let (status, _) = post_json(&client, &server, BOUNDARY_LOGS, AGENT, &boundary).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    server.signal("-TERM");
    let (status, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{logs}");
    let last = logs
        .lines()
        .rev()
        .find(|l| l.contains("shutdown complete"))
        .unwrap_or_else(|| panic!("{logs}"));
    for want in [
        "rows_written=2",
        "dropped=0",
        "backlog_rows=0",
        "boundary_pending=0",
        "clean=true",
    ] {
        assert!(last.contains(want), "{want} missing: {last}");
    }
}

#[tokio::test]
async fn ctrl_c_shuts_down_cleanly_too() {
    let server = Server::start(&["--log-json"]);
    let client = client();
    assert_eq!(
        client.get(server.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    server.signal("-INT");
    let (status, logs) = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{logs}");
    // Every line is JSON, the shutdown line included.
    let last: serde_json::Value = serde_json::from_str(logs.lines().last().unwrap()).unwrap();
    assert_eq!(last["message"], "shutdown complete", "{logs}");
    assert_eq!(last["clean"], true);
}
