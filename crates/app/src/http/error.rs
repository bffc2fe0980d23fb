//! API errors in Coder's `codersdk.Response` shape, so Coder's Go clients
//! read them unchanged:
//! `{"message": "...", "detail": "...", "validations": [{"field": "...", "detail": "..."}]}`.
//!
//! `message` is a sentence for people, `detail` says why in technical terms
//! (both as Coder uses them), and a field error has one entry in
//! `validations` naming the field as a path into the request
//! (`stats[3].requests`, `logs[1].decision`, `limit`, `body` when no field
//! can be named) with its own detail. Empty `detail` and `validations` are
//! left out, as Coder does.
//!
//! The statuses for bad input, held by `tests/it/hostile/`: 400 for anything
//! wrong in the body or the query (syntax, types, missing or repeated fields,
//! ranges, unknown query parameters); 413 past the body limit (`body`) or
//! past what the collector can take in one request (`stats`); 415 for a body
//! that is not UTF-8 JSON (`Content-Type`, `Content-Encoding`); 404 and 405
//! name the path in the detail; 408 when a request (its body) does not
//! arrive in time.
//!
//! A 503 or 429 carries `Retry-After` in whole seconds: the value the
//! refusal chose ([`ApiError::with_retry_after`]), else
//! [`DEFAULT_RETRY_AFTER`].

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use tally_domain::error::{ErrorKind, Report, StoreError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// A sentence for people (`message`).
    pub message: String,
    /// Why, in technical terms: the top-level `detail`, or the field's own
    /// detail when `field` is set.
    pub detail: Option<String>,
    /// The offending field, as a path into the request (`stats[3].requests`).
    pub field: Option<String>,
    /// When to try again (`Retry-After`), for a 503 or 429.
    pub retry_after: Option<Duration>,
    /// The store failure behind a 5xx, logged once when the response is made.
    cause: Option<Arc<StoreError>>,
}

/// `Retry-After` of a 503 that gives none of its own (the store is
/// unavailable, the replica is not ready): about the time a store call
/// takes to give up while the database is down (the pool's acquire
/// timeout), so a retry seldom meets the same failure attempt.
pub const DEFAULT_RETRY_AFTER: Duration = crate::store::ACQUIRE_TIMEOUT;

/// Two errors are equal when a client sees them the same; the cause is for the log.
impl PartialEq for ApiError {
    fn eq(&self, other: &Self) -> bool {
        (self.status, &self.message, &self.field, self.retry_after)
            == (other.status, &other.message, &other.field, other.retry_after)
    }
}

impl Eq for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: None,
            field: None,
            retry_after: None,
            cause: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// `Retry-After` for this answer, rounded up to whole seconds (at least 1).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// A problem with one field of the request.
    pub fn invalid(
        status: StatusCode,
        message: impl Into<String>,
        field: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            detail: Some(detail.into()),
            field: Some(field.into()),
            retry_after: None,
            cause: None,
        }
    }

    /// 400 for a field of the body (`stats[3].requests`, `body`).
    pub fn bad_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::invalid(StatusCode::BAD_REQUEST, "Invalid request body.", field, detail)
    }

    /// 400 for a query or path parameter (`limit`, `workspace_id`).
    pub fn bad_param(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::invalid(
            StatusCode::BAD_REQUEST,
            "Invalid request parameters.",
            name,
            detail,
        )
    }

    pub fn unauthorized(message: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message).with_detail(detail)
    }

    /// 403; `detail` says which rule refused it.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden.").with_detail(detail)
    }
}

/// The body of every error answer: Coder's `codersdk.Response`.
// Also read back by the tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = codersdk::Response)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<Validation>,
}

/// `codersdk.ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = codersdk::ValidationError)]
pub struct Validation {
    pub field: String,
    pub detail: String,
}

impl ErrorBody {
    /// The field the (one) validation names.
    pub fn field(&self) -> Option<&str> {
        self.validations.first().map(|v| v.field.as_str())
    }

    /// Everything the body says: message, detail and each validation's detail.
    pub fn text(&self) -> String {
        let mut parts = vec![self.message.as_str()];
        parts.extend(self.detail.as_deref());
        parts.extend(self.validations.iter().map(|v| v.detail.as_str()));
        parts.join(" ")
    }
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        let detail = e.detail.clone().filter(|d| !d.is_empty());
        match &e.field {
            Some(field) => Self {
                message: e.message.clone(),
                detail: None,
                validations: vec![Validation {
                    field: field.clone(),
                    detail: detail.unwrap_or_else(|| e.message.clone()),
                }],
            },
            None => Self {
                message: e.message.clone(),
                detail,
                validations: Vec::new(),
            },
        }
    }
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
        let mut response = (self.status, Json(ErrorBody::from(&self))).into_response();
        let retry = matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        );
        if let Some(after) = self.retry_after.or(retry.then_some(DEFAULT_RETRY_AFTER)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(after)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Whole seconds, rounded up, at least 1: `Retry-After: 0` would invite an
/// immediate retry.
pub fn retry_after_seconds(after: Duration) -> u64 {
    after.as_secs_f64().ceil().max(1.0) as u64
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
mod tests;
