//! The PostgreSQL store over sqlx, with embedded migrations.
//!
//! CONTRACT (stub, to be implemented): `PgStore` implementing every store port
//! of `tally_domain::ports`; constructors below are fixed.

use sqlx::PgPool;
use tally_domain::StoreError;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects with a pool and applies pending migrations.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let _ = database_url;
        todo!("issue 3: connect")
    }

    /// Wraps an existing pool; does not migrate.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; safe to run from several replicas at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        todo!("issue 3: migrate")
    }
}
