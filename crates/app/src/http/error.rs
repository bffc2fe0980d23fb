//! API errors: a status and a JSON body `{"error": "...", "field": "..."}`.
//!
//! The statuses for bad input, held by `tests/hostile.rs`: 400 for anything
//! wrong in the body or the query (syntax, types, missing or repeated fields,
//! ranges, unknown query parameters), `field` naming it as a path into the
//! request (`stats[3].requests`, `logs[1].decision`, `limit`, `body` when no
//! field can be named); 413 past the body limit (`body`) or past what the
//! collector can take in one request (`stats`); 415 for a body that is not
//! UTF-8 JSON (`Content-Type`, `Content-Encoding`); 404 and 405 name the path
//! in the message; 408 when a request (its body) does not arrive in time.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use tally_domain::error::{ErrorKind, Report, StoreError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The offending field, as a path into the request (`stats[3].requests`).
    pub field: Option<String>,
    /// The store failure behind a 5xx, logged once when the response is made.
    cause: Option<Arc<StoreError>>,
}

/// Two errors are equal when a client sees them the same; the cause is for the log.
impl PartialEq for ApiError {
    fn eq(&self, other: &Self) -> bool {
        (self.status, &self.message, &self.field) == (other.status, &other.message, &other.field)
    }
}

impl Eq for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            cause: None,
        }
    }

    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::with_field(StatusCode::BAD_REQUEST, field, message)
    }

    pub fn with_field(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: Some(field.into()),
            cause: None,
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

#[derive(serde::Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The one place a store failure behind a response is logged.
        if let Some(e) = &self.cause {
            if e.is_retryable() {
                tracing::warn!(error = %Report(&**e), "store unavailable");
            } else {
                tracing::error!(error = %Report(&**e), "store failure");
            }
        }
        let mut response = (
            self.status,
            Json(Body {
                error: &self.message,
                field: self.field.as_deref(),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The status follows [`StoreError::kind`]; nothing is logged here (the
/// response logs its cause, once).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let mut api = match e.kind() {
            ErrorKind::Forbidden => return Self::forbidden(e.to_string()),
            ErrorKind::Unavailable => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry later")
            }
            ErrorKind::Invalid | ErrorKind::Other => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal store failure")
            }
        };
        api.cause = Some(Arc::new(e));
        api
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
