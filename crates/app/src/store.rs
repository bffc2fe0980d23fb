//! Opening the configured store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tally_adapters_memory::MemoryStore;
use tally_adapters_postgres::{PgStore, PgStoreOptions};
use tally_domain::error::StoreError;
use tally_domain::ports::Store;
use tally_domain::retry::Backoff;

use crate::config::{ConfigError, check_database_url, redact_database_url};
use crate::ready::{AlwaysReady, PgReadiness, Readiness};

/// How long a store call waits for a pool connection before it fails. Short,
/// so that a database outage shows within seconds (a failed flush is
/// counted, logged and retried, the data kept) rather than holding every
/// loop for long; the pool keeps reconnecting meanwhile.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits between connection attempts at start-up: about 0.1 s, doubling to 2 s.
const CONNECT_RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// The in-memory store when `database_url` is `None` (with its share of
/// the default `--max-memory`), else PostgreSQL (connected, migrations
/// applied). Errors never contain the password.
pub async fn open_store(database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    match database_url {
        None => Ok(default_memory_store()),
        Some(url) => Ok(Arc::new(connect_postgres(url).await?)),
    }
}

/// The in-memory store, limited to its default share of the default
/// `--max-memory` (`serve` sets its limit from its own options).
pub fn default_memory_store() -> Arc<MemoryStore> {
    let max_memory =
        crate::cli::memory_size(crate::serve::DEFAULT_MAX_MEMORY).expect("the default --max-memory parses");
    Arc::new(MemoryStore::with_limit(crate::serve::memory_store_share(
        max_memory,
        crate::serve::DEFAULT_MEMORY_STORE_SHARE,
    )))
}

/// What `serve` runs on: the store and its readiness check.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub readiness: Arc<dyn Readiness>,
    /// The in-memory store, when it is the store: `serve` sets its share of
    /// `--max-memory` and shows what it holds in `/metrics`.
    pub memory: Option<Arc<MemoryStore>>,
}

impl Opened {
    /// `store` as what `serve` runs on.
    pub fn memory(store: Arc<MemoryStore>) -> Self {
        Self {
            store: store.clone(),
            readiness: Arc::new(AlwaysReady),
            memory: Some(store),
        }
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

/// [`open_store`] for `serve`. With `migrate` false the schema is left as
/// it is and must already be current: a pending, failed or changed
/// migration is a [`ConfigError`] (the replica does not start). The
/// readiness check's calls end within `store_timeout`.
pub async fn open_for_serve(
    database_url: Option<&str>,
    migrate: bool,
    store_timeout: Duration,
) -> anyhow::Result<Opened> {
    let Some(url) = database_url else {
        return Ok(Opened::memory(Arc::new(MemoryStore::new())));
    };
    let store = connect_postgres_with(url, migrate).await?;
    if !migrate {
        let status = store
            .migration_status()
            .await
            .with_context(|| format!("cannot read the migrations of {}", redact_database_url(url)))?;
        if !status.is_current() {
            return Err(ConfigError(format!(
                "--no-migrate: the database {} is not ready for this tally: {}; apply them with `tally migrate` first",
                redact_database_url(url),
                status.summary()
            ))
            .into());
        }
        tracing::info!(database = %redact_database_url(url), "{}", status.summary());
    }
    Ok(Opened {
        readiness: Arc::new(PgReadiness::new(store.clone(), store_timeout)),
        store: Arc::new(store),
        memory: None,
    })
}

/// Connects to PostgreSQL and applies pending migrations.
pub async fn connect_postgres(url: &str) -> anyhow::Result<PgStore> {
    connect_postgres_with(url, true).await
}

/// Connects to PostgreSQL, applying pending migrations if `migrate`.
pub async fn connect_postgres_with(url: &str, migrate: bool) -> anyhow::Result<PgStore> {
    check_database_url(url)?;
    let options = PgStoreOptions {
        acquire_timeout: ACQUIRE_TIMEOUT,
        migrate,
        ..PgStoreOptions::default()
    };
    PgStore::connect_with(url, options)
        .await
        .with_context(|| format!("cannot open the database {}", redact_database_url(url)))
}

/// Runs `open` until it succeeds or fails for good, trying again after
/// retryable failures (the server is down or still starting); `None` when
/// `timeout` passes first.
pub async fn patiently<T, F, Fut>(timeout: Duration, mut open: F) -> Option<anyhow::Result<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let attempts = async {
        let mut waits = CONNECT_RETRY.delays();
        loop {
            let wait = waits.next().unwrap_or(CONNECT_RETRY.most());
            match open().await {
                Err(e)
                    if e.downcast_ref::<StoreError>()
                        .is_some_and(StoreError::is_retryable) =>
                {
                    tracing::info!(error = %format!("{e:#}"), retry_in = ?wait, "database not reachable yet");
                }
                done => return done,
            }
            tokio::time::sleep(wait).await;
        }
    };
    tokio::time::timeout(timeout, attempts).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_until_the_timeout() {
        let calls = AtomicU32::new(0);
        let opened = patiently(Duration::from_secs(10), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(anyhow::Error::new(StoreError::unavailable("refused")).context("cannot open"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(opened.unwrap().unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let never = patiently(Duration::from_secs(10), || async {
            Err::<(), _>(anyhow::Error::new(StoreError::unavailable("refused")))
        })
        .await;
        assert!(never.is_none(), "gave up at the timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_end_at_once() {
        let calls = AtomicU32::new(0);
        let opened = patiently(Duration::from_secs(10), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(anyhow::anyhow!("bad URL"))
        })
        .await;
        assert!(opened.unwrap().is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
