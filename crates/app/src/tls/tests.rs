use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tally_domain::ports::SnapshotSink as _;
use tally_tests::tls::{ServerCert, TestCa};

use super::*;
use crate::sink::HttpSink;
use crate::sink::tests::snapshot;

/// An HTTPS receiver presenting `cert`, reached by `host`: the snapshots it
/// got, and the connections whose handshake the client refused.
struct Receiver {
    url: url::Url,
    received: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

async fn receiver(cert: &ServerCert, host: &str) -> Receiver {
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let app = Router::new().route(
        "/snap",
        post(move |body: axum::Json<serde_json::Value>| {
            let r = r.clone();
            async move {
                assert_eq!(body["event_type"], "boundary_usage");
                r.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = cert.https_listener().await;
    let port = listener.local_addr().port();
    let refused = listener.failed_handshakes();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("https://{host}:{port}/snap").parse().unwrap(),
        received,
        refused,
    }
}

fn sink(url: &url::Url, ca: Option<&TestCa>) -> HttpSink {
    HttpSink::new(url.clone(), ca.map(TestCa::path))
        .unwrap()
        .with_backoff(tally_domain::retry::Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(40),
        ))
}

#[tokio::test]
async fn the_sink_trusts_the_ca_file_alone_and_does_not_retry_a_refused_certificate() {
    let ca = TestCa::new("sink CA");
    let rx = receiver(&ca.issue(&["127.0.0.1"]), "127.0.0.1").await;
    sink(&rx.url, Some(&ca)).publish(&snapshot()).await.unwrap();
    assert_eq!(rx.received.load(Ordering::SeqCst), 1);

    let other = TestCa::new("someone else's CA");
    for wrong in [None, Some(&other)] {
        let err = sink(&rx.url, wrong).publish(&snapshot()).await.unwrap_err();
        assert!(
            err.0.contains("not trusted") && err.0.contains("--telemetry-ca-file"),
            "{err}"
        );
    }
    // The receiver handles connections in order: once this one is served,
    // every refused handshake before it is counted.
    sink(&rx.url, Some(&ca)).publish(&snapshot()).await.unwrap();
    assert_eq!(rx.received.load(Ordering::SeqCst), 2);
    assert_eq!(rx.refused.load(Ordering::SeqCst), 2, "one try each, no retries");
}

#[tokio::test]
async fn a_hostname_mismatch_is_named() {
    let ca = TestCa::new("sink CA");
    let rx = receiver(&ca.issue(&["127.0.0.1"]), "localhost").await;
    let err = sink(&rx.url, Some(&ca)).publish(&snapshot()).await.unwrap_err();
    assert!(
        err.0.contains("hostname mismatch") && err.0.contains("localhost"),
        "{err}"
    );
    assert_eq!(rx.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_start_up_check_refuses_a_bad_certificate_and_lets_an_unreachable_sink_be() {
    let ca = TestCa::new("sink CA");
    let rx = receiver(&ca.issue(&["127.0.0.1"]), "127.0.0.1").await;
    let trusting = |ca: Option<&TestCa>| Arc::new(client_config(ca.map(TestCa::path)).unwrap());
    check_handshake(&rx.url, trusting(Some(&ca))).await.unwrap();
    let other = TestCa::new("someone else's CA");
    let err = check_handshake(&rx.url, trusting(Some(&other)))
        .await
        .unwrap_err();
    assert!(
        err.0.contains("--telemetry-url") && err.0.contains("not trusted"),
        "{err}"
    );
    assert_eq!(
        rx.received.load(Ordering::SeqCst),
        0,
        "the check sends no request"
    );

    // Plain HTTP behind an https URL.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: url::Url = format!("https://{}/snap", plain.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move { axum::serve(plain, Router::new()).await.unwrap() });
    let err = check_handshake(&url, trusting(None)).await.unwrap_err();
    assert!(err.0.contains("https endpoint"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url: url::Url = format!("https://{}/snap", closed.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(closed);
    check_handshake(&url, trusting(None)).await.unwrap();
}

#[test]
fn ca_files_are_checked_and_named() {
    let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
    assert!(
        err.0.contains("/nonexistent/ca.pem") && err.0.contains("cannot read"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "no certificate here\n").unwrap();
    let err = client_config(Some(&junk)).unwrap_err();
    assert!(
        err.0.contains("junk.pem") && err.0.contains("no PEM certificate"),
        "{err}"
    );
    client_config(Some(TestCa::new("CA").path())).unwrap();
    client_config(None).unwrap();
}
