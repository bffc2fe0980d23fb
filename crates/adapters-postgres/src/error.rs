//! Mapping sqlx errors onto the domain's [`StoreError`].

use sqlx::migrate::MigrateError;
use tally_domain::error::{BoxError, StoreError};

use crate::tls::TlsFailure;

/// Classifies a sqlx error: retryable trouble is `Unavailable`, rejected
/// data is `Invalid`, the rest is `Other`. A TLS failure is `Other`: no
/// retry fixes a certificate or an `sslmode`. The sqlx error (for a database
/// error, the server's own error with its message) stays as the source.
pub fn map_sqlx_error(e: sqlx::Error) -> StoreError {
    if let Some(tls) = TlsFailure::of(&e) {
        // What the failure means, in the adapter's words; sqlx's error as the cause.
        return StoreError::other(tls.to_string()).caused_by(e);
    }
    let error = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let context = format!("SQLSTATE {code}");
            match classify(&code) {
                Class::Retry => StoreError::unavailable(context),
                Class::Invalid => StoreError::invalid(context),
                Class::Other => StoreError::other(context),
            }
        }
        sqlx::Error::Io(_) => StoreError::unavailable("cannot reach the database"),
        sqlx::Error::Tls(_) => StoreError::other("TLS with the database failed"),
        sqlx::Error::PoolTimedOut => StoreError::unavailable("no database connection in time"),
        sqlx::Error::PoolClosed => StoreError::unavailable("the connection pool is closed"),
        sqlx::Error::WorkerCrashed => StoreError::unavailable("the database connection worker crashed"),
        sqlx::Error::Protocol(_) => StoreError::unavailable("database protocol error"),
        _ => StoreError::other("database call failed"),
    };
    match e {
        // The server's own error: sqlx's wrapper only repeats its message.
        sqlx::Error::Database(db) => {
            let cause: BoxError = db;
            error.caused_by(cause)
        }
        e => error.caused_by(e),
    }
}

pub(crate) fn map_migrate_error(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => map_sqlx_error(e),
        MigrateError::ExecuteMigration(e, version) => {
            let context = format!("migration {version}");
            match map_sqlx_error(e) {
                StoreError::Unavailable { context: c, source } => StoreError::Unavailable {
                    context: format!("{context}: {c}"),
                    source,
                },
                StoreError::Invalid { context: c, source } | StoreError::Other { context: c, source } => {
                    StoreError::Other {
                        context: format!("{context}: {c}"),
                        source,
                    }
                }
                forbidden @ StoreError::Forbidden(_) => forbidden,
            }
        }
        other => StoreError::other("migrations").caused_by(other),
    }
}

/// Whether the error is a unique violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Whether a statement gave up waiting for a lock (`lock_timeout`,
/// SQLSTATE 55P03).
pub(crate) fn is_lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

enum Class {
    Retry,
    Invalid,
    Other,
}

fn classify(code: &str) -> Class {
    match code {
        // serialization_failure, deadlock_detected, lock_not_available,
        // query_canceled, admin/crash shutdown, cannot_connect_now
        "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" => Class::Retry,
        // cardinality_violation: a row affected twice by one statement
        "21000" => Class::Invalid,
        // connection exceptions, insufficient resources
        c if c.starts_with("08") || c.starts_with("53") => Class::Retry,
        // integrity constraint violations, data exceptions (out of range...)
        c if c.starts_with("23") || c.starts_with("22") => Class::Invalid,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert!(matches!(classify("40001"), Class::Retry));
        assert!(matches!(classify("40P01"), Class::Retry));
        assert!(matches!(classify("08006"), Class::Retry));
        assert!(matches!(classify("53300"), Class::Retry));
        assert!(matches!(classify("23514"), Class::Invalid));
        assert!(matches!(classify("22003"), Class::Invalid));
        assert!(matches!(classify("42P01"), Class::Other));
        assert!(map_sqlx_error(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!map_sqlx_error(sqlx::Error::RowNotFound).is_retryable());
    }
}
