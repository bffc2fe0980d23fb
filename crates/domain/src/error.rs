//! Errors crossing the store port.

use crate::authz::{Action, Resource, Subject};

/// A subject tried something the access rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject} may not {action} {resource}")]
pub struct Forbidden {
    pub subject: Subject,
    pub action: Action,
    pub resource: Resource,
}

/// What a store can fail with. Adapters map their own errors onto these so
/// callers can decide between retrying and reporting.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or the operation was interrupted
    /// (connection loss, timeout, serialization failure). Safe to retry: every
    /// write is atomic and idempotent.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The data was rejected by a constraint; retrying will not help.
    #[error("invalid data: {0}")]
    Invalid(String),
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// Anything else the adapter could not classify.
    #[error("store failure: {0}")]
    Other(String),
}

/// What kind of failure a [`StoreError`] is: the one classification that
/// retry loops, metrics and the HTTP mapping all use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Worth retrying as is.
    Unavailable,
    /// Bad data: retrying the same call fails the same way.
    Invalid,
    /// The caller may not do this.
    Forbidden,
    /// Unclassified: not retried.
    Other,
}

impl ErrorKind {
    /// A short lowercase name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Invalid => "invalid",
            Self::Forbidden => "forbidden",
            Self::Other => "other",
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::Other(_) => ErrorKind::Other,
        }
    }

    /// Whether retrying the same call may succeed: only when the store was
    /// unavailable (every store call is atomic and idempotent).
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }
}
