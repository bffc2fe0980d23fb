//! The PostgreSQL store over sqlx, with embedded migrations.
//!
//! [`PgStore`] implements every store port of [`tally_domain::ports`]. Each
//! port method is one transaction; database errors are mapped onto
//! [`StoreError`] (connection trouble, timeouts, serialization failures and
//! deadlocks are [`StoreError::Unavailable`], i.e. retryable).

mod appstats;
mod boundary;
mod copy;
mod error;
mod insights;
mod recent;
mod schema;
mod telemetry;
mod timeconv;
mod tls;
mod tx;
mod usage;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tally_domain::error::StoreError;

pub use error::map_sqlx_error;
pub use schema::{MigrationEntry, MigrationState, MigrationStatus};
pub use tls::{ConnectPlan, SslMode, TlsFailure};

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How [`PgStore`] writes app stat batches. Both give the same result; see
/// BENCHMARKS.md for why [`AppStatsWriteMode::Copy`] is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppStatsWriteMode {
    /// Optimistic: rows this store wrote recently go by upsert, the others
    /// by binary `COPY` per batch, as if new. If one of those exists after
    /// all (a replay, another replica's session), the unique key refuses it
    /// and the whole write is redone, in a new transaction, with
    /// [`AppStatsWriteMode::Upsert`].
    #[default]
    Copy,
    /// Per batch: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO
    /// UPDATE SET end, requests = GREATEST(stored, incoming)` statement.
    Upsert,
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub write_mode: AppStatsWriteMode,
    /// Apply pending migrations on connecting (else the schema is left as
    /// it is; see [`PgStore::migration_status`]).
    pub migrate: bool,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            write_mode: AppStatsWriteMode::default(),
            migrate: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    write_mode: AppStatsWriteMode,
    /// Whether writes mark their start hours for the usage rollup; off only
    /// in the write benchmark, to measure what the marks cost.
    usage_marks: bool,
    /// Keys written recently, shared by clones of this store.
    recent: std::sync::Arc<recent::RecentKeys>,
}

impl PgStore {
    /// Connects with a pool and applies pending migrations.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        Self::connect_with(database_url, PgStoreOptions::default()).await
    }

    /// Like [`PgStore::connect`], with pool size, timeouts, write mode and
    /// whether to migrate. `sslmode` and `sslrootcert` in the URL mean what they mean to libpq
    /// (see [`ConnectPlan`]); a TLS failure is a non-retryable error that
    /// says what failed.
    pub async fn connect_with(database_url: &str, options: PgStoreOptions) -> Result<Self, StoreError> {
        let plan = ConnectPlan::from_url(database_url)?;
        let connect = |connect: PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.acquire_timeout)
                // tally's statements are short; the planner's cost guesses
                // for the rollup's per-row hour series made JIT compile them
                // for seconds to save milliseconds.
                .connect_with(connect.application_name("tally").options([("jit", "off")]))
        };
        let pool = match (connect(plan.options).await, plan.tls_fallback) {
            // sslmode=allow: TLS only once the server has refused plaintext.
            (Err(e), Some(tls)) if matches!(TlsFailure::of(&e), Some(TlsFailure::ServerRequiresTls(_))) => {
                connect(tls).await
            }
            (result, _) => result,
        }
        .map_err(map_sqlx_error)?;
        let store = Self {
            pool,
            write_mode: options.write_mode,
            usage_marks: true,
            recent: Default::default(),
        };
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Wraps an existing pool; does not migrate.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            write_mode: AppStatsWriteMode::default(),
            usage_marks: true,
            recent: Default::default(),
        }
    }

    /// The same store writing without marking start hours for the usage
    /// rollup, which then misses those writes. For the write benchmark only,
    /// which measures the marks' cost against it.
    #[doc(hidden)]
    pub fn without_usage_marks_for_benchmarks(mut self) -> Self {
        self.usage_marks = false;
        self
    }

    /// The same store writing app stats the given way.
    pub fn with_write_mode(mut self, mode: AppStatsWriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; safe to run from several replicas at once
    /// (sqlx's migrator holds a PostgreSQL advisory lock while it runs).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(error::map_migrate_error)
    }

    /// The database's migrations beside this build's; reads only.
    pub async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        schema::migration_status(&self.pool).await
    }
}
