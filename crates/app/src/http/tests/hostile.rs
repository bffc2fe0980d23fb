//! Requests no client should send: each answered with a JSON error naming
//! the field, nothing collected.

use futures::StreamExt as _;

use super::*;

#[tokio::test]
async fn a_stalled_body_is_a_json_408() {
    let s = state(MockStore::new(), 4096);
    let collector = s.collector.clone();
    let app = router(s, std::time::Duration::from_millis(100));
    // Half a body, then nothing more.
    let stalled = futures::stream::once(async { Ok::<_, std::io::Error>(r#"{"stats": ["#) })
        .chain(futures::stream::pending());
    let req = Request::post(APP_STATS_PATH)
        .header("coder-session-token", "ptok")
        .header("content-type", "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()["connection"], "close");
    let bytes = body_bytes(response).await;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(error_body(&body).text().contains("100ms"), "{body}");
    assert_eq!(collector.stats().collected, 0);
}

#[test]
fn list_items_must_be_objects() {
    let in_order = |item: &str| format!(r#"{{"stats": [{item}]}}"#);
    let report = report_json(S1, "2026-11-25T10:20:00Z", 3);
    let fields: Vec<_> = [
        "user_id",
        "workspace_id",
        "agent_id",
        "access_method",
        "slug_or_port",
        "session_id",
        "session_started_at",
        "session_ended_at",
        "requests",
    ]
    .iter()
    .map(|k| report[*k].clone())
    .collect();
    let err = decode_stats(in_order(&serde_json::to_string(&fields).unwrap()).as_bytes()).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("stats[0]"), "{err:?}");

    let ws = "2c9e3a44-5b6c-4d7e-8f90-a1b2c3d4e5f6";
    let body = format!(r#"{{"workspace_id": "{ws}", "owner_id": "{ws}", "logs": [["allow"]]}}"#);
    let err = decode_boundary_logs(body.as_bytes()).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("logs[0]"), "{err:?}");
}

#[tokio::test]
async fn read_parameters_are_checked() {
    let app = app(MockStore::new());
    for (uri, field) in [
        ("/api/v2/insights/apps?to=2026-11-25T11:00:00Z", "from"),
        (
            "/api/v2/insights/apps?from=yesterday&to=2026-11-25T11:00:00Z",
            "from",
        ),
        (
            "/api/v2/insights/apps?from=2026-11-25T11:00:00Z&to=2026-11-25T10:00:00Z",
            "to",
        ),
        ("/api/v2/workspaces/not-a-uuid/last-used", "workspace_id"),
        ("/api/v2/telemetry/snapshots?limit=0", "limit"),
        ("/api/v2/telemetry/snapshots?limit=lots", "limit"),
        // Unknown and repeated parameters are named, not ignored.
        ("/api/v2/telemetry/snapshots?limt=5", "limt"),
        ("/api/v2/telemetry/snapshots?limit=5&limit=6", "limit"),
        (
            "/api/v2/workspaces/4e1a5c66-7d8e-4f9a-8b12-c3d4e5f6a7b8/last-used?since=1",
            "since",
        ),
        (
            "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=2026-11-25T11:00:00Z&app=x",
            "app",
        ),
        // An offset's unescaped `+` arrives as a space.
        (
            "/api/v2/insights/apps?from=2026-11-25T10:00:00+01:00&to=2026-11-25T11:00:00Z",
            "from",
        ),
        // Valid RFC 3339, but past year 9999 in UTC: refused, not a panic.
        (
            "/api/v2/insights/apps?from=9999-12-31T23:59:59-23:59&to=2026-11-25T11:00:00Z",
            "from",
        ),
        (
            "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=9999-12-31T23:59:59-23:59",
            "to",
        ),
        // Within range, but rounding it up to a microsecond is not.
        (
            "/api/v2/insights/apps?from=2026-11-25T10:00:00Z&to=9999-12-31T23:59:59.9999995Z",
            "to",
        ),
        // A percent-encoded id that is not UTF-8: axum's rejection, as JSON.
        ("/api/v2/workspaces/%FF/last-used", "workspace_id"),
    ] {
        let (status, body) = call(&app, get(uri, Some("admtok"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(error_body(&body).field(), Some(field), "{uri}: {body}");
    }
}
