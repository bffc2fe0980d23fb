//! Shared test support for tally: the PostgreSQL harness (plain and TLS-only
//! clusters), test certificates, and the store conformance suite, used by the tests in `tests/tests/` and by other crates'
//! tests and benchmarks.

pub mod conformance;
pub mod pg;
pub mod tls;

use std::sync::Arc;

use tally_domain::ports::Store;

/// A store for one test, with whatever keeps it alive (a throwaway database).
pub struct StoreUnderTest {
    pub store: Arc<dyn Store>,
    /// Dropped with the test: removes the test's database, if any.
    pub guard: Box<dyn std::any::Any + Send>,
}

impl StoreUnderTest {
    /// A store that needs nothing kept alive beside it (the in-memory one).
    pub fn unguarded(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            guard: Box::new(()),
        }
    }
}

impl std::fmt::Debug for StoreUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUnderTest").finish_non_exhaustive()
    }
}
