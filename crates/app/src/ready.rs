//! Readiness: whether this replica can serve its API now. `/readyz` answers
//! 200 only when the store answers and its schema is the one this build
//! expects; `/healthz` (liveness) does not look at the store, since a
//! replica whose database is down still takes ingest into memory.

use std::time::Duration;

use async_trait::async_trait;
use tally_adapters_postgres::PgStore;
use tally_domain::error::Report;

/// Why the replica is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The store did not answer (in time).
    #[error("{0}")]
    StoreUnavailable(String),
    /// Migrations this build needs are missing, unfinished or changed.
    #[error("{0}")]
    SchemaNotCurrent(String),
}

/// Asks the store whether it is ready.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok` with a line saying what was checked, or why not.
    async fn check(&self) -> Result<String, NotReady>;
}

/// The in-memory store: it always answers and its schema is its code.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

#[async_trait]
impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<String, NotReady> {
        Ok("in-memory store".to_owned())
    }
}

/// PostgreSQL: one read of the migration history, which shows both that
/// the database answers and whether the schema is current.
#[derive(Debug, Clone)]
pub struct PgReadiness {
    store: PgStore,
    timeout: Duration,
}

impl PgReadiness {
    /// `timeout` bounds the check like any store call (a blackholed
    /// database never refuses).
    pub fn new(store: PgStore, timeout: Duration) -> Self {
        Self { store, timeout }
    }
}

#[async_trait]
impl Readiness for PgReadiness {
    async fn check(&self) -> Result<String, NotReady> {
        let status = crate::deadline::within(self.timeout, "migration_status", self.store.migration_status())
            .await
            .map_err(|e| NotReady::StoreUnavailable(Report(&e).to_string()))?;
        if status.is_current() {
            Ok(status.summary())
        } else {
            Err(NotReady::SchemaNotCurrent(format!(
                "{}; run `tally migrate`",
                status.summary()
            )))
        }
    }
}
