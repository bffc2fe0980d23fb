//! An in-test snapshot receiver: answers 500 to the first requests (a sink
//! outage), or to every request during a time window, else 204, and records
//! what it accepted and refused.
// Shared by several test binaries, each using part of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;
use time::OffsetDateTime;

#[derive(Debug, Default)]
pub struct Received {
    /// Requests answered 500.
    pub refused: u64,
    /// (Idempotency-Key, body) of each request answered 204.
    pub accepted: Vec<(String, serde_json::Value)>,
    /// When each of `accepted` arrived (same order).
    pub accepted_at: Vec<OffsetDateTime>,
    /// Requests answered 500, by Idempotency-Key.
    pub refused_keys: HashMap<String, u64>,
    /// The time-based outage `[from, until)`, if one was set.
    pub outage: Option<(OffsetDateTime, OffsetDateTime)>,
    /// Run once, on the next accepted request, before it is answered.
    on_accept: Option<OnAccept>,
}

struct OnAccept(Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for OnAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnAccept")
    }
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Received>>,
}

struct Shared {
    fail_first: u64,
    received: Arc<Mutex<Received>>,
}

impl Sink {
    pub async fn start(fail_first: u64) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = Arc::new(Shared {
            fail_first,
            received: received.clone(),
        });
        let app = Router::new()
            .route("/snapshots", post(receive))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}/snapshots", self.addr)
    }

    /// Runs `f` on the next accepted request, before the replica gets its
    /// answer (so before it can mark the snapshot published).
    pub fn on_next_accept(&self, f: impl FnOnce() + Send + 'static) {
        self.received.lock().on_accept = Some(OnAccept(Box::new(f)));
    }

    /// From now on, refuses every request for `length`; returns when it ends
    /// (wall clock).
    pub fn outage(&self, length: Duration) -> OffsetDateTime {
        let from = OffsetDateTime::now_utc();
        let until = from + length;
        self.received.lock().outage = Some((from, until));
        until
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let now = OffsetDateTime::now_utc();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut received = shared.received.lock();
    let down = received
        .outage
        .is_some_and(|(from, until)| from <= now && now < until);
    if down || received.refused < shared.fail_first {
        received.refused += 1;
        *received.refused_keys.entry(key).or_default() += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let body = serde_json::from_slice(&body).expect("the sink gets JSON");
    received.accepted.push((key, body));
    received.accepted_at.push(now);
    if let Some(OnAccept(f)) = received.on_accept.take() {
        f();
    }
    StatusCode::NO_CONTENT
}
