//! Errors crossing the store port.

use crate::authz::{Action, Resource, Subject};

/// A subject tried something the access rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject} may not {action} {resource}")]
pub struct Forbidden {
    /// Who tried.
    pub subject: Subject,
    /// What they tried.
    pub action: Action,
    /// On what.
    pub resource: Resource,
}

/// The cause of a [`StoreError`]: whatever the adapter's library returned.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a store can fail with. Adapters map their own errors onto these so
/// callers can decide between retrying and reporting ([`StoreError::kind`]).
/// Each variant says what failed (`context`) and keeps the error that caused
/// it (`source`), if any; [`Report`] renders the whole chain for a log line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or the operation was interrupted
    /// (connection loss, timeout, serialization failure). Safe to retry: every
    /// write is atomic and idempotent.
    #[error("store unavailable: {context}")]
    Unavailable {
        /// What failed, in words.
        context: String,
        /// The error that caused it, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The data was rejected by a constraint; retrying will not help.
    #[error("invalid data: {context}")]
    Invalid {
        /// What failed, in words.
        context: String,
        /// The error that caused it, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The access rules refused the call before it reached the store.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// Anything else the adapter could not classify.
    #[error("store failure: {context}")]
    Other {
        /// What failed, in words.
        context: String,
        /// The error that caused it, if any.
        #[source]
        source: Option<BoxError>,
    },
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
    /// Retryable: the store could not be reached or did not answer.
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    /// Bad data, named in `context`.
    pub fn invalid(context: impl Into<String>) -> Self {
        Self::Invalid {
            context: context.into(),
            source: None,
        }
    }

    /// Unclassified.
    pub fn other(context: impl Into<String>) -> Self {
        Self::Other {
            context: context.into(),
            source: None,
        }
    }

    /// The same error, caused by `cause` (a [`Forbidden`] has no cause).
    pub fn caused_by(mut self, cause: impl Into<BoxError>) -> Self {
        match &mut self {
            Self::Unavailable { source, .. } | Self::Invalid { source, .. } | Self::Other { source, .. } => {
                *source = Some(cause.into());
            }
            Self::Forbidden(_) => {}
        }
        self
    }

    /// The one classification of store failures.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::Invalid { .. } => ErrorKind::Invalid,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::Other { .. } => ErrorKind::Other,
        }
    }

    /// Whether retrying the same call may succeed: only when the store was
    /// unavailable (every store call is atomic and idempotent).
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }
}

/// An error and its causes, `error: cause: cause of the cause`, for a log
/// line: `tracing::warn!(error = %Report(&e), ...)`.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_and_reported_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = StoreError::unavailable("cannot reach the database").caused_by(io);
        assert_eq!(e.to_string(), "store unavailable: cannot reach the database");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "connection refused"
        );
        assert_eq!(
            Report(&e).to_string(),
            "store unavailable: cannot reach the database: connection refused"
        );
        assert!(e.is_retryable());
        assert_eq!(e.kind().as_str(), "unavailable");
    }

    #[test]
    fn only_unavailability_is_retryable() {
        assert!(!StoreError::invalid("x").is_retryable());
        assert!(!StoreError::other("x").is_retryable());
        assert_eq!(StoreError::invalid("x").kind(), ErrorKind::Invalid);
    }
}
