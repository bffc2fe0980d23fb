use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tally_domain::appstats::AccessMethod;
use tally_domain::appstats::collector::{CollectorConfig, StatsCollector};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::SystemClock;
use tally_domain::error::StoreError;
use tally_domain::ports::{MockReporter, MockStore, TimeRange};
use tally_domain::usage::{AppUsageSeries, UsageFigures};
use time::macros::datetime;
use tower::ServiceExt as _;

use super::ingest::{BoundaryBatch, decode_app_stats, decode_boundary_logs};
use super::*;
use tally_domain::appstats::StatsReport;
use tally_domain::appstats::session_times::SessionTimeLimits;

const TOKENS: &str = "proxy=ptok,agent=atok,reader=rtok,admin=admtok,member=mtok";

fn report_json(session: &str, ended: &str, requests: i64) -> serde_json::Value {
    serde_json::json!({
        "user_id": "8a1b7f1e-0d5e-4d5e-9f3c-1a2b3c4d5e6f",
        "workspace_id": "2c9e3a44-5b6c-4d7e-8f90-a1b2c3d4e5f6",
        "agent_id": "3d0f4b55-6c7d-4e8f-9a01-b2c3d4e5f6a7",
        "access_method": "path",
        "slug_or_port": "code-server",
        "session_id": session,
        "session_started_at": "2026-11-25T10:15:30.123456789Z",
        "session_ended_at": ended,
        "requests": requests,
    })
}

const S1: &str = "4e1a5c66-7d8e-4f9a-8b12-c3d4e5f6a7b8";
const S2: &str = "5f2b6d77-8e9f-4a0b-9c23-d4e5f6a7b8c9";

fn body_of(reports: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "stats": reports })).unwrap()
}

