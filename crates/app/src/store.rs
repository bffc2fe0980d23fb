//! Store selection (minimal stand-in; replaced at merge).

use std::sync::Arc;

use tally_domain::ports::Store;

/// The in-memory store when no URL is given, else PostgreSQL (migrated).
/// TEMP: the adapters do not implement the store ports on this branch yet.
pub async fn open_store(database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    let _ = database_url;
    anyhow::bail!("the stores are not wired on this branch yet")
}
