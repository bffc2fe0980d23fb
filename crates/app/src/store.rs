//! Store selection (minimal stand-in; replaced at merge).

use std::sync::Arc;

use anyhow::Context;
use tally_adapters_memory::MemoryStore;
use tally_adapters_postgres::PgStore;
use tally_domain::ports::Store;

/// The in-memory store when no URL is given, else PostgreSQL (migrated).
pub async fn open_store(database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    match database_url {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(url) => {
            let store = PgStore::connect(url)
                .await
                .context("cannot open the PostgreSQL store")?;
            Ok(Arc::new(store))
        }
    }
}
