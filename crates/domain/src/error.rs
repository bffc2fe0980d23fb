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

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
