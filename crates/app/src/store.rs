//! Opening the configured store.

use std::sync::Arc;

use anyhow::Context as _;
use tally_adapters_memory::MemoryStore;
use tally_adapters_postgres::PgStore;
use tally_domain::ports::Store;

use crate::config::{check_database_url, redact_database_url};

/// The in-memory store when `database_url` is `None`, else PostgreSQL
/// (connected, migrations applied). Errors never contain the password.
pub async fn open_store(database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    match database_url {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(url) => Ok(Arc::new(connect_postgres(url).await?)),
    }
}

/// Connects to PostgreSQL and applies pending migrations.
pub async fn connect_postgres(url: &str) -> anyhow::Result<PgStore> {
    check_database_url(url)?;
    PgStore::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", redact_database_url(url)))
}
