//! An in-test snapshot receiver: answers 500 to the first requests (a sink
//! outage), then 204, and records what it accepted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct Received {
    /// Requests answered 500.
    pub refused: u64,
    /// (Idempotency-Key, body) of each request answered 204.
    pub accepted: Vec<(String, serde_json::Value)>,
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
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut received = shared.received.lock();
    if received.refused < shared.fail_first {
        received.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(&body).expect("the sink gets JSON");
    received.accepted.push((key, body));
    StatusCode::NO_CONTENT
}
