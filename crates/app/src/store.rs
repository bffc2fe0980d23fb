//! Store selection (minimal stand-in; replaced at merge).

use std::sync::Arc;

use tally_adapters_memory::MemoryStore;
use tally_domain::ports::Store;

/// The in-memory store when no URL is given, else PostgreSQL (migrated).
/// TEMP: the PostgreSQL store does not implement the ports on main yet.
pub async fn open_store(database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    match database_url {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(_) => anyhow::bail!("the PostgreSQL store is not wired on this branch yet"),
    }
}
