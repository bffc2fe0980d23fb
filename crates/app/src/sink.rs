//! Snapshot sinks: the log (default) and an HTTP endpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::Retryable as _;
use tally_domain::ports::{SinkError, SnapshotSink};
use tally_domain::retry::Backoff;
use tally_domain::telemetry::Snapshot;

use crate::config::ConfigError;

/// Writes each snapshot as one JSON log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

#[async_trait]
impl SnapshotSink for LogSink {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError> {
        let json = serde_json::to_string(snapshot).map_err(|e| SinkError(e.to_string()))?;
        tracing::info!(
            target: "tally::snapshot",
            snapshot_id = %snapshot.id,
            period_end = %snapshot.period_end,
            snapshot = %json,
            "telemetry snapshot"
        );
        Ok(())
    }
}

/// POSTs each snapshot as JSON, retrying transient failures a few times; the
/// outbox retries later beyond that. The snapshot id travels in the
/// `Idempotency-Key` header so a receiver can drop a redelivery. Over
/// `https` it trusts the CAs of a CA file alone, or the built-in public ones;
/// a TLS failure is not retried by the sink (no retry fixes a certificate),
/// the outbox still keeps the snapshot.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    url: url::Url,
    backoff: Backoff,
}

/// Tries of one delivery; the outbox retries later beyond them.
const SEND_TRIES: usize = 4;
/// Waits between tries: about 0.2 s, 0.4 s, 0.8 s.
const SEND_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

impl HttpSink {
    pub fn new(url: url::Url, ca_file: Option<&Path>) -> Result<Self, ConfigError> {
        let tls = crate::tls::client_config(ca_file)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(tls.clone())
            .build()
            .map_err(|e| ConfigError(format!("cannot build the HTTP client for --telemetry-url: {e}")))?;
        Ok(Self {
            client,
            tls: Arc::new(tls),
            url,
            backoff: SEND_RETRY,
        })
    }

    /// For an `https` URL: a TLS handshake with the sink now, so that a
    /// certificate it would refuse ends the start-up (see
    /// [`crate::tls::check_handshake`]).
    pub async fn check_tls(&self) -> Result<(), ConfigError> {
        if self.url.scheme() != "https" {
            return Ok(());
        }
        crate::tls::check_handshake(&self.url, self.tls.clone()).await
    }

    /// Shorter retry delays, for tests.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    async fn send_once(&self, snapshot: &Snapshot) -> Result<(), Attempt> {
        let response = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", snapshot.id.to_string())
            .json(snapshot)
            .send()
            .await
            .map_err(|e| match crate::tls::rustls_error(&e) {
                Some(tls) => Attempt::GiveUp(format!("POST {}: {}", self.url, crate::tls::describe(tls))),
                None => Attempt::Retry(format!("POST {} failed: {e}", self.url)),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {} answered {status}", self.url);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(Attempt::Retry(message))
        } else {
            Err(Attempt::GiveUp(message))
        }
    }
}

enum Attempt {
    Retry(String),
    GiveUp(String),
}

#[async_trait]
impl SnapshotSink for HttpSink {
    async fn publish(&self, snapshot: &Snapshot) -> Result<(), SinkError> {
        (|| self.send_once(snapshot))
            .retry(self.backoff.builder().with_max_times(SEND_TRIES - 1))
            .when(|e| matches!(e, Attempt::Retry(_)))
            .notify(|e, after| {
                let (Attempt::Retry(m) | Attempt::GiveUp(m)) = e;
                tracing::debug!(error = %m, retry_in = ?after, "snapshot delivery failed, retrying");
            })
            .await
            .map_err(|(Attempt::Retry(m) | Attempt::GiveUp(m))| SinkError(m))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use time::macros::datetime;

    /// A snapshot to deliver (the TLS tests send it too).
    pub(crate) fn snapshot() -> Snapshot {
        Snapshot {
            id: uuid::Uuid::new_v4(),
            event_type: "boundary_usage".into(),
            period_start: datetime!(2026-11-25 10:00 UTC),
            period_end: datetime!(2026-11-25 10:30 UTC),
            usage: Default::default(),
            created_at: datetime!(2026-11-25 10:30:01 UTC),
            published_at: None,
            publish_attempts: 0,
        }
    }

    /// A receiver that answers `fail_first` times with `status`, then 204.
    async fn receiver(fail_first: usize, status: StatusCode) -> (url::Url, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let app = Router::new().route(
            "/snap",
            post(move |body: axum::Json<serde_json::Value>| {
                let c = c.clone();
                async move {
                    assert_eq!(body["event_type"], "boundary_usage");
                    if c.fetch_add(1, Ordering::SeqCst) < fail_first {
                        status
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/snap").parse().unwrap(), calls)
    }

    fn fast(sink: HttpSink) -> HttpSink {
        sink.with_backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(10)))
    }

    #[tokio::test]
    async fn http_sink_retries_server_errors_then_succeeds() {
        let (url, calls) = receiver(2, StatusCode::SERVICE_UNAVAILABLE).await;
        fast(HttpSink::new(url, None).unwrap())
            .publish(&snapshot())
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn http_sink_gives_up_on_client_errors_at_once() {
        let (url, calls) = receiver(usize::MAX, StatusCode::BAD_REQUEST).await;
        let err = fast(HttpSink::new(url, None).unwrap())
            .publish(&snapshot())
            .await
            .unwrap_err();
        assert!(err.0.contains("400"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn http_sink_reports_an_unreachable_endpoint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/snap", listener.local_addr().unwrap());
        drop(listener);
        let err = fast(HttpSink::new(url.parse().unwrap(), None).unwrap())
            .publish(&snapshot())
            .await
            .unwrap_err();
        assert!(err.0.contains("failed"), "{err}");
    }

    #[tokio::test]
    async fn log_sink_always_succeeds() {
        LogSink.publish(&snapshot()).await.unwrap();
    }
}
