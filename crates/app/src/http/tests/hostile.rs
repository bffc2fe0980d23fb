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
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(body["error"].as_str().unwrap().contains("100ms"), "{body}");
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
    let err = decode_app_stats(in_order(&serde_json::to_string(&fields).unwrap()).as_bytes()).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("stats[0]"), "{err:?}");

    let ws = "2c9e3a44-5b6c-4d7e-8f90-a1b2c3d4e5f6";
    let body = format!(r#"{{"workspace_id": "{ws}", "owner_id": "{ws}", "logs": [["allow"]]}}"#);
    let err = decode_boundary_logs(body.as_bytes()).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("logs[0]"), "{err:?}");
}