#[test]
fn decodes_what_the_go_proxy_sends() {
    let mut extra = report_json(S2, "2026-11-25T10:20:00Z", 3);
    extra["some_future_field"] = serde_json::json!({"nested": true});
    let body = body_of(vec![report_json(S1, "0001-01-01T00:00:00Z", 7), extra]);
    let reports = decode_stats(&body).unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports[0].is_open());
    assert_eq!(reports[0].access_method, AccessMethod::Path);
    assert_eq!(reports[1].session_ended_at, Some(datetime!(2026-11-25 10:20 UTC)));
    assert_eq!(reports[1].requests, 3);
    // Go sends a nil slice as null; an empty list is fine too.
    assert!(decode_stats(br#"{"stats":null}"#).unwrap().is_empty());
    assert!(decode_stats(br#"{"stats":[]}"#).unwrap().is_empty());
}

#[test]
fn malformed_app_stats_name_the_offending_field() {
    let valid = || report_json(S1, "0001-01-01T00:00:00Z", 1);
    let with = |key: &str, value: serde_json::Value| {
        let mut r = report_json(S2, "2026-11-25T10:20:00Z", 3);
        r[key] = value;
        body_of(vec![valid(), r])
    };
    let without = |key: &str| {
        let mut r = report_json(S2, "2026-11-25T10:20:00Z", 3);
        r.as_object_mut().unwrap().remove(key);
        body_of(vec![valid(), r])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong type",
            with("requests", "seven".into()),
            "stats[1].requests",
        ),
        (
            "negative count",
            with("requests", (-1).into()),
            "stats[1].requests",
        ),
        (
            "overflowing count",
            with("requests", 5_000_000_000u64.into()),
            "stats[1].requests",
        ),
        (
            "fractional count",
            with("requests", 1.5.into()),
            "stats[1].requests",
        ),
        ("missing field", without("session_id"), "stats[1].session_id"),
        (
            "missing start",
            without("session_started_at"),
            "stats[1].session_started_at",
        ),
        (
            "invalid uuid",
            with("user_id", "not-a-uuid".into()),
            "stats[1].user_id",
        ),
        (
            "nil session",
            with("session_id", uuid::Uuid::nil().to_string().into()),
            "stats[1].session_id",
        ),
        (
            "invalid timestamp",
            with("session_started_at", "yesterday".into()),
            "stats[1].session_started_at",
        ),
        (
            "end before start",
            with("session_ended_at", "2026-11-25T09:00:00Z".into()),
            "stats[1].session_ended_at",
        ),
        (
            "unknown access method",
            with("access_method", "telepathy".into()),
            "stats[1].access_method",
        ),
        ("stats not a list", br#"{"stats":{"a":1}}"#.to_vec(), "stats"),
        ("stats missing", br#"{"reports":[]}"#.to_vec(), "stats"),
        ("not an object", b"[1,2,3]".to_vec(), "body"),
        ("trailing garbage", br#"{"stats":[]} x"#.to_vec(), "body"),
    ];
    for (name, body, field) in cases {
        let err = decode_stats(&body).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(err.field.as_deref(), Some(field), "{name}: {}", err.message);
    }
    let mut truncated = body_of(vec![valid()]);
    truncated.truncate(truncated.len() / 2);
    let err = decode_stats(&truncated).unwrap_err();
    let detail = err.detail.unwrap_or_default();
    assert!(detail.starts_with("truncated JSON"), "{detail}");
    let err = decode_stats(b"\xff\xfe{").unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
}

#[test]
fn text_in_ignored_fields_must_still_be_valid() {
    for body in [
        b"{\"x\":\"\xff\",\"stats\":[]}".as_slice(),
        br#"{"x":"\ud800","stats":[]}"#,
        br#"{"stats":[],"x":{"y":["\uDC00"]}}"#,
    ] {
        let err = decode_stats(body).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field.as_deref(), Some("body"), "{}", err.message);
    }
    let ok = br#"{"x":"caf\u00e9 \ud83d\ude00 \\u","stats":[]}"#;
    assert!(decode_stats(ok).unwrap().is_empty());
}

#[test]
fn boundary_logs_are_counted_or_taken_precounted() {
    let ws = uuid::Uuid::new_v4();
    let owner = uuid::Uuid::new_v4();
    let pre = serde_json::json!({"workspace_id": ws, "owner_id": owner, "allowed": 5, "denied": 2});
    assert_eq!(
        decode_boundary_logs(&serde_json::to_vec(&pre).unwrap()).unwrap(),
        BoundaryBatch {
            workspace_id: ws,
            owner_id: owner,
            allowed: 5,
            denied: 2
        }
    );
    let logs = serde_json::json!({"workspace_id": ws, "owner_id": owner, "logs": [
        {"decision": "allow", "host": "example.com"}, {"decision": "deny"}, {"decision": "deny"}, {"decision": "allowed"}
    ]});
    let b = decode_boundary_logs(&serde_json::to_vec(&logs).unwrap()).unwrap();
    assert_eq!((b.allowed, b.denied), (2, 2));
    let only_denied = serde_json::json!({"workspace_id": ws, "owner_id": owner, "denied": 4});
    let b = decode_boundary_logs(&serde_json::to_vec(&only_denied).unwrap()).unwrap();
    assert_eq!((b.allowed, b.denied), (0, 4));
}

#[test]
fn malformed_boundary_logs_name_the_field() {
    let ws = uuid::Uuid::new_v4().to_string();
    let cases = [
        (serde_json::json!({"owner_id": ws, "allowed": 1}), "workspace_id"),
        (
            serde_json::json!({"workspace_id": "x", "owner_id": ws, "allowed": 1}),
            "workspace_id",
        ),
        (
            serde_json::json!({"workspace_id": uuid::Uuid::nil(), "owner_id": ws, "allowed": 1}),
            "workspace_id",
        ),
        (
            serde_json::json!({"workspace_id": ws, "owner_id": ws, "allowed": -1}),
            "allowed",
        ),
        (
            serde_json::json!({"workspace_id": ws, "owner_id": ws, "denied": "2"}),
            "denied",
        ),
        (
            serde_json::json!({"workspace_id": ws, "owner_id": ws, "allowed": 5_000_000_000u64}),
            "allowed",
        ),
        (serde_json::json!({"workspace_id": ws, "owner_id": ws}), "allowed"),
        (
            serde_json::json!({"workspace_id": ws, "owner_id": ws, "allowed": 1, "logs": []}),
            "logs",
        ),
        (
            serde_json::json!({"workspace_id": ws, "owner_id": ws, "logs": [{"decision": "allow"}, {"decision": "maybe"}]}),
            "logs[1].decision",
        ),
        (
            serde_json::json!({"workspace_id": ws, "owner_id": ws, "logs": [{}]}),
            "logs[0].decision",
        ),
    ];
    for (body, field) in cases {
        let err = decode_boundary_logs(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err.field.as_deref(), Some(field), "{body}: {}", err.message);
    }
}

/// The time the routes see in these tests: the insights' range rules, the
/// usage horizon and the session times ingest takes depend on it.
const READ_NOW: time::OffsetDateTime = datetime!(2026-11-25 14:20 UTC);

/// Decodes app stats as the route does at [`READ_NOW`], default limits.
fn decode_stats(body: &[u8]) -> Result<Vec<StatsReport>, error::ApiError> {
    decode_app_stats(body, &SessionTimeLimits::default().at(READ_NOW))
}

fn state(store: MockStore, body_limit: usize) -> AppState {
    let collector = StatsCollector::new(
        CollectorConfig::default(),
        Arc::new(MockReporter::new()),
        Arc::new(SystemClock),
    );
    AppState::new(
        Arc::new(store),
        collector,
        Arc::new(BoundaryTracker::new(uuid::Uuid::new_v4(), Arc::new(SystemClock))),
        crate::config::Tokens::parse(TOKENS).unwrap(),
        body_limit,
    )
    .with_clock(Arc::new(tally_domain::clock::ManualClock::new(READ_NOW)))
}

/// The whole body of `response`.
pub(super) async fn body_bytes(response: axum::response::Response) -> axum::body::Bytes {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = body_bytes(response).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// An error answer's body, read as Coder's clients read it.
fn error_body(json: &serde_json::Value) -> error::ErrorBody {
    let body: error::ErrorBody =
        serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("not an error body ({e}): {json}"));
    assert!(body.validations.len() <= 1, "one field at a time: {json}");
    body
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, token: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::post(uri).header("coder-session-token", token);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Body::from(body)).unwrap()
}

fn app(store: MockStore) -> Router {
    router(state(store, 4096), std::time::Duration::from_secs(5))
}

#[tokio::test]
async fn health_needs_no_token_and_unknown_routes_are_json_404() {
    let app = app(MockStore::new());
    let (status, body) = call(&app, get("/healthz", None)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = call(&app, get(APP_STATS_PATH, Some("ptok"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_body(&body).text().contains("GET"), "{body}");
    let (status, body) = call(&app, get("/api/v2/nothing", Some("rtok"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_body(&body).text().contains("/api/v2/nothing"));
}

#[tokio::test]
async fn insights_pass_the_range_and_add_session_seconds() {
    let mut store = MockStore::new();
    store
        .expect_app_usage_by_interval()
        .withf(|iv| {
            iv.range()
                == TimeRange {
                    from: datetime!(2026-11-25 10:00 UTC),
                    to: datetime!(2026-11-25 12:00 +01:00),
                }
        })
        .times(1)
        .returning(|_| {
            let total = UsageFigures {
                usage_seconds: 90,
                sessions: 3,
                requests: 40,
                unique_users: 2,
            };
            Ok(vec![AppUsageSeries {
                access_method: AccessMethod::Terminal,
                slug_or_port: String::new(),
                total,
                intervals: vec![total],
            }])
        });
    let app = app(store);
    let uri = "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=2026-11-25T12:00:00%2B01:00";
    let (status, body) = call(&app, get(uri, Some("rtok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let apps = body["apps"].as_array().unwrap();
    assert_eq!(apps[0]["access_method"], "terminal");
    assert_eq!(apps[0]["unique_users"], 2);
    assert_eq!(apps[0]["sessions"], 3);
    assert_eq!(apps[0]["session_micros"], 90_000_000);
    assert_eq!(apps[0]["session_seconds"], 90.0);
}

#[tokio::test]
async fn reads_are_refused_by_the_domain_for_subjects_without_the_right() {
    // The mock has no expectations: any store call would panic, so a 403 here
    // comes from the authorizing wrapper before the store is reached.
    let app = app(MockStore::new());
    let uri = "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=2026-11-25T11:00:00Z";
    for token in ["ptok", "atok", "mtok"] {
        let (status, body) = call(&app, get(uri, Some(token))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}: {body}");
        assert!(error_body(&body).text().contains("may not read"), "{body}");
    }
    let ws = uuid::Uuid::new_v4();
    let (status, _) = call(
        &app,
        get(&format!("/api/v2/workspaces/{ws}/last-used"), Some("ptok")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, get("/api/v2/telemetry/snapshots", Some("mtok"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, get("/metrics", Some("atok"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for token in [None, Some("wrong")] {
        let (status, body) = call(&app, get(uri, token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

#[tokio::test]
async fn last_used_and_snapshots_come_from_the_store() {
    let ws = uuid::Uuid::new_v4();
    let mut store = MockStore::new();
    store
        .expect_workspace_last_used()
        .returning(|_| Ok(Some(datetime!(2026-11-25 10:20 UTC))));
    store
        .expect_list_snapshots()
        .withf(|n| *n == 7)
        .returning(|_| Ok(vec![]));
    let app = app(store);
    let (status, body) = call(
        &app,
        get(&format!("/api/v2/workspaces/{ws}/last-used"), Some("rtok")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["last_used_at"], "2026-11-25T10:20:00Z");
    assert_eq!(body["workspace_id"], ws.to_string());
    let (status, body) = call(&app, get("/api/v2/telemetry/snapshots?limit=7", Some("rtok"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["snapshots"], serde_json::json!([]));
}

#[tokio::test]
async fn store_outage_on_a_read_is_503() {
    let mut store = MockStore::new();
    store
        .expect_app_usage_by_interval()
        .returning(|_| Err(StoreError::unavailable("connection refused")));
    let app = app(store);
    let uri = "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=2026-11-25T11:00:00Z";
    let (status, body) = call(&app, get(uri, Some("rtok"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !error_body(&body).text().contains("refused"),
        "no internals leak: {body}"
    );
}

#[tokio::test]
async fn submissions_check_token_rights_content_type_and_size_before_parsing() {
    let app = app(MockStore::new());
    let ok_body = body_of(vec![]);
    let json = Some("application/json");
    let cases = [
        (
            APP_STATS_PATH,
            "wrong",
            json,
            ok_body.clone(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            APP_STATS_PATH,
            "atok",
            json,
            ok_body.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            APP_STATS_PATH,
            "rtok",
            json,
            ok_body.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            APP_STATS_PATH,
            "ptok",
            None,
            ok_body.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            APP_STATS_PATH,
            "ptok",
            Some("text/plain"),
            ok_body.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            APP_STATS_PATH,
            "ptok",
            json,
            vec![b' '; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            APP_STATS_PATH,
            "ptok",
            json,
            b"{\"stats\":[".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            APP_STATS_PATH,
            "ptok",
            json,
            ok_body.clone(),
            StatusCode::NO_CONTENT,
        ),
        (
            APP_STATS_PATH,
            "ptok",
            Some("application/json; charset=utf-8"),
            ok_body,
            StatusCode::NO_CONTENT,
        ),
        (
            BOUNDARY_LOGS_PATH,
            "ptok",
            json,
            b"{}".to_vec(),
            StatusCode::FORBIDDEN,
        ),
        (
            BOUNDARY_LOGS_PATH,
            "admtok",
            json,
            b"{}".to_vec(),
            StatusCode::FORBIDDEN,
        ),
        (
            BOUNDARY_LOGS_PATH,
            "atok",
            json,
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, token, ct, body, want) in cases {
        let (status, json) = call(&app, post(path, token, ct, body)).await;
        assert_eq!(status, want, "{path} {token} {ct:?}: {json}");
        if status != StatusCode::NO_CONTENT {
            assert!(!error_body(&json).message.is_empty(), "{json}");
        }
    }
}

#[tokio::test]
async fn chunked_oversize_bodies_are_413_too() {
    let app = app(MockStore::new());
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let req = Request::post(APP_STATS_PATH)
        .header("authorization", "Bearer ptok")
        .header("content-type", "application/json")
        .body(Body::from_stream(chunks))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[tokio::test]
async fn refused_uploads_close_the_connection_and_accepted_ones_keep_it() {
    let app = app(MockStore::new());
    let response = app
        .clone()
        .oneshot(post(
            APP_STATS_PATH,
            "atok",
            Some("application/json"),
            body_of(vec![]),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["connection"], "close");
    let response = app
        .oneshot(post(
            APP_STATS_PATH,
            "ptok",
            Some("application/json"),
            body_of(vec![]),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("connection").is_none());
}

#[tokio::test]
async fn a_request_that_might_not_fit_the_buffer_is_refused_whole() {
    let mut s = state(MockStore::new(), 1 << 20);
    s.collector = StatsCollector::new(
        CollectorConfig {
            max_buffered: 30,
            ..CollectorConfig::default()
        },
        Arc::new(MockReporter::new()),
        Arc::new(SystemClock),
    );
    let collector = s.collector.clone();
    let app = router(s, std::time::Duration::from_secs(5));
    let reports = |n: usize| {
        body_of(
            (0..n)
                .map(|_| report_json(&uuid::Uuid::new_v4().to_string(), "0001-01-01T00:00:00Z", 1))
                .collect(),
        )
    };
    let json = Some("application/json");
    // Eleven reports can never fit 30 units: 413 naming the limit, not a
    // 503 the proxy would retry forever.
    let (status, body) = call(&app, post(APP_STATS_PATH, "ptok", json, reports(11))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_body(&body).field(), Some("stats"), "{body}");
    assert!(error_body(&body).text().contains("at most 10"), "{body}");
    assert_eq!(collector.stats().collected, 0);
    let (status, _) = call(&app, post(APP_STATS_PATH, "ptok", json, reports(10))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(collector.stats().collected, 10);
    let refused = app
        .clone()
        .oneshot(post(APP_STATS_PATH, "ptok", json, reports(4)))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Retry after one report interval (the default 30s): a flush has begun by then.
    assert_eq!(refused.headers()["retry-after"], "30");
    assert_eq!(collector.stats().collected, 10);
    assert_eq!(collector.stats().dropped, 0);
}

mod hostile;
mod insights;
mod ops;
mod session_times;
