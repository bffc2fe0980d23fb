//! What an operator relies on: readiness, request ids in the logs, the
//! access log, latency metrics, `Retry-After`, the open metrics router.

use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use axum::http::HeaderValue;

use super::*;
use crate::ready::{NotReady, Readiness};

struct Fixed(Result<String, NotReady>);

#[async_trait]
impl Readiness for Fixed {
    async fn check(&self) -> Result<String, NotReady> {
        self.0.clone()
    }
}

fn app_with(readiness: Result<String, NotReady>) -> Router {
    let state = state(MockStore::new(), 4096).with_readiness(Arc::new(Fixed(readiness)));
    router(state, std::time::Duration::from_secs(5))
}

async fn response(app: &Router, req: Request<Body>) -> axum::response::Response {
    app.clone().oneshot(req).await.unwrap()
}

#[tokio::test]
async fn readiness_is_200_only_when_the_store_answers_with_a_current_schema() {
    let (status, body) = call(&app(MockStore::new()), get("/readyz", None)).await;
    assert_eq!(status, StatusCode::OK, "the in-memory store is always ready");
    assert_eq!(body["status"], "ready");

    let cases = [
        (
            NotReady::StoreUnavailable("store call migration_status timed out after 10s".into()),
            "Not ready: the store does not answer.",
        ),
        (
            NotReady::SchemaNotCurrent("schema not current: 1 pending (0002 usage rollup)".into()),
            "Not ready: the database schema is not current.",
        ),
    ];
    for (why, message) in cases {
        let detail = why.to_string();
        let app = app_with(Err(why));
        let r = response(&app, get("/readyz", None)).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "5");
        let bytes = body_bytes(r).await;
        let body = error_body(&serde_json::from_slice(&bytes).unwrap());
        assert_eq!(body.message, message);
        assert_eq!(body.detail.as_deref(), Some(detail.as_str()));
    }
    // Liveness does not ask the store.
    let (status, _) = call(
        &app_with(Err(NotReady::StoreUnavailable("down".into()))),
        get("/healthz", None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = app(MockStore::new());
    let mut given = get("/healthz", None);
    given
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req-42.abc"));
    assert_eq!(
        response(&app, given).await.headers()["x-request-id"],
        "req-42.abc"
    );

    let generated = response(&app, get("/nothing/here", None)).await;
    assert_eq!(generated.status(), StatusCode::NOT_FOUND);
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));

    // An id that cannot be one token of a log line is replaced.
    for bad in ["two words", "", &"x".repeat(201)] {
        let mut req = get("/healthz", None);
        req.headers_mut()
            .insert("x-request-id", HeaderValue::from_str(bad).unwrap());
        let r = response(&app, req).await;
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{bad:?} gave {id}");
    }
}

/// Log lines written while `f` runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
}

fn unavailable_store() -> MockStore {
    let mut store = MockStore::new();
    store
        .expect_list_snapshots()
        .returning(|_| Err(StoreError::unavailable("connection refused")));
    store
}

fn snapshots_request(id: &'static str) -> Request<Body> {
    let mut req = get("/api/v2/telemetry/snapshots", Some("admtok"));
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static(id));
    req
}

#[tokio::test]
async fn every_log_line_of_a_request_names_its_id_and_one_access_line_ends_it() {
    let app = app(unavailable_store());
    let (out, _guard) = capture(tracing::Level::INFO);
    let r = response(&app, snapshots_request("trace-me-7")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let lines = out.lines();
    assert!(lines.len() >= 2, "a warning and the access line: {lines:#?}");
    for line in &lines {
        assert!(line.contains("request_id=trace-me-7"), "{line}");
    }
    let access: Vec<&String> = lines.iter().filter(|l| l.contains("tally::access")).collect();
    assert_eq!(access.len(), 1, "{lines:#?}");
    for want in [
        " INFO ",
        "method=GET",
        "route=/api/v2/telemetry/snapshots",
        "status=503",
        "duration_seconds=",
    ] {
        assert!(access[0].contains(want), "{want} missing: {}", access[0]);
    }
}

#[tokio::test]
async fn the_request_id_is_in_warnings_even_when_info_is_off() {
    let app = app(unavailable_store());
    let (out, _guard) = capture(tracing::Level::WARN);
    response(&app, snapshots_request("quiet-1")).await;
    let lines = out.lines();
    assert!(!lines.is_empty(), "the store warning");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("request_id=quiet-1") && !l.contains("tally::access")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn the_access_log_can_be_turned_off() {
    let state = state(MockStore::new(), 4096).with_access_log(false);
    let app = router(state, std::time::Duration::from_secs(5));
    let (out, _guard) = capture(tracing::Level::INFO);
    assert_eq!(
        response(&app, get("/healthz", None)).await.status(),
        StatusCode::OK
    );
    assert_eq!(out.lines(), Vec::<String>::new());
}

#[tokio::test]
async fn requests_are_timed_by_route_method_and_status_class() {
    let handle = crate::metrics::handle();
    let app = app(MockStore::new());
    let id = uuid::Uuid::new_v4();
    for _ in 0..3 {
        let (status, _) = call(&app, get(&format!("/api/v2/workspaces/{id}/last-used"), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let mut odd = get("/healthz", None);
    *odd.method_mut() = axum::http::Method::from_bytes(b"BREW").unwrap();
    call(&app, odd).await;
    let text = handle.render();
    let series = format!(
        "{}_count{{method=\"GET\",route=\"/api/v2/workspaces/{{id}}/last-used\",status_class=\"4xx\"}} ",
        crate::metrics::HTTP_REQUEST_SECONDS
    );
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .parse()
        .unwrap();
    assert!(count >= 3, "{count}");
    assert!(
        text.contains(&format!(
            "{}_bucket{{method=\"GET\",route=\"/api/v2/workspaces/{{id}}/last-used\",status_class=\"4xx\",le=\"0.0005\"}}",
            crate::metrics::HTTP_REQUEST_SECONDS
        )),
        "a histogram with buckets, not a summary:\n{text}"
    );
    assert!(!text.contains(&id.to_string()), "ids never become labels");
    assert!(!text.contains("BREW"), "nor methods clients make up");
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test]
async fn the_metrics_router_needs_no_token() {
    let s = state(MockStore::new(), 4096);
    let open = metrics_router(s.clone());
    let (status, _) = call(&open, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    let r = response(&open, get("/metrics", None)).await;
    let bytes = body_bytes(r).await;
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    // Only metrics there; the API's /metrics still wants a reader.
    let (status, _) = call(&open, get("/api/v2/telemetry/snapshots", Some("admtok"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let api = router(s, std::time::Duration::from_secs(5));
    let (status, _) = call(&api, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&api, get("/metrics", Some("rtok"))).await;
    assert_eq!(status, StatusCode::OK);
}
