//! Against the in-memory store.

use reqwest::StatusCode;
use time::OffsetDateTime;

use super::{access_lines, metrics_addr};
use crate::common::*;

#[tokio::test]
async fn the_memory_store_is_always_ready_and_live() {
    let server = Server::start(&[]);
    let client = client();
    for path in ["/healthz", "/readyz"] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let body: serde_json::Value = client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ready", "{body}");
}

#[tokio::test]
async fn the_metrics_listener_serves_every_metric_without_a_token_under_one_naming_scheme() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let client = client();
    let open = metrics_addr(&server);
    // Some of everything: ingest, a refusal, a read.
    let now = OffsetDateTime::now_utc();
    let (ws, user) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let report = go_report(user, ws, "path", "8080", uuid::Uuid::new_v4(), now, None, 1);
    let (status, _) = post_json(
        &client,
        &server,
        APP_STATS,
        PROXY,
        &serde_json::json!({"stats": [report]}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let boundary = serde_json::json!({"workspace_id": ws, "owner_id": user, "allowed": 2});
    let (status, _) = post_json(&client, &server, BOUNDARY_LOGS, AGENT, &boundary).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = get_json(&client, &server, "/api/v2/telemetry/snapshots", MEMBER).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let m = scrape::scrape_without_token(&client, open).await;
    let served = &m.types;
    for (name, kind) in [
        ("tally_app_stats_reports_collected_total", "counter"),
        ("tally_app_stats_last_flush_duration_seconds", "gauge"),
        ("tally_boundary_requests_tracked_total", "counter"),
        ("tally_http_requests_total", "counter"),
        ("tally_http_request_duration_seconds", "histogram"),
        ("tally_store_up", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(
            served.get(name).map(String::as_str),
            Some(kind),
            "{name} in\n{m:?}"
        );
    }
    for (name, kind) in served {
        assert!(
            name.starts_with("tally_") || name.starts_with("process_"),
            "{name}"
        );
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name} must end in _total"),
            "histogram" => assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes"),
                "histogram {name} must be in seconds or bytes"
            ),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} must not end in _total"),
            other => panic!("{name} is a {other}: buckets are configured for every histogram"),
        }
        for unit in ["_ms", "_milliseconds", "_micros", "_kb", "_mb", "_kib", "_mib"] {
            assert!(!name.contains(unit), "{name}: base units only");
        }
    }
    // The route of the histogram is the route's pattern, the status a class.
    let durations = "tally_http_request_duration_seconds_count";
    let ingest = [("method", "POST"), ("route", APP_STATS), ("status_class", "2xx")];
    assert!(m.has(durations, &ingest), "{m:?}");
    assert_eq!(m.count(durations, &ingest), 1, "{m:?}");
    let refused_read = [("route", "/api/v2/telemetry/snapshots"), ("status_class", "4xx")];
    assert!(m.has(durations, &refused_read), "{m:?}");

    // The API's own /metrics still wants a reader; the open one is only that.
    let api = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    scrape::scrape(&client, server.addr).await;
    let elsewhere = client
        .get(format!("http://{open}/api/v2/telemetry/snapshots"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_metrics_address_in_use_is_a_configuration_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tally()
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--metrics-listen: cannot listen on {addr}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn each_request_has_an_id_echoed_and_one_access_line() {
    // Off in the harness, on by default in tally.
    let server = Server::start_with_env(&[], &[("TALLY_ACCESS_LOG", "true")]);
    let client = client();
    let r = client
        .get(server.url("/healthz"))
        .header("x-request-id", "e2e-given-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "e2e-given-1");
    let r = client
        .post(server.url(APP_STATS))
        .bearer_auth(PROXY)
        .json(&serde_json::json!({"stats": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&generated).unwrap();

    let logs = server.logs();
    let lines = access_lines(&logs);
    let given: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("request_id=e2e-given-1"))
        .collect();
    assert_eq!(given.len(), 1, "{logs}");
    for want in [
        "INFO",
        "method=GET",
        "route=/healthz",
        "status=200",
        "duration_seconds=",
    ] {
        assert!(given[0].contains(want), "{want} missing: {}", given[0]);
    }
    let refused: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(&format!("request_id={generated}")))
        .collect();
    assert_eq!(refused.len(), 1, "{logs}");
    for want in [
        "method=POST",
        "route=/api/v2/workspaceproxies/me/app-stats",
        "status=400",
    ] {
        assert!(refused[0].contains(want), "{want} missing: {}", refused[0]);
    }
}

#[tokio::test]
async fn json_access_lines_carry_the_request_span() {
    let server = Server::start(&["--log-json", "--access-log", "true"]);
    let r = client()
        .get(server.url("/readyz"))
        .header("x-request-id", "e2e-json-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logs = server.logs();
    let line = access_lines(&logs)
        .into_iter()
        .find(|l| l.contains("e2e-json-2"))
        .unwrap_or_else(|| panic!("{logs}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["target"], "tally::access", "{json}");
    assert_eq!(json["level"], "INFO", "{json}");
    assert_eq!(json["status"], 200, "{json}");
    assert!(json["duration_seconds"].as_f64().unwrap() >= 0.0, "{json}");
    assert_eq!(json["span"]["request_id"], "e2e-json-2", "{json}");
    assert_eq!(json["span"]["method"], "GET", "{json}");
    assert_eq!(json["span"]["route"], "/readyz", "{json}");
}

#[tokio::test]
async fn the_access_log_can_be_turned_off_by_flag_or_variable() {
    for server in [
        // The flag beats the variable.
        Server::start_with_env(&["--access-log", "false"], &[("TALLY_ACCESS_LOG", "true")]),
        Server::start_with_env(&[], &[("TALLY_ACCESS_LOG", "false")]),
    ] {
        let r = client().get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("x-request-id"), "ids are still given");
        let logs = server.logs();
        assert_eq!(access_lines(&logs), Vec::<&str>::new(), "{logs}");
        assert!(logs.contains("access_log=false"), "{logs}");
    }
}

#[tokio::test]
async fn a_full_buffer_says_to_retry_after_one_report_interval() {
    let cap = memory_store_cap_for_reports(10, 25);
    let server = Server::start(&["--max-memory", &cap, "--report-interval", "3s"]);
    let client = client();
    let now = OffsetDateTime::now_utc();
    let open = |n: usize| {
        let stats: Vec<_> = (0..n)
            .map(|_| {
                let (ws, user) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
                go_report(user, ws, "path", "8080", uuid::Uuid::new_v4(), now, None, 1)
            })
            .collect();
        serde_json::json!({ "stats": stats })
    };
    let (status, _) = post_json(&client, &server, APP_STATS, PROXY, &open(10)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Ten new sessions in ten groups hold all of the cap (queued or
    // applied), and the gauge shows them in bytes as the cap counts them:
    // the collector's share of it (the in-memory store has the rest).
    let m = scrape::scrape(&client, server.addr).await;
    assert_eq!(
        m.count(tally::metrics::BUFFERED_BYTES, &[]),
        10 * worst_report_bytes(),
        "tally_app_stats_buffered_bytes at the collector's cap"
    );
    let r = client
        .post(server.url(APP_STATS))
        .bearer_auth(PROXY)
        .json(&open(4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "3");
}
