//! API errors: a status and a JSON body `{"error": "...", "field": "..."}`.
//!
//! The statuses for bad input, held by `tests/it/hostile/`: 400 for anything
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
use tally_domain::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The offending field, as a path into the request (`stats[3].requests`).
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Forbidden(f) => Self::forbidden(f.to_string()),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry later")
            }
            StoreError::Invalid(_) | StoreError::Other(_) => {
                tracing::error!(error = %e, "store failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal store failure")
            }
        }
    }
}
