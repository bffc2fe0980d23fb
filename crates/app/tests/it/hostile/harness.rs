//! One case of the hostile table, and the checks every refused case gets.

use reqwest::{Method, StatusCode};
use tally::http::error::ErrorBody;

use crate::common::scrape::{Metrics, scrape};
use crate::common::*;

/// Where [`splice`] puts raw bytes: set a JSON value to this string.
pub const RAW: &str = "__raw__";

/// `value` as JSON text with the string [`RAW`] replaced by `raw`, for bytes
/// no `serde_json::Value` can hold (invalid UTF-8, huge numbers, bad syntax).
pub fn splice(value: &serde_json::Value, raw: &[u8]) -> Vec<u8> {
    let text = value.to_string();
    let marker = format!("\"{RAW}\"");
    let at = text.find(&marker).expect("the value holds the marker");
    let bytes = text.as_bytes();
    [&bytes[..at], raw, &bytes[at + marker.len()..]].concat()
}

/// Numbers no count takes: negative, past 64 bits, not whole.
pub const NOT_COUNTS: [&str; 5] = [
    "-1",
    "-9223372036854775808",
    "18446744073709551616",
    "1e400",
    "1.5",
];

/// Whole numbers past the most one report may carry (4294967295): refused
/// naming that limit.
pub const PAST_A_REPORTS_COUNT: [&str; 3] = ["9223372036854775808", "18446744073709551615", "4294967296"];

/// The server under test, cheap to clone into a task.
#[derive(Debug, Clone)]
pub struct Target {
    pub client: reqwest::Client,
    pub base: String,
    pub addr: std::net::SocketAddr,
}

impl Target {
    pub fn new(server: &Server) -> Self {
        Self {
            client: client(),
            base: server.url(""),
            addr: server.addr,
        }
    }

    /// Writes `bytes` on a fresh connection, then returns what the server
    /// answers until it closes the connection (or 10 s pass).
    pub async fn raw(&self, bytes: &[u8]) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn metrics(&self) -> Metrics {
        scrape(&self.client, self.addr).await
    }

    pub async fn healthy(&self) -> bool {
        let response = self.client.get(self.url("/healthz")).send().await;
        response.is_ok_and(|r| r.status() == StatusCode::OK)
    }
}

/// What the server holds, as `/metrics` shows it: none of it may move when a
/// request is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub collected: f64,
    pub dropped: f64,
    pub allowed: f64,
    pub denied: f64,
}

pub async fn stored(target: &Target) -> Stored {
    let m = target.metrics().await;
    let tracked = |decision: &str| m.get("tally_boundary_requests_tracked_total", &[("decision", decision)]);
    Stored {
        collected: m.get("tally_app_stats_reports_collected_total", &[]),
        dropped: m.get("tally_app_stats_reports_dropped_total", &[]),
        allowed: tracked("allowed"),
        denied: tracked("denied"),
    }
}

/// A request the server must refuse, and how.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub method: Method,
    pub path: String,
    pub token: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub status: StatusCode,
    /// The `field` the error must name (`None` only for 404 and 405, which
    /// name the path in the detail).
    pub field: Option<String>,
    /// Words the error must contain, in its message or a detail (a limit, a
    /// parameter's name).
    pub mentions: Vec<String>,
}

impl Case {
    /// A JSON POST answered 400 naming `field`.
    pub fn post(
        name: impl Into<String>,
        path: &str,
        token: &'static str,
        body: impl Into<Vec<u8>>,
        field: &str,
    ) -> Self {
        Self {
            name: name.into(),
            method: Method::POST,
            path: path.to_owned(),
            token,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.into(),
            status: StatusCode::BAD_REQUEST,
            field: Some(field.to_owned()),
            mentions: Vec::new(),
        }
    }

    /// A GET answered 400 naming `field`.
    pub fn get(name: impl Into<String>, path: &str, token: &'static str, field: &str) -> Self {
        Self {
            name: name.into(),
            method: Method::GET,
            path: path.to_owned(),
            token,
            headers: Vec::new(),
            body: Vec::new(),
            status: StatusCode::BAD_REQUEST,
            field: Some(field.to_owned()),
            mentions: Vec::new(),
        }
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn no_field(mut self) -> Self {
        self.field = None;
        self
    }

    pub fn content_type(mut self, value: Option<&str>) -> Self {
        self.headers.retain(|(k, _)| *k != "content-type");
        if let Some(v) = value {
            self.headers.push(("content-type", v.to_owned()));
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub fn mentions(mut self, words: &str) -> Self {
        self.mentions.push(words.to_owned());
        self
    }
}

/// Sends `case` and checks the answer, that nothing was stored and that the
/// server still answers.
pub async fn refused(target: &Target, case: &Case) {
    let name = &case.name;
    let before = stored(target).await;
    let mut request = target
        .client
        .request(case.method.clone(), target.url(&case.path))
        .bearer_auth(case.token)
        .body(case.body.clone());
    for (k, v) in &case.headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    assert_eq!(status, case.status, "{name}: {text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{name}: {text}"
    );
    let error: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not an error body ({e}): {text}"));
    assert!(!error.message.is_empty(), "{name}: no message: {text}");
    assert!(
        error.validations.len() <= 1,
        "{name}: one field at a time: {text}"
    );
    assert_eq!(error.field(), case.field.as_deref(), "{name}: {text}");
    let message = error.text();
    for words in &case.mentions {
        assert!(
            message.contains(words.as_str()),
            "{name}: {words:?} not in {text}"
        );
    }
    assert_eq!(
        stored(target).await,
        before,
        "{name}: a refused request changed what is stored"
    );
    assert!(target.healthy().await, "{name}: the server stopped answering");
}

/// Runs a table in order, reporting every failing case at once.
pub async fn run_table(target: &Target, cases: Vec<Case>) {
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let target = target.clone();
        if let Err(e) = tokio::spawn(async move { refused(&target, &case).await }).await {
            let panic = e.into_panic();
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(text);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}
