//! The cause of an error: logged once with its chain when the response is
//! made; the status follows the error kind.

use crate::http::error::*;
use std::io::Write;

/// Log lines written while `f` runs.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<parking_lot::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buf.0.lock().clone()).unwrap()
}

#[test]
fn a_store_failure_is_logged_once_with_its_cause_when_the_response_is_made() {
    let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let store = StoreError::unavailable("cannot reach the database").caused_by(cause);
    let mut api = None;
    assert_eq!(
        logged(|| api = Some(ApiError::from(store))),
        "",
        "converting logs nothing"
    );
    let api = api.unwrap();
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    let log = logged(|| drop(api.into_response()));
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("store unavailable: cannot reach the database: connection refused"),
        "{log}"
    );
}

#[test]
fn statuses_follow_the_error_kind() {
    assert_eq!(
        ApiError::from(StoreError::invalid("x")).status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        ApiError::from(StoreError::other("x")).status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
